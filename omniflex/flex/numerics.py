"""Numerical quality of flex layers against float32: SQNR of outputs and gradients.

Shared by the tests (which pin thresholds) and ``omniflex bench flex`` (which reports figures),
so that both measure the same thing.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import nn

from omniflex.flex.config import FlexConfig
from omniflex.flex.convert import convert_to_flex
from omniflex.flex.optim import FlexSGD

__all__ = ["LayerKind", "layer_sqnr", "sqnr_db"]

LayerKind = Literal["linear", "conv2d", "embedding"]


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio of ``test`` against ``reference`` in dB."""
    ref = reference.detach().double()
    noise = (ref - test.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def _layer_and_input(kind: LayerKind, gen: torch.Generator) -> tuple[nn.Module, torch.Tensor]:
    if kind == "linear":
        return nn.Linear(256, 128), torch.randn(64, 256, generator=gen)
    if kind == "conv2d":
        return nn.Conv2d(8, 16, 3, padding=1), torch.randn(4, 8, 16, 16, generator=gen)
    if kind == "embedding":
        return nn.Embedding(500, 64), torch.randint(0, 500, (32, 16), generator=gen)
    raise ValueError(f"unknown layer kind {kind!r}; choose linear, conv2d or embedding")


def layer_sqnr(
    kind: LayerKind, *, steps: int = 5, seed: int = 0, config: FlexConfig | None = None
) -> dict[str, float]:
    """Train a float32 layer and its flex copy side by side for ``steps`` SGD steps on the same
    data; return the SQNR (dB) of forward output, input gradient and weight gradient at the
    last step (the minimum over steps, so a single bad step is not hidden)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ref, _ = _layer_and_input(kind, gen)
    flex = convert_to_flex(copy.deepcopy(ref), config=config or FlexConfig())
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    opt_flex = FlexSGD(flex.parameters(), lr=0.01, momentum=0.9, config=config)
    worst = {"output": math.inf, "grad_input": math.inf, "grad_weight": math.inf}
    for _ in range(steps):
        _, x = _layer_and_input(kind, gen)
        target_gen = torch.Generator().manual_seed(
            int(torch.randint(0, 2**31, (1,), generator=gen))
        )
        results = []
        for model, opt in ((ref, opt_ref), (flex, opt_flex)):
            xi = x.clone().requires_grad_(x.is_floating_point())
            y = model(xi)
            target = torch.randn(y.shape, generator=copy.deepcopy(target_gen))
            loss = (y - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            grad_w = model.weight.grad.clone()
            results.append((y.detach(), None if xi.grad is None else xi.grad.clone(), grad_w))
            opt.step()
        (y_r, gx_r, gw_r), (y_f, gx_f, gw_f) = results
        worst["output"] = min(worst["output"], sqnr_db(y_r, y_f))
        worst["grad_weight"] = min(worst["grad_weight"], sqnr_db(gw_r, gw_f))
        if gx_r is not None:
            worst["grad_input"] = min(worst["grad_input"], sqnr_db(gx_r, gx_f))
    if kind == "embedding":
        del worst["grad_input"]  # integer indices have no gradient
    return worst
