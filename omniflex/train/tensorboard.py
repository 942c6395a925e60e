"""TensorBoard event files of training scalars, written by ``tensorboardX``.

``tensorboardX`` owns the format: its ``Event``/``Summary`` protocol buffers and its
``RecordWriter`` (TFRecord framing with masked CRC-32C). It needs only ``protobuf`` to write;
``torch.utils.tensorboard`` would pull the whole ``tensorboard`` package (grpcio, absl, …)
into every training process, which only viewing the files needs.

Records are written here, not through ``tensorboardX.SummaryWriter``, because that one queues
events to a background thread whose ``flush`` does not wait for them: here each ``add_scalars``
is one event, on disk at ``flush``, in a file whose ``path`` is known.

``tensorboard --logdir RUN/tb`` reads the files. A ``SessionLog`` START at step ``s`` (written
when a run resumes) makes TensorBoard drop the events at and after ``s`` left by the killed run.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tensorboardX import RecordWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

__all__ = ["EventFileWriter"]


class EventFileWriter:
    """Append scalar events to ``logdir/events.out.tfevents.<time>.<host>.<pid>``.

    Args:
        logdir: folder (created).
        purge_step: on resume, the first step of this session; TensorBoard discards events at
            or after it from earlier sessions.
    """

    def __init__(self, logdir: str | Path, *, purge_step: int | None = None) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{now:.6f}.{socket.gethostname()}.{os.getpid()}"
        self.path = self.logdir / name
        self._records = RecordWriter(str(self.path))
        self._closed = False
        self._write(Event(wall_time=now, step=0, file_version="brain.Event:2"))
        if purge_step is not None:
            start = SessionLog(status=SessionLog.START)
            self._write(Event(wall_time=now, step=purge_step, session_log=start))
        self.flush()

    def _write(self, event: Event) -> None:
        self._records.write(event.SerializeToString())

    def add_scalars(self, step: int, scalars: dict[str, float], wall_time: float | None = None):
        """One event holding every ``tag: value`` pair at ``step``."""
        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
        summary = Summary(value=values)
        self._write(Event(wall_time=wall_time or time.time(), step=step, summary=summary))

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        if not self._closed:
            self._records.close()
            self._closed = True
