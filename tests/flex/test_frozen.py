"""Frozen flex ops (inference): fixed exponents, no statistics, cached weights, causal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from omniflex.flex import FlexConfig, convert_to_flex, flex_frozen, flex_modules
from omniflex.flex.format import FlexFormat
from omniflex.flex.ops import fixed_values, fixed_values_reference


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 50))
    convert_to_flex(model, config=FlexConfig.from_recipe_name("flex16+5"))
    model(torch.randint(0, 50, (4, 6)))  # initialise every Autoflex state
    return model


def _states(model: nn.Module) -> dict:
    return copy.deepcopy({k: v for k, v in model.state_dict().items() if "extra" in k})


def test_fixed_values_is_the_quantiser_without_statistics():
    from omniflex.flex import quantize_reference

    fmt = FlexFormat(16, 5)
    x = torch.randn(1000) * 3
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 32767.5, -40000.0]) * 2.0**-12
    for exponent in (-14, -12, -3):  # -3 saturates most values
        ref = quantize_reference(x, exponent, fmt, want_mantissa=False, want_values=True)
        torch.testing.assert_close(
            fixed_values_reference(x, exponent, fmt.max_mantissa), ref.values
        )
        torch.testing.assert_close(fixed_values(x, exponent, fmt.max_mantissa), ref.values)
        # The fused kernel against the reference, at half-way points and saturation too.
        for t in (x, ties, x[:300]):  # large (four passes) and small (fused kernel)
            fast = fixed_values(t, exponent, fmt.max_mantissa)
            assert torch.equal(fast, fixed_values_reference(t, exponent, fmt.max_mantissa))


def test_frozen_forward_uses_the_state_exponents_and_changes_no_state():
    model = _model()
    before = _states(model)
    idx = torch.randint(0, 50, (2, 5))
    with torch.no_grad(), flex_frozen(model):
        y = model(idx)
    assert _states(model) == before  # no history, clock or exponent moved
    # The definition: every operand at its state's current exponent.
    emb, lin1, lin2 = (m for _, m in flex_modules(model))
    mm = lin1.op.states["input"].format.max_mantissa

    def q(op, role, t):
        return fixed_values(t, op.states[role].exponent, mm)

    h = emb.weight.dequantize()[idx]
    h = q(lin1.op, "output", q(lin1.op, "input", h) @ lin1.weight.dequantize().t()
          + lin1.bias.dequantize())  # fmt: skip
    h = torch.relu(h)
    ref = q(lin2.op, "output", q(lin2.op, "input", h) @ lin2.weight.dequantize().t()
            + lin2.bias.dequantize())  # fmt: skip
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)


def test_frozen_is_causal_per_row_and_deterministic():
    model = _model()
    a = torch.randint(0, 50, (1, 8))
    b = a.clone()
    b[0, 5:] = (b[0, 5:] + 7) % 50  # later tokens differ
    with torch.no_grad(), flex_frozen(model):
        ya, yb = model(a), model(b)
        again = model(a)
    assert torch.equal(ya[:, :5], yb[:, :5])  # no shared scale leaks from later rows
    assert torch.equal(ya, again)


def test_weight_cache_follows_updates_and_training_is_unaffected():
    model = _model()
    lin = [m for _, m in flex_modules(model)][1]
    x = torch.randint(0, 50, (2, 3))
    with flex_frozen(model):
        with torch.no_grad():
            before = model(x)
            lin.weight.assign_(lin.weight.dequantize() * 0.5)  # an optimizer-style update
            after = model(x)
        assert not torch.equal(before, after)  # the cached float view was refreshed
        # With autograd on, the ordinary path runs (statistics update, gradients flow).
        clock = lin.op.clock
        model(x).sum().backward()
        assert lin.weight.grad is not None
        assert lin.op.states["grad_output"].updates > 0 and lin.op.clock == clock + 1
    assert not lin.op.frozen and not lin.op._weight_cache  # restored, cache dropped


@pytest.mark.parametrize("cache", [True, False])
def test_cache_switch_gives_identical_numbers(cache: bool):
    model = _model()
    x = torch.randint(0, 50, (2, 3))
    with torch.no_grad():
        with flex_frozen(model, cache_weights=True):
            ref = model(x)
        with flex_frozen(model, cache_weights=cache):
            assert torch.equal(model(x), ref)
