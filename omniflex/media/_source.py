"""Shared checks for media inputs and outputs: existence, size limits, labels, safe writes.

Every reader takes a path or the file's bytes. The checks here run before any decoder sees the
data, so a missing, empty or oversized file fails fast with a message that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

from omniflex.common.files import write_atomic as common_write_atomic
from omniflex.media.errors import MediaError

__all__: list[str] = []  # private helpers for the media readers and writers

Source = str | os.PathLike[str] | bytes


def label_of(source: Source, name: str | None) -> str:
    """What error messages call the input: ``name``, else the path, else ``<N bytes>``."""
    if name:
        return name
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<{len(source)} bytes in memory>"
    return str(source)


def human_size(n: int) -> str:
    """``1536`` -> ``'1.5 KB'`` (powers of 1000, like file managers)."""
    if n < 1000:
        return f"{n} bytes"
    for unit, scale in (("KB", 1e3), ("MB", 1e6)):
        if n < scale * 1000:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e9:.1f} GB"


def check_source(source: Source, *, kind: str, label: str, max_bytes: int, expected: str) -> int:
    """Check that ``source`` exists, is a non-empty file and at most ``max_bytes``; its size.

    ``kind`` ("audio", "image", "video") and ``expected`` ("a WAV or FLAC file") go into the
    messages. Sizes come from ``len`` for bytes and ``os.stat`` for paths, so nothing is read yet.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        size = len(source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            raise MediaError(f"{kind} file {label} does not exist; check the path")
        if not path.is_file():
            raise MediaError(f"{kind} file {label} is not a regular file; expected {expected}")
        size = path.stat().st_size
    else:
        raise MediaError(
            f"{kind} input {label} is a {type(source).__name__}; expected a path or bytes"
        )
    if size == 0:
        raise MediaError(f"{kind} file {label} is empty (0 bytes); expected {expected}")
    if size > max_bytes:
        raise MediaError(
            f"{kind} file {label} is {human_size(size)}, over the {human_size(max_bytes)} "
            f"limit; pass a larger max_bytes to read it"
        )
    return size


def read_source(source: Source, *, kind: str, label: str) -> bytes:
    """The whole input as bytes (call ``check_source`` first: it bounds the size)."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, bytearray | memoryview):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except OSError as err:
        raise MediaError(f"cannot read {kind} file {label}: {err.strerror}") from None


def suffix_of(path: str | os.PathLike[str]) -> str:
    """Lower-case extension with the dot (``'.wav'``), or ``''``."""
    return Path(path).suffix.lower()


def write_atomic(path: str | os.PathLike[str], data: bytes, *, kind: str) -> Path:
    """Write ``data`` to ``path`` atomically (``omniflex.common.write_atomic``), with errors
    as ``MediaError`` naming the ``kind`` of file.

    A crash or a full disk leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise MediaError(
            f"cannot write {kind} file {path}: folder {path.parent} does not exist; create it first"
        )
    try:
        common_write_atomic(path, data)
    except OSError as err:
        raise MediaError(f"cannot write {kind} file {path}: {err.strerror or err}") from None
    return path
