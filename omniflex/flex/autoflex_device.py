"""Device-resident Autoflex: the reference's exponents with nothing read back to the host.

``AutoflexState`` (the reference) keeps a tensor's statistics in Python floats, so every
quantisation reads the tensor's maximum and flush count back to the host. On a GPU that stalls
the stream at every op, and it keeps a training step out of a CUDA graph or one compiled graph.
``DeviceAutoflexState`` keeps the same state in two small tensors on the data's device — the
history of maxima, in float64 like the reference's Python floats, and the exponent, flags and
counters in int64 — and runs Autoflex as tensor operations:

1. the tensor's maximum is measured first (``kernels.absolute_max``, a read-only pass);
2. the exponent is settled on the device: Algorithm 1 on first use, the overflow recompute,
   or the predicted exponent — each computed, one chosen by ``torch.where``;
3. the tensor is quantised once, at that exponent (``kernels.quantize_at_device_exponent``);
4. the statistics are recorded and the next exponent predicted (Algorithm 2).

Steps 2 and 4 are some two hundred operations on scalars and 16-element tensors. Written as
pure functions of the state tensors (``_settle``, ``_record``), they run as a couple of compiled
kernels wherever a compiler exists (``kernel="auto"`` or ``"compiled"``), eagerly otherwise.

**The overflow recompute without a read-back.** The reference quantises at the predicted
exponent, and when the maximum overflows it clears the history, records twice the maximum,
predicts again, raises the exponent while the maximum still overflows, and quantises again.
Whether a maximum overflows is monotone in the exponent, so that loop ends at
``max(predict([2·max]), e_fit)``, with ``e_fit`` the smallest exponent at which the maximum
does not overflow (clamped to the format's range). With the maximum measured before the one
quantisation, that exponent is computed directly. The cost is step 1's extra read of every
tensor, where the reference reads a tensor twice only on the rare recompute.

**Algorithm 1 in closed form.** The reference walks the exponent up while the maximum
overflows and jumps it down while it underflows, never onto an overflow. Such a walk can only
stop at ``e_fit``: there it fits, or it underflows with an overflow one step below, or it hit
the range's end. ``e_fit`` comes from the maximum's binary exponent, checked exactly at the two
(for 2-bit mantissas three) candidate exponents it leaves.

**Exactness.** Each decision is the reference's comparison on the same float64 numbers
(power-of-two scalings are exact; rounding is half to even on both sides), so histories,
counters, exponents, mantissas and ``state_dict`` equal the reference's bit for bit (tested on
sequences with overflow, underflow, zeros, stale states and saturation) — with one exception,
the prediction's standard deviation. The reference sums the history with ``math.fsum``
(correctly rounded) and squares deviations with ``**`` (libm ``pow``, which in about one case
in a thousand is an ulp from the correctly rounded ``d*d``); the device sums in float64 in its
own order and squares with ``d*d``. The two deviations can differ in the last bit or two, which
changes a predicted exponent only if χ / max_mantissa lies within about 2**-50 (relative) of a
power of two.

**Errors, deferred.** A NaN or Inf maximum cannot raise at its op without a read-back. The
state skips that update (as the reference's state is left when it raises; the reference's
``begin`` — the staleness check and the clock — still happens) and counts it.
``check_states`` (``omniflex.flex.check_flex_step`` for a model and its optimizer), once per
training step and with one read-back for all states, raises ``FlexNonFiniteError`` naming
them and gives the reference's saturation warning. States that ran after the bad one in that
step have moved on; discard the step.

Quantising in parts (``AutoflexState.begin`` / ``settle`` / ``record``) is not provided:
blocked attention takes the written-out path with these states. The state moves to the
device of the first tensor it quantises; ``state_dict`` reads it back (the reference's dict,
equal) and ``load_state_dict`` takes either's.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch

from omniflex.flex.autoflex import AutoflexConfig, AutoflexState, check_saved_format
from omniflex.flex.errors import FlexNonFiniteError, FlexTypeError
from omniflex.flex.format import FlexFormat, FlexTensor, exact_pow2
from omniflex.flex.kernels import (
    KernelName,
    QuantizeOutput,
    absolute_max,
    compile_variant,
    overwrite_pays,
    quantize_at_device_exponent,
    requantize_,
    resolve_small_kernel,
)

__all__ = ["AnyAutoflexState", "DeviceAutoflexState", "check_states"]

# Fields of the int64 state vector.
(
    _EXPONENT, _INITIALIZED, _COUNT, _LAST_CLOCK, _UPDATES, _OVERFLOWS, _SATURATIONS, _FLUSHES,
    _ELEMENTS, _LAST_FLUSHES, _LAST_EXPONENT, _NONFINITE,
) = range(12)  # fmt: skip
_INT_FIELDS = 12
_SAVED_COUNTERS = (
    ("last_clock", _LAST_CLOCK), ("updates", _UPDATES), ("overflows", _OVERFLOWS),
    ("saturations", _SATURATIONS), ("flushes", _FLUSHES), ("elements", _ELEMENTS),
    ("last_flushes", _LAST_FLUSHES), ("last_exponent", _LAST_EXPONENT),
)  # fmt: skip
_F64 = torch.float64


class DeviceAutoflexState:
    """``AutoflexState`` with its statistics in tensors on the data's device (see the module
    docstring); the same protocol for whole tensors (``quantize``, ``to_flex``), the same
    ``state_dict``. Attributes such as ``exponent`` or ``history`` read the device back."""

    def __init__(
        self,
        name: str,
        fmt: FlexFormat | None = None,
        config: AutoflexConfig | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.name = name
        self.format = fmt or FlexFormat()
        self.config = config or AutoflexConfig()
        length = self.config.history
        ints = torch.zeros(_INT_FIELDS, dtype=torch.int64, device=device)
        ints[_EXPONENT] = ints[_LAST_EXPONENT] = self.format.max_exponent
        self._ints = ints
        # The last `count` slots hold the history, oldest first; then the last maximum.
        self._floats = torch.zeros(length + 1, dtype=_F64, device=device)
        self._slots = torch.arange(length, device=device)
        self._offsets = torch.arange(3, device=device)  # Algorithm 1's candidate exponents
        self._saturations_seen = 0  # host: saturations already checked (``check_states``)
        self._warned_saturation = False
        # ``AutoflexState.amax_reduce``, on 0-d device tensors (no read-back).
        self.amax_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self._ints.device

    def _move_to(self, device: torch.device) -> None:
        self._ints, self._floats = self._ints.to(device), self._floats.to(device)
        self._slots, self._offsets = self._slots.to(device), self._offsets.to(device)

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
        clock: int | torch.Tensor | None = None,
        module: str | None = None,
        overwrite: bool = False,
    ) -> QuantizeOutput:
        """``AutoflexState.quantize`` with no read-back: ``amax``, ``flushes`` and ``exponent``
        of the result are 0-d device tensors, and a NaN or Inf is reported by
        ``check_states``, not raised here."""
        if not x.is_floating_point():
            where = f" in module '{module}'" if module else ""
            raise FlexTypeError(
                f"flex tensor '{self.name}'{where} got dtype {x.dtype}; Flexpoint quantises real "
                "floating-point tensors only. Cast it to float32 or leave this op unconverted."
            )
        if self._ints.device != x.device:
            self._move_to(x.device)
        noise = None
        if stochastic:  # drawn as the reference draws it
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        x32 = x.detach() if x.dtype == torch.float32 else x.detach().float()
        amax = absolute_max(x32)
        if self.amax_reduce is not None:  # a shard: the whole tensor's maximum
            amax = self.amax_reduce(amax)
        settle, record = _statistics_kernels(self.format, self.config, kernel, x.device)
        exponent, ints, floats, finite = settle(
            self.format, self.config, self._ints, self._floats, self._slots, self._offsets, amax,
            clock,
        )  # fmt: skip
        if overwrite and want_values and not want_mantissa and overwrite_pays(x):
            nonzero = torch.count_nonzero(x32)
            values = requantize_(x, exponent, self.format, noise=noise, kernel=kernel)
            mantissa, flushes = None, nonzero - torch.count_nonzero(values)
        else:
            mantissa, values, flushes = quantize_at_device_exponent(
                x32, exponent, self.format, noise=noise, want_mantissa=want_mantissa,
                want_values=want_values, kernel=kernel,
            )  # fmt: skip
        self._ints.copy_(record(ints, flushes, finite, x.numel()))
        self._floats.copy_(floats)
        return QuantizeOutput(mantissa, values, amax, flushes, exponent)

    def to_flex(self, x: torch.Tensor, **kwargs: Any) -> FlexTensor:
        """Quantise ``x`` with this state and return the storage form (a tensor exponent)."""
        out = self.quantize(x, want_mantissa=True, want_values=False, **kwargs)
        assert out.mantissa is not None
        return FlexTensor(out.mantissa, out.exponent, self.format)

    # ----------------------------------------------------------------- host views (read back)
    def _host(self) -> tuple[list[int], list[float]]:
        return self._ints.tolist(), self._floats.tolist()

    @property
    def exponent(self) -> int:
        """The predicted exponent of the next use (reads the device)."""
        return int(self._ints[_EXPONENT])

    @property
    def initialized(self) -> bool:
        return bool(self._ints[_INITIALIZED])

    @property
    def history(self) -> deque[float]:
        return deque(self.state_dict()["history"], maxlen=self.config.history)

    last_clock = property(lambda self: self._int_field(_LAST_CLOCK))
    updates = property(lambda self: self._int_field(_UPDATES))
    overflows = property(lambda self: self._int_field(_OVERFLOWS))
    saturations = property(lambda self: self._int_field(_SATURATIONS))
    flushes = property(lambda self: self._int_field(_FLUSHES))
    elements = property(lambda self: self._int_field(_ELEMENTS))
    last_flushes = property(lambda self: self._int_field(_LAST_FLUSHES))
    last_exponent = property(lambda self: self._int_field(_LAST_EXPONENT))

    def _int_field(self, index: int) -> int:
        return int(self._ints[index])

    @property
    def last_amax(self) -> float:
        return float(self._floats[self.config.history])

    @property
    def headroom_bits(self) -> float:
        return self._as_reference().headroom_bits

    def telemetry(self) -> dict[str, Any]:
        return self._as_reference().telemetry()

    def _as_reference(self) -> AutoflexState:
        ref = AutoflexState(self.name, self.format, self.config)
        ref.load_state_dict(self.state_dict())
        return ref

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """The reference's ``state_dict`` (Python numbers), read back from the device."""
        ints, floats = self._host()
        length = self.config.history
        return {
            "exponent": ints[_EXPONENT],
            "initialized": bool(ints[_INITIALIZED]),
            "history": floats[length - ints[_COUNT] : length],
            "last_clock": ints[_LAST_CLOCK],
            "updates": ints[_UPDATES],
            "overflows": ints[_OVERFLOWS],
            "saturations": ints[_SATURATIONS],
            "flushes": ints[_FLUSHES],
            "elements": ints[_ELEMENTS],
            "last_amax": floats[length],
            "last_flushes": ints[_LAST_FLUSHES],
            "last_exponent": ints[_LAST_EXPONENT],
            "format": self.format.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a ``state_dict`` of either kind of state."""
        check_saved_format(self.name, self.format, state)
        length = self.config.history
        values = [float(v) for v in state["history"]]
        kept = values[len(values) - min(len(values), length) :]  # a deque(maxlen) keeps these
        ints = [0] * _INT_FIELDS
        ints[_EXPONENT] = int(state["exponent"])
        ints[_INITIALIZED] = int(bool(state["initialized"]))
        ints[_COUNT] = len(kept)
        for key, index in _SAVED_COUNTERS:
            ints[index] = int(state[key])
        floats = [0.0] * (length - len(kept)) + kept + [float(state["last_amax"])]
        self._ints.copy_(torch.tensor(ints, dtype=torch.int64))
        self._floats.copy_(torch.tensor(floats, dtype=_F64))
        self._saturations_seen = ints[_SATURATIONS]

    def __repr__(self) -> str:
        return (
            f"DeviceAutoflexState({self.name!r}, {self.format.name}, device={self.device}, "
            f"history length {self.config.history})"
        )


# --------------------------------------------------------------------------- Autoflex as tensor ops
# Pure functions of the state tensors (and the format and config, constants to the compiler),
# so that one ``torch.compile`` call can fuse each into a kernel or two
# (``_statistics_kernels``); eagerly they are some two hundred small operations.
def _settle(
    fmt: FlexFormat,
    cfg: AutoflexConfig,
    ints: torch.Tensor,  # (12,) int64 state vector
    floats: torch.Tensor,  # (history + 1,) float64: history slots, last maximum
    slots: torch.Tensor,  # (history,) arange
    offsets: torch.Tensor,  # (3,) arange
    amax: torch.Tensor,  # 0-d float32, max |x|
    clock: int | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``AutoflexState.begin``, ``settle`` and ``record`` but the flush counts: returns the
    exponent to quantise at, the new int64 state vector (flush fields not yet updated), the
    new float64 one and whether the maximum was finite (if not, only ``begin`` happened)."""
    length = cfg.history
    exponent, count, last_clock = ints[_EXPONENT], ints[_COUNT], ints[_LAST_CLOCK]
    initialized = ints[_INITIALIZED] != 0
    if clock is not None:  # begin: a state idle for too long starts again
        if cfg.stale_after:
            stale = (clock - last_clock) > cfg.stale_after
            initialized = initialized & ~stale
            count = torch.where(stale, 0, count)  # an uninitialised history is empty
        last_clock = torch.zeros_like(last_clock) + clock
    a = amax.to(_F64)  # exact, as float(amax) is
    finite = torch.isfinite(a)
    a = torch.where(finite, a, 0.0)
    e_fit = _smallest_fitting_exponent(fmt, offsets, a)
    overflow = _overflows(fmt, a, exponent)
    positive = a > 0
    first = ~initialized
    redo = initialized & overflow if cfg.recompute_on_overflow else torch.zeros_like(overflow)
    # The reference's recompute: the history [2·max] predicts, then the exponent rises while
    # the maximum overflows (spread 0: the history has one value).
    redone = torch.maximum(_exponent_for(fmt, cfg, 2.0 * a, 0.0, exponent), e_fit)
    settled = torch.where(
        first, torch.where(positive, e_fit, exponent), torch.where(redo, redone, exponent)
    )
    append = (first & positive) | initialized
    history = floats[:length]
    shifted = torch.cat([history[1:], torch.where(redo, 2.0 * a, a).view(1)])
    new_history = torch.where(append, shifted, history)
    new_count = torch.where(append, torch.where(redo, 1, (count + 1).clamp_max(length)), count)
    now_initialized = initialized | positive
    # record: saturation, and the prediction for the next use
    saturated = torch.round(a * exact_pow2(-settled, _F64)) > fmt.max_mantissa
    predicted = _predict(fmt, cfg, slots, new_history, new_count, settled)
    next_exponent = torch.where(now_initialized, predicted, settled)

    def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        return torch.where(finite, new, old)

    fields = [
        keep(next_exponent, exponent),
        keep(now_initialized, initialized).to(torch.int64),
        keep(new_count, count),
        last_clock,
        ints[_UPDATES] + finite,
        ints[_OVERFLOWS] + (finite & initialized & overflow),
        ints[_SATURATIONS] + (finite & saturated),
        ints[_FLUSHES],
        ints[_ELEMENTS],
        ints[_LAST_FLUSHES],
        keep(settled, ints[_LAST_EXPONENT]),
        ints[_NONFINITE] + ~finite,
    ]
    new_floats = torch.cat([keep(new_history, history), keep(a, floats[length]).view(1)])
    return settled, torch.stack(fields), new_floats, finite


def _record(
    ints: torch.Tensor, flushes: torch.Tensor, finite: torch.Tensor, numel: int
) -> torch.Tensor:
    """``AutoflexState.record``'s flush and element counts, added to ``_settle``'s vector."""
    counted = torch.stack(
        [
            ints[_FLUSHES] + flushes * finite,
            ints[_ELEMENTS] + finite * numel,
            torch.where(finite, flushes, ints[_LAST_FLUSHES]),
        ]
    )
    return torch.cat([ints[:_FLUSHES], counted, ints[_LAST_FLUSHES + 1 :]])


def _overflows(fmt: FlexFormat, a: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """``round(a * 2**-exponent) >= max_mantissa`` (half to even, as Python's round)."""
    return torch.round(a * exact_pow2(-exponent, _F64)) >= fmt.max_mantissa


def _smallest_fitting_exponent(
    fmt: FlexFormat, offsets: torch.Tensor, a: torch.Tensor
) -> torch.Tensor:
    """Algorithm 1's result: the smallest exponent in range at which ``a`` does not overflow.
    With ``a = m * 2**b``, m in [0.5, 1), exponent ``b - N`` always overflows and
    ``b - N + 2`` (``b - N + 3`` for N = 2) never does."""
    safe = torch.where(a > 0, a, 1.0)
    binary = ((safe.view(torch.int64) >> 52) & 0x7FF) - 1022  # frexp's exponent b
    candidates = binary - (fmt.mantissa_bits - 1) + offsets  # (3,)
    overflowing = _overflows(fmt, safe, candidates).sum()  # overflow is monotone
    return (candidates[0] + overflowing).clamp(fmt.min_exponent, fmt.max_exponent)


def _predict(
    fmt: FlexFormat,
    cfg: AutoflexConfig,
    slots: torch.Tensor,
    history: torch.Tensor,
    count: torch.Tensor,
    exponent: torch.Tensor,
) -> torch.Tensor:
    """``AutoflexState.predict``: the last ``count`` slots of ``history`` are the history."""
    valid = slots >= cfg.history - count
    n = count.to(_F64).clamp_min(1.0)
    kept = torch.where(valid, history, 0.0)  # maxima are >= 0
    mean = kept.sum() / n
    deviation = torch.where(valid, history - mean, 0.0)
    spread = torch.where(count < 2, 0.0, torch.sqrt((deviation * deviation).sum() / n))
    predicted = _exponent_for(fmt, cfg, kept.amax(), spread, exponent)
    return torch.where(count == 0, exponent, predicted)


def _exponent_for(
    fmt: FlexFormat,
    cfg: AutoflexConfig,
    top: torch.Tensor,
    spread: torch.Tensor | float,
    exponent: torch.Tensor,
) -> torch.Tensor:
    """The exponent that maps χ = α(top + β·spread + γ·2**exponent) to the top of the mantissa
    range, in the reference's float64 operations and order."""
    kappa = exact_pow2(exponent, _F64)
    chi = cfg.alpha * (top + cfg.beta * spread + cfg.gamma * kappa)
    bits = (chi / fmt.max_mantissa).view(torch.int64)  # positive and normal where used
    ceil_log2 = ((bits >> 52) & 0x7FF) - 1023 + ((bits & ((1 << 52) - 1)) != 0).to(torch.int64)
    clamped = ceil_log2.clamp(fmt.min_exponent, fmt.max_exponent)
    return torch.where(chi <= 0.0, fmt.min_exponent, clamped)


def _statistics_kernels(
    fmt: FlexFormat, cfg: AutoflexConfig, kernel: KernelName, device: torch.device
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``_settle`` and ``_record``, compiled where ``kernel`` says (``auto``: wherever a
    compiler exists, since the statistics are many small operations at any tensor size)."""
    if resolve_small_kernel(kernel, device) == "eager":
        return _settle, _record
    return _compiled_settle(fmt, cfg), _compiled_record()


_variant_ids = itertools.count()


@functools.cache
def _compiled_settle(fmt: FlexFormat, cfg: AutoflexConfig) -> Callable[..., Any]:
    """One compiled ``_settle`` per format and config (each its own code object)."""
    return compile_variant(_settle, (fmt.name, next(_variant_ids)))


@functools.cache
def _compiled_record() -> Callable[..., Any]:
    return compile_variant(_record, ())


#: Either kind of Autoflex state (``FlexConfig.autoflex_state`` picks one).
AnyAutoflexState = AutoflexState | DeviceAutoflexState


def check_states(states: Iterable[AnyAutoflexState]) -> None:
    """Report what the device-resident ``states`` saw since the last check, with one host
    read per device: raise ``FlexNonFiniteError`` if a NaN or Inf reached any of them (their
    updates were skipped), and warn, once per state, when one saturated. Reference states
    are skipped: they raised and warned at the op."""
    by_device: dict[torch.device, list[DeviceAutoflexState]] = {}
    for st in states:
        if isinstance(st, DeviceAutoflexState):
            by_device.setdefault(st.device, []).append(st)
    for group in by_device.values():
        counts = torch.stack([st._ints[[_NONFINITE, _SATURATIONS]] for st in group]).tolist()
        bad = [st for st, (nonfinite, _) in zip(group, counts, strict=True) if nonfinite]
        for st, (_, saturations) in zip(group, counts, strict=True):
            if saturations > st._saturations_seen and not st._warned_saturation:
                st._warned_saturation = True
                fix = (
                    "Use a FlexFormat with a smaller exponent_bias to move the range up."
                    if st.config.recompute_on_overflow  # then only the top exponent saturates
                    else "Keep AutoflexConfig.recompute_on_overflow on."
                )
                warnings.warn(
                    f"flex tensor '{st.name}' saturated {saturations - st._saturations_seen} "
                    f"time(s) since the last check; values are clipped. {fix}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            st._saturations_seen = saturations
        if bad:
            for st in bad:
                st._ints[_NONFINITE] = 0
            names = ", ".join(f"'{st.name}'" for st in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise FlexNonFiniteError(
                f"NaN or Inf reached flex tensor(s) {names}{more} in this step; Flexpoint "
                "cannot encode it, and those updates were skipped. Discard the step; check the "
                "learning rate and the inputs, or run the step with `flex_disabled(model)` to "
                "find where it starts."
            )
