"""Flexpoint telemetry: per-tensor exponent traces, overflows, flushes and headroom.

``FlexTelemetry`` appends one JSON line per tensor per recorded step; ``plot_telemetry`` turns
the file into a PNG of exponent traces with overflow events marked, which is where one looks
first when a flex run diverges from its float32 twin.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from omniflex.flex.autoflex_device import AnyAutoflexState
from omniflex.flex.convert import flex_states

__all__ = ["FlexTelemetry", "plot_telemetry", "read_telemetry"]


class FlexTelemetry:
    """Writes Autoflex statistics as JSONL.

    Example::

        telemetry = FlexTelemetry("runs/x/flex.jsonl", every=10)
        for step in range(steps):
            ...
            telemetry.record(step, model, optimizer)
    """

    def __init__(self, path: str | Path, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every = every
        self._file = self.path.open("a")

    def record(self, step: int, model: nn.Module, optimizer: Any | None = None) -> int:
        """Append the current statistics of every state; returns the number of lines written."""
        if step % self.every:
            return 0
        states: list[AnyAutoflexState] = list(flex_states(model))
        if optimizer is not None and hasattr(optimizer, "flex_states"):
            states.extend(optimizer.flex_states())
        for st in states:
            self._file.write(json.dumps({"step": step, **st.telemetry()}) + "\n")
        self._file.flush()
        return len(states)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FlexTelemetry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_telemetry(path: str | Path) -> list[dict[str, Any]]:
    """Read a telemetry JSONL file; a malformed line raises ``ValueError`` naming it."""
    rows = []
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"telemetry file {path} does not exist; record one first")
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno} is not valid JSON ({err.msg})") from None
    return rows


def plot_telemetry(
    path: str | Path, out: str | Path, tensors: Iterable[str] | None = None, max_tensors: int = 12
) -> Path:
    """Draw exponent traces (and headroom) per tensor with overflow events marked as a PNG.

    ``tensors`` are glob patterns on tensor names (default: every tensor, capped at
    ``max_tensors``, those with the most overflows first).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_telemetry(path)
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[r["tensor"]].append(r)
    names = list(series)
    if tensors:
        patterns = list(tensors)
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not names:
        raise ValueError(f"no tensors in {path} match {list(tensors or [])}")
    names.sort(key=lambda n: -series[n][-1]["overflows"])
    names = names[:max_tensors]

    fig, (ax_e, ax_h) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name in names:
        pts = series[name]
        steps = [p["step"] for p in pts]
        (line,) = ax_e.step(steps, [p["exponent"] for p in pts], where="post", label=name)
        ax_h.plot(steps, [p["headroom_bits"] for p in pts], color=line.get_color(), lw=1)
        events = [p for prev, p in itertools.pairwise(pts) if p["overflows"] > prev["overflows"]]
        if events:
            ax_e.scatter(
                [p["step"] for p in events], [p["exponent"] for p in events],
                marker="x", color=line.get_color(), zorder=3,
            )  # fmt: skip
    ax_e.set_ylabel("exponent (scale = 2^e)")
    ax_e.set_title("Autoflex exponent traces (x = overflow, recomputed)")
    ax_e.legend(fontsize=7, ncol=2)
    ax_h.set_ylabel("headroom bits")
    ax_h.set_xlabel("step")
    ax_h.axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
