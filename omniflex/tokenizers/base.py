"""One interface for every modality tokenizer (in the manner of moshi's ``CompressionModel``).

A tokenizer maps media to integer codes and back:

* ``encode(media) -> codes`` and ``decode(codes) -> media``;
* ``cardinality``: codes per codebook; ``num_codebooks``; ``vocab_size`` = ids the omni model
  reserves for it (``cardinality * num_codebooks``: each codebook has its own id range);
* time-based media add ``sample_rate`` and ``frame_rate`` (code frames per second).

On disk a tokenizer is a folder: ``config.json`` (``{"kind": ..., "config": {...}}`` plus free
metadata such as training figures) and, for neural tokenizers, ``model.safetensors`` holding the
weights in flex16 (int16 mantissas + one exponent per tensor: half of float32's bytes).
``load_tokenizer(path_or_name)`` opens any of them; a bare name (``"audio"``) means the one
shipped inside the package, under ``omniflex/assets/tokenizers/``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from omniflex.common.configs import check_fields
from omniflex.common.files import write_json
from omniflex.common.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_folder,
    read_folder_config,
    save_folder,
)
from omniflex.flex import FlexWeight, flex_modules
from omniflex.flex.serialize import pack_state_dict, unpack_state_dict

__all__ = [
    "ASSETS",
    "NeuralTokenizer",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "register_tokenizer",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"

_KINDS: dict[str, type[Tokenizer]] = {}


class TokenizerError(ValueError):
    """A tokenizer folder is missing, incomplete or of another kind; the message says which."""


def register_tokenizer(kind: str) -> Callable[[type[Tokenizer]], type[Tokenizer]]:
    """Class decorator: make ``load_tokenizer`` know the tokenizer ``kind``."""

    def wrap(cls: type[Tokenizer]) -> type[Tokenizer]:
        cls.kind = kind
        _KINDS[kind] = cls
        return cls

    return wrap


class Tokenizer(ABC):
    """Media <-> integer codes. Subclasses set ``kind`` through ``@register_tokenizer``."""

    kind: ClassVar[str] = ""
    #: Free-form facts saved beside the config (training data, figures, steps).
    metadata: dict[str, Any]

    @property
    @abstractmethod
    def cardinality(self) -> int:
        """Codes per codebook."""

    @property
    def num_codebooks(self) -> int:
        return 1

    @property
    def vocab_size(self) -> int:
        """Ids the omni model reserves: one range of ``cardinality`` per codebook."""
        return self.cardinality * self.num_codebooks

    @abstractmethod
    def encode(self, media: Any) -> Any:
        """Media -> codes."""

    @abstractmethod
    def decode(self, codes: Any) -> Any:
        """Codes -> media."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-able config that rebuilds this tokenizer (without weights)."""

    @abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the tokenizer folder; returns it."""

    @classmethod
    @abstractmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a folder written by ``save``."""

    def _config_json(self) -> dict[str, Any]:
        """What ``config.json`` holds: kind, config and metadata."""
        return {"kind": self.kind, "config": self.config_dict(), "metadata": self.metadata}

    def _write_config(self, directory: Path) -> None:
        write_json(directory / CONFIG_FILE, self._config_json(), sort_keys=True)


class NeuralTokenizer(nn.Module, Tokenizer):
    """A tokenizer that is a ``torch.nn.Module`` with a frozen dataclass ``config``."""

    config_cls: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.metadata = {}

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def save(self, directory: str | Path) -> Path:
        state = {k: v.detach().cpu() for k, v in _float_state_dict(self).items()}
        return save_folder(
            directory,
            self._config_json(),
            pack_state_dict(state),
            metadata={"format": "flex16+5"},
        )

    @classmethod
    def load(cls, directory: str | Path) -> NeuralTokenizer:
        directory = Path(directory)
        config_json = _read_config(directory, cls.kind)
        _, tensors = load_folder(
            directory,
            what=f"a complete {cls.kind} tokenizer",
            fix=f"retrain it with `omniflex tokenizer train {cls.kind} --out {directory}`",
            error=TokenizerError,
        )
        config = _config_from_dict(cls.config_cls, config_json["config"], directory)
        tok = cls(config)
        tok.metadata = config_json.get("metadata", {})
        state = unpack_state_dict(tensors)
        missing, unexpected = tok.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TokenizerError(
                f"{directory / WEIGHTS_FILE} does not match its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        return tok.eval()


def _float_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Plain float tensors of a module, whether or not it was converted to flex."""
    if not any(True for _ in flex_modules(module)):
        return dict(module.state_dict())
    state: dict[str, torch.Tensor] = {}
    for prefix, mod in module.named_modules():
        dot = f"{prefix}." if prefix else ""
        for name, p in mod.named_parameters(recurse=False):
            state[dot + name] = p.dequantize() if isinstance(p, FlexWeight) else p
        for name, b in mod.named_buffers(recurse=False):
            if name not in mod._non_persistent_buffers_set:
                state[dot + name] = b
    return state


def _read_config(directory: Path, kind: str | None) -> dict[str, Any]:
    """``config.json`` of a tokenizer folder, of ``kind`` when given; every problem is a
    ``TokenizerError``."""
    fix = (
        f"train one: `omniflex tokenizer train {kind} --out {directory}`"
        if kind
        else "pass a folder a tokenizer's save() wrote, or a shipped tokenizer's name"
    )
    try:
        data = read_folder_config(
            directory, what="a tokenizer", fix=fix, weights=False, error=TokenizerError
        )
    except TokenizerError:
        raise
    except ValueError as err:  # config.json is not JSON
        raise TokenizerError(str(err)) from None
    if kind is not None and data.get("kind") != kind:
        raise TokenizerError(f"{directory} holds a {data.get('kind')!r} tokenizer, not {kind!r}")
    return data


def _config_from_dict(config_cls: type, raw: dict[str, Any], directory: Path) -> Any:
    check_fields(config_cls, raw, source=f"{directory / CONFIG_FILE}", error=TokenizerError)
    # JSON turns tuples into lists; frozen configs hold tuples.
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return config_cls(**values)


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """Open a tokenizer folder, or a shipped tokenizer by name (``text``, ``image``, ``audio``)."""
    path = Path(name_or_path)
    if not path.exists() and isinstance(name_or_path, str) and "/" not in name_or_path:
        path = ASSETS / name_or_path
        if not path.exists():
            shipped = sorted(p.name for p in ASSETS.iterdir()) if ASSETS.is_dir() else []
            raise TokenizerError(
                f"no tokenizer named {name_or_path!r}; shipped tokenizers: {shipped or 'none'}"
            )
    data = _read_config(path, None)
    kind = data.get("kind")
    if kind not in _KINDS:
        _import_kinds()
    if kind not in _KINDS:
        raise TokenizerError(f"{path}: unknown tokenizer kind {kind!r}; known: {sorted(_KINDS)}")
    return _KINDS[kind].load(path)


def _import_kinds() -> None:
    # Registration happens on import; the package __init__ imports every kind.
    import omniflex.tokenizers  # noqa: F401
