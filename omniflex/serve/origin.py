"""Which web pages and host names may reach the server: ``Host`` and ``Origin`` checks.

Without them a server on 127.0.0.1 with no key (the default) can be driven by any web page the
user opens: a page's script may open a websocket to ``ws://127.0.0.1:8000`` (browsers send
its ``Origin`` but do not block it), and a DNS-rebinding page reaches REST under its own host
name. ``OriginGuard`` refuses, before any handler runs:

* a request whose ``Host`` is not an allowed name: by default the loopback names
  (``localhost``, ``127.0.0.1``, ``[::1]``, any port) when the server listens on a loopback
  address, and any name otherwise (a key is then required; ``omniflex serve`` refuses a
  public address without one) — ``ServeSettings.allowed_hosts`` replaces the default
  (``"*"``: any);
* a request that carries an ``Origin`` (only browsers send one) other than the server's own
  (``http://`` + its ``Host``) or one in ``ServeSettings.allowed_origins`` (``"*"``: any).

Clients that are not browsers (the ``openai`` SDK, curl) send no ``Origin`` and are not
affected. A refused HTTP request gets 403 with an OpenAI-style error naming the header and the
setting; a refused websocket is closed before it is accepted (HTTP 403).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from omniflex.serve.errors import ApiError

__all__ = ["LOOPBACK_NAMES", "OriginGuard", "host_allowed", "is_loopback", "origin_allowed"]

LOOPBACK_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether a listen address or host name is this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def _hostname(host_header: str) -> str:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``"[::1]:8000"`` -> ``"::1"``."""
    return (urlsplit(f"//{host_header}").hostname or "").lower()


def effective_hosts(bind_host: str, allowed_hosts: Iterable[str]) -> tuple[str, ...]:
    """The allowed ``Host`` names: the setting, or the loopback names for a loopback bind."""
    hosts = tuple(h.lower() for h in allowed_hosts)
    if hosts:
        return hosts
    return LOOPBACK_NAMES if is_loopback(bind_host) else ("*",)


def host_allowed(host_header: str | None, hosts: Iterable[str]) -> bool:
    """Whether the request's ``Host`` header names this server (no header: allowed)."""
    hosts = tuple(hosts)
    if host_header is None or "*" in hosts:
        return True
    return _hostname(host_header) in hosts


def origin_allowed(origin: str | None, host_header: str | None, origins: Iterable[str]) -> bool:
    """Whether a request's ``Origin`` may use the server: none, the server's own, or listed."""
    if origin is None:
        return True
    origins = tuple(o.rstrip("/").lower() for o in origins)
    origin = origin.rstrip("/").lower()
    if "*" in origins or origin in origins:
        return True
    parts = urlsplit(origin)
    same = host_header is not None and parts.netloc == host_header.lower()
    return same and parts.scheme in ("http", "https")


class OriginGuard:
    """ASGI middleware: refuse HTTP and websocket requests from a foreign ``Host``/``Origin``."""

    def __init__(
        self, app: ASGIApp, bind_host: str, allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:  # fmt: skip
        self.app = app
        self.hosts = effective_hosts(bind_host, allowed_hosts)
        self.origins = tuple(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host, origin = headers.get("host"), headers.get("origin")
        problem = None
        if not host_allowed(host, self.hosts):
            problem = ApiError(
                403,
                f"host {host!r} is not one this server answers to ({', '.join(self.hosts)}); "
                "connect to it by one of those names, or start it with --allowed-host NAME",
                code="forbidden_host",
            )
        elif not origin_allowed(origin, host, self.origins):
            problem = ApiError(
                403,
                f"requests from the web page at {origin!r} are not allowed (only the server's "
                "own page may call it); start the server with --allowed-origin ORIGIN to allow "
                "that page",
                code="forbidden_origin",
            )
        if problem is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": problem.message[:120]})
        else:
            await problem.response()(scope, receive, send)
