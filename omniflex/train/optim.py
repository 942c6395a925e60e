"""The optimizer for a run: AdamW, in Flexpoint when the model is.

A model converted to Flexpoint (it holds ``FlexModule`` layers) trains with
``omniflex.flex.FlexAdam(decoupled=True)``: both moments (the second as ``sqrt(v)``) and every
weight update are flex tensors with their own Autoflex states, built with the model's own
``FlexConfig`` so that formats agree. Any other model trains with ``torch.optim.AdamW``.

Decoupled weight decay applies to matrices (``ndim >= 2``: linear and embedding weights) and not
to gains and biases, as in GPT-2 and nanoGPT.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omniflex.flex.config import FlexConfig
from omniflex.flex.modules import FlexModule
from omniflex.flex.optim import FlexAdam

__all__ = ["build_optimizer", "flex_config_of", "set_lr"]


def flex_config_of(model: nn.Module) -> FlexConfig | None:
    """The ``FlexConfig`` of the model's flex layers (``None`` if it has none); all layers must
    share one, since one optimizer serves them all."""
    configs = {m.flex_config for m in model.modules() if isinstance(m, FlexModule)}
    if not configs:
        return None
    if len(configs) > 1:
        raise ValueError(
            f"the model mixes {len(configs)} FlexConfigs "
            f"({sorted(c.format.name for c in configs)}); convert it with one config so that "
            "one FlexAdam can serve every layer"
        )
    return configs.pop()


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """AdamW over ``model``'s trainable parameters (FlexAdam for a flex model).

    Args:
        fused: use the fused CUDA AdamW kernel (float models on GPU only).
    """
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append((name, p))
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    flex = flex_config_of(model)
    if flex is not None:
        return FlexAdam(groups, lr=lr, betas=betas, eps=eps, decoupled=True, config=flex)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
