"""Autoflex: predict each tensor's shared exponent *before* the op runs.

Flexpoint has one exponent per tensor, so the exponent must leave room for the next value
without wasting mantissa bits. Autoflex (Köster et al., 2017) keeps, per tensor *use*, a short
history of the tensor's absolute maxima and predicts the next maximum from it:

* **Algorithm 1, initialisation.** With no history, run the op, and while the result overflows
  (largest mantissa >= 2**(N-1) - 1) raise the exponent; while it underflows (largest mantissa
  <= 2**(N-2)) jump the exponent down by the unused bits; stop when the maximum fits.
* **Algorithm 2, prediction.** Over the last ``l`` maxima Γ predict
  ``χ = α·(max Γ + β·std Γ + γ·κ)``, with κ the current scale (one mantissa step), and pick
  the smallest exponent that maps χ inside the mantissa range. α = 2 leaves one bit of headroom,
  β·std covers noisy maxima and γ·κ keeps a tiny or zero tensor from driving the exponent to the
  bottom in one step.
* **Overflow.** When the op's maximum still overflows the predicted exponent the history is
  cleared, twice the observed maximum is recorded, the exponent is recomputed and the output is
  quantised again, so a saturated value is never used silently.

Our ops accumulate in float32 and quantise the result, so "rerunning the op" means quantising its
float32 result again: the same numbers the paper's simulator produced, without a second matmul.
Every decision depends only on the maximum, so a large result the op owns is quantised in place:
its statistics are read first, the exponent settled, and the values written over it once.
The statistics live in Python floats (float64) and travel in ``state_dict``, so a resumed run
continues bit for bit.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from omniflex.flex.errors import FlexNonFiniteError, FlexTypeError
from omniflex.flex.format import FlexFormat, FlexTensor
from omniflex.flex.kernels import (
    KernelName,
    QuantizeOutput,
    overwrite_pays,
    quantize_tensor,
    requantize_,
)

__all__ = ["AutoflexConfig", "AutoflexState", "check_saved_format"]


@dataclass(frozen=True)
class AutoflexConfig:
    """Hyperparameters of Autoflex (defaults are the paper's).

    Args:
        history: l, the number of past maxima kept.
        alpha: multiplicative headroom on the predicted maximum.
        beta: standard deviations of the history added to its maximum.
        gamma: additive constant, in units of the current scale κ.
        recompute_on_overflow: clear, double and requantise on overflow (turn off only to
            demonstrate what the mechanism prevents).
        stale_after: a state not updated for this many of its owner's steps reinitialises with
            Algorithm 1 instead of trusting an old history; ``0`` disables the check.
    """

    history: int = 16
    alpha: float = 2.0
    beta: float = 3.0
    gamma: float = 100.0
    recompute_on_overflow: bool = True
    stale_after: int = 1000

    def __post_init__(self) -> None:
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history}")
        if self.alpha < 1.0:
            raise ValueError(f"alpha must be >= 1 (it is headroom), got {self.alpha}")
        if self.beta < 0 or self.gamma < 0:
            raise ValueError(
                f"beta and gamma must be >= 0, got beta={self.beta} gamma={self.gamma}"
            )
        if self.stale_after < 0:
            raise ValueError(f"stale_after must be >= 0, got {self.stale_after}")


def _pstdev(values: deque[float]) -> float:
    """Population standard deviation (plain floats: ``statistics`` is exact but 20x slower)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)


def _ceil_log2(value: float) -> int:
    """Exact ceil(log2(value)) for value > 0."""
    mantissa, exp = math.frexp(value)  # value = mantissa * 2**exp, mantissa in [0.5, 1)
    return exp - 1 if mantissa == 0.5 else exp


