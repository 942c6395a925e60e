"""A minimal TensorBoard event-file writer for scalars, with no dependency.

``torch.utils.tensorboard`` needs the ``tensorboard`` package (and protobuf, grpcio, werkzeug…)
just to *write* files; viewing them needs it anyway, training should not. An event file is a
TFRecord stream of ``Event`` protocol buffers, and scalars need only five fields of it, so they
are encoded here by hand:

    record  = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
    Event   = 1: wall_time (double) | 2: step (int64) | 3: file_version (string)
              | 5: summary (Summary) | 7: session_log (SessionLog)
    Summary = 1: repeated Value;  Value = 1: tag (string) | 2: simple_value (float)

``tensorboard --logdir RUN/tb`` reads them. A ``SessionLog`` START at step ``s`` (written when a
run resumes) makes TensorBoard drop the events at and after ``s`` left by the killed run.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

__all__ = ["EventFileWriter", "crc32c", "read_scalars"]


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 two's complement, as protobuf writes negatives
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def _scalar_value(tag: str, value: float) -> bytes:
    return _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value)


class EventFileWriter:
    """Append scalar events to ``logdir/events.out.tfevents.<time>.<host>``.

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
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        self._write(_event(now, 0, _field_bytes(3, b"brain.Event:2")))
        if purge_step is not None:
            session_start = _field_bytes(7, b"\x08\x01")  # SessionLog{status: START}
            self._write(_event(now, purge_step, session_start))
        self.flush()

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._file.write(header + struct.pack("<I", _masked_crc(header)))
        self._file.write(data + struct.pack("<I", _masked_crc(data)))

    def add_scalars(self, step: int, scalars: dict[str, float], wall_time: float | None = None):
        """One event holding every ``tag: value`` pair at ``step``."""
        values = b"".join(_field_bytes(1, _scalar_value(t, float(v))) for t, v in scalars.items())
        self._write(_event(wall_time or time.time(), step, _field_bytes(5, values)))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in an event file written here (checks CRCs)."""
    data = Path(path).read_bytes()
    out: list[tuple[int, str, float]] = []
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        if crc != _masked_crc(header):
            raise ValueError(f"{path}: corrupt record length at byte {pos}")
        body = data[pos + 12 : pos + 12 + length]
        (crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        if crc != _masked_crc(body):
            raise ValueError(f"{path}: corrupt record at byte {pos}")
        pos += 16 + length
        step = 0
        for number, value in _fields(body):
            if number == 2:
                step = value
            elif number == 5:
                for vnum, v in _fields(value):
                    if vnum == 1:
                        tag, scalar = "", 0.0
                        for fnum, f in _fields(v):
                            if fnum == 1:
                                tag = f.decode()
                            elif fnum == 2:
                                scalar = f
                        out.append((step, tag, scalar))
    return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _fields(buf: bytes) -> list[tuple[int, object]]:
    """Decode a protobuf message into ``(field number, value)`` pairs (wire types 0, 1, 2, 5)."""
    out: list[tuple[int, object]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            (value,) = struct.unpack("<d", buf[pos : pos + 8])
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            (value,) = struct.unpack("<f", buf[pos : pos + 4])
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((number, value))
    return out
