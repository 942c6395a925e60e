"""``ServeSettings``: everything the server is configured with, as one frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["API_KEY_ENV", "ServeSettings"]

API_KEY_ENV = "OMNIFLEX_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Server options.

    Args:
        model: shipped model name or model folder (``omniflex.model.pretrained``).
        precision: ``None`` runs the model as trained; ``"float32"`` dequantised (faster).
        host, port: where uvicorn listens.
        api_key: when set, REST and websocket requests need ``Authorization: Bearer KEY``
            (``from_env`` reads ``OMNIFLEX_API_KEY``).
        max_sessions: concurrent Realtime sessions; beyond: an ``error`` event and close.
        max_requests: concurrent REST requests (a pool of their own); beyond: HTTP 429 with
            ``Retry-After``.
        session_idle_seconds: a Realtime session that sends no event for this long (and has
            no answer in flight) is closed with an ``error`` event, freeing its place.
        session_max_seconds: the longest a Realtime session may last.
        max_body_bytes: largest REST request body.
        max_event_bytes: largest websocket message.
        max_audio_seconds: longest input audio (a file or one spoken turn).
        max_audio_rate: the most seconds of audio a Realtime connection may append per second,
            sustained (a microphone sends 1); ``audio_burst_seconds`` may arrive at once. An
            append beyond them is refused with a ``rate_limit_exceeded`` error event before it
            is decoded.
        audio_burst_seconds: see ``max_audio_rate``.
        max_images: pictures in one REST request (counted before any is decoded).
        max_new_tokens: cap on each answer's tokens.
        audio_chunk_frames: codec frames (40 ms each) per output audio delta.
        temperature: sampling temperature (0: greedy).
        warmup: run one short generation before accepting connections (two turns with
            ``compile``, so that every graph is compiled before the first user).
        compile: decode through the compiled forward (``omniflex.model.compiled``).
        batch_decoding: sessions and requests answering at the same time share each decode
            forward (``omniflex.model.decode_batcher``). Off by default: on a 2-core CPU it did
            not lower concurrent latency (README, Serving).
        voice_guard: pass output audio through ``omniflex.safety`` when it is installed.
        threads: torch CPU threads.
        allowed_hosts: ``Host`` names the server answers to; empty: the loopback names when
            ``host`` is a loopback address, any name otherwise (``omniflex.serve.origin``).
        allowed_origins: web pages (``scheme://host[:port]``) besides the server's own that
            may call it from a browser; ``"*"``: any.
    """

    model: str = "tiny"
    precision: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_sessions: int = 4
    max_requests: int = 4
    session_idle_seconds: float = 300.0
    session_max_seconds: float = 3600.0
    max_body_bytes: int = 25_000_000
    max_event_bytes: int = 16_000_000
    max_audio_seconds: float = 120.0
    max_audio_rate: float = 10.0
    audio_burst_seconds: float = 60.0
    max_images: int = 8
    max_new_tokens: int = 800
    audio_chunk_frames: int = 1
    temperature: float = 0.0
    warmup: bool = True
    compile: bool = False
    batch_decoding: bool = False
    voice_guard: bool = True
    threads: int = 1
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("session_idle_seconds", "session_max_seconds", "max_audio_rate",
                     "audio_burst_seconds"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"ServeSettings.{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_sessions", "max_requests", "max_body_bytes", "max_event_bytes",
                     "max_new_tokens", "audio_chunk_frames", "threads", "max_images"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ServeSettings.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeSettings.port must be in [0, 65535], got {self.port}")
        if not self.max_audio_seconds > 0:
            raise ValueError(
                f"ServeSettings.max_audio_seconds must be > 0, got {self.max_audio_seconds}"
            )
        if not self.temperature >= 0:
            raise ValueError(f"ServeSettings.temperature must be >= 0, got {self.temperature}")
        for name in ("allowed_hosts", "allowed_origins"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"ServeSettings.{name} must be a tuple of names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.precision not in (None, "float32"):
            raise ValueError(
                f"ServeSettings.precision must be None (as trained) or 'float32', "
                f"got {self.precision!r}"
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        """Defaults, the API key from ``OMNIFLEX_API_KEY``, then ``overrides`` (None: skip)."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown ServeSettings fields {sorted(unknown)}")
        base = cls(api_key=os.environ.get(API_KEY_ENV) or None)
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})
