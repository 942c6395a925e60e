"""``omniflex serve`` (the API server) and ``omniflex bench realtime`` (its latency benchmark)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

__all__ = ["add_bench_parser", "add_parser", "configure_logging", "serve"]


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
        voice_guard=False if args.no_voice_guard else None, compile=args.compile or None,
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
        "serve", help="serve a model: OpenAI-compatible REST, Realtime websocket, voice web page",
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
    p.add_argument("--no-voice-guard", action="store_true",
                   help="do not pass output audio through omniflex.safety")  # fmt: skip
    p.add_argument(
        "--compile", action="store_true",
        help="decode through the torch.compile'd forward (2-4x faster per token on the tiny "
        "model; start-up compiles it, a minute or two on a small CPU, seconds once cached)",
    )  # fmt: skip
    p.set_defaults(func=serve)
    return p


def bench_realtime(args: argparse.Namespace) -> int:
    from omniflex.serve.bench import run_realtime_bench

    result = run_realtime_bench(
        model=args.model, precision=args.precision, turns=args.turns, sessions=args.sessions,
        speed=args.speed, corpus=args.corpus, force_speech=args.force_speech,
        compile=args.compile,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<28} {json.dumps(value)}")
    return 0


def add_bench_parser(bench_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``realtime`` to the ``omniflex bench`` suites."""
    p = bench_subparsers.add_parser(
        "realtime", help="Realtime speech latency, concurrency and real-time factor (JSON)",
        description=(
            "Start the server in-process on a free loopback port and drive it with the official "
            "openai client: stream spoken questions in held-out voices (the corpus's test split, "
            "else espeak-ng) as pcm16 appends, and measure, at the client, speech_stopped -> "
            "first response.output_audio.delta over TURNS turns (min/p50/p90), the in-process "
            "compute floor of each turn, SESSIONS concurrent sessions' p90 against one "
            "session's, and the output real-time factor."
        ),
    )  # fmt: skip
    p.add_argument("--model", default="tiny", help="shipped model or model folder (tiny)")
    p.add_argument("--precision", choices=["float32"], help="as trained unless float32")
    p.add_argument("--turns", type=int, default=20, help="spoken turns per phase (20)")
    p.add_argument("--sessions", type=int, default=4, help="concurrent sessions (4)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="audio send rate in multiples of real time (1.0)")  # fmt: skip
    p.add_argument("--corpus", default="data/tiny", help="corpus with test shards (data/tiny)")
    p.add_argument(
        "--force-speech", action="store_true",
        help="script each answer's shape (text chunk + audio frames) for a placeholder model "
        "that answers without speech; compute is the real model's",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="serve through the compiled forward (compiled before timing)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=bench_realtime)
    return p
