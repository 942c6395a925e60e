"""The bottom layer every omniflex package may use; it imports nothing else from omniflex.

* ``files``: atomic writes (temporary file, fsync, rename) and JSON.
* ``schedule``: the warm-up + cosine learning-rate schedule of every trainer.
* ``configs``: frozen dataclass configs <-> dicts and YAML (unknown-key check, coercion).
* ``folder``: ``config.json`` + ``model.safetensors`` folders of every component with weights.
* ``voices``: the voice registry (preset, input and held-out voices) and the preset-voice check.

Only the standard-library parts are imported here; import ``omniflex.common.configs`` (YAML)
and ``omniflex.common.folder`` (torch) by name, so that the media readers, which use
``files``, start without loading torch.
"""

from omniflex.common.files import (
    atomic_path,
    fsync_dir,
    fsync_file,
    read_json,
    write_atomic,
    write_json,
)
from omniflex.common.schedule import cosine_decay, warmup_cosine

__all__ = [
    "atomic_path",
    "cosine_decay",
    "fsync_dir",
    "fsync_file",
    "read_json",
    "warmup_cosine",
    "write_atomic",
    "write_json",
]
