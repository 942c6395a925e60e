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
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from omniflex.flex.serialize import pack_state_dict, unpack_state_dict
from omniflex.media import write_atomic

__all__ = [
    "ASSETS",
    "NeuralTokenizer",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "register_tokenizer",
    "write_json_atomic",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "tokenizers"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

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


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    write_atomic(path, text.encode(), kind="JSON")


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

    def _write_config(self, directory: Path) -> None:
        write_json_atomic(
            directory / CONFIG_FILE,
            {"kind": self.kind, "config": self.config_dict(), "metadata": self.metadata},
        )


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
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in _float_state_dict(self).items()}
        packed = save_safetensors(pack_state_dict(state), metadata={"format": "flex16+5"})
        write_atomic(directory / WEIGHTS_FILE, packed, kind="weights")
        self._write_config(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> NeuralTokenizer:
        directory = Path(directory)
        config_json = _read_config(directory, cls.kind)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise TokenizerError(
                f"tokenizer folder {directory} has no {WEIGHTS_FILE}; "
                f"retrain it with `omniflex tokenizer train {cls.kind} --out {directory}`"
            )
        config = _config_from_dict(cls.config_cls, config_json["config"], directory)
        tok = cls(config)
        tok.metadata = config_json.get("metadata", {})
        state = unpack_state_dict(load_file(str(weights)))
        missing, unexpected = tok.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise TokenizerError(
                f"{weights} does not match its config: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        return tok.eval()


def _float_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Plain float tensors of a module, whether or not it was converted to flex."""
    from omniflex.flex import FlexWeight, flex_modules

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
    path = directory / CONFIG_FILE
    if not path.is_file():
        hint = f"; train one: `omniflex tokenizer train {kind} --out {directory}`" if kind else ""
        raise TokenizerError(f"{directory} is not a tokenizer folder (no {CONFIG_FILE}){hint}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path} is not valid JSON: {err}") from None
    if kind is not None and data.get("kind") != kind:
        raise TokenizerError(f"{directory} holds a {data.get('kind')!r} tokenizer, not {kind!r}")
    return data


def _config_from_dict(config_cls: type, raw: dict[str, Any], directory: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise TokenizerError(f"{directory}/{CONFIG_FILE}: unknown config fields {sorted(unknown)}")
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
