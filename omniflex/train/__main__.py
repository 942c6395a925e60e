"""``python -m omniflex.train --recipe NAME [key=value ...] [--resume]`` (``torchrun`` too)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from omniflex.train.config import TrainConfig
from omniflex.train.recipes import list_recipes
from omniflex.train.run import train_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m omniflex.train",
        description="Train an omni model from a recipe; launch with torchrun for several "
        "processes.",
        epilog=f"recipes: {', '.join(list_recipes()) or 'none found'}; "
        f"override keys: {', '.join(TrainConfig.field_names())}, model_overrides.FIELD",
    )
    parser.add_argument("--recipe", default="tiny", help="recipe name in recipes/ or a YAML path")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    is_main = os.environ.get("RANK", "0") == "0"
    try:
        out_dir = train_main(args.recipe, args.overrides, resume=args.resume)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # a user error: no traceback
        if is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main:
        print(f"run folder: {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
