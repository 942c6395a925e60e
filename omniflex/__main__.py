"""``python -m omniflex ARGS`` is ``omniflex ARGS``; ``torchrun --nproc_per_node N -m omniflex
train ...`` trains in N processes (torchrun runs a module, not a console script)."""

from __future__ import annotations

import sys

from omniflex.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
