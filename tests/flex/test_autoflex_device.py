"""Device-resident Autoflex equals the host reference bit for bit, with no host reads."""

import math
import random
import warnings

import pytest
import torch

from omniflex.flex import (
    AutoflexConfig,
    AutoflexState,
    FlexFormat,
    FlexNonFiniteError,
    autoflex_device,
)
from omniflex.flex.autoflex_device import DeviceAutoflexState, check_states
from omniflex.flex.kernels import cxx_compiler_found
from omniflex.flex.syncs import count_host_syncs

FORMATS = [FlexFormat(16, 5), FlexFormat(8, 5), FlexFormat(2, 5), FlexFormat(16, 5, 20)]
CONFIGS = {
    "paper": AutoflexConfig(),
    "short_history": AutoflexConfig(history=3),
    "no_recompute": AutoflexConfig(recompute_on_overflow=False),
    "max_only": AutoflexConfig(alpha=1.0, beta=0.0, gamma=0.0),
    "stale_soon": AutoflexConfig(stale_after=2),
}


def tensors(numel: int = 64) -> list[tuple[torch.Tensor, int]]:
    """(tensor, clock) pairs: zeros before any value, a steady phase, growth, a spike
    (overflow), a collapse (underflow), zeros once initialised, an odd size, a long idle gap
    (stale), a value too large for the format (saturation) and a denormal-sized one."""
    gen = torch.Generator().manual_seed(1)

    def randn(scale: float, n: int = numel) -> torch.Tensor:
        return torch.randn(n, generator=gen) * scale

    xs = [torch.zeros(numel), randn(1.0)] + [randn(0.25) for _ in range(5)]
    xs += [randn(1.1**i) for i in range(20)]
    spike = randn(0.25)
    spike[7] = 2.0**10
    xs += [spike, randn(1e-6), randn(1e-6), torch.zeros(numel), randn(3.0, numel + 1)]
    xs += [randn(0.5), randn(1e-38), randn(1e9), randn(1.0)]
    clocks = list(range(1, len(xs) + 1))
    clocks[len(clocks) // 2 :] = [c + 5000 for c in clocks[len(clocks) // 2 :]]  # idle gap
    return list(zip(xs, clocks, strict=True))


def assert_same_update(ref, dev, ref_state, dev_state, where):
    assert int(dev.exponent) == ref.exponent, where
    for name in ("mantissa", "values"):
        a, b = getattr(ref, name), getattr(dev, name)
        assert (a is None) == (b is None), where
        if a is not None:
            assert a.dtype == b.dtype and torch.equal(a, b.cpu()), (where, name)
    assert float(dev.amax) == ref.amax and int(dev.flushes) == ref.flushes, where
    assert dev_state.state_dict() == ref_state.state_dict(), where


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.name}b{f.bias}")
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_device_state_equals_the_reference_bit_for_bit(fmt, config, device):
    ref, dev = AutoflexState("t", fmt, config), DeviceAutoflexState("t", fmt, config)
    previous = 0
    for i, (x, clock) in enumerate(tensors()):
        stochastic = i % 3 == 2 and device.type == "cpu"  # another device draws other noise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the reference warns on saturation
            ref_out = ref.quantize(
                x, want_values=True, stochastic=stochastic,
                generator=torch.Generator().manual_seed(i), clock=clock,
            )  # fmt: skip
        gen = torch.Generator(device).manual_seed(i)
        x_dev = x.to(device)
        with count_host_syncs() as syncs:
            dev_out = dev.quantize(
                x_dev, want_values=True, stochastic=stochastic, generator=gen, clock=clock,
            )  # fmt: skip
        assert syncs.total == 0, syncs.sites  # nothing read back per op
        assert_same_update(ref_out, dev_out, ref, dev, f"step {i}")
        if clock - previous > config.stale_after:
            assert len(ref.history) == 1  # reinitialised: Algorithm 1 again
        previous = clock
    assert ref.overflows > 0 or not config.recompute_on_overflow or fmt.mantissa_bits == 2
    assert ref.updates == len(tensors())


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.name}b{f.bias}")
def test_algorithm_1_in_closed_form_equals_the_walk(fmt):
    ref, offsets = AutoflexState("a", fmt), torch.arange(3)
    rng = random.Random(0)
    maxima = [rng.uniform(0.5, 1.0) * 2.0 ** rng.randint(-149, 127) for _ in range(300)]
    for k in range(fmt.min_exponent - 20, fmt.max_exponent + 20):
        top = fmt.max_mantissa
        # the boundaries: powers of two, the underflow bound, max_mantissa - 0.5 (a tie)
        for m in (1.0, fmt.underflow_mantissa, top - 0.5, top - 1, top, top + 0.5):
            a = math.ldexp(m, k)
            maxima += [a, math.nextafter(a, 0.0), math.nextafter(a, math.inf)]
    maxima = [float(torch.tensor(a, dtype=torch.float32)) for a in maxima]  # float32 maxima
    for a in maxima:
        if a <= 0.0 or math.isinf(a):
            continue
        got = int(
            autoflex_device._smallest_fitting_exponent(fmt, offsets, torch.tensor(a).double())
        )
        for start in (fmt.min_exponent, -3, fmt.max_exponent):
            assert got == ref.initial_exponent(a, start=start), (a, start)


