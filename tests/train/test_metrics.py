"""Metrics: TensorBoard event files (CRC and protobuf framing), JSONL records, resume trimming."""

import struct

from omniflex.train import EventFileWriter, MetricsLogger, read_metrics, read_scalars
from omniflex.train.tensorboard import crc32c


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_event_file_holds_the_scalars(tmp_path):
    writer = EventFileWriter(tmp_path)
    writer.add_scalars(3, {"train/loss": 2.5, "train/lr": 1e-3})
    writer.add_scalars(4, {"train/loss": 2.25})
    writer.close()
    data = writer.path.read_bytes()
    (first_len,) = struct.unpack("<Q", data[:8])
    assert b"brain.Event:2" in data[12 : 12 + first_len]  # the file-version record comes first
    got = read_scalars(writer.path)
    assert [(s, t) for s, t, _ in got] == [(3, "train/loss"), (3, "train/lr"), (4, "train/loss")]
    assert got[0][2] == 2.5 and abs(got[1][2] - 1e-3) < 1e-9


def test_logger_writes_jsonl_and_tensorboard_and_trims_on_resume(tmp_path):
    logger = MetricsLogger(tmp_path, total_steps=10, progress=False)
    for step in (1, 2, 3):
        logger.log(step, {"loss": 4.0 - step})
    logger.log(3, {"val_loss": 1.5})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 3]
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert "val/loss" in {t for _, t, _ in read_scalars(events[0])}

    resumed = MetricsLogger(tmp_path, total_steps=10, start_step=2, progress=False)
    resumed.log(3, {"loss": 0.5})
    resumed.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], r.get("loss")) for r in records] == [(1, 3.0), (2, 2.0), (3, 0.5)]
