"""``omniflex train``: train an omni model from a recipe, in one process or under ``torchrun``::

    omniflex train --recipe tiny steps=100
    torchrun --nproc_per_node 2 -m omniflex train --recipe tiny

The trainer is imported when the command runs, so that building the parser (every
``omniflex`` call, ``--help`` included) does not load it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["add_parser"]


# The command and its one line in ``omniflex --help`` (listed without building the parser).
NAME = "train"
HELP = "train an omni model from a recipe (1 CPU process, or torchrun)"


def _cmd_train(args: argparse.Namespace) -> int:
    from omniflex.train.run import train_main

    if args.speech_encoder:
        return _cmd_speech_encoder(args)
    out_dir = train_main(args.recipe, args.overrides, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(f"run folder: {out_dir}")
    return 0


def _cmd_speech_encoder(args: argparse.Namespace) -> int:
    from omniflex.train.recipes import load_recipe
    from omniflex.train.run import model_config_of
    from omniflex.train.speech_encoder import pretrain_speech_encoder

    config = load_recipe(args.recipe, args.overrides)
    if not config.init_speech_from:
        raise ValueError(
            f"recipe {args.recipe!r} has no init_speech_from: name the folder its stage 0 "
            "writes (e.g. init_speech_from=runs/speech-encoder)"
        )
    pretrain_speech_encoder(
        model_config_of(config), config.train_data, config.val_data, config.init_speech_from,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, upsample=args.upsample,
        augment=not args.no_augment, seed=config.seed,
        threads=config.threads or None, progress=config.progress,
    )  # fmt: skip
    print(f"speech encoder: {config.init_speech_from}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``omniflex train`` on the top-level subparsers."""
    # Imported here, not at the top: only `omniflex train ...` pays for it (torch).
    from omniflex.train.config import TrainConfig
    from omniflex.train.recipes import list_recipes

    train = subparsers.add_parser(
        NAME, help=HELP,
        description=(
            "Train the omni transformer from a YAML recipe in recipes/ (listed below) or a "
            "path, with key=value overrides (e.g. steps=100 lr=1e-3 "
            "model_overrides.n_layers=2). Needs token caches: run `omniflex data "
            "tokenize` first. Writes metrics.jsonl, TensorBoard events and atomic checkpoints "
            "to the run folder; --resume continues bit for bit. For several processes: "
            "`torchrun --nproc_per_node 2 -m omniflex train --recipe tiny`."
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
    stage0 = train.add_argument_group(
        "stage 0",
        "--speech-encoder pretrains the recipe's speech encoder alone with CTC over letters on "
        "the heard clips (ASR and speech-as-ASR documents) of its train_data, scores it on the "
        "ASR clips of its val_data (held-out voices) and writes the best to its "
        "init_speech_from folder, where the next `omniflex train` starts it from.",
    )
    stage0.add_argument(
        "--speech-encoder", action="store_true", help="run stage 0 instead of the recipe"
    )
    stage0.add_argument("--steps", type=int, default=2000, help="stage-0 steps (default: 2000)")
    stage0.add_argument(
        "--batch-size", type=int, default=48, help="clips a stage-0 step (default: 48)"
    )
    stage0.add_argument("--lr", type=float, default=2e-3, help="stage-0 peak rate (default: 2e-3)")
    stage0.add_argument(
        "--upsample", type=int, default=2,
        help="CTC frames the letter head spells per 40 ms row (default: 2; fast voices say up "
        "to 20 letters a second)",
    )  # fmt: skip
    stage0.add_argument(
        "--no-augment", action="store_true",
        help="train on the clips as they are, without the mel-axis warp and band/frame masks",
    )  # fmt: skip
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    train.set_defaults(func=_cmd_train)
    return train
