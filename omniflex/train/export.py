"""Export a training run's weights as a model folder that ``load_pretrained`` and
``Assistant.from_pretrained`` read (``omniflex model export RUN --out DIR``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omniflex.model.config import ModelConfig
from omniflex.model.pretrained import save_pretrained
from omniflex.train.checkpoint import load_model_state

__all__ = ["export_run"]


def _training_summary(run: Path) -> dict[str, Any]:
    """Recipe, steps, losses and wall time from the run folder's ``metrics.jsonl``."""
    summary: dict[str, Any] = {"run": run.name}
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return summary
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_loss" in r]
    if steps:
        summary["steps"] = steps[-1]["step"]
        summary["final_train_loss"] = round(float(steps[-1]["loss"]), 4)
        times = [float(r["step_time_s"]) for r in steps if "step_time_s" in r]
        if times:  # each row's step time is a sample (rows every log_every steps)
            summary["mean_step_seconds"] = round(sum(times) / len(times), 3)
    if vals:
        summary["final_val_loss"] = round(float(vals[-1]["val_loss"]), 4)
        summary["val_losses"] = {str(r["step"]): round(float(r["val_loss"]), 4) for r in vals}
    if rows:  # from the first logged row (after log_every steps) to the last
        summary["wall_seconds"] = round(float(rows[-1]["time"]) - float(rows[0]["time"]), 1)
    config = run / "config.yaml"
    if config.is_file():
        summary["config"] = config.read_text()
    return summary


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    template: dict[str, Any] | None = None,
) -> Path:
    """Write ``out/`` (config.json, model.safetensors, autoflex.json) from the latest checkpoint
    of ``run`` (a run folder, its ``checkpoints/`` or one ``step_*`` folder)."""
    run = Path(run)
    state, model_config = load_model_state(run)
    if model_config is None:
        raise ValueError(f"{run} holds no model config; it is not an omniflex training run")
    config = ModelConfig.from_dict(model_config)
    root = run if (run / "metrics.jsonl").is_file() else run.parent.parent
    return save_pretrained(
        out, state, config, name=name or Path(out).name,
        # the template reads media the way the model was built to: the config decides
        template={**(template or {}), "input_features": config.input_encoders},
        training=_training_summary(root),
    )  # fmt: skip
