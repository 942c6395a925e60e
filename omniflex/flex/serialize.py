"""Flex16 storage for whole ``state_dict``s: every float tensor as int16 mantissas + one exponent.

Shipped weights (tokenizers, the default model) are stored the way omniflex computes: each
floating tensor ``name`` becomes ``name`` (the mantissas, int16) and ``name.__flex_exponent__``
(a 0-d int8 tensor), which is half the bytes of float32 and loads with plain ``safetensors``.
The exponent is the smallest that holds the tensor's largest magnitude (Autoflex's
initialisation, Algorithm 1, without history), so packing never saturates.
"""

from __future__ import annotations

import math

import torch

from omniflex.flex.format import FlexFormat, FlexTensor
from omniflex.flex.kernels import quantize_reference

__all__ = ["EXPONENT_SUFFIX", "exact_exponent", "pack_state_dict", "unpack_state_dict"]

EXPONENT_SUFFIX = ".__flex_exponent__"


def exact_exponent(x: torch.Tensor, fmt: FlexFormat) -> int:
    """Smallest exponent whose range ``max_mantissa * 2**e`` holds ``max|x|``."""
    amax = float(x.detach().abs().max()) if x.numel() else 0.0
    if amax == 0.0 or not math.isfinite(amax):
        if not math.isfinite(amax):
            raise ValueError("cannot pack a tensor holding NaN or Inf in flex")
        return fmt.min_exponent
    e = math.ceil(math.log2(amax / fmt.max_mantissa))
    while fmt.max_value(e) < amax:  # log2 rounding at the boundary
        e += 1
    return fmt.clamp_exponent(e)


def pack_state_dict(
    state: dict[str, torch.Tensor], fmt: FlexFormat | None = None
) -> dict[str, torch.Tensor]:
    """Floating tensors -> flex mantissas + exponents; integer tensors pass through."""
    fmt = fmt or FlexFormat()
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if name.endswith(EXPONENT_SUFFIX):
            raise ValueError(f"state_dict key {name!r} uses the reserved suffix {EXPONENT_SUFFIX}")
        if not t.is_floating_point():
            out[name] = t.detach().contiguous()
            continue
        e = exact_exponent(t, fmt)
        q = quantize_reference(t.detach().float().contiguous(), e, fmt)
        out[name] = q.mantissa.contiguous()
        out[name + EXPONENT_SUFFIX] = torch.tensor(e, dtype=torch.int8)
    return out


def unpack_state_dict(
    packed: dict[str, torch.Tensor], fmt: FlexFormat | None = None
) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_state_dict``: exact float32 values of the stored flex tensors."""
    fmt = fmt or FlexFormat()
    out: dict[str, torch.Tensor] = {}
    for name, t in packed.items():
        if name.endswith(EXPONENT_SUFFIX):
            continue
        e = packed.get(name + EXPONENT_SUFFIX)
        out[name] = t if e is None else FlexTensor(t, int(e), fmt).to_float()
    return out
