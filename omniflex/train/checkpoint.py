"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder ``checkpoints/step_00001000/`` holding

    model.safetensors   the model's tensors under their ``state_dict`` keys (a flex16+5 weight
                        is ``<name>_mantissa`` int16 + ``<name>_exponent``), loadable on its own
    state.safetensors   every other tensor: optimizer moments (flex mantissas for FlexAdam),
                        RNG states
    meta.json           step, config, data position, and every non-tensor value — Autoflex
                        histories (the flex modules' ``_extra_state``), FlexAdam exponents and
                        Autoflex states, Python/NumPy RNG states — with each tensor replaced by
                        a reference ``{"__tensor__": key, "file": "model" | "state"}``

and, for a run whose weights are sharded (FSDP2 with flex layers), one pair per rank

    shard-00000.safetensors, shard-00000.json
                        what that rank holds: its shard of each sharded weight and of the
                        optimizer state, under the same keys, with the JSON as above

Any nested payload of dicts, lists, tuples, numbers, strings, NumPy arrays and tensors
round-trips exactly: JSON writes floats with ``repr`` (shortest exact form), and dicts with
non-string keys (an optimizer's ``state`` is keyed by parameter index) or tuples are tagged so
they come back as they were.

Atomicity: the folder is written under a temporary name, every file and the folder are fsynced,
the folder is renamed into place, and only then does the ``latest`` pointer (a one-line file,
itself replaced atomically) move to it. A kill at any moment leaves ``latest`` naming a whole
checkpoint; leftovers of an interrupted save are removed by the next one. A sharded checkpoint
is written the same way: every rank writes its shard into the temporary folder
(``shard_folder``, ``save_shard``), then rank 0 completes it with ``save(..., folder=...)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omniflex.common.files import fsync_dir, fsync_file

__all__ = [
    "FORMAT_VERSION",
    "CheckpointManager",
    "capture_rng_state",
    "decode_tree",
    "encode_tree",
    "load_model_state",
    "restore_rng_state",
]

FORMAT_VERSION = 1
_TAGS = frozenset({"__tensor__", "__dict__", "__tuple__", "__ndarray__"})
_PREFIX = "step_"
_TMP = ".tmp-"


# --------------------------------------------------------------------------- tree <-> JSON
class _TensorSink:
    """Collects tensors for one safetensors file; a tensor seen twice (tied weights) is stored
    once."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}

    def add(self, key: str, tensor: torch.Tensor) -> dict[str, str]:
        tensor = tensor.detach()
        ident = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and ident in self._seen:
            return {"__tensor__": self._seen[ident], "file": self.file}
        if key in self.tensors:
            raise ValueError(f"checkpoint: two tensors map to the key {key!r}")
        # A private, contiguous CPU copy: safetensors refuses shared storage.
        self.tensors[key] = tensor.to("cpu", copy=True).contiguous()
        if tensor.numel():
            self._seen[ident] = key
        return {"__tensor__": key, "file": self.file}


def encode_tree(obj: Any, sink: _TensorSink, path: str = "") -> Any:
    """``obj`` as JSON-able data, its tensors moved to ``sink`` under their path (``a/b/c``)."""
    if isinstance(obj, torch.Tensor):
        return sink.add(path, obj)
    if isinstance(obj, dict):
        plain = all(isinstance(k, str) for k in obj) and not (obj.keys() & _TAGS)
        if plain:
            return {k: encode_tree(v, sink, _join(path, k)) for k, v in obj.items()}
        return {
            "__dict__": [
                [encode_tree(k, sink, _join(path, f"key{i}")), encode_tree(v, sink, _join(path, k))]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, sink, _join(path, i)) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, sink, _join(path, i)) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(
        f"checkpoint: cannot store a {type(obj).__name__} at '{path or '<root>'}'; payloads hold "
        "dicts, lists, tuples, numbers, strings, NumPy arrays and tensors only"
    )


def decode_tree(data: Any, files: dict[str, dict[str, torch.Tensor]]) -> Any:
    """Inverse of ``encode_tree``, with the tensors of each file in ``files``."""
    if isinstance(data, list):
        return [decode_tree(v, files) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return files[data["file"]][data["__tensor__"]]
    if "__tuple__" in data:
        return tuple(decode_tree(v, files) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode_tree(k, files): decode_tree(v, files) for k, v in data["__dict__"]}
    if "__ndarray__" in data:
        return np.asarray(data["__ndarray__"], dtype=data["dtype"])
    return {k: decode_tree(v, files) for k, v in data.items()}


def _join(path: str, key: object) -> str:
    return f"{path}/{key}" if path else str(key)


# --------------------------------------------------------------------------- RNG
def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy and torch (CPU, and CUDA of ``device``) random states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _as_tuples(x: Any) -> Any:
    return tuple(_as_tuples(v) for v in x) if isinstance(x, list | tuple) else x


# --------------------------------------------------------------------------- files
def _rename(src: Path, dst: Path) -> None:
    """Atomic rename (one name for tests to break)."""
    os.replace(src, dst)


class CheckpointManager:
    """Saves, finds, loads and prunes the checkpoints of one run.

    Args:
        root: the run's ``checkpoints/`` folder (created on first save).
        keep_last: complete checkpoints kept; older ones are deleted after each save.
    """

    def __init__(self, root: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.root = Path(root)
        self.keep_last = keep_last

    # ----------------------------------------------------------------- finding
    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            p
            for p in self.root.iterdir()
            if p.is_dir() and p.name.startswith(_PREFIX) and (p / "meta.json").is_file()
        ]
        return sorted(found, key=lambda p: int(p.name.removeprefix(_PREFIX)))

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names (or the newest complete one if the pointer is lost)."""
        pointer = self.root / "latest"
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / "meta.json").is_file():
                return candidate
        found = self.checkpoints()
        return found[-1] if found else None

    # ----------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        payload: dict[str, Any],
        *,
        model_key: str = "model",
        folder: Path | None = None,
        shards: int = 0,
    ) -> Path:
        """Write ``payload`` as checkpoint ``step``; tensors under ``payload[model_key]`` (a
        state_dict) go to ``model.safetensors`` under their own keys, all others to
        ``state.safetensors``. ``folder``: the ``shard_folder`` where ``shards`` ranks have
        written their shards (a sharded checkpoint)."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{_PREFIX}{step:08d}"
        final = self.root / name
        if folder is None:
            tmp = self.root / f"{_TMP}{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        else:
            tmp = folder
            missing = [r for r in range(shards) if not (tmp / _shard_name(r, ".json")).is_file()]
            if missing:
                raise FileNotFoundError(f"{tmp} lacks the shards of ranks {missing}")

        model_sink, state_sink = _TensorSink("model"), _TensorSink("state")
        rest = {k: v for k, v in payload.items() if k != model_key}
        tree = {
            "format": FORMAT_VERSION,
            "step": step,
            model_key: encode_tree(payload.get(model_key, {}), model_sink),
            "payload": encode_tree(rest, state_sink),
        }
        if shards:
            tree["shards"] = shards
        save_file(model_sink.tensors, tmp / "model.safetensors", metadata={"step": str(step)})
        save_file(state_sink.tensors, tmp / "state.safetensors")
        (tmp / "meta.json").write_text(json.dumps(tree, indent=1, allow_nan=True) + "\n")
        for file in tmp.iterdir():
            fsync_file(file)
        fsync_dir(tmp)

        if final.exists():  # the same step saved by a run that died before moving `latest`
            old = self.root / f"{_TMP}old-{name}-{os.getpid()}"
            _rename(final, old)
            shutil.rmtree(old)
        _rename(tmp, final)
        fsync_dir(self.root)
        pointer_tmp = self.root / f"{_TMP}latest-{os.getpid()}"
        pointer_tmp.write_text(name + "\n")
        fsync_file(pointer_tmp)
        _rename(pointer_tmp, self.root / "latest")
        fsync_dir(self.root)
        self._prune(keep=final)
        return final

    def shard_folder(self, step: int, *, fresh: bool = False) -> Path:
        """The temporary folder every rank writes its shard of checkpoint ``step`` into (the
        same name on every rank). ``fresh``: empty it first (rank 0, before the others write)."""
        folder = self.root / f"{_TMP}{_PREFIX}{step:08d}-shards"
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        return folder

    def save_shard(self, folder: Path, rank: int, shard: dict[str, Any]) -> None:
        """Write rank ``rank``'s ``shard`` (a payload, as ``save`` takes) into ``folder``."""
        sink = _TensorSink("shard")
        tree = encode_tree(shard, sink)
        tensors, meta = (
            folder / _shard_name(rank, ".safetensors"),
            folder / _shard_name(rank, ".json"),
        )
        save_file(sink.tensors, tensors)
        meta.write_text(json.dumps(tree, indent=1, allow_nan=True) + "\n")
        fsync_file(tensors)
        fsync_file(meta)

    def _prune(self, keep: Path) -> None:
        for leftover in self.root.glob(f"{_TMP}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        complete = self.checkpoints()
        for old in complete[: max(len(complete) - self.keep_last, 0)]:
            if old != keep:
                shutil.rmtree(old, ignore_errors=True)

    # ----------------------------------------------------------------- loading
    def load(self, path: str | Path | None = None) -> dict[str, Any]:
        """The payload saved in ``path`` (default: ``latest``), tensors on the CPU; the model
        state_dict is under ``"model"`` and ``"step"`` is set."""
        folder = Path(path) if path is not None else self.latest()
        if folder is None:
            raise FileNotFoundError(
                f"no checkpoint in {self.root}; start without resume, or point at a run folder "
                "that has checkpoints/"
            )
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a complete checkpoint (no meta.json); pick one of "
                f"{[p.name for p in self.checkpoints()]}"
            )
        tree = json.loads(meta_path.read_text())
        if tree.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint {folder} has format {tree.get('format')}; this omniflex reads "
                f"format {FORMAT_VERSION}"
            )
        files = {
            "model": load_file(folder / "model.safetensors"),
            "state": load_file(folder / "state.safetensors"),
        }
        payload = decode_tree(tree["payload"], files)
        model_key = next(k for k in tree if k not in ("format", "step", "payload", "shards"))
        payload[model_key] = decode_tree(tree[model_key], files)
        payload["step"] = int(tree["step"])
        payload["path"] = str(folder)
        if "shards" in tree:  # a sharded checkpoint: how many ranks wrote shard files
            payload["shards"] = int(tree["shards"])
        return payload

    def load_shard(self, folder: str | Path, rank: int) -> dict[str, Any]:
        """Rank ``rank``'s shard of the sharded checkpoint ``folder`` (tensors on the CPU)."""
        folder = Path(folder)
        meta = folder / _shard_name(rank, ".json")
        if not meta.is_file():
            raise FileNotFoundError(
                f"{folder} holds no shard of rank {rank} ({meta.name}); a sharded checkpoint "
                "resumes with the number of processes that wrote it"
            )
        files = {"shard": load_file(folder / _shard_name(rank, ".safetensors"))}
        return decode_tree(json.loads(meta.read_text()), files)

    def join_shards(self, folder: str | Path, shards: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model tensors and optimizer state of the sharded checkpoint ``folder``, whole:
        each sharded tensor (the shard files' ``sharded`` model keys and ``sharded_optimizer``
        ``[index, key]`` pairs) joined along dim 0 in rank order, as FSDP2 splits it; the rest
        is rank 0's."""
        parts = [self.load_shard(folder, rank) for rank in range(shards)]
        model = dict(parts[0]["model"])
        for key in parts[0]["sharded"]:
            model[key] = torch.cat([part["model"][key] for part in parts])
        optimizer = parts[0]["optimizer"]
        state = {index: dict(per_param) for index, per_param in optimizer["state"].items()}
        for index, key in parts[0].get("sharded_optimizer", []):
            pieces = [part["optimizer"]["state"][index][key] for part in parts]
            state[index][key] = torch.cat(pieces)
        return model, {**optimizer, "state": state}


def _shard_name(rank: int, suffix: str) -> str:
    return f"shard-{rank:05d}{suffix}"


def load_model_state(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A trained model's ``state_dict`` (rank 0's Autoflex states included) and its model config
    dict, for inference: ``model.load_state_dict(state)``.

    Args:
        path: a run folder, its ``checkpoints/`` folder, or one ``step_*`` checkpoint.
    """
    path = Path(path)
    if (path / "meta.json").is_file():
        folder: Path | None = path
        root = path.parent
    else:
        root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        folder = None
    manager = CheckpointManager(root)
    payload = manager.load(folder)
    state = {**payload["model"], **payload["ranks"][0]["model_extra"]}
    if payload.get("shards"):
        state.update(manager.join_shards(payload["path"], payload["shards"])[0])
    return state, payload.get("model_config")
