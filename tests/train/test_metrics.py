"""Metrics: TensorBoard event files (read back by TensorBoard's own readers), JSONL records,
resume trimming."""

import struct

import pytest

from omniflex.train import EventFileWriter, MetricsLogger, read_metrics
from tests.train.events import raw_events, scalars


def test_event_file_holds_the_scalars(tmp_path):
    writer = EventFileWriter(tmp_path)
    writer.add_scalars(3, {"train/loss": 2.5, "train/lr": 1e-3})
    writer.add_scalars(4, {"train/loss": 2.25})
    writer.close()
    data = writer.path.read_bytes()
    (first_len,) = struct.unpack("<Q", data[:8])
    assert b"brain.Event:2" in data[12 : 12 + first_len]  # the file-version record comes first
    events = raw_events(writer.path)
    assert events[0].file_version == "brain.Event:2"
    got = [(e.step, [(v.tag, v.simple_value) for v in e.summary.value]) for e in events[1:]]
    assert got == [(3, [("train/loss", 2.5), ("train/lr", pytest.approx(1e-3))]),
                   (4, [("train/loss", 2.25)])]  # fmt: skip


def test_a_corrupt_record_ends_what_tensorboard_reads(tmp_path):
    writer = EventFileWriter(tmp_path)
    writer.add_scalars(1, {"train/loss": 2.0})
    writer.add_scalars(2, {"train/loss": 1.0})
    writer.close()
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF  # inside the last record's data: its CRC no longer matches
    writer.path.write_bytes(bytes(data))
    assert [e.step for e in raw_events(writer.path)] == [0, 1]


def test_logger_writes_jsonl_and_tensorboard_and_trims_on_resume(tmp_path):
    logger = MetricsLogger(tmp_path, total_steps=10, progress=False)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 4.0 - step})
    logger.log(3, {"val_loss": 1.5})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 3]
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert scalars(tmp_path / "tb")["val/loss"] == [(3, 1.5)]

    resumed = MetricsLogger(tmp_path, total_steps=10, start_step=2, progress=False)
    resumed.log(3, {"loss": 0.5})
    resumed.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r.get("loss")) for r in records] == [(1, 3.0), (2, 2.0), (3, 0.5)]
    # TensorBoard drops the killed session's step 3 (loss and val/loss) for the resumed one.
    shown = scalars(tmp_path / "tb")
    assert shown["train/loss"] == [(1, 3.0), (2, 2.0), (3, 0.5)]
    assert shown.get("val/loss", []) == []
