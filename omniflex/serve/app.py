"""The FastAPI application: ``create_app(assistant, settings)``.

It holds one ``ServerState`` for all connections (one ``Assistant``, whose ``lock`` serialises
model forwards, and the capacity pools of ``omniflex.serve.state``), the Host/Origin and body
size guards, request logging as JSON lines with per-request timing, the REST routes
(``omniflex.serve.rest``), the Realtime websocket (``omniflex.serve.realtime``), and a
lifespan that warms the model up before the first connection is accepted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omniflex.model.assistant import Assistant
from omniflex.safety.voices import OPENAI_VOICES
from omniflex.serve import realtime, rest
from omniflex.serve.auth import check_api_key
from omniflex.serve.errors import ApiError, install_error_handlers
from omniflex.serve.guard import require_safety, safety_status
from omniflex.serve.origin import OriginGuard
from omniflex.serve.settings import ServeSettings
from omniflex.serve.state import Capacity, ServerState

# Capacity, ServerState and check_api_key live in omniflex.serve.state and .auth (their owners,
# below the routes); they are re-exported here for callers of the application module.
__all__ = ["Capacity", "JsonLogFormatter", "ServerState", "check_api_key", "create_app"]

log = logging.getLogger("omniflex.serve")
WEB_DIR = Path(__file__).resolve().parent / "web"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    _SKIP = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413) before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, int(declared))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, self._message(seen), code="payload_too_large")
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int) -> str:
        return (
            f"request body of {size:,} bytes is over the {self.limit:,} byte limit; send a "
            "shorter file (or raise max_body_bytes)"
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        await ApiError(413, self._message(size), code="payload_too_large").response()(
            scope, receive, send
        )


def _warm_up(state: ServerState) -> None:
    """One short generation, so the first user does not pay for lazy initialisation."""
    start = time.perf_counter()
    session = state.assistant.session()
    # A second turn with compile: its prompt is the first chunk that runs through the compiled
    # prefill graph (the first turn's prefill starts from an empty cache and runs eagerly).
    for _ in range(2 if state.assistant.fast is not None else 1):
        session.add_text("hello")
        session.answer(voice=state.assistant.voices[0], modalities=("text", "audio"),
                       max_new_tokens=8)  # fmt: skip
    if state.assistant.batcher is not None:
        state.assistant.batcher.warm_up(state.assistant.cache_storage)
    log.info("warm-up done", extra={"seconds": round(time.perf_counter() - start, 3)})


def create_app(assistant: Assistant, settings: ServeSettings | None = None) -> FastAPI:
    """The server application for ``assistant``; run it with uvicorn."""
    settings = settings or ServeSettings.from_env()
    require_safety(settings.voice_guard)  # fail closed, before any port opens
    state = ServerState(
        assistant, settings, Capacity(settings.max_sessions), Capacity(settings.max_requests)
    )
    state.model_name = f"omniflex-{assistant.name}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.warmup:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(_warm_up, state)
        state.ready.set()
        log.info(
            "serving", extra={"model": state.model_name, "max_sessions": settings.max_sessions}
        )
        yield

    app = FastAPI(
        title="omniflex",
        version="1",
        description="OpenAI-compatible REST and Realtime API over an omniflex omni model.",
        lifespan=lifespan,
    )
    app.state.server = state
    install_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    # added last, so it runs first: a foreign page or host name is refused before anything else
    app.add_middleware(
        OriginGuard, bind_host=settings.host, allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
    )  # fmt: skip

    @app.middleware("http")
    async def _log_requests(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        response: Response = await call_next(request)
        response.headers["x-request-id"] = request_id
        log.info(
            "request",
            extra={
                "request_id": request_id, "method": request.method, "path": request.url.path,
                "status": response.status_code,
                "ms": round((time.perf_counter() - start) * 1000, 1),
            },
        )  # fmt: skip
        return response

    app.include_router(rest.router)

    @app.websocket("/v1/realtime")
    async def _realtime(websocket: WebSocket) -> None:
        await realtime.serve_realtime(websocket, state)

    @app.get("/", include_in_schema=False)
    async def _index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/web/config.json", include_in_schema=False)
    async def _page_config() -> dict[str, Any]:
        # what the page offers: this model's preset voices and the OpenAI names mapped onto them
        voices = list(assistant.voices)
        aliases = {name: preset for name, preset in OPENAI_VOICES.items() if preset in voices}
        return {
            "model": state.model_name, "voices": voices, "voice_aliases": aliases,
            "temperature": settings.temperature, "max_new_tokens": settings.max_new_tokens,
        }  # fmt: skip

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> dict[str, Any]:
        return {
            "ready": state.ready.is_set(),
            "sessions": state.sessions.used,
            "requests": state.requests.used,
            "safety": safety_status(settings.voice_guard),
        }

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
    return app
