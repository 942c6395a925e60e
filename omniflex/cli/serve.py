"""``omniflex serve``: the API server (its latency benchmark is ``omniflex bench realtime``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

__all__ = ["add_parser", "configure_logging", "serve"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "serve"
HELP = "serve a model: OpenAI-compatible REST, Realtime websocket, voice web page"


def configure_logging(level: int = logging.INFO) -> None:
    """The server's logs as JSON lines on stderr."""
    from omniflex.serve.app import JsonLogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    for name in ("omniflex.serve", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    from omniflex.serve import ServeSettings
    from omniflex.serve.origin import is_loopback
    from omniflex.serve.server import make_server

    configure_logging()
    if not is_loopback(args.host) and not os.environ.get("OMNIFLEX_API_KEY") and not args.no_key:
        print(
            f"omniflex serve: refusing to listen on {args.host} without an API key: anyone who "
            "can reach this machine could use the model. Set OMNIFLEX_API_KEY (clients then "
            "send 'Authorization: Bearer KEY'), serve on 127.0.0.1, or pass --no-key if the "
            "network is yours alone.",
            file=sys.stderr,
        )
        return 2
    settings = ServeSettings.from_env(
        model=args.model, host=args.host, port=args.port, precision=args.precision,
        max_sessions=args.max_sessions, max_requests=args.max_requests, threads=args.threads,
        session_idle_seconds=args.session_idle_seconds,
        max_audio_rate=args.max_audio_rate,
        voice_guard=False if args.no_voice_guard else None, compile=args.compile or None,
        batch_decoding=args.batch_decoding or None,
        allowed_hosts=tuple(args.allowed_host or ()),
        allowed_origins=tuple(args.allowed_origin or ()),
    )  # fmt: skip
    server = make_server(settings)
    print(
        f"omniflex: serving {settings.model} on http://{settings.host}:{settings.port}/ "
        f"(Realtime: ws://{settings.host}:{settings.port}/v1/realtime)",
        file=sys.stderr,
    )
    server.run()
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``omniflex`` subcommands."""
    p = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Serve an omni model under uvicorn: /v1/chat/completions (text, image and audio in; "
            "text and audio out; streamed), /v1/audio/speech, /v1/audio/transcriptions, "
            "/v1/images/generations, /v1/models, the Realtime speech-to-speech websocket at "
            "/v1/realtime (point the openai client's websocket_base_url at ws://HOST:PORT/v1), "
            "and a voice web page at /. Set OMNIFLEX_API_KEY to require "
            "'Authorization: Bearer KEY'. Logs are JSON lines on stderr."
        ),
    )  # fmt: skip
    p.add_argument("--model", default="tiny", help="shipped model or model folder (tiny)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument(
        "--no-key", action="store_true",
        help="allow a non-loopback --host without OMNIFLEX_API_KEY (refused otherwise)",
    )  # fmt: skip
    p.add_argument(
        "--precision", choices=["float32"],
        help="run flex-trained weights dequantised in float32 (faster; default: as trained)",
    )  # fmt: skip
    p.add_argument("--max-sessions", type=int, default=4,
                   help="concurrent Realtime sessions (4)")  # fmt: skip
    p.add_argument("--max-requests", type=int, default=4,
                   help="concurrent REST requests, a pool apart from the sessions (4)")  # fmt: skip
    p.add_argument(
        "--session-idle-seconds", type=float, default=300.0,
        help="close a Realtime session that sends nothing for this long (300)",
    )  # fmt: skip
    p.add_argument(
        "--max-audio-rate", type=float, default=10.0,
        help="seconds of audio a Realtime connection may append per second, sustained, after "
        "a 60 s burst (10; a microphone sends 1)",
    )  # fmt: skip
    p.add_argument(
        "--allowed-host", action="append", metavar="NAME",
        help=(
            "a Host name clients may reach the server by (repeatable; default: localhost, "
            "127.0.0.1 and ::1 on a loopback --host, any name otherwise; '*': any). Guards "
            "against DNS rebinding"
        ),
    )  # fmt: skip
    p.add_argument(
        "--allowed-origin", action="append", metavar="ORIGIN",
        help=(
            "a web page (e.g. https://app.example:443) allowed to call the server from a "
            "browser besides the server's own page (repeatable; '*': any)"
        ),
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--batch-decoding", action="store_true",
                   help="sessions answering at once share each decode forward (default: each "
                   "session decodes on its own)")  # fmt: skip
    p.add_argument("--no-voice-guard", action="store_true",
                   help="do not pass output audio through omniflex.safety")  # fmt: skip
    p.add_argument(
        "--compile", action="store_true",
        help="decode through the torch.compile'd forward (faster per token; start-up compiles "
        "it first, quickly once inductor's cache holds it)",
    )  # fmt: skip
    p.set_defaults(func=serve)
    return p
