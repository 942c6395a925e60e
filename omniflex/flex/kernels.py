"""Quantisation kernels: float32 -> flex mantissas plus the statistics Autoflex needs.

One pass over the input yields everything an op needs: the integer mantissas (storage), the
same values as float32 on the flex grid (the operand of the next matmul), the absolute
maximum (Autoflex history, and NaN/Inf detection: ``amax`` propagates both) and the number of
non-zero inputs that rounded to zero (flushes).

``quantize_reference`` is the pure-PyTorch definition. ``kernel="compiled"`` runs the same
function through ``torch.compile`` so that inductor fuses it into one loop; tests check the two
agree bit for bit.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from dataclasses import dataclass
from typing import Literal

import torch

from omniflex.flex.format import FlexFormat

__all__ = ["KernelName", "QuantizeOutput", "quantize_reference", "quantize_tensor", "resolve_kernel"]

KernelName = Literal["auto", "eager", "compiled"]

# Below this many elements a compiled call's guard checks cost more than the eager kernels.
_COMPILED_MIN_NUMEL = 1 << 16


@dataclass
class QuantizeOutput:
    """Result of quantising one tensor at one exponent."""

    mantissa: torch.Tensor | None  # integer storage, same shape as the input
    values: torch.Tensor | None  # float32 on the flex grid: mantissa * 2**exponent
    amax: float  # max |x| of the *input* (NaN/Inf propagate)
    flushes: int  # non-zero inputs that became zero
    exponent: int


def _quantize_core(
    x: torch.Tensor,  # (n,) float32
    inv_scale: torch.Tensor,  # () float32, 2**-exponent
    scale: torch.Tensor,  # () float32, 2**exponent
    noise: torch.Tensor | None,  # (n,) uniform [0, 1) for stochastic rounding, else None
    max_mantissa: int,
    storage_dtype: torch.dtype,
    want_mantissa: bool,
    want_values: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    scaled = x * inv_scale  # exact: multiplication by a power of two
    if noise is None:
        rounded = torch.round(scaled)  # round half to even
    else:
        rounded = torch.floor(scaled + noise)
    clamped = rounded.clamp(-max_mantissa, max_mantissa)
    amax = x.abs().amax()
    flushes = (x != 0).sum() - (clamped != 0).sum()
    stats = torch.stack([amax.double(), flushes.double()])
    mantissa = clamped.to(storage_dtype) if want_mantissa else None
    values = clamped * scale if want_values else None
    return mantissa, values, stats


@functools.cache
def _compiled_core():
    return torch.compile(_quantize_core, dynamic=True, fullgraph=True)


@functools.cache
def _compiler_available(device_type: str) -> bool:
    if os.environ.get("OMNIFLEX_FLEX_KERNEL", "").lower() == "eager":
        return False
    if device_type == "cpu":
        return any(shutil.which(cc) for cc in ("g++", "clang++", "c++"))
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def resolve_kernel(kernel: KernelName, x: torch.Tensor) -> Literal["eager", "compiled"]:
    """Pick the kernel for ``x``: ``auto`` compiles large tensors where a compiler exists."""
    if kernel == "auto":
        big = x.numel() >= _COMPILED_MIN_NUMEL
        return "compiled" if big and _compiler_available(x.device.type) else "eager"
    if kernel not in ("eager", "compiled"):
        raise ValueError(f"kernel must be 'auto', 'eager' or 'compiled', got {kernel!r}")
    return kernel


def quantize_reference(
    x: torch.Tensor,
    exponent: int,
    fmt: FlexFormat,
    *,
    noise: torch.Tensor | None = None,
    want_mantissa: bool = True,
    want_values: bool = False,
) -> QuantizeOutput:
    """Pure-PyTorch quantisation of float32 ``x`` at ``exponent`` (the definition)."""
    return quantize_tensor(
        x, exponent, fmt, noise=noise, want_mantissa=want_mantissa, want_values=want_values,
        kernel="eager",
    )  # fmt: skip


def quantize_tensor(
    x: torch.Tensor,
    exponent: int,
    fmt: FlexFormat,
    *,
    noise: torch.Tensor | None = None,
    want_mantissa: bool = True,
    want_values: bool = False,
    kernel: KernelName = "eager",
) -> QuantizeOutput:
    """Quantise float32 ``x`` at ``exponent`` with round-to-nearest-even, or stochastically when
    ``noise`` (uniform [0, 1), shape of ``x``) is given. Saturates at ``±fmt.max_mantissa``."""
    if x.dtype != torch.float32:
        x = x.float()
    shape = x.shape
    if x.numel() == 0:
        empty_m = torch.empty(shape, dtype=fmt.storage_dtype, device=x.device)
        return QuantizeOutput(
            empty_m if want_mantissa else None,
            torch.empty_like(x) if want_values else None,
            0.0,
            0,
            exponent,
        )
    flat = x.reshape(-1)
    flat_noise = None if noise is None else noise.reshape(-1).to(flat.dtype)
    inv_scale = torch.tensor(math.ldexp(1.0, -exponent), dtype=torch.float32, device=x.device)
    scale = torch.tensor(math.ldexp(1.0, exponent), dtype=torch.float32, device=x.device)
    core = _compiled_core() if resolve_kernel(kernel, x) == "compiled" else _quantize_core
    mantissa, values, stats = core(
        flat, inv_scale, scale, flat_noise, fmt.max_mantissa, fmt.storage_dtype,
        want_mantissa, want_values,
    )  # fmt: skip
    amax, flushes = stats.tolist()
    return QuantizeOutput(
        None if mantissa is None else mantissa.view(shape),
        None if values is None else values.view(shape),
        float(amax),
        int(flushes),
        exponent,
    )
