"""Event files read back as TensorBoard reads them (the ``tensorboard`` package's readers)."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader


def raw_events(path: str | Path) -> list:
    """Every ``Event`` of one event file as written, in order (no purging, and scalars left as
    ``simple_value``, not migrated to tensors)."""
    return list(LegacyEventFileLoader(str(path)).Load())


def scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of a run's TensorBoard folder, as TensorBoard shows it
    (events purged by a later session's START dropped)."""
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
