"""Quantisation kernels: float32 -> flex mantissas plus the statistics Autoflex needs.

One pass over the input yields everything an op needs: the integer mantissas (storage), the
same values as float32 on the flex grid (the operand of the next matmul), the absolute
maximum (Autoflex history, and NaN/Inf detection: ``amax`` propagates both) and the number of
non-zero inputs that rounded to zero (flushes).

``quantize_reference`` is the pure-PyTorch definition. ``kernel="compiled"`` runs the same
function through ``torch.compile`` so that inductor fuses it into one loop; tests check the two
agree bit for bit.

``requantize_`` writes the same values into the input's own storage, for a result the caller owns
and needs no more (a matmul's output). On CPU a fresh tensor of 32 MiB or more costs more in page
faults than the loop that fills it: glibc serves such blocks with ``mmap`` and unmaps them on
free, so every step faults them in again. For those (``overwrite_pays``) Autoflex takes the
statistics in a read-only pass of ``quantize_tensor`` (``want_mantissa=False, want_values=False``),
settles the exponent, and then rewrites the tensor in place.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from omniflex.flex.format import FlexFormat, exact_pow2

__all__ = [
    "KernelName",
    "QuantizeOutput",
    "absolute_max",
    "compile_variant",
    "overwrite_pays",
    "quantize_at_device_exponent",
    "quantize_reference",
    "quantize_tensor",
    "requantize_",
    "resolve_kernel",
    "resolve_small_kernel",
]

KernelName = Literal["auto", "eager", "compiled"]

# Below this many elements a compiled call's guard checks cost more than the eager kernels.
_COMPILED_MIN_NUMEL = 1 << 16

# glibc's largest mmap threshold (its dynamic threshold stops rising here): blocks this big are
# mapped fresh, and page-faulted, on every allocation.
OVERWRITE_MIN_BYTES = 32 << 20


@dataclass
class QuantizeOutput:
    """Result of quantising one tensor at one exponent.

    From a device-resident Autoflex state (``omniflex.flex.autoflex_device``) ``amax``,
    ``flushes`` and ``exponent`` are 0-d tensors on the input's device (float32, int64, int64)
    rather than Python numbers: reading them would make the host wait."""

    mantissa: torch.Tensor | None  # integer storage, same shape as the input
    values: torch.Tensor | None  # float32 on the flex grid: mantissa * 2**exponent
    amax: float | torch.Tensor  # max |x| of the *input* (NaN/Inf propagate)
    flushes: int | torch.Tensor  # non-zero inputs that became zero
    exponent: int | torch.Tensor


def _quantize_core(
    x: torch.Tensor,  # (n,) float32
    inv_scale: float,  # 2**-exponent
    scale: float,  # 2**exponent
    noise: torch.Tensor | None,  # (n,) uniform [0, 1) for stochastic rounding, else None
    max_mantissa: int,
    storage_dtype: torch.dtype,
    want_mantissa: bool,
    want_values: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, float, int]:
    """The reference: few, in-place kernels, since small tensors are dominated by launches."""
    amax = absolute_max(x)
    clamped = _round_to_grid(x, inv_scale, noise, max_mantissa)
    flushes = torch.count_nonzero(x) - torch.count_nonzero(clamped)
    mantissa = clamped.to(storage_dtype) if want_mantissa else None
    values = clamped.mul_(scale) if want_values else None
    return mantissa, values, amax.item(), int(flushes.item())


def absolute_max(x: torch.Tensor) -> torch.Tensor:
    """max |x| as a 0-d tensor of ``x``'s dtype (0 for an empty ``x``; NaN propagates)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    lo, hi = torch.aminmax(x)  # one pass; NaN propagates (vector_norm(inf) is 6x slower)
    return torch.maximum(-lo, hi)


