"""Emulated low-precision floating point (float16, bfloat16) for side-by-side comparisons.

To compare Flexpoint with the formats it was meant to replace, the *same* model is run with
float16 or bfloat16 rounding at the same places flex quantises: the inputs, weights and outputs of
every Linear, Conv2d, Embedding and ``Matmul``, every delta and weight gradient, and — through
``LowPrecisionOptimizer`` — the weights and optimizer state after each update (no float32 master
copy, no loss scaling: the paper's float16 baseline). Arithmetic runs in float32 on any device and
every crossing value is rounded with ``tensor.to(dtype)``, so overflow becomes ``inf`` and tiny
gradients flush to zero exactly as they would in the real format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex.errors import FlexConversionError
from omniflex.flex.matmul import Matmul

__all__ = ["LowPrecisionOptimizer", "convert_to_float_emulation", "round_to"]

FloatName = Literal["float16", "bfloat16"]
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"emulated float format must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float32 ``x`` to ``dtype`` and back (round-to-nearest-even, overflow to inf)."""
    return x.to(dtype).to(torch.float32)


class _Round(torch.autograd.Function):
    """Rounds the value in forward and the gradient in backward."""

    @staticmethod
    def forward(ctx, x, dtype):  # type: ignore[override]
        ctx.dtype = dtype
        return round_to(x, dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return round_to(grad, ctx.dtype), None


def _r(x: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if x is None else _Round.apply(x, dtype)


class _Emulated(nn.Module):
    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        with torch.no_grad():
            for p in inner.parameters(recurse=False):
                p.copy_(round_to(p, dtype))

    def extra_repr(self) -> str:
        return f"emulated {self.dtype}"


class EmulatedLinear(_Emulated):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, d = self.inner, self.dtype
        return _r(F.linear(_r(x, d), _r(m.weight, d), _r(m.bias, d)), d)


class EmulatedConv2d(_Emulated):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, d = self.inner, self.dtype
        return _r(m._conv_forward(_r(x, d), _r(m.weight, d), _r(m.bias, d)), d)


class EmulatedEmbedding(_Emulated):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        m, d = self.inner, self.dtype
        return F.embedding(idx, _r(m.weight, d), m.padding_idx)


class EmulatedMatmul(_Emulated):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = self.dtype
        return _r(torch.matmul(_r(a, d), _r(b, d)), d)


_SWAPS: dict[type[nn.Module], type[_Emulated]] = {
    nn.Linear: EmulatedLinear,
    nn.Conv2d: EmulatedConv2d,
    nn.Embedding: EmulatedEmbedding,
    Matmul: EmulatedMatmul,
}


def convert_to_float_emulation(
    module: nn.Module,
    dtype: FloatName,
    *,
    module_filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Wrap every Linear, Conv2d, Embedding and ``Matmul`` so that all values crossing it are
    rounded to ``dtype``; weights are rounded once here and after each update by
    ``LowPrecisionOptimizer``. Returns ``module`` (converted in place)."""
    torch_dtype = _dtype(dtype)

    def visit(mod: nn.Module, fqn: str) -> nn.Module:
        if isinstance(mod, _Emulated):
            return mod
        for name, child in list(mod.named_children()):
            new = visit(child, f"{fqn}.{name}" if fqn else name)
            if new is not child:
                setattr(mod, name, new)
        cls = _SWAPS.get(type(mod))
        if cls is None or (module_filter_fn is not None and not module_filter_fn(mod, fqn)):
            return mod
        if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
            raise FlexConversionError(f"cannot emulate Conv2d '{fqn}' with padding_mode != zeros")
        return cls(mod, torch_dtype)

    return visit(module, "")


class LowPrecisionOptimizer:
    """Wraps a ``torch.optim`` optimizer: after each step the parameters and every floating
    state tensor are rounded to ``dtype`` (weights held only in that format)."""

    def __init__(self, optimizer: torch.optim.Optimizer, dtype: FloatName) -> None:
        self.optimizer = optimizer
        self.dtype = _dtype(dtype)
        self.param_groups = optimizer.param_groups

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self.optimizer.step(closure)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.copy_(round_to(p, self.dtype))
                for key, value in self.optimizer.state.get(p, {}).items():
                    if (
                        isinstance(value, torch.Tensor)
                        and value.is_floating_point()
                        and key != "step"
                    ):
                        value.copy_(round_to(value, self.dtype))
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
