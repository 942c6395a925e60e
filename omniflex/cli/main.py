"""``omniflex``: one subcommand per job. Run ``omniflex <command> --help`` for details.

The command table: each module of ``omniflex.cli`` owns one top-level command (its parser, in
``add_parser``, beside the code it runs). ``torchrun -m omniflex train ...``
(``omniflex/__main__.py``) runs training in several processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from omniflex import __version__
from omniflex.cli import bench, card, chat, data, flex, generate, model, safety, serve, tokenizer
from omniflex.cli import eval as eval_
from omniflex.cli import train as train_

__all__ = ["COMMANDS", "build_parser", "main"]

# In the order ``omniflex --help`` lists them.
COMMANDS = (flex, data, train_, generate, model, safety, tokenizer, bench, eval_, chat, serve, card)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``omniflex`` parser: every command of ``COMMANDS`` with its subcommands.

    With ``command`` (the one being run, or ``""`` for ``omniflex --help``) only that command's
    parser is built; the others are listed by their one line. A command's parser imports what
    its choices come from (torch, the model, the evaluations), seconds that no other command
    should pay."""
    parser = argparse.ArgumentParser(
        prog="omniflex",
        description="Build, train and serve omni models in the Flexpoint number format.",
    )
    parser.add_argument("--version", action="version", version=f"omniflex {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        if command is None or command == module.NAME:
            module.add_parser(subparsers)
        else:
            subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The command ``argv`` runs (its first word), or ``""`` when it names none."""
    words = [a for a in argv if not a.startswith("-")]
    return words[0] if words else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``omniflex`` command; a user error (bad input, missing file) prints one line and
    returns 2 instead of a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Under torchrun every process meets the same error; one of them says it.
        if os.environ.get("RANK", "0") == "0":
            print(f"omniflex: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
