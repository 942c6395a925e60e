"""``omniflex``: one subcommand per job. Run ``omniflex <command> --help`` for details."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from omniflex import __version__


def _cmd_flex_demo(args: argparse.Namespace) -> int:
    from omniflex.cli.flex_demo import format_summary, run_demo

    result = run_demo(args.out, steps=args.steps, seed=args.seed, recipe=args.recipe)
    print(format_summary(result))
    return 0


def _cmd_flex_plot(args: argparse.Namespace) -> int:
    from omniflex.flex import plot_telemetry

    out = args.out or str(args.telemetry).removesuffix(".jsonl") + ".png"
    path = plot_telemetry(args.telemetry, out, tensors=args.tensor, max_tensors=args.max_tensors)
    print(f"wrote {path}")
    return 0


def _cmd_bench_flex(args: argparse.Namespace) -> int:
    from omniflex.flex.bench import run_flex_benchmarks

    results = run_flex_benchmarks(args.only)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            ratio = value.get("ratio") if isinstance(value, dict) else None
            goal = value.get("goal", "") if isinstance(value, dict) else ""
            shown = f"{ratio:.3f} (goal {goal})" if ratio is not None else json.dumps(value)
            print(f"{name:<24} {shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from omniflex.flex.bench import BENCHMARKS
    from omniflex.flex.config import RECIPES

    parser = argparse.ArgumentParser(
        prog="omniflex",
        description="Build, train and serve omni models in the Flexpoint number format.",
    )
    parser.add_argument("--version", action="version", version=f"omniflex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    flex = sub.add_parser(
        "flex", help="Flexpoint tools: demo, telemetry plots",
        description="Flexpoint (flex16+5) tools.",
    )  # fmt: skip
    flex_sub = flex.add_subparsers(dest="flex_command", metavar="SUBCOMMAND", required=True)
    demo = flex_sub.add_parser(
        "demo",
        help="train an MLP in float32 and flex16+5 side by side; print losses, write plots",
        description=(
            "Train the same MLP on scikit-learn's handwritten digits in float32 and in Flexpoint "
            "(paper mode: no float32 master weights), with the same initial weights, batches and "
            "hyperparameters. Prints final losses and test accuracy; writes losses.png, "
            "exponents.png (Autoflex traces), flex_telemetry.jsonl and summary.json."
        ),
    )
    demo.add_argument(
        "--out", default="runs/flex-demo", help="output folder (default: %(default)s)"
    )
    demo.add_argument(
        "--steps", type=int, default=300, help="training steps (default: %(default)s)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--recipe", default="flex16+5", choices=sorted(RECIPES),
        help="flex recipe for the flex run (default: %(default)s)",
    )  # fmt: skip
    demo.set_defaults(func=_cmd_flex_demo)

    plot = flex_sub.add_parser(
        "plot",
        help="draw exponent traces and overflow events from a telemetry JSONL file",
        description=(
            "Read a FlexTelemetry JSONL file and draw, per tensor, its Autoflex exponent over "
            "steps (overflow events marked x) and its unused headroom bits, as a PNG."
        ),
    )
    plot.add_argument("telemetry", help="telemetry .jsonl file written by FlexTelemetry")
    plot.add_argument("--out", help="PNG path (default: next to the telemetry file)")
    plot.add_argument(
        "--tensor", action="append",
        help="glob on tensor names to include, e.g. '*.grad_weight' (repeatable)",
    )  # fmt: skip
    plot.add_argument("--max-tensors", type=int, default=12, help="at most this many tensors")
    plot.set_defaults(func=_cmd_flex_plot)

    bench = sub.add_parser(
        "bench", help="benchmarks that print ratios against float32",
        description="Benchmarks. Each compares against float32 in the same run.",
    )  # fmt: skip
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="SUITE", required=True)
    bflex = bench_sub.add_parser(
        "flex",
        help="Flexpoint speed, memory and SQNR against float32",
        description=(
            "Measure Flexpoint against float32 on this machine: quantise vs clone of 16M "
            "elements, forward+backward of a 1024x1024 Linear and of a small MLP, stored "
            "parameter bytes in paper mode, and SQNR (dB) of a Linear, Conv2d and Embedding. "
            f"Benchmarks: {', '.join(BENCHMARKS)}."
        ),
    )
    bflex.add_argument("--json", action="store_true", help="print the results as JSON")
    bflex.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), help="run only these (repeatable)"
    )
    bflex.set_defaults(func=_cmd_bench_flex)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"omniflex: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
