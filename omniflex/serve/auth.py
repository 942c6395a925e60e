"""The API key check of REST requests and Realtime websockets."""

from __future__ import annotations

import hmac

from omniflex.serve.errors import ApiError
from omniflex.serve.settings import ServeSettings

__all__ = ["check_api_key"]


def check_api_key(settings: ServeSettings, authorization: str | None, protocols: str = "") -> None:
    """Raise ``ApiError(401)`` unless the key is given as ``Authorization: Bearer KEY`` (or, for
    browsers, which cannot set headers on websockets, the ``openai-insecure-api-key.KEY``
    subprotocol)."""
    key = settings.api_key
    if not key:
        return
    scheme, _, given_key = (authorization or "").strip().partition(" ")
    # the scheme is case-insensitive (RFC 7235); keys compare in constant time
    if scheme.lower() == "bearer" and _same_key(given_key.strip(), key):
        return
    prefix = "openai-insecure-api-key."
    offered = [p.strip() for p in protocols.split(",") if p.strip()]
    if any(p.startswith(prefix) and _same_key(p[len(prefix) :], key) for p in offered):
        return
    given = "no Authorization header" if not authorization else "a wrong key"
    raise ApiError(
        401,
        f"this server needs an API key: send 'Authorization: Bearer KEY' ({given} was sent); "
        "the key is the server's OMNIFLEX_API_KEY",
        code="invalid_api_key",
    )


def _same_key(given: str, key: str) -> bool:
    """Constant-time comparison: the time taken says nothing about how much of a key was right."""
    return hmac.compare_digest(given.encode(), key.encode())
