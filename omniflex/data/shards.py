"""WebDataset tar shards, written byte-for-byte reproducibly, and read back with checks.

A shard is a plain tar: the members of one sample share a key (``<key>.json``,
``<key>.user.wav``…), which is what the ``webdataset`` package groups on. Tar headers carry no
time, owner or permission noise, so the same samples always give the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omniflex.common.files import atomic_path

__all__ = ["CorruptShardError", "ShardSample", "ShardWriter", "read_shard", "referenced_files"]


class CorruptShardError(ValueError):
    """A shard or a sample in it is unreadable, or a conversation references a missing file."""


@dataclass
class ShardSample:
    key: str
    conversation: dict[str, Any]
    files: dict[str, bytes]  # member suffix -> bytes ("user.wav" -> ...)
    shard: str

    def file(self, name: str) -> bytes:
        if name not in self.files:
            raise CorruptShardError(
                f"sample {self.key} in {self.shard} references '{name}', which the shard lacks"
            )
        return self.files[name]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Writes samples into one tar file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The tar is written under a temporary name; close() renames it into place, so a shard
        # appears whole or not at all.
        self._file = ExitStack()
        tmp = self._file.enter_context(atomic_path(self.path))
        self._tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.count = 0

    def write(self, key: str, conversation: dict[str, Any], files: dict[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/'")
        missing = referenced_files(conversation) - set(files)
        if missing:
            raise CorruptShardError(
                f"sample {key} references {sorted(missing)} but has no such files"
            )
        _add(self._tar, f"{key}.json", json.dumps(conversation, sort_keys=True).encode())
        for name in sorted(files):
            _add(self._tar, f"{key}.{name}", files[name])
        self.count += 1

    def close(self) -> Path:
        self._tar.close()
        self._file.close()
        return self.path

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._tar.close()
            self._file.__exit__(exc_type, *rest)  # removes the temporary file


def referenced_files(conversation: dict[str, Any]) -> set[str]:
    """Every ``file`` a conversation's messages point at."""
    return {
        part["file"]
        for message in conversation.get("messages", [])
        for part in message.get("content", [])
        if isinstance(part, dict) and "file" in part
    }


def read_shard(path: str | Path) -> Iterator[ShardSample]:
    """Yield the samples of one shard in order; corrupt shards raise ``CorruptShardError``."""
    path = Path(path)
    if not path.is_file():
        raise CorruptShardError(f"shard {path} does not exist")
    groups: dict[str, dict[str, bytes]] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, suffix = member.name.partition(".")
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                handle = tar.extractfile(member)
                assert handle is not None
                groups[key][suffix] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise CorruptShardError(f"shard {path} is corrupt or truncated: {err}") from None
    for key in order:
        files = groups[key]
        if "json" not in files:
            raise CorruptShardError(f"sample {key} in {path} has no .json conversation")
        try:
            conversation = json.loads(files.pop("json"))
        except json.JSONDecodeError as err:
            raise CorruptShardError(
                f"sample {key} in {path}: conversation JSON is invalid ({err.msg})"
            ) from None
        sample = ShardSample(key, conversation, files, str(path))
        for name in referenced_files(conversation):
            sample.file(name)  # raises, naming the sample and file
        yield sample


def write_shards(
    samples: Iterable[tuple[str, dict[str, Any], dict[str, bytes]]], pattern: str, per_shard: int
) -> list[Path]:
    """Write ``(key, conversation, files)`` into ``pattern % shard_index`` tars."""
    paths: list[Path] = []
    writer: ShardWriter | None = None
    for i, (key, conv, files) in enumerate(samples):
        if i % per_shard == 0:
            if writer is not None:
                paths.append(writer.close())
            writer = ShardWriter(pattern % (i // per_shard))
        assert writer is not None
        writer.write(key, conv, files)
    if writer is not None:
        paths.append(writer.close())
    return paths
