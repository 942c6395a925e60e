"""Flex optimizers: flex state, updates applied, parity with torch.optim, torch.optim on flex."""

import copy

import pytest
import torch
from torch import nn

from omniflex.flex import FlexAdam, FlexConfig, FlexSGD, FlexWeight, convert_to_flex


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
