"""Training with device-resident Autoflex (``FlexConfig.autoflex_state="device"``) equals the
host reference bit for bit, through a save in one mode and a load in the other."""

import copy

import pytest
import torch
from torch import nn

from omniflex.flex import (
    DeviceAutoflexState,
    FlexAdam,
    FlexConfig,
    FlexNonFiniteError,
    FlexSGD,
    FlexWeight,
    check_flex_step,
    convert_to_flex,
    flex_disabled,
    flex_frozen,
    flex_states,
)


def same(a, b, where="run"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b.to(a.device)), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def build(config: FlexConfig, optimizer: str, device: torch.device):
    torch.manual_seed(0)
    layers = [nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)]
    model = convert_to_flex(nn.Sequential(*layers).to(device), config=config)
    if optimizer == "adam":
        opt = FlexAdam(model.parameters(), lr=0.05, weight_decay=0.01, config=config)
    else:
        opt = FlexSGD(model.parameters(), lr=0.05, momentum=0.9, config=config)
    return model, opt


def train(model, opt, steps, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(8, 12, generator=gen).to(device)
        y = torch.randn(8, 4, generator=gen).to(device)
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        check_flex_step(model, opt)


@pytest.mark.parametrize(
    "mode,optimizer,rounding",
    [
        ("paper", "adam", "nearest"),
        ("paper", "sgd", "nearest"),
        ("master", "adam", "nearest"),
        ("paper", "adam", "stochastic"),
    ],
)
def test_device_resident_training_equals_the_host_reference(mode, optimizer, rounding, device):
    configs = {
        where: FlexConfig(weight_mode=mode, weight_rounding=rounding, autoflex_state=where)
        for where in ("host", "device")
    }
    runs = {}
    for where, config in configs.items():
        torch.manual_seed(1)  # stochastic rounding draws from the global generator
        model, opt = build(config, optimizer, device)
        train(model, opt, 6, device)
        runs[where] = (model, opt)
    (host_model, host_opt), (dev_model, dev_opt) = runs["host"], runs["device"]
    assert all(isinstance(s, DeviceAutoflexState) for s in flex_states(dev_model))
    same(host_model.state_dict(), dev_model.state_dict(), "model")
    same(host_opt.state_dict(), dev_opt.state_dict(), "optimizer")

    # Save in one mode, load into the other, continue: still equal.
    crossed = {}
    for where, (model, opt) in runs.items():
        other = "device" if where == "host" else "host"
        new_model, new_opt = build(configs[other], optimizer, device)
        new_model.load_state_dict(copy.deepcopy(model.state_dict()))
        new_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        torch.manual_seed(2)
        train(new_model, new_opt, 3, device, seed=1)
        crossed[other] = (new_model, new_opt)
    same(crossed["host"][0].state_dict(), crossed["device"][0].state_dict(), "resumed model")
    same(crossed["host"][1].state_dict(), crossed["device"][1].state_dict(), "resumed optimizer")
    weight = crossed["device"][0][0].weight
    if mode == "paper":
        assert isinstance(weight, FlexWeight) and isinstance(weight.exponent, torch.Tensor)
        assert weight.exponent.device.type == device.type


def test_nan_in_a_device_resident_step_is_raised_by_the_step_check():
    config = FlexConfig(autoflex_state="device")
    model, opt = build(config, "adam", torch.device("cpu"))
    train(model, opt, 2, "cpu")
    x = torch.randn(8, 12)
    x[0, 0] = float("nan")
    model(x).sum().backward()  # nothing raised at the ops
    opt.step()
    with pytest.raises(FlexNonFiniteError, match=r"'0\.input'"):
        check_flex_step(model, opt)


def test_config_names_the_field_and_round_trips():
    with pytest.raises(ValueError, match="autoflex_state"):
        FlexConfig(autoflex_state="gpu")
    config = FlexConfig(autoflex_state="device")
    assert FlexConfig.from_yaml(config.to_yaml()) == config
    assert FlexConfig().autoflex_state == "host"  # the reference stays the default


def test_frozen_and_disabled_inference_with_device_states_equal_the_host_ones():
    outs = {}
    for where in ("host", "device"):
        torch.manual_seed(0)
        layers = [nn.Embedding(10, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)]
        model = convert_to_flex(nn.Sequential(*layers), config=FlexConfig(autoflex_state=where))
        idx = torch.randint(0, 10, (4, 5))
        model(idx).sum().backward()  # the states run once
        with torch.no_grad(), flex_frozen(model):
            frozen = [model(idx), model(idx)]  # the second from the cached weight views
        with flex_disabled(model):
            plain = model(idx)
        outs[where] = [*frozen, plain]
    same(outs["host"], outs["device"])