def _round_to_grid(
    x: torch.Tensor,  # (n,) float32
    inv_scale: torch.Tensor | float,  # 2**-exponent
    noise: torch.Tensor | None,
    max_mantissa: int,
) -> torch.Tensor:
    """``x``'s mantissas as float32: scaled, rounded and saturated (a new tensor)."""
    scaled = x * inv_scale  # exact: multiplication by a power of two
    # round half to even, or stochastically: floor(x + u), u ~ U[0, 1)
    clamped = scaled.round_() if noise is None else scaled.add_(noise).floor_()
    return clamped.clamp_(-max_mantissa, max_mantissa)


def _quantize_core_packed(
    x: torch.Tensor,  # (n,) float32, n even
    inv_scale: torch.Tensor,
    scale: torch.Tensor,
    noise: torch.Tensor | None,
    max_mantissa: int,
    storage_dtype: torch.dtype,
    want_mantissa: bool,
    want_values: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """``_quantize_core`` for the compiler: the same numbers, int16 written as packed pairs.

    Inductor's CPU backend does not vectorise stores of int16, which makes the fused loop
    scalar and three times slower. Two int16 mantissas packed into one int32 word (low half
    first: little-endian) and viewed back as int16 by the caller is the same bytes, vectorised.
    """
    scaled = x * inv_scale
    rounded = torch.round(scaled) if noise is None else torch.floor(scaled + noise)
    clamped = rounded.clamp(-max_mantissa, max_mantissa)
    amax = x.abs().amax()
    # The reference's count(x != 0) - count(clamped != 0) as one count: a zero input always
    # quantises to zero, and a NaN is non-zero on both sides. int32 counts vectorise; int64
    # ones do not (a tensor has < 2**31 elements here).
    flushes = ((x != 0) & (clamped == 0)).sum(dtype=torch.int32)
    stats = torch.stack([amax.double(), flushes.double()])
    mantissa = None
    if want_mantissa:
        if storage_dtype == torch.int16:
            pairs = clamped.to(torch.int32).view(-1, 2)  # (n/2, 2)
            mantissa = (pairs[:, 0] & 0xFFFF) | (pairs[:, 1] << 16)  # (n/2,) int32
        else:
            mantissa = clamped.to(storage_dtype)
    values = clamped * scale if want_values else None
    return mantissa, values, stats


def _requantize_core(
    x: torch.Tensor,  # (n,) float32, overwritten
    inv_scale: torch.Tensor | float,
    scale: torch.Tensor | float,
    noise: torch.Tensor | None,
    max_mantissa: int,
) -> torch.Tensor:
    """``_quantize_core``'s values written back into ``x``, in ``_quantize_core``'s operations
    (so eager and compiled agree with it bit for bit); no statistics."""
    scaled = x.mul_(inv_scale)
    clamped = scaled.round_() if noise is None else scaled.add_(noise).floor_()
    return clamped.clamp_(-max_mantissa, max_mantissa).mul_(scale)


@functools.lru_cache(maxsize=256)
def _scale_tensors(exponent: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """0-d (2**-e, 2**e) tensors: passed as tensors so the compiled kernel never recompiles."""
    inv = torch.tensor(math.ldexp(1.0, -exponent), dtype=torch.float32, device=device)
    return inv, torch.tensor(math.ldexp(1.0, exponent), dtype=torch.float32, device=device)


@functools.cache
def _compiled_core(variant: tuple[bool, bool, bool, torch.dtype]) -> Callable[..., Any]:
    """One compiled kernel per (want_mantissa, want_values, stochastic, storage dtype)."""
    return compile_variant(_quantize_core_packed, variant)


@functools.cache
def _compiled_requantize(stochastic: bool) -> Callable[..., Any]:
    return compile_variant(_requantize_core, (stochastic,))


def compile_variant(core: Callable[..., Any], variant: tuple[Any, ...]) -> Callable[..., Any]:
    """``torch.compile`` of a copy of ``core``'s code, named after ``variant`` (``core``'s
    flags, which it receives again as arguments: dynamo specialises on them).

    Dynamo caps recompilations per *code object*; giving each variant its own copy of the code
    keeps the variants from using up one shared budget (and from recompiling each other away).
    """
    name = core.__name__ + "_" + "_".join(str(v).replace("torch.", "") for v in variant)
    code = core.__code__.replace(co_name=name)
    fn = types.FunctionType(code, core.__globals__, name)
    return torch.compile(fn, dynamic=True, fullgraph=True)


def cxx_compiler_found() -> bool:
    """Whether inductor's CPU backend has a C++ compiler to build kernels with."""
    return any(shutil.which(cc) for cc in ("g++", "clang++", "c++"))


@functools.cache
def _compiler_available(device_type: str) -> bool:
    if os.environ.get("OMNIFLEX_FLEX_KERNEL", "").lower() == "eager":
        return False
    if device_type == "cpu":
        return cxx_compiler_found()
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def resolve_kernel(kernel: KernelName, x: torch.Tensor) -> Literal["eager", "compiled"]:
    """Pick the kernel for ``x``: ``auto`` compiles large tensors where a compiler exists.
    Inside a graph being compiled it is always the eager definition, which that graph takes in
    (a compiled kernel called there would break it)."""
    if torch.compiler.is_compiling() and kernel in ("auto", "compiled"):
        return "eager"
    if kernel == "auto":
        big = x.numel() >= _COMPILED_MIN_NUMEL
        return "compiled" if big and _compiler_available(x.device.type) else "eager"
    if kernel not in ("eager", "compiled"):
        raise ValueError(f"kernel must be 'auto', 'eager' or 'compiled', got {kernel!r}")
    return kernel


def resolve_small_kernel(kernel: KernelName, device: torch.device) -> Literal["eager", "compiled"]:
    """Pick the kernel for a run of small operations (device-resident Autoflex statistics):
    ``auto`` compiles wherever a compiler exists, since one fused call beats a few hundred
    launches whatever the tensor's size. Inside a graph being compiled: eager, as above."""
    if torch.compiler.is_compiling() and kernel in ("auto", "compiled"):
        return "eager"
    if kernel == "auto":
        return "compiled" if _compiler_available(device.type) else "eager"
    if kernel not in ("eager", "compiled"):
        raise ValueError(f"kernel must be 'auto', 'eager' or 'compiled', got {kernel!r}")
    return kernel


def _packs(kernel: KernelName, x: torch.Tensor, flat: torch.Tensor) -> bool:
    """Whether ``x`` takes the compiled kernel, whose packed int16 layout needs an even count
    (odd tensors take the reference path) and 32-bit indexing."""
    return (
        resolve_kernel(kernel, x) == "compiled" and flat.numel() % 2 == 0 and flat.numel() < 2**31
    )


def _quantize_packed(
    flat: torch.Tensor,  # (n,) float32, n even
    inv_scale: torch.Tensor,
    scale: torch.Tensor,
    flat_noise: torch.Tensor | None,
    fmt: FlexFormat,
    want_mantissa: bool,
    want_values: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """The compiled quantiser: mantissas (int16 storage viewed back from packed words),
    values and its statistics tensor ``[amax, flushes]``."""
    variant = (want_mantissa, want_values, flat_noise is not None, fmt.storage_dtype)
    mantissa, values, stats = _compiled_core(variant)(
        flat, inv_scale, scale, flat_noise, fmt.max_mantissa, fmt.storage_dtype,
        want_mantissa, want_values,
    )  # fmt: skip
    if mantissa is not None and mantissa.dtype == torch.int32:
        mantissa = mantissa.view(torch.int16)
    return mantissa, values, stats


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
    flat = x.detach().reshape(-1)  # quantisation is never differentiated through
    flat_noise = None if noise is None else noise.reshape(-1).to(flat.dtype)
    if _packs(kernel, x, flat):
        inv_scale_t, scale_t = _scale_tensors(exponent, x.device)
        mantissa, values, stats = _quantize_packed(
            flat, inv_scale_t, scale_t, flat_noise, fmt, want_mantissa, want_values
        )
        amax, flushes = stats.tolist()
    else:
        mantissa, values, amax, flushes = _quantize_core(
            flat, math.ldexp(1.0, -exponent), math.ldexp(1.0, exponent), flat_noise,
            fmt.max_mantissa, fmt.storage_dtype, want_mantissa, want_values,
        )  # fmt: skip
    return QuantizeOutput(
        None if mantissa is None else mantissa.view(shape),
        None if values is None else values.view(shape),
        float(amax),
        int(flushes),
        exponent,
    )


def quantize_at_device_exponent(
    x: torch.Tensor,
    exponent: torch.Tensor,  # 0-d integer, on x's device
    fmt: FlexFormat,
    *,
    noise: torch.Tensor | None = None,
    want_mantissa: bool = True,
    want_values: bool = False,
    kernel: KernelName = "eager",
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """``quantize_tensor`` at an exponent held in a device tensor, with nothing read back:
    returns the mantissas, the values and the flush count (0-d int64). The maximum is not
    measured again: the caller measured it (``absolute_max``) to choose ``exponent``."""
    if x.dtype != torch.float32:
        x = x.float()
    shape = x.shape
    if x.numel() == 0:
        mantissa = torch.empty(shape, dtype=fmt.storage_dtype, device=x.device)
        flushes = torch.zeros((), dtype=torch.int64, device=x.device)
        return mantissa if want_mantissa else None, x.clone() if want_values else None, flushes
    flat = x.detach().reshape(-1)
    flat_noise = None if noise is None else noise.reshape(-1).to(flat.dtype)
    inv_scale, scale = exact_pow2(-exponent), exact_pow2(exponent)
    if _packs(kernel, x, flat):
        mantissa, values, stats = _quantize_packed(
            flat, inv_scale, scale, flat_noise, fmt, want_mantissa, want_values
        )
        flushes = stats[1].to(torch.int64)
    else:
        clamped = _round_to_grid(flat, inv_scale, flat_noise, fmt.max_mantissa)
        flushes = torch.count_nonzero(flat) - torch.count_nonzero(clamped)
        mantissa = clamped.to(fmt.storage_dtype) if want_mantissa else None
        values = clamped.mul_(scale) if want_values else None
    return (
        None if mantissa is None else mantissa.view(shape),
        None if values is None else values.view(shape),
        flushes,
    )


def overwrite_pays(x: torch.Tensor) -> bool:
    """Whether ``requantize_`` (a read-only statistics pass, then an in-place rewrite) beats a
    new values tensor for ``x``: a CPU float32 tensor of at least ``OVERWRITE_MIN_BYTES``. Below
    that glibc recycles freed blocks and the extra pass costs more than it saves; on GPUs the
    caching allocator recycles every size."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous()
        and x.numel() * 4 >= OVERWRITE_MIN_BYTES
    )


def requantize_(
    x: torch.Tensor,
    exponent: int | torch.Tensor,
    fmt: FlexFormat,
    *,
    noise: torch.Tensor | None = None,
    kernel: KernelName = "eager",
) -> torch.Tensor:
    """Overwrite contiguous float32 ``x`` with ``quantize_tensor(x, ...).values`` (the same
    numbers, given the same ``noise``) and return it; no statistics. Pass only a tensor nothing
    else reads (autograd included: this is not differentiable)."""
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError(
            f"requantize_ overwrites a contiguous float32 tensor, got {x.dtype} with strides "
            f"{x.stride()}; use quantize_tensor(..., want_values=True) instead"
        )
    if x.numel() == 0:
        return x
    flat = x.detach().view(-1)
    flat_noise = None if noise is None else noise.reshape(-1).to(flat.dtype)
    compiled = resolve_kernel(kernel, x) == "compiled"
    if isinstance(exponent, torch.Tensor):  # a device-resident exponent: scales as tensors
        inv_scale, scale = exact_pow2(-exponent), exact_pow2(exponent)
    elif compiled:
        inv_scale, scale = _scale_tensors(exponent, x.device)
    else:
        inv_scale, scale = math.ldexp(1.0, -exponent), math.ldexp(1.0, exponent)
    core = _compiled_requantize(noise is not None) if compiled else _requantize_core
    core(flat, inv_scale, scale, flat_noise, fmt.max_mantissa)
    return x
