"""Run by ``torchrun`` from ``test_distributed.py``: train the stand-in for each run of a spec
file (``{"runs": [{"name", "config", "max_steps", "resume"}], "out"}``) within one process group,
and (rank 0) write the losses as JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from omniflex.train import TrainConfig, init_distributed, run_training, shutdown_distributed
from tests.train.standin import build_standin


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    ctx = init_distributed("cpu")
    results = {}
    try:
        for run in spec["runs"]:
            result = run_training(
                TrainConfig.from_dict(run["config"]),
                build_model=build_standin,
                ctx=ctx,
                max_steps=run.get("max_steps"),
                resume=run.get("resume", False),
            )
            results[run["name"]] = {"losses": result.losses, "val_losses": result.val_losses}
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        Path(spec["out"]).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
