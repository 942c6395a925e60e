"""``python -m omniflex.train ARGS`` is ``omniflex train ARGS`` (``torchrun -m omniflex.train``
too), kept for the commands already written down in recipes and the README.

A launcher, not part of the library: it is the one file in ``omniflex.train`` that reaches up
to ``omniflex.cli``, whose ``train`` command owns the only training parser.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omniflex.cli.main import main as omniflex_main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``omniflex train`` with ``argv`` (default: this process's arguments)."""
    return omniflex_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
