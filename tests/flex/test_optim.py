"""Flex optimizers: flex state, updates applied, parity with torch.optim, torch.optim on flex."""

import copy

import pytest
import torch
from torch import nn

from omniflex.flex import FlexAdam, FlexConfig, FlexSGD, FlexWeight, convert_to_flex
from omniflex.flex.kernels import cxx_compiler_found


def problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=gen)
    w_true = torch.randn(16, 4, generator=gen)
    return x, x @ w_true


def fit(model, opt, steps=60):
    x, y = problem()
    for _ in range(steps):
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize(
    "make_flex,make_ref",
    [
        (
            lambda p: FlexSGD(p, lr=0.05, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        ),
        (lambda p: FlexAdam(p, lr=0.05), lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0)),
    ],
)
def test_flex_optimizers_track_their_float32_counterparts(make_flex, make_ref):
    torch.manual_seed(0)
    ref = nn.Linear(16, 4)
    flex = convert_to_flex(copy.deepcopy(ref))
    loss_ref = fit(ref, make_ref(ref.parameters()))
    loss_flex = fit(flex, make_flex(flex.parameters()))
    assert loss_ref < 0.5  # it learns
    assert abs(loss_flex - loss_ref) < 0.02 * loss_ref + 1e-4


def test_optimizer_state_is_flex():
    model = convert_to_flex(nn.Linear(8, 2))
    opt = FlexAdam(model.parameters(), lr=1e-2)
    fit_x = torch.randn(4, 8)
    model(fit_x).sum().backward()
    opt.step()
    state = opt.state[model.weight]
    assert state["exp_avg_mantissa"].dtype == torch.int16
    assert state["exp_avg_sqrt_mantissa"].dtype == torch.int16
    assert isinstance(state["exp_avg_exponent"], int)
    roles = {s.name.rsplit(".", 1)[-1] for s in opt.flex_states()}
    assert roles == {"exp_avg", "exp_avg_sqrt", "update"}


def test_torch_optim_also_updates_flex_weights_in_place():
    model = convert_to_flex(nn.Linear(8, 2))
    before = model.weight.mantissa.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert isinstance(model.weight, FlexWeight)
    assert not torch.equal(before, model.weight.mantissa)  # re-quantised, still int16
    assert model.weight.mantissa.dtype == torch.int16


def test_invalid_hyperparameters_are_named():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="lr"):
        FlexSGD(p, lr=0)
    with pytest.raises(ValueError, match="nesterov"):
        FlexSGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        FlexAdam(p, betas=(1.0, 0.9))


def test_named_parameters_name_the_optimizer_states():
    model = convert_to_flex(nn.Sequential(nn.Linear(4, 2)), config=FlexConfig())
    opt = FlexSGD(model.named_parameters(), lr=0.1, momentum=0.5)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    assert "optim.0.weight.momentum" in {s.name for s in opt.flex_states()}


def _adam_run(kernel, weight_decay, decoupled, steps=4, resumed_steps=3):
    """FlexAdam on a flex layer and a plain float32 parameter in one optimizer, saved, loaded
    into a fresh copy and resumed; returns everything the run leaves behind."""
    torch.manual_seed(0)
    model = convert_to_flex(nn.Linear(16, 8))
    extra = nn.Parameter(torch.randn(6))
    config = FlexConfig(kernel=kernel)
    make = lambda m, e: FlexAdam(  # noqa: E731
        [*m.parameters(), e], lr=0.05, weight_decay=weight_decay, decoupled=decoupled,
        config=config,
    )  # fmt: skip
    opt = make(model, extra)
    x, y = problem()
    y = y @ torch.randn(4, 8, generator=torch.Generator().manual_seed(1))

    def train(model, extra, opt, n):
        for _ in range(n):
            loss = (model(x) + extra.sum() - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    train(model, extra, opt, steps)
    saved = copy.deepcopy(opt.state_dict())
    model2, extra2 = copy.deepcopy(model), copy.deepcopy(extra)
    opt2 = make(model2, extra2)
    opt2.load_state_dict(saved)
    train(model2, extra2, opt2, resumed_steps)
    fused = [opt2._fuses(p) for p in (model2.weight, extra2)]
    weights = [
        (p.mantissa, p.exponent, p.state.state_dict()) if isinstance(p, FlexWeight) else p.detach()
        for p in [*model2.parameters(), extra2]
    ]
    return weights, opt2.state_dict(), fused


def _assert_same(a, b, where="run"):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.skipif(not cxx_compiler_found(), reason="the fused FlexAdam step needs a compiler")
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, True), (0.1, True), (0.1, False)])
def test_fused_adam_step_equals_the_reference_bit_for_bit(weight_decay, decoupled):
    # kernel="eager" runs FlexAdam._update_reference; "compiled" the fused step after the first
    weights, state, fused = _adam_run("compiled", weight_decay, decoupled)
    ref_weights, ref_state, ref_fused = _adam_run("eager", weight_decay, decoupled)
    assert fused == [True, True] and ref_fused == [False, False]
    _assert_same(weights, ref_weights, "weights")  # mantissas, exponents, Autoflex states
    _assert_same(state, ref_state, "optimizer")  # moments, exponents, Autoflex states, steps
