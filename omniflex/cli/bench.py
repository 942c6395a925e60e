"""``omniflex bench flex | tokenizers | model | realtime | soak``: benchmarks, each against
float32 or a reference in the same run.

Each suite imports what it measures when it runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load the model, the tokenizers or the server.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "bench"
HELP = "benchmarks that print ratios against float32"


def _cmd_flex(args: argparse.Namespace) -> int:
    from omniflex.flex.bench import run_flex_benchmarks

    results = run_flex_benchmarks(args.only, device=args.device, autoflex_state=args.autoflex_state)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            ratio = value.get("ratio") if isinstance(value, dict) else None
            goal = value.get("goal", "") if isinstance(value, dict) else ""
            shown = f"{ratio:.3f} (goal {goal})" if ratio is not None else json.dumps(value)
            print(f"{name:<24} {shown}")
    return 0


def _cmd_tokenizers(args: argparse.Namespace) -> int:
    from omniflex.eval.tokenizer_bench import run_tokenizer_benchmarks

    results = run_tokenizer_benchmarks(args.corpus, only=args.only, quick=args.quick)
    print(json.dumps(results, indent=2))
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from omniflex.model.bench import run_model_benchmarks

    print(json.dumps(run_model_benchmarks(args.only, threads=args.threads), indent=2))
    return 0


def _cmd_realtime(args: argparse.Namespace) -> int:
    from omniflex.serve.bench import run_realtime_bench

    result = run_realtime_bench(
        model=args.model, precision=args.precision, turns=args.turns, sessions=args.sessions,
        speed=args.speed, corpus=args.corpus, force_speech=args.force_speech,
        compile=args.compile, batch_decoding=args.batch_decoding,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:<28} {json.dumps(value)}")
    return 0


def _cmd_soak(args: argparse.Namespace) -> int:
    from omniflex.serve.soak import run_soak

    result = run_soak(
        minutes=args.minutes, model=args.model, precision=args.precision, rest=args.rest,
        sessions=args.sessions, turns_per_session=args.turns, warmup_seconds=args.warmup,
        corpus=args.corpus,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0 if result["flat"] and not result["errors"] else 1


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex bench flex | tokenizers | model | realtime | soak`` on the top-level
    subparsers."""
    # Imported here, not at the top: only `omniflex bench ...` pays for it (torch).
    from omniflex.flex.bench import BENCHMARKS

    bench = subparsers.add_parser(
        NAME, help=HELP,
        description="Benchmarks. Each compares against float32 in the same run.",
    )  # fmt: skip
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUITE", required=True)
    flex = bench_sub.add_parser(
        "flex",
        help="Flexpoint speed, memory and SQNR against float32",
        description=(
            "Measure Flexpoint against float32 on this machine: quantise vs clone of 16M "
            "elements, forward+backward of a 1024x1024 Linear and of a small MLP, stored "
            "parameter bytes in paper mode, and SQNR (dB) of a Linear, Conv2d and Embedding. "
            f"Benchmarks: {', '.join(BENCHMARKS)}."
        ),
    )
    flex.add_argument("--json", action="store_true", help="print the results as JSON")
    flex.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only these (repeatable)"
    )
    flex.add_argument(
        "--device", default="cpu", help="device of the timed benchmarks (default: cpu; e.g. cuda)"
    )
    flex.add_argument(
        "--autoflex-state", choices=["host", "device"], default="host",
        help="where the flex steps keep Autoflex's statistics (FlexConfig.autoflex_state)",
    )  # fmt: skip
    flex.set_defaults(func=_cmd_flex)

    tokenizers = bench_sub.add_parser(
        "tokenizers",
        help="quality, latency and speed of the shipped tokenizers (JSON)",
        description=(
            "Measure the shipped tokenizers on the corpus's held-out test split against the "
            "targets: audio speaker similarity and mel-cepstral distortion, latency, streaming "
            "decode speed; image PSNR on scenes and digits and the scene judge's match rate; "
            "text round trip; video token rates. Prints JSON."
        ),
    )
    tokenizers.add_argument(
        "--corpus", default="data/tiny", help="corpus folder (default: data/tiny)"
    )
    tokenizers.add_argument(
        "--only", action="append", choices=["text", "image", "audio", "video"],
        help="run only these (repeatable)",
    )  # fmt: skip
    tokenizers.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    tokenizers.set_defaults(func=_cmd_tokenizers)

    model = bench_sub.add_parser(
        "model",
        help="omni transformer speed and memory: flex16 vs float32 vs Hugging Face GPT-2 (JSON)",
        description=(
            "Measure the tiny omni transformer on the shipped vocabulary, in one run: decode "
            "tokens/s at batch 1 with the KV cache against a Hugging Face transformers GPT-2 of "
            "the same layers, width, heads and vocabulary (needs `pip install transformers`), "
            "ours eagerly and through the compiled forward (compiled before timing; the "
            "compilation's seconds are reported; flex16+5 also without the int16 decode "
            "kernel, for its share); flex16+5 training step at the tiny recipe's batch "
            "(8 x 512, after 2 untimed warm-up steps) and inference step time against "
            "float32; flex16 weight and "
            "KV-cache bytes against float32. Prints JSON with each ratio beside its target."
        ),
    )
    model.add_argument(
        "--only", action="append", choices=["memory", "decode", "inference_step", "train_step"],
        help="run only these (repeatable)",
    )  # fmt: skip
    model.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    model.set_defaults(func=_cmd_model)

    realtime = bench_sub.add_parser(
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
    realtime.add_argument("--model", default="tiny", help="shipped model or model folder (tiny)")
    realtime.add_argument("--precision", choices=["float32"], help="as trained unless float32")
    realtime.add_argument("--turns", type=int, default=20, help="spoken turns per phase (20)")
    realtime.add_argument("--sessions", type=int, default=4, help="concurrent sessions (4)")
    realtime.add_argument(
        "--speed", type=float, default=1.0, help="audio send rate in multiples of real time (1.0)"
    )
    realtime.add_argument(
        "--corpus", default="data/tiny", help="corpus with test shards (data/tiny)"
    )
    realtime.add_argument(
        "--force-speech", action="store_true",
        help="script each answer's shape (text chunk + audio frames) for a placeholder model "
        "that answers without speech; compute is the real model's",
    )  # fmt: skip
    realtime.add_argument(
        "--batch-decoding", action="store_true",
        help="sessions answering at once share decode forwards (omniflex serve "
        "--batch-decoding); default: each decodes on its own, as the server does by default",
    )  # fmt: skip
    realtime.add_argument(
        "--compile", action="store_true",
        help="serve through the compiled forward (compiled before timing)",
    )  # fmt: skip
    realtime.add_argument("--json", action="store_true", help="print the results as JSON")
    realtime.set_defaults(func=_cmd_realtime)

    soak = bench_sub.add_parser(
        "soak", help="mixed REST and Realtime traffic for N minutes: errors, latency, leaks (JSON)",
        description=(
            "Start the server in-process on a free loopback port (voice guard on) and drive it "
            "with the official openai client for MINUTES after a warm-up: REST clients loop "
            "typed chat completions (plain, streamed, spoken), Realtime clients loop sessions "
            "of spoken held-out-voice questions (sent at 4x real time). Prints requests, errors "
            "and p50/p99 latency per kind, and the process's memory, file descriptors and "
            "threads at the start and end of the timed phase; exits 1 unless they stayed flat "
            "and nothing failed."
        ),
    )  # fmt: skip
    soak.add_argument("--minutes", type=float, default=1.0, help="timed phase (1.0)")
    soak.add_argument("--warmup", type=float, default=20.0, help="warm-up seconds (20)")
    soak.add_argument("--model", default="tiny", help="shipped model or model folder (tiny)")
    soak.add_argument("--precision", choices=["float32"], help="as trained unless float32")
    soak.add_argument("--rest", type=int, default=2, help="concurrent REST clients (2)")
    soak.add_argument("--sessions", type=int, default=2, help="concurrent Realtime clients (2)")
    soak.add_argument("--turns", type=int, default=2, help="spoken turns per session (2)")
    soak.add_argument(
        "--corpus", default="data/tiny", help="corpus with test shards for the questions"
    )
    soak.set_defaults(func=_cmd_soak)
    return bench
