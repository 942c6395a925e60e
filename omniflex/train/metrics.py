"""Training metrics: ``metrics.jsonl``, TensorBoard event files and a progress bar, on rank 0.

Every other rank gets a ``NullLogger`` with the same methods, so the trainer never asks "am I
rank 0?" before logging. A resumed run first drops the records the killed run wrote after its
last checkpoint (they describe steps that are about to be trained again), in the JSONL file and,
through a TensorBoard ``SessionLog`` START, in the event files.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from omniflex.common.files import write_atomic
from omniflex.train.tensorboard import EventFileWriter

__all__ = ["Logger", "MetricsLogger", "NullLogger", "read_metrics"]


class Logger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def advance(self, step: int, postfix: dict[str, float] | None = None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    """Stands in for ``MetricsLogger`` on ranks other than 0: every call does nothing."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def advance(self, step: int, postfix: dict[str, float] | None = None) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLogger:
    """Writes ``out_dir/metrics.jsonl`` and ``out_dir/tb/`` and drives a tqdm bar.

    Args:
        out_dir: the run folder.
        total_steps: for the progress bar.
        start_step: steps already done (a resumed run); later records in ``metrics.jsonl`` are
            dropped.
        tensorboard: write event files.
        progress: show a progress bar.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        _truncate_after(self.jsonl_path, start_step)
        self._jsonl = open(self.jsonl_path, "a")  # noqa: SIM115 (closed in close())
        # TensorBoard drops events at or after the purge step from earlier sessions' files.
        self._tb = None
        if tensorboard:
            self._tb = EventFileWriter(self.out_dir / "tb", purge_step=start_step + 1)
        self._bar = tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
            disable=not progress,
        )  # fmt: skip

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """One record: ``{"step": step, "time": unix seconds, **metrics}``."""
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            scalars = {_tag(k): v for k, v in metrics.items() if _is_number(v)}
            self._tb.add_scalars(step, scalars)
            self._tb.flush()

    def advance(self, step: int, postfix: dict[str, float] | None = None) -> None:
        """Move the bar to ``step`` and show ``postfix`` beside it."""
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self._bar.update(step - self._bar.n)

    def message(self, text: str) -> None:
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        if not self._jsonl.closed:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a ``metrics.jsonl`` (a run folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _tag(key: str) -> str:
    if key.startswith("val_"):
        return "val/" + key.removeprefix("val_")
    return "train/" + key


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _truncate_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= ``step`` (all of them when nothing is resumed)."""
    if not path.exists() or step <= 0:
        if path.exists() and step <= 0:
            path.unlink()  # a fresh run in an old folder starts a fresh file
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    write_atomic(path, "".join(line + "\n" for line in kept).encode())
