"""The number formats compared, applied to any model and optimizer the same way."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from omniflex.flex import (
    RECIPES,
    FlexAdam,
    FlexConfig,
    FlexRMSprop,
    FlexSGD,
    LowPrecisionOptimizer,
    convert_to_flex,
    convert_to_float_emulation,
)

__all__ = ["FORMATS", "OptimizerKind", "make_optimizer", "prepare_model"]

OptimizerKind = Literal["sgd", "adam", "rmsprop"]

# float16 and bfloat16 are emulated without loss scaling and without float32 master weights.
FORMATS = ("float32", "flex16+5", "float16", "bfloat16", "flex12+5", "flex8+5")


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown number format {fmt!r}; choose from {FORMATS}")


def prepare_model(model: nn.Module, fmt: str) -> nn.Module:
    """Convert ``model`` (in place) to run in ``fmt``."""
    _check(fmt)
    if fmt == "float32":
        return model
    if fmt in RECIPES:
        return convert_to_flex(model, config=FlexConfig.from_recipe_name(fmt))
    return convert_to_float_emulation(model, fmt)  # type: ignore[arg-type]


def make_optimizer(
    fmt: str, kind: OptimizerKind, params: Any, **hp: Any
) -> torch.optim.Optimizer | LowPrecisionOptimizer:
    """The same optimizer and hyperparameters in every format.

    ``hp``: ``lr`` always; ``momentum`` / ``weight_decay`` for sgd; ``betas`` / ``weight_decay``
    for adam (decoupled, i.e. AdamW); ``alpha`` for rmsprop.
    """
    _check(fmt)
    if fmt in RECIPES:
        cfg = FlexConfig.from_recipe_name(fmt)
        if kind == "sgd":
            return FlexSGD(params, config=cfg, **hp)
        if kind == "adam":
            return FlexAdam(params, config=cfg, **hp)
        return FlexRMSprop(params, config=cfg, **hp)
    if kind == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, **hp)
    elif kind == "adam":
        opt = torch.optim.AdamW(params, **hp)
    elif kind == "rmsprop":
        opt = torch.optim.RMSprop(params, **hp)
    else:
        raise ValueError(f"unknown optimizer kind {kind!r}; choose sgd, adam or rmsprop")
    return opt if fmt == "float32" else LowPrecisionOptimizer(opt, fmt)  # type: ignore[arg-type]
