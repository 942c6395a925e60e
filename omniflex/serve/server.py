"""``make_server``: the uvicorn server that runs the application for a ``ServeSettings``."""

from __future__ import annotations

import torch
import uvicorn

from omniflex.model.assistant import Assistant
from omniflex.serve.app import create_app
from omniflex.serve.settings import ServeSettings

__all__ = ["make_server"]


def make_server(
    settings: ServeSettings, assistant: Assistant | None = None, *, log_level: str = "info"
) -> uvicorn.Server:
    """A ``uvicorn.Server`` for ``settings`` (loading the model unless ``assistant`` is given)."""
    torch.set_num_threads(settings.threads)
    if assistant is None:
        assistant = Assistant.from_pretrained(
            settings.model,
            precision=settings.precision,
            compile=settings.compile,
            batch_decoding=settings.batch_decoding,
        )
    app = create_app(assistant, settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
        ws_max_size=settings.max_event_bytes, log_config=None, ws="websockets-sansio",
    )  # fmt: skip
    return uvicorn.Server(config)
