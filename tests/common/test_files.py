"""Atomic writes and JSON: whole files or none, no leftovers, clear errors."""

from __future__ import annotations

import json
import os

import pytest

from omniflex.common import atomic_path, read_json, write_atomic, write_json


def test_write_atomic_writes_and_replaces(tmp_path):
    path = tmp_path / "a.bin"
    assert write_atomic(path, b"one") == path
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.bin"]  # no temporary file left


def test_write_atomic_uses_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_the_temporary_name_is_hidden_and_beside_the_target(tmp_path):
    with atomic_path(tmp_path / "shard-000.tar") as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".shard-000.tar.") and tmp.name.endswith(".tmp")
        assert not list(tmp_path.glob("*.tar"))  # globs for real files skip it
        tmp.write_bytes(b"x")
    assert (tmp_path / "shard-000.tar").read_bytes() == b"x"


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist"):
        write_atomic(tmp_path / "nowhere" / "a.json", b"{}")


def test_json_round_trip_and_layout(tmp_path):
    value = {"b": [1, 2.5, None], "a": {"x": "y"}}
    path = write_json(tmp_path / "v.json", value)
    assert read_json(path) == value
    assert path.read_text() == json.dumps(value, indent=2) + "\n"
    write_json(path, value, indent=1, sort_keys=True)
    assert path.read_text() == json.dumps(value, indent=1, sort_keys=True) + "\n"


def test_read_json_names_a_broken_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        read_json(path)


def test_common_imports_nothing_else_from_omniflex():
    from pathlib import Path

    import omniflex.common
    from tests.imports import imported_modules

    for source in Path(omniflex.common.__file__).parent.glob("*.py"):
        for name in imported_modules(source):
            assert not name.startswith("omniflex.") or name.startswith("omniflex.common"), (
                f"{source.name} imports {name}"
            )
