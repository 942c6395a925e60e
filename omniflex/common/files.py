"""Files that appear whole or not at all: atomic writes and JSON.

A file is written under a unique temporary name beside its target (same folder, so the same file
system), flushed to disk with ``fsync`` and renamed over the target. A crash, a kill or a full
disk leaves the old file or the new one, never half of one; a reader never sees a partial file.
The temporary name starts with a dot and ends in ``.tmp``, so globs for the real files skip it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "fsync_dir", "fsync_file", "read_json", "write_atomic", "write_json"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to disk (so a rename after it never exposes an empty file)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries to disk (so a rename inside it survives a power loss)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a path (or opens one).

    When the block ends normally the file is fsynced and renamed to ``path``; when it raises,
    the temporary file is removed and the target is left as it was.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: folder {path.parent} does not exist; create it first"
        )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path."""
    # "x" rather than mkstemp: the file gets the usual umask permissions, not 0600.
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
    return Path(path)


def write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``obj`` as JSON text (and a final newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return write_atomic(path, text.encode())


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path``; a file that is not JSON raises ``ValueError`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
