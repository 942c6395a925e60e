"""``flex16_linear``: a frozen flex16 linear layer on the int16 mantissas, for decoding on CPU.

Decoding one token multiplies one row by every weight matrix: at batch 1 the time goes into
reading the weights. A flex16 weight *is* int16 mantissas and one exponent, and a frozen flex
input is int16 mantissas on its state's grid, so the product can be taken on the mantissas: half
the bytes read, and 16 products per AVX2 instruction (``vpmaddwd``). ``csrc/int16_matvec.cpp``
does that; this module builds it on first use (``torch.utils.cpp_extension``, once, kept under
``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``) and registers it as
``torch.ops.omniflex.flex16_linear`` with a fake implementation, so ``torch.compile`` graphs call
it as an opaque kernel.

**Reference.** ``flex16_linear_reference``: the input rounded as a frozen flex op rounds it,
times the decoded weight, by ``F.linear`` in float32. The kernel sums each pair of products
exactly in int32 and accumulates in float32, so it differs from the reference only in float32
summation rounding (tested). It is a matrix-vector product, not a blocked matmul, so it pays
off for a few rows only: callers use it for decoding (one row a sequence) and a BLAS matmul of
the decoded weights for prefill.

**Availability.** ``available()`` is False — and callers take the float32 path — without AVX2
and FMA, without a C++ compiler, with ``OMNIFLEX_INT16_MATVEC=off``, or when the build fails (a
warning says why).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from omniflex.flex.kernels import cxx_compiler_found
from omniflex.flex.ops import fixed_values_reference

__all__ = ["available", "flex16_linear", "flex16_linear_reference"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "int16_matvec.cpp"
#: The largest mantissa the kernel takes: products of two must pair-sum inside int32.
MAX_MANTISSA = 32767


@functools.cache
def available() -> bool:
    """Whether ``torch.ops.omniflex.flex16_linear`` is built and loaded (builds it once)."""
    if os.environ.get("OMNIFLEX_INT16_MATVEC", "").lower() in ("0", "off", "false"):
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    if not cxx_compiler_found():
        return False
    from torch.utils import cpp_extension

    build = _build_directory()
    log.info("loading the int16 matvec kernel from %s (built there once, ~10 s)", build)
    try:
        cpp_extension.load(
            name="omniflex_int16_matvec",
            sources=[str(_SOURCE)],
            extra_cflags=["-O3", "-mavx2", "-mfma"],
            build_directory=str(build),
            is_python_module=False,
        )
    except (OSError, RuntimeError, ImportError) as err:
        warnings.warn(
            f"could not build {_SOURCE.name} ({err}); flex16 decoding multiplies decoded float32 "
            "weights instead (slower, same values up to float32 summation order)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False

    @torch.library.register_fake("omniflex::flex16_linear")
    def _fake(
        x: torch.Tensor, weight: torch.Tensor, x_exponent: int, w_exponent: int, max_mantissa: int
    ) -> torch.Tensor:
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    return True


#: A build lock older than this was left by a process killed mid-build (a build takes ~10 s).
STALE_LOCK_SECONDS = 300


def _build_directory() -> Path:
    """Where the kernel is built: ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/torch_extensions``,
    one folder per torch version. torch.utils.cpp_extension waits for ever on the lock file of a
    build whose process was killed (Ctrl-C on a first ``omniflex serve``); a stale one is
    removed."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    build = Path(base) / f"omniflex_int16_matvec-torch{torch.__version__}"
    build.mkdir(parents=True, exist_ok=True)
    lock = build / "lock"
    try:
        if time.time() - lock.stat().st_mtime > STALE_LOCK_SECONDS:
            lock.unlink()
            log.warning("removed a stale build lock %s (a build was interrupted)", lock)
    except FileNotFoundError:
        pass
    return build


def flex16_linear(
    x: torch.Tensor,
    x_exponent: int,
    mantissa: torch.Tensor,
    w_exponent: int,
    max_mantissa: int = MAX_MANTISSA,
) -> torch.Tensor:
    """``x`` (..., K) rounded onto the grid ``2**x_exponent`` (half to even, saturating at
    ``max_mantissa``) times the weight ``mantissa * 2**w_exponent`` (N, K) int16, transposed:
    (..., N) float32. Needs ``available()``; ``flex16_linear_reference`` computes the same."""
    if not available():
        raise RuntimeError(
            "the int16 matvec kernel is not available on this machine (it needs an x86 CPU with "
            "AVX2 and a C++ compiler); use flex16_linear_reference"
        )
    return torch.ops.omniflex.flex16_linear(x, mantissa, x_exponent, w_exponent, max_mantissa)


def flex16_linear_reference(
    x: torch.Tensor,
    x_exponent: int,
    mantissa: torch.Tensor,
    w_exponent: int,
    max_mantissa: int = MAX_MANTISSA,
) -> torch.Tensor:
    """What ``flex16_linear`` computes, in float32 PyTorch ops (a frozen ``flex_linear`` without
    bias or output rounding; a NaN input makes its row NaN)."""
    w = mantissa.float() * 2.0**w_exponent
    return F.linear(fixed_values_reference(x, x_exponent, max_mantissa), w)
