"""``omniflex card``: write the system card of a model from measured results.

The command (``omniflex.eval.card.write_card`` does the work)::

    omniflex card --model tiny --out card/ [--eval EVAL.json] [--float32-eval F.json]
                  [--safety SAFETY.json] [--latency BENCH.json] [--corpus data/tiny] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "card"
HELP = "write the system card (Markdown + self-contained HTML) from measured results"


def _cmd_card(args: argparse.Namespace) -> int:
    import torch

    from omniflex.eval.card import write_card

    torch.set_num_threads(args.threads)
    written = write_card(
        args.model, args.out, eval_path=args.eval, float32_eval_path=args.float32_eval,
        safety_path=args.safety, latency_path=args.latency, corpus=args.corpus,
        quick=args.quick, progress=not args.no_progress,
    )  # fmt: skip
    for what, path in written.items():
        print(f"{what}: {path}", file=sys.stderr)
    print(written["markdown"])
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex card`` on the top-level parser's subparsers."""
    card = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Write OUT/system_card.md and OUT/system_card.html (inline CSS, plots embedded; no "
            "external assets): the model and its training data, capability evaluations per "
            "modality, flex16+5 against float32, speech latency, each safety risk with its "
            "mitigation and our figure beside GPT-4o's, robustness to noise and to the input "
            "voice, and limitations written from the numbers. Every number comes from an "
            "input JSON; the appendix lists each with its file and key. A capability (--eval) "
            "or safety (--safety) result that is not given is measured first (--quick: a few "
            "samples per task) and written to OUT."
        ),
    )  # fmt: skip
    card.add_argument("--model", default="tiny", help="model name or folder (default: tiny)")
    card.add_argument("--out", required=True, help="folder for the card")
    card.add_argument("--eval", help="capability result (`omniflex eval --out DIR`: eval.json)")
    card.add_argument(
        "--float32-eval",
        help="capability result of the float32 weights (`omniflex eval --precision float32`)",
    )
    card.add_argument("--safety", help="safety result (`omniflex eval safety --out DIR`)")
    card.add_argument("--latency", help="speech latency (`omniflex bench realtime --json`)")
    card.add_argument(
        "--corpus", default="data/tiny",
        help="corpus folder: its data_card.json, and the evaluations run here (default: data/tiny)",
    )  # fmt: skip
    card.add_argument("--quick", action="store_true", help="evaluations run here are smoke runs")
    card.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    card.add_argument("--no-progress", action="store_true", help="no progress bar")
    card.set_defaults(func=_cmd_card)
    return card