def test_prediction_equals_the_reference_on_random_histories():
    rng = random.Random(2)
    config = AutoflexConfig()
    for trial in range(500):
        n = rng.randint(1, config.history)
        spread = rng.choice([0.0, 1e-3, 0.3, 3.0])
        scale = 2.0 ** rng.randint(-40, 20)
        history = [scale * max(0.0, 1.0 + spread * rng.gauss(0, 1)) for _ in range(n)]
        history = [float(torch.tensor(v, dtype=torch.float32)) for v in history]
        ref = AutoflexState("p", config=config)
        ref.load_state_dict({**ref.state_dict(), "history": history, "initialized": True})
        exponent = rng.randint(-31, 0)
        dev = DeviceAutoflexState("p", config=config)
        dev.load_state_dict(ref.state_dict())
        history = dev._floats[: config.history]
        slots = torch.arange(config.history)
        got = autoflex_device._predict(
            dev.format, config, slots, history, torch.tensor(n), torch.tensor(exponent)
        )
        assert int(got) == ref.predict(exponent), (trial, history, exponent)


@pytest.mark.parametrize("stochastic", [False, True])
def test_in_place_quantisation_equals_the_reference(monkeypatch, stochastic):
    import omniflex.flex.kernels as kernels

    monkeypatch.setattr(kernels, "OVERWRITE_MIN_BYTES", 0)  # every tensor takes the in-place path
    ref, dev = AutoflexState("r"), DeviceAutoflexState("d")
    for i, (x, clock) in enumerate(tensors(512)):
        if x.numel() % 2:
            continue
        gen = torch.Generator().manual_seed(i)
        kw = {"want_mantissa": False, "want_values": True, "stochastic": stochastic, "clock": clock}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref_out = ref.quantize(x, generator=gen, **kw)
        y = x.clone()
        dev_out = dev.quantize(y, generator=gen.manual_seed(i), overwrite=True, **kw)
        assert dev_out.values is y  # written into the tensor given
        assert_same_update(ref_out, dev_out, ref, dev, f"step {i}")


@pytest.mark.skipif(not cxx_compiler_found(), reason="no C++ compiler for torch.compile")
def test_compiled_kernel_at_a_device_exponent_equals_the_reference():
    ref, dev = AutoflexState("c"), DeviceAutoflexState("c")
    gen = torch.Generator().manual_seed(3)
    for i, scale in enumerate([1.0, 1.0, 1e3, 1e-3, 1.0]):
        x = torch.randn(1 << 16, generator=gen) * scale
        x[::9] = 0.0
        ref_out = ref.quantize(x, want_values=True, kernel="compiled", clock=i)
        dev_out = dev.quantize(x, want_values=True, kernel="compiled", clock=i)
        assert_same_update(ref_out, dev_out, ref, dev, f"step {i}")