class AutoflexState:
    """Exponent manager for one tensor use (e.g. ``fc1.input`` or ``fc1.grad_weight``)."""

    def __init__(
        self, name: str, fmt: FlexFormat | None = None, config: AutoflexConfig | None = None
    ) -> None:
        self.name = name
        self.format = fmt or FlexFormat()
        self.config = config or AutoflexConfig()
        self.exponent = self.format.max_exponent
        self.initialized = False
        self.history: deque[float] = deque(maxlen=self.config.history)
        self.last_clock = 0
        # telemetry
        self.updates = 0
        self.overflows = 0
        self.saturations = 0
        self.flushes = 0
        self.elements = 0
        self.last_amax = 0.0
        self.last_flushes = 0
        self.last_exponent = self.exponent
        self._warned_saturation = False
        # For a tensor split across ranks (``omniflex.flex.sharding``): turns this rank's maximum
        # into the whole tensor's, so that every shard settles on the same exponent.
        self.amax_reduce: Callable[[float], float] | None = None

    # ----------------------------------------------------------------- prediction
    def _max_mantissa_at(self, amax: float, exponent: int) -> float:
        return round(math.ldexp(amax, -exponent))  # round-half-even, like the kernel

    def _overflows(self, amax: float, exponent: int) -> bool:
        return self._max_mantissa_at(amax, exponent) >= self.format.max_mantissa

    def initial_exponent(self, amax: float, start: int | None = None) -> int:
        """Algorithm 1 on the op's maximum: raise on overflow, jump down on underflow."""
        fmt = self.format
        exponent = fmt.max_exponent if start is None else fmt.clamp_exponent(start)
        for _ in range(2 * (fmt.max_exponent - fmt.min_exponent) + 4):  # bounded: no endless loop
            top = self._max_mantissa_at(amax, exponent)
            if top >= fmt.max_mantissa:
                if exponent == fmt.max_exponent:
                    break
                exponent += 1
            elif top <= fmt.underflow_mantissa:
                if exponent == fmt.min_exponent or amax == 0.0:
                    break
                # Jump down by the unused bits, but never onto an overflow (a power of two sits
                # exactly on the underflow bound and would otherwise bounce between the two).
                jump = max(fmt.mantissa_bits - 1 - max(int(top), 1).bit_length(), 1)
                jump = min(jump, exponent - fmt.min_exponent)
                while jump > 0 and self._overflows(amax, exponent - jump):
                    jump -= 1
                if jump == 0:
                    break
                exponent -= jump
            else:
                break
        return exponent

    def predict(self, exponent: int | None = None) -> int:
        """Algorithm 2: exponent that maps χ = α(max + β·std + γ·κ) to the top of the range."""
        cfg = self.config
        current = self.exponent if exponent is None else exponent
        if not self.history:
            return current
        hist = self.history
        spread = _pstdev(hist)
        kappa = math.ldexp(1.0, current)
        chi = cfg.alpha * (max(hist) + cfg.beta * spread + cfg.gamma * kappa)
        if chi <= 0.0:
            return self.format.min_exponent
        return self.format.clamp_exponent(_ceil_log2(chi / self.format.max_mantissa))

    # ----------------------------------------------------------------- the protocol
    def quantize(
        self,
        x: torch.Tensor,
        *,
        want_mantissa: bool = True,
        want_values: bool = False,
        stochastic: bool = False,
        generator: torch.Generator | None = None,
        kernel: KernelName = "eager",
        clock: int | None = None,
        module: str | None = None,
        overwrite: bool = False,
    ) -> QuantizeOutput:
        """Quantise ``x`` at the predicted exponent, handle overflow, update the statistics.

        ``overwrite=True`` says ``x`` is a float32 temporary nothing else reads, so the values
        may be written into its storage: where that pays (``kernels.overwrite_pays``) the
        statistics come from a read-only pass, and the values, the same numbers, overwrite
        ``x`` once the exponent is settled."""
        if not (x.is_floating_point()):
            where = f" in module '{module}'" if module else ""
            raise FlexTypeError(
                f"flex tensor '{self.name}'{where} got dtype {x.dtype}; Flexpoint quantises real "
                "floating-point tensors only. Cast it to float32 or leave this op unconverted."
            )
        noise = None
        if stochastic:
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        in_place = overwrite and want_values and not want_mantissa and overwrite_pays(x)

        def run(exponent: int) -> QuantizeOutput:
            return quantize_tensor(
                x, exponent, self.format, noise=noise, want_mantissa=want_mantissa,
                want_values=want_values and not in_place, kernel=kernel,
            )  # fmt: skip

        out = run(self.begin(clock))
        amax = out.amax if self.amax_reduce is None else self.amax_reduce(out.amax)
        exponent = self.settle(amax, out.exponent, shape=tuple(x.shape), module=module)
        if exponent != out.exponent:
            out = run(exponent)
        if in_place:
            values = requantize_(x, out.exponent, self.format, noise=noise, kernel=kernel)
            out = QuantizeOutput(None, values, out.amax, out.flushes, out.exponent)
        self.record(amax, out.flushes, out.exponent, x.numel())
        return out

    # ------------------------------------------------- the protocol, one step at a time
    # ``quantize`` is these three calls around one tensor. An op that quantises a tensor in
    # parts (``omniflex.flex.attention`` quantises attention scores a block of queries at a
    # time) makes them itself: it quantises every part at ``begin``'s exponent, settles once on
    # the maximum of the parts' maxima, quantises again if the exponent moved, and records the
    # whole tensor's statistics, so the state ends exactly as ``quantize`` of the whole would
    # leave it.
    def begin(self, clock: int | None = None) -> int:
        """Start one update at the owner's ``clock``: a state idle for more than
        ``stale_after`` steps reinitialises. Returns the predicted exponent to quantise at."""
        if clock is not None:
            stale = self.config.stale_after and clock - self.last_clock > self.config.stale_after
            if stale and self.initialized:
                self.initialized = False
                self.history.clear()
            self.last_clock = clock
        return self.exponent

    def settle(
        self, amax: float, exponent: int, *, shape: tuple[int, ...], module: str | None = None
    ) -> int:
        """The exponent the whole tensor (of ``shape``, maximum ``amax``, quantised first at
        ``exponent``) takes: Algorithm 1 on first use, the overflow recompute, or ``exponent``.
        Raises ``FlexNonFiniteError`` on a NaN or Inf maximum."""
        if not math.isfinite(amax):
            where = f" in module '{module}'" if module else ""
            bad = "NaN" if math.isnan(amax) else "Inf"
            raise FlexNonFiniteError(
                f"{bad} reached flex tensor '{self.name}'{where} (shape {shape}); "
                "Flexpoint cannot encode it. Check the learning rate and the inputs, or run "
                "this step with `flex_disabled(model)` to find where it starts."
            )
        return self._settle(amax, exponent)

    def record(self, amax: float, flushes: int, exponent: int, numel: int) -> None:
        """Finish one update: the whole tensor (``numel`` elements, maximum ``amax``) was
        quantised at ``exponent`` with ``flushes`` non-zero values rounded to zero. Counts,
        warns on saturation and predicts the next exponent."""
        if self._max_mantissa_at(amax, exponent) > self.format.max_mantissa:
            self.saturations += 1
            if not self._warned_saturation:
                self._warned_saturation = True
                at_top = exponent == self.format.max_exponent
                fix = (
                    "Use a FlexFormat with a smaller exponent_bias to move the range up."
                    if at_top
                    else "Keep AutoflexConfig.recompute_on_overflow on."
                )
                warnings.warn(
                    f"flex tensor '{self.name}' saturates at exponent {exponent} "
                    f"(max |x| = {amax:.4g} > {self.format.max_value(exponent):.4g}); "
                    f"values are clipped. {fix}",
                    RuntimeWarning,
                    stacklevel=4,
                )
        self.updates += 1
        self.flushes += flushes
        self.elements += numel
        self.last_amax = amax
        self.last_flushes = flushes
        self.last_exponent = exponent
        self.exponent = self.predict(exponent) if self.initialized else exponent

    def _settle(self, amax: float, exponent: int) -> int:
        """The exponent to quantise at, given the tensor's maximum and the predicted
        ``exponent``: Algorithm 1 on first use, the overflow recompute, or ``exponent``.
        Records the maximum in the history and counts overflows."""
        if not self.initialized:
            if amax > 0.0:
                exponent = self.initial_exponent(amax, start=self.exponent)
                self.initialized = True
                self.history.append(amax)
        elif self._overflows(amax, exponent) and self.config.recompute_on_overflow:
            self.overflows += 1
            self.history.clear()
            self.history.append(2.0 * amax)
            exponent = self.predict(exponent)
            while self._overflows(amax, exponent) and exponent < self.format.max_exponent:
                exponent += 1
        else:
            if self._overflows(amax, exponent):
                self.overflows += 1
            self.history.append(amax)
        return exponent

    def to_flex(self, x: torch.Tensor, **kwargs: Any) -> FlexTensor:
        """Quantise ``x`` with this state and return the storage form."""
        out = self.quantize(x, want_mantissa=True, want_values=False, **kwargs)
        assert out.mantissa is not None
        return FlexTensor(out.mantissa, out.exponent, self.format)

    # ----------------------------------------------------------------- telemetry
    @property
    def headroom_bits(self) -> float:
        """Unused mantissa bits above the last maximum (0 = top bit used; negative = clipped)."""
        if self.last_amax <= 0.0:
            return float(self.format.mantissa_bits - 1)
        used = math.log2(math.ldexp(self.last_amax, -self.last_exponent) + 1.0)
        return (self.format.mantissa_bits - 1) - used

    def telemetry(self) -> dict[str, Any]:
        return {
            "tensor": self.name,
            "exponent": self.last_exponent,
            "next_exponent": self.exponent,
            "amax": self.last_amax,
            "headroom_bits": round(self.headroom_bits, 4),
            "overflows": self.overflows,
            "saturations": self.saturations,
            "flushes": self.flushes,
            "last_flushes": self.last_flushes,
            "elements": self.elements,
            "updates": self.updates,
        }

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        return {
            "exponent": self.exponent,
            "initialized": self.initialized,
            "history": list(self.history),
            "last_clock": self.last_clock,
            "updates": self.updates,
            "overflows": self.overflows,
            "saturations": self.saturations,
            "flushes": self.flushes,
            "elements": self.elements,
            "last_amax": self.last_amax,
            "last_flushes": self.last_flushes,
            "last_exponent": self.last_exponent,
            "format": self.format.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_saved_format(self.name, self.format, state)
        self.exponent = int(state["exponent"])
        self.initialized = bool(state["initialized"])
        self.history = deque((float(v) for v in state["history"]), maxlen=self.config.history)
        for key in ("last_clock", "updates", "overflows", "saturations", "flushes", "elements"):
            setattr(self, key, int(state[key]))
        self.last_amax = float(state["last_amax"])
        self.last_flushes = int(state["last_flushes"])
        self.last_exponent = int(state["last_exponent"])

    def __repr__(self) -> str:
        return (
            f"AutoflexState({self.name!r}, {self.format.name}, exponent={self.exponent}, "
            f"history={len(self.history)}/{self.config.history}, overflows={self.overflows})"
        )


def check_saved_format(name: str, fmt: FlexFormat, state: dict[str, Any]) -> None:
    """Raise if the Autoflex ``state`` of tensor ``name`` was saved for a format other than
    ``fmt`` (a state saved without one is taken to be ``fmt``'s)."""
    saved = FlexFormat(**state["format"]) if "format" in state else fmt
    if saved != fmt:
        raise ValueError(
            f"Autoflex state for '{name}' was saved for {saved.name}, "
            f"but this tensor uses {fmt.name}"
        )
