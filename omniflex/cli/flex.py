"""``omniflex flex demo | plot | repro``: Flexpoint tools.

Each command imports what it runs when it runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load the training code it does not use.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "flex"
HELP = "Flexpoint tools: demo, telemetry plots"


def _cmd_demo(args: argparse.Namespace) -> int:
    from omniflex.cli.flex_demo import format_summary, run_demo

    result = run_demo(args.out, steps=args.steps, seed=args.seed, recipe=args.recipe)
    print(format_summary(result))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from omniflex.flex import plot_telemetry

    out = args.out or str(args.telemetry).removesuffix(".jsonl") + ".png"
    path = plot_telemetry(args.telemetry, out, tensors=args.tensor, max_tensors=args.max_tensors)
    print(f"wrote {path}")
    return 0


def _cmd_repro(args: argparse.Namespace) -> int:
    from omniflex.eval.flex_repro import EXPERIMENTS, run_repro

    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    overrides = {
        k: v
        for k, v in {
            "formats": tuple(args.formats) if args.formats else None,
            "seeds": args.seeds, "other_seeds": args.other_seeds, "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr, "depth": args.depth, "width": args.width,
            "train_size": args.train_size, "test_size": args.test_size, "device": args.device,
            "telemetry_every": args.telemetry_every,
        }.items()
        if v is not None
    }  # fmt: skip
    if args.smoke:
        overrides = {"steps": 3, "batch_size": 8, "seeds": 2, "train_size": 64,
                     "test_size": 32, "telemetry_every": 1, **overrides}  # fmt: skip
    command = (
        "omniflex " + " ".join(sys.argv[1:]) if args.command_line is None else args.command_line
    )
    report = run_repro(names, args.out, command=command, **overrides)
    print(f"wrote {report}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex flex demo | plot | repro`` on the top-level subparsers."""
    # Imported here, not at the top: only `omniflex flex ...` pays for it (torch).
    from omniflex.flex.config import RECIPES

    flex = subparsers.add_parser(
        NAME, help=HELP,
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
    demo.set_defaults(func=_cmd_demo)

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
    plot.set_defaults(func=_cmd_plot)

    repro = flex_sub.add_parser(
        "repro",
        help="reproduce the Flexpoint paper: flex16+5 vs float32, float16, bfloat16",
        description=(
            "Train each experiment (resnet, alexnet, wgan, lm, or all) under each number format "
            "with the same seed and hyperparameters: float32 (several seeds, for the noise band), "
            "flex16+5 in the paper's mode, and emulated float16 and bfloat16 without loss "
            "scaling or master weights. Writes a report folder: report.md with a table, "
            "learning curves, Autoflex exponent traces and the command. Defaults are CPU-sized; "
            "--depth/--width/--steps/--train-size scale to paper size on a GPU (--device cuda)."
        ),
    )
    repro.add_argument("experiment", choices=["resnet", "alexnet", "wgan", "lm", "all"])
    repro.add_argument(
        "--out", default="reports/flex-repro", help="report folder (default: %(default)s)"
    )
    repro.add_argument(
        "--formats", nargs="+",
        help="formats to run (default: float32 flex16+5 float16 bfloat16; also flex12+5 flex8+5)",
    )  # fmt: skip
    repro.add_argument("--seeds", type=int, help="float32 seeds for the noise band (default 3)")
    repro.add_argument(
        "--other-seeds", type=int, help="seeds for every other format (default 1: seed 0)"
    )
    repro.add_argument("--steps", type=int, help="training steps (default: per experiment)")
    repro.add_argument("--batch-size", type=int, help="batch size (default: per experiment)")
    repro.add_argument("--lr", type=float, help="learning rate (default: per experiment)")
    repro.add_argument("--depth", type=int, help="ResNet depth 6n+2 (default 8; paper: 110)")
    repro.add_argument("--width", type=int, help="base width (default: per experiment)")
    repro.add_argument("--train-size", type=int, help="training images (default 8000)")
    repro.add_argument("--test-size", type=int, help="test images (default 2000)")
    repro.add_argument("--telemetry-every", type=int, help="flex telemetry interval (default 10)")
    repro.add_argument("--device", help="torch device (default cpu)")
    repro.add_argument("--smoke", action="store_true", help="a few steps per format (for tests)")
    repro.add_argument("--command-line", help=argparse.SUPPRESS)
    repro.set_defaults(func=_cmd_repro)
    return flex