@pytest.mark.skipif(not cxx_compiler_found(), reason="no C++ compiler for torch.compile")
@pytest.mark.parametrize("config", ["paper", "no_recompute", "stale_soon"])
def test_compiled_statistics_equal_the_reference(config, device):
    # kernel="compiled" also runs the statistics' tensor ops as compiled kernels
    config = CONFIGS[config]
    ref, dev = AutoflexState("t", config=config), DeviceAutoflexState("t", config=config)
    for i, (x, clock) in enumerate(tensors()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ref_out = ref.quantize(x, want_values=True, clock=clock)
        with count_host_syncs() as syncs:
            dev_out = dev.quantize(x.to(device), want_values=True, kernel="compiled", clock=clock)
        assert syncs.total == 0 or i == 0, syncs.sites  # the first call compiles
        assert_same_update(ref_out, dev_out, ref, dev, f"step {i}")


def test_state_dict_round_trips_between_host_and_device():
    ref = AutoflexState("s", config=AutoflexConfig(history=4))
    for x, clock in tensors()[:12]:
        ref.quantize(x, clock=clock)
    dev = DeviceAutoflexState("s", config=AutoflexConfig(history=4))
    dev.load_state_dict(ref.state_dict())
    assert dev.state_dict() == ref.state_dict()
    assert list(dev.history) == list(ref.history) and dev.exponent == ref.exponent
    for x, clock in tensors()[12:20]:
        assert_same_update(ref.quantize(x, clock=clock), dev.quantize(x, clock=clock), ref, dev, "")
    back = AutoflexState("s", config=AutoflexConfig(history=4))
    back.load_state_dict(dev.state_dict())
    assert back.state_dict() == ref.state_dict()
    assert dev.telemetry() == ref.telemetry()
    with pytest.raises(ValueError, match="flex8\\+5"):
        DeviceAutoflexState("s", FlexFormat(8, 5)).load_state_dict(ref.state_dict())


def test_nan_is_counted_on_the_device_and_raised_once_per_check():
    ref, dev = AutoflexState("fc1.input"), DeviceAutoflexState("fc1.input")
    good, bad = torch.randn(16), torch.tensor([1.0, float("nan")])
    for st in (ref, dev):
        st.quantize(good, clock=1)
    with pytest.raises(FlexNonFiniteError):
        ref.quantize(bad, clock=2)
    dev.quantize(bad, clock=2)  # no read-back: nothing raised here...
    assert dev.state_dict() == ref.state_dict()  # ...and the update skipped, as the reference's
    with pytest.raises(FlexNonFiniteError, match=r"'fc1\.input'"):
        check_states([dev, ref])
    check_states([dev])  # reported once
    x = torch.randn(16) * 3
    assert_same_update(ref.quantize(x, clock=3), dev.quantize(x, clock=3), ref, dev, "after")


def test_saturation_warns_at_the_check_once():
    config = AutoflexConfig(recompute_on_overflow=False)
    dev = DeviceAutoflexState("sat", config=config)
    for _ in range(4):
        dev.quantize(torch.randn(64) / 4)
    spike = torch.randn(64) / 4
    spike[3] = 2.0**10
    dev.quantize(spike)
    with pytest.warns(RuntimeWarning, match="'sat' saturated 1 time.*recompute_on_overflow"):
        check_states([dev])
    spike[3] = 2.0**20
    dev.quantize(spike)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_states([dev])  # warned once per state, as the reference does
    assert dev.saturations == 2


def test_check_reads_the_device_once_for_all_states():
    states = [DeviceAutoflexState(f"s{i}") for i in range(5)]
    for st in states:
        st.quantize(torch.randn(8))
    with count_host_syncs() as syncs:
        check_states(states)
    assert syncs.total == 1


@pytest.mark.parametrize("kind", [AutoflexState, DeviceAutoflexState])
def test_a_state_saved_for_another_format_is_refused(kind):
    saved = AutoflexState("w", FlexFormat(mantissa_bits=8))
    saved.to_flex(torch.randn(16))
    state = kind("w", FlexFormat())
    with pytest.raises(ValueError, match=r"saved for flex8.*uses flex16"):
        state.load_state_dict(saved.state_dict())
