"""The Flexpoint number format: an integer mantissa tensor with one shared exponent.

A flex tensor holds ``value = mantissa * 2**exponent`` where ``mantissa`` is real integer
storage (int8 for N <= 8 bits, int16 for N <= 16) saturating at ``±(2**(N-1) - 1)`` and
``exponent`` is one integer shared by the whole tensor (Köster et al., 2017).

Exponent encoding. M exponent bits hold ``2**M`` codes ``c = exponent + bias``. The default bias is
``2**M - 1 - (16 - N)``, so flex16+5 covers exponents ``[-31, 0]``: the value of one mantissa step
(the *scale*) lies in ``[2**-31, 1]`` and the largest magnitude is ``32767``. The paper's simulator
clamped the scale to ``[2**-32, 1]`` (33 exponents); five bits hold 32 of them and we keep the upper
32. Narrower mantissas shift the window up by the bits they lack, so every flexN+5 tops out near
``2**15`` (flex8+5: exponents ``[-23, 8]``, largest magnitude ``127 * 2**8``), and comparisons
between widths are about precision, not range. ``exponent_bias`` moves the window explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from omniflex.flex.errors import FlexTypeError

__all__ = ["FlexFormat", "FlexTensor", "exact_pow2"]


def exact_pow2(exponent: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``2**exponent`` of an integer tensor as ``dtype`` (float32 or float64), exactly.

    The exponent is written into the float's exponent field, so no ``exp2`` implementation can
    round it and no value is read back to the host. Every exponent must give a normal number
    (float32: [-126, 127]; float64: [-1022, 1023]): flex exponents lie within [-100, 100]."""
    if dtype == torch.float32:
        return ((exponent.to(torch.int32) + 127) << 23).view(torch.float32)
    if dtype == torch.float64:
        return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64)
    raise ValueError(f"exact_pow2 makes float32 or float64, got {dtype}")


@dataclass(frozen=True)
class FlexFormat:
    """``flex{N}+{M}``: N-bit two's-complement mantissa, M-bit shared exponent.

    Args:
        mantissa_bits: N, 2..16. Above 16 an fp32 carrier could no longer hold every mantissa
            product exactly enough for the reference path to mean anything.
        exponent_bits: M, 1..8.
        exponent_bias: code offset; ``None`` means ``2**M - 1 - (16 - N)`` (largest magnitude
            about ``2**15`` for every N; flex16+5: scale at most 1).
    """

    mantissa_bits: int = 16
    exponent_bits: int = 5
    exponent_bias: int | None = None
    _bias: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.mantissa_bits, int) or not 2 <= self.mantissa_bits <= 16:
            raise ValueError(
                f"mantissa_bits must be an integer in [2, 16], got {self.mantissa_bits!r}"
            )
        if not isinstance(self.exponent_bits, int) or not 1 <= self.exponent_bits <= 8:
            raise ValueError(
                f"exponent_bits must be an integer in [1, 8], got {self.exponent_bits!r}"
            )
        default_bias = (1 << self.exponent_bits) - 1 - (16 - self.mantissa_bits)
        bias = default_bias if self.exponent_bias is None else self.exponent_bias
        if not isinstance(bias, int):
            raise ValueError(f"exponent_bias must be an integer or None, got {bias!r}")
        # Keep every scale a normal float32 so that dequantisation stays exact.
        if bias - (1 << self.exponent_bits) + 1 < -100 or bias > 100:
            raise ValueError(f"exponent_bias={bias} puts scales outside float32's normal range")
        object.__setattr__(self, "_bias", bias)

    @classmethod
    def from_name(cls, name: str) -> FlexFormat:
        """Parse ``"flex16+5"`` (or ``"16+5"``) into a format."""
        text = name.strip().lower().removeprefix("flex")
        try:
            n, m = (int(part) for part in text.split("+"))
        except ValueError:
            raise ValueError(
                f"cannot parse flex format {name!r}; expected 'flex<N>+<M>', e.g. 'flex16+5'"
            ) from None
        return cls(mantissa_bits=n, exponent_bits=m)

    def to_dict(self) -> dict[str, int | None]:
        """The constructor's arguments (for YAML and ``state_dict``)."""
        return {
            "mantissa_bits": self.mantissa_bits,
            "exponent_bits": self.exponent_bits,
            "exponent_bias": self.exponent_bias,
        }

    @property
    def name(self) -> str:
        return f"flex{self.mantissa_bits}+{self.exponent_bits}"

    @property
    def bias(self) -> int:
        return self._bias

    @property
    def max_mantissa(self) -> int:
        """Largest mantissa magnitude, ``2**(N-1) - 1`` (symmetric: -2**(N-1) is never used)."""
        return (1 << (self.mantissa_bits - 1)) - 1

    @property
    def underflow_mantissa(self) -> int:
        """Autoflex's underflow bound ``2**(N-2)``: a max at or below it wastes the top bit."""
        return 1 << (self.mantissa_bits - 2)

    @property
    def min_exponent(self) -> int:
        return -self._bias

    @property
    def max_exponent(self) -> int:
        return (1 << self.exponent_bits) - 1 - self._bias

    @property
    def storage_dtype(self) -> torch.dtype:
        return torch.int8 if self.mantissa_bits <= 8 else torch.int16

    def clamp_exponent(self, exponent: int) -> int:
        return min(max(exponent, self.min_exponent), self.max_exponent)

    def max_value(self, exponent: int) -> float:
        return self.max_mantissa * math.ldexp(1.0, exponent)

    def __str__(self) -> str:
        return self.name


