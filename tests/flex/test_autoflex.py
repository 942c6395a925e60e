"""Autoflex as the paper gives it; each mechanism is first shown to matter."""

import math
import warnings

import pytest
import torch

from omniflex.flex import AutoflexConfig, AutoflexState, FlexFormat, FlexNonFiniteError


def warm(state: AutoflexState, steps: int = 16, scale: float = 1.0) -> None:
    for _ in range(steps):
        state.quantize(torch.randn(256) * scale / 4)


def test_initialisation_fits_the_maximum_in_the_top_bit():
    state = AutoflexState("init")
    out = state.quantize(torch.tensor([3.0, -1.0]), want_values=True)
    top = int(out.mantissa.abs().max())
    assert 16384 < top < 32767  # neither underflow nor overflow (Algorithm 1's stop rule)
    assert out.values.tolist() == [3.0, -1.0]


@pytest.mark.parametrize("amax", [1.0, 2.0**-20, 1024.0, 3.0e-9, 20000.0])
def test_initialisation_terminates_on_powers_of_two_and_range_ends(amax):
    state = AutoflexState("p2")
    e = state.initial_exponent(amax)
    fmt = state.format
    assert fmt.min_exponent <= e <= fmt.max_exponent
    assert round(math.ldexp(amax, -e)) < fmt.max_mantissa


def test_all_zero_tensor_does_not_loop_and_stays_uninitialised():
    state = AutoflexState("zeros")
    for _ in range(3):
        out = state.quantize(torch.zeros(10), want_values=True)
        assert out.values.abs().sum() == 0
    assert not state.initialized
    state.quantize(torch.ones(4))
    assert state.initialized


def test_prediction_follows_the_paper_formula():
    state = AutoflexState("pred")
    state.history.extend([1.0, 2.0, 3.0])
    state.exponent = -14
    chi = 2.0 * (
        3.0 + 3.0 * torch.tensor([1.0, 2.0, 3.0]).std(unbiased=False).item() + 100 * 2.0**-14
    )
    assert state.predict() == math.ceil(math.log2(chi / 32767))


def spike_run(config: AutoflexConfig):
    state = AutoflexState("spike", config=config)
    warm(state)
    x = torch.randn(256) / 4
    x[17] = 2.0**10  # a sudden 2^10 spike
    out = state.quantize(x, want_values=True)
    return state, out, x


def test_spike_without_recompute_would_saturate():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        state, out, _ = spike_run(AutoflexConfig(recompute_on_overflow=False))
    assert out.values[17].item() < 1024.0  # silently clipped
    assert state.saturations == 1


def test_spike_is_detected_history_cleared_and_output_recomputed_in_range():
    state, out, x = spike_run(AutoflexConfig())
    assert state.overflows == 1
    assert list(state.history) == [2.0 * 1024.0]  # cleared, doubled maximum recorded
    assert out.values[17].item() == 1024.0
    assert int(out.mantissa.abs().max()) < 32767
    assert state.saturations == 0
    assert (out.values - x).abs().max().item() <= 0.5 * 2.0**out.exponent


def grow(config: AutoflexConfig, steps: int = 80, rate: float = 1.1) -> AutoflexState:
    state = AutoflexState("grow", config=config)
    base = torch.linspace(-1.0, 1.0, 257)
    for i in range(steps):
        state.quantize(base * rate**i)
    return state


def test_growing_tensor_with_max_only_prediction_overflows():
    # Max-of-history with no headroom (alpha=1, beta=gamma=0): the Transformer Engine rule.
    state = grow(AutoflexConfig(alpha=1.0, beta=0.0, gamma=0.0))
    assert state.overflows >= 3  # ~one per power of two crossed (1.1**80 ≈ 2**11)


def test_growing_tensor_gets_its_exponent_before_crossing_the_boundary():
    state = grow(AutoflexConfig())
    assert state.overflows == 0
    assert state.last_exponent > -14  # it did move up, 80 steps x 10%: ~2^3.3


def test_exponent_is_clamped_and_saturation_at_the_top_warns():
    state = AutoflexState("big")
    with pytest.warns(RuntimeWarning, match="exponent_bias"):
        out = state.quantize(torch.tensor([1e6, 1.0]), want_values=True)
    assert out.exponent == 0 and out.values[0].item() == 32767.0
    assert state.saturations == 1
    wide = AutoflexState("wide", FlexFormat(16, 5, exponent_bias=20))
    assert wide.quantize(torch.tensor([1e6]), want_values=True).values.item() == pytest.approx(
        1e6, rel=1e-4
    )


def test_nan_and_inf_raise_named_errors():
    state = AutoflexState("fc1.input")
    with pytest.raises(FlexNonFiniteError, match=r"NaN .*'fc1\.input'.*module 'fc1'"):
        state.quantize(torch.tensor([1.0, float("nan")]), module="fc1")
    with pytest.raises(FlexNonFiniteError, match="Inf"):
        state.quantize(torch.tensor([float("inf")]))


def test_stale_state_reinitialises():
    state = AutoflexState("stale", config=AutoflexConfig(stale_after=10))
    for clock in range(1, 6):
        state.quantize(torch.ones(4) * 1000, clock=clock)
    hi = state.exponent
    state.quantize(torch.ones(4) * 1e-3, clock=100)  # long unused, much smaller now
    assert state.last_exponent < hi - 15  # re-fit by Algorithm 1, not trusted history
    assert len(state.history) == 1


def test_state_dict_round_trip_continues_identically():
    a = AutoflexState("s")
    warm(a, 5)
    b = AutoflexState("s")
    b.load_state_dict(a.state_dict())
    x = torch.randn(64)
    assert torch.equal(a.quantize(x).mantissa, b.quantize(x).mantissa)
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="flex8\\+5"):
        AutoflexState("s", FlexFormat(8, 5)).load_state_dict(a.state_dict())


@pytest.mark.parametrize("stochastic", [False, True])
def test_overwrite_gives_the_same_numbers_and_statistics(monkeypatch, stochastic):
    import omniflex.flex.kernels as kernels

    monkeypatch.setattr(kernels, "OVERWRITE_MIN_BYTES", 0)  # every tensor takes the in-place path
    torch.manual_seed(3)
    # first use (Algorithm 1), steady steps, a spike (overflow recompute), zeros, a flush
    tensors = [torch.zeros(512), torch.randn(512)] + [torch.randn(512) for _ in range(4)]
    tensors += [torch.randn(512) * 1e3, torch.randn(512) * 1e-6, torch.zeros(512)]
    kept, in_place = AutoflexState("kept"), AutoflexState("in_place")
    for x in tensors:
        rng_state = torch.get_rng_state()
        ref = kept.quantize(x, want_mantissa=False, want_values=True, stochastic=stochastic)
        torch.set_rng_state(rng_state)  # the same rounding noise
        y = x.clone()
        out = in_place.quantize(
            y, want_mantissa=False, want_values=True, stochastic=stochastic, overwrite=True
        )
        assert out.values is y  # written into the tensor given
        assert torch.equal(out.values, ref.values)
        assert (out.amax, out.flushes, out.exponent) == (ref.amax, ref.flushes, ref.exponent)
        assert in_place.state_dict() == kept.state_dict()
    assert kept.overflows > 0 and kept.flushes > 0  # the sequence exercised both
