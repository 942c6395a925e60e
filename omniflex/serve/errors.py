"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` for REST responses
and ``{"type": "error", "error": {...}}`` events for the Realtime websocket.

Every failure a client can cause (bad JSON, a field out of range, undecodable audio, no capacity,
a wrong key) becomes one of these with a message that names the input and what to do; nothing
leaves the server as a bare 422 or an HTML page.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "error_body",
    "error_event",
    "install_error_handlers",
    "validation_message",
]

log = logging.getLogger("omniflex.serve")

_TYPE_OF_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error to answer with: HTTP ``status`` and the OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_OF_STATUS.get(status, "server_error")
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        if self.status == 429:  # capacity frees within seconds: one answer is short
            headers = {"Retry-After": "1"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The REST error body the ``openai`` client parses into ``APIError``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_event(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Realtime ``error`` server event; ``event_id`` names the client event that caused it."""
    return {
        "type": "error",
        "event_id": f"event_{uuid.uuid4().hex[:20]}",
        "error": {
            "message": message, "type": type, "code": code, "param": param, "event_id": event_id,
        },
    }  # fmt: skip


def _union_branch(part: str) -> bool:
    """A union member's name that pydantic puts in an error's path: a type ("str", "int",
    "constrained-str", "list[...]", "literal['inf']") or a model's class name ("VoiceId")."""
    return (part in ("str", "constrained-str", "int", "constrained-int", "float",
                     "constrained-float", "bool", "dict")
            or "[" in part or part.startswith("function-") or part[:1].isupper())  # fmt: skip


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(message, param) for pydantic/FastAPI validation errors: the first error, located."""
    if not errors:
        return "invalid request", None
    first = errors[0]
    # pydantic names the branch of a union it tried ("str", "constrained-str", "list[...]"):
    # not part of the request's shape, so left out of the parameter's path
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_branch(str(p))]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({ctx}); send a JSON object", None
    where = f"'{param}': " if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}{first.get('msg', 'invalid value')}{more}", param


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors with 400 (not FastAPI's 422) and every error OpenAI-shaped."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(err.errors()))
        return ApiError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = str(err.detail)
        if err.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        return ApiError(err.status_code, message).response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"internal error ({type(err).__name__}); the server logged the details"
        return ApiError(500, message, type="server_error").response()
