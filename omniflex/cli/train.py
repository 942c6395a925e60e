"""``omniflex train``: train an omni model from a recipe, in one process or under ``torchrun``::

    omniflex train --recipe tiny steps=100
    torchrun --nproc_per_node 2 -m omniflex.cli.main train --recipe tiny

The trainer is imported when the command runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from omniflex.train.config import TrainConfig
from omniflex.train.recipes import list_recipes

__all__ = ["add_parser"]


def _cmd_train(args: argparse.Namespace) -> int:
    from omniflex.train.run import train_main

    out_dir = train_main(args.recipe, args.overrides, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {out_dir}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex train`` on the top-level subparsers."""
    train = subparsers.add_parser(
        "train", help="train an omni model from a recipe (1 CPU process, or torchrun)",
        description=(
            "Train the omni transformer from a YAML recipe in recipes/ (listed below) or a "
            "path, with key=value overrides (e.g. steps=100 lr=1e-3 "
            "model_overrides.n_layers=2). Needs token caches: run `omniflex data "
            "tokenize` first. Writes metrics.jsonl, TensorBoard events and atomic checkpoints "
            "to the run folder; --resume continues bit for bit. For several processes: "
            "`torchrun --nproc_per_node 2 -m omniflex.cli.main train --recipe tiny`."
        ),
        epilog=(
            f"recipes: {', '.join(list_recipes()) or 'none found'}; "
            f"override keys: {', '.join(TrainConfig.field_names())}, model_overrides.FIELD"
        ),
    )  # fmt: skip
    train.add_argument(
        "--recipe", default="tiny", help="recipe name in recipes/ or a YAML path (default: tiny)"
    )
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    train.set_defaults(func=_cmd_train)
    return train