@dataclass
class FlexTensor:
    """A tensor in Flexpoint: integer ``mantissa`` storage, one ``exponent``, its ``format``.

    Not a ``torch.Tensor`` subclass: it is the storage form. ``to_float()`` is exact because
    every N <= 16 bit integer is a float32 and the scale is a power of two.

    ``exponent`` is a Python int, or a 0-d integer tensor on the mantissas' device when
    Autoflex keeps its state there (``omniflex.flex.autoflex_device``): then the scale is a
    tensor too and nothing is read back to the host (its range was checked where it was made).
    """

    mantissa: torch.Tensor
    exponent: int | torch.Tensor
    format: FlexFormat = field(default_factory=FlexFormat)

    def __post_init__(self) -> None:
        if self.mantissa.dtype != self.format.storage_dtype:
            raise FlexTypeError(
                f"{self.format.name} mantissa must be stored as {self.format.storage_dtype}, "
                f"got {self.mantissa.dtype}"
            )
        if isinstance(self.exponent, torch.Tensor):
            if self.exponent.dim() != 0 or self.exponent.is_floating_point():
                raise FlexTypeError(
                    f"a flex exponent tensor must be a 0-d integer tensor, got "
                    f"{self.exponent.dtype} of shape {tuple(self.exponent.shape)}"
                )
            return
        exponent = int(self.exponent)
        if not self.format.min_exponent <= exponent <= self.format.max_exponent:
            raise ValueError(
                f"exponent {exponent} is outside {self.format.name}'s range "
                f"[{self.format.min_exponent}, {self.format.max_exponent}]"
            )
        self.exponent = exponent

    @property
    def scale(self) -> float | torch.Tensor:
        """Value of one mantissa step, ``2**exponent`` (a 0-d float32 tensor for a tensor
        exponent)."""
        if isinstance(self.exponent, torch.Tensor):
            return exact_pow2(self.exponent)
        return math.ldexp(1.0, self.exponent)

    @property
    def shape(self) -> torch.Size:
        return self.mantissa.shape

    @property
    def nbytes(self) -> int:
        """Bytes of storage: the mantissas plus one exponent (rounded up to whole bytes)."""
        return self.mantissa.numel() * self.mantissa.element_size() + math.ceil(
            self.format.exponent_bits / 8
        )

    def to_float(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Exact float value of every element."""
        return self.mantissa.to(dtype).mul_(self.scale)  # in place: one allocation

    def __repr__(self) -> str:
        m = self.mantissa
        amax = int(m.abs().max()) if m.numel() else 0
        return (
            f"FlexTensor({self.format.name}, shape={tuple(m.shape)}, exponent={self.exponent}, "
            f"scale=2^{self.exponent}, max|mantissa|={amax}/{self.format.max_mantissa}, "
            f"device={m.device})"
        )
