"""Pretrained omni models on disk: a folder per model, loaded by name or path.

A model folder holds::

    config.json          {"format": 1, "name", "model": ModelConfig dict, "template": chat
                         template options, "training": what trained it (recipe, steps, losses)}
    model.safetensors    the state_dict's tensors as trained: flex layers as int16 mantissas +
                         exponents, norms in float32
    autoflex.json        the flex layers' Autoflex states (exponents and histories), as trained

Shipped models live in ``omniflex/assets/models/NAME`` (the default is ``tiny``);
``load_pretrained("tiny")`` finds them, any other argument is read as a folder path.
``omniflex model export RUN --out DIR`` writes one from a training run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from omniflex.common.files import read_json
from omniflex.common.folder import CONFIG_FILE, WEIGHTS_FILE, save_folder
from omniflex.flex import set_flex_frozen
from omniflex.model.config import ModelConfig
from omniflex.model.transformer import OmniModel

__all__ = [
    "DEFAULT_MODEL",
    "MODELS_DIR",
    "PretrainedInfo",
    "available_models",
    "dequantize_state_dict",
    "load_pretrained",
    "model_folder_state",
    "resolve_model_dir",
    "save_pretrained",
]

FORMAT_VERSION = 1
DEFAULT_MODEL = "tiny"
MODELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
_MANTISSA, _EXPONENT = "_mantissa", "_exponent"
AUTOFLEX_FILE = "autoflex.json"


class PretrainedInfo(dict):
    """The parsed ``config.json`` of a model folder (a dict), plus its ``path``."""

    @property
    def path(self) -> Path:
        return Path(self["path"])

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self["model"])

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.get("template", {}))


def available_models() -> list[str]:
    """Names of the shipped models (folders of ``omniflex/assets/models`` with a config)."""
    if not MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped model's name, or a folder holding ``config.json`` + ``model.safetensors``."""
    text = str(name_or_path)
    shipped = MODELS_DIR / text
    if os.sep not in text and (shipped / CONFIG_FILE).is_file():
        return shipped
    path = Path(text)
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return path
    names = ", ".join(available_models()) or "none shipped"
    raise FileNotFoundError(
        f"no omni model {text!r}: not a shipped model ({names}) and not a folder with "
        "config.json + model.safetensors; export a training run with `omniflex model export "
        "RUN --out DIR`"
    )


def save_pretrained(
    out_dir: str | os.PathLike[str],
    state: dict[str, torch.Tensor],
    model_config: ModelConfig,
    *,
    name: str,
    template: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a model folder (``omniflex.common.save_folder``: each file atomically, config last)."""
    # Tied weights share storage, which safetensors refuses: every tensor is saved as its own copy.
    tensors = {k: v.detach().cpu().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    extra = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    config = {
        "format": FORMAT_VERSION,
        "name": name,
        "model": model_config.to_dict(),
        "template": template or {},
        "training": training or {},
    }
    return save_folder(
        out_dir, config, tensors, extra={AUTOFLEX_FILE: extra}, indent=1, sort_keys=False
    )


def read_info(name_or_path: str | os.PathLike[str]) -> PretrainedInfo:
    """The ``config.json`` of a model folder, checked."""
    folder = resolve_model_dir(name_or_path)
    info = read_json(folder / CONFIG_FILE)
    if info.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{folder}/config.json has format {info.get('format')!r}; this omniflex reads "
            f"format {FORMAT_VERSION}: re-export the model"
        )
    return PretrainedInfo(info, path=str(folder))


def dequantize_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A flex model's ``state_dict`` -> the float32 ``state_dict`` of the same model unconverted:
    ``W = mantissa * 2**exponent`` (exact in float32); Autoflex states are dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(_MANTISSA):
            base = key[: -len(_MANTISSA)]
            exponent = state[base + _EXPONENT]
            out[base] = value.to(torch.float32) * torch.exp2(exponent.to(torch.float32))
        elif key.endswith(_EXPONENT) or key.endswith("_extra_state"):
            continue
        else:
            out[key] = value
    return out


def model_folder_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``state_dict`` a model folder stores: its weights and Autoflex states, as trained."""
    folder = Path(folder)
    state: dict[str, Any] = dict(load_file(str(folder / WEIGHTS_FILE)))
    extra = folder / AUTOFLEX_FILE
    if extra.is_file():
        state.update(read_json(extra))
    return state


def load_pretrained(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    precision: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[OmniModel, PretrainedInfo]:
    """Load a model for inference (eval mode).

    Args:
        name_or_path: a shipped model's name (``"tiny"``) or a model folder.
        precision: ``None`` runs it as trained (flex16+5 for the default model, its ops frozen
            at their trained exponents under ``torch.no_grad()``); ``"float32"`` runs the same
            weights dequantised (exact) in plain float32.
    """
    info = read_info(name_or_path)
    config = info.model_config
    state = model_folder_state(info.path)
    trained_flex = any(k.endswith(_MANTISSA) for k in state)
    if precision is not None and precision != config.precision:
        if precision != "float32":
            raise ValueError(
                f"precision {precision!r}: a model trained in {config.precision} runs as "
                "trained (precision=None) or in float32"
            )
        if trained_flex:
            state = dequantize_state_dict(state)
        config = replace(config, precision="float32")
    model = OmniModel.build(config)
    if config.precision == "float32" and config.tie_embeddings:
        state.pop("lm_head.weight", None)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise ValueError(
                f"{info.path}: weights do not fit the config (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
    else:
        model.load_state_dict(state)
        # Inference: flex ops at the exponents training ended with, no statistics (deterministic,
        # causal, thread-safe; see omniflex.flex.ops).
        set_flex_frozen(model, True)
    return model.to(device).eval(), info
