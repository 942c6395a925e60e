"""Folders of ``config.json`` + ``model.safetensors``: how every component that ships weights
(tokenizers, judges, the voice classifier, omni models) stores itself.

``save_folder`` writes the weights first, then any other JSON files, and ``config.json`` last,
each atomically: a folder whose ``config.json`` is there is complete. ``load_folder`` reads the
files back as they are; it never rewrites them, so folders written before this module existed
(the shipped assets) load unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from omniflex.common.files import read_json, write_atomic, write_json

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load_folder", "read_folder_config", "save_folder"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_folder(
    directory: str | os.PathLike[str],
    config: Any,
    tensors: Mapping[str, torch.Tensor],
    *,
    metadata: dict[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    indent: int | None = 2,
    sort_keys: bool = True,
) -> Path:
    """Write ``tensors`` (with safetensors ``metadata``) to ``model.safetensors``, each
    ``extra`` ``{file name: JSON value}``, then ``config`` to ``config.json``; returns the
    folder (created when missing). ``indent``/``sort_keys`` lay out every JSON file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / WEIGHTS_FILE, safetensors_bytes(dict(tensors), metadata=metadata))
    for name, value in (extra or {}).items():
        write_json(directory / name, value, indent=indent, sort_keys=sort_keys)
    write_json(directory / CONFIG_FILE, config, indent=indent, sort_keys=sort_keys)
    return directory


def read_folder_config(
    directory: str | os.PathLike[str],
    *,
    what: str,
    fix: str,
    weights: bool = True,
    error: type[Exception] = FileNotFoundError,
) -> Any:
    """The parsed ``config.json`` of a folder that holds it (and ``model.safetensors`` unless
    ``weights=False``). A missing file raises ``error`` saying the folder is not ``what``
    (``"a scene judge"``) and what to do (``fix``); a broken ``config.json`` raises
    ``ValueError`` naming it."""
    directory = Path(directory)
    needed = [CONFIG_FILE, WEIGHTS_FILE] if weights else [CONFIG_FILE]
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        raise error(
            f"{directory} is not {what} folder: it has no {' and no '.join(missing)}; {fix}"
        )
    return read_json(directory / CONFIG_FILE)


def load_folder(
    directory: str | os.PathLike[str],
    *,
    what: str,
    fix: str,
    error: type[Exception] = FileNotFoundError,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(config, tensors)`` of a folder written by ``save_folder`` (see ``read_folder_config``
    for the errors); the tensors are on the CPU, as stored."""
    config = read_folder_config(directory, what=what, fix=fix, error=error)
    return config, load_file(str(Path(directory) / WEIGHTS_FILE))
