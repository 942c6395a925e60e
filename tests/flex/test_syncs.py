"""Host synchronisations: the counter itself, and how many a flex training step makes."""

import torch
from torch import nn

from omniflex.flex import FlexAdam, FlexConfig, check_flex_step, convert_to_flex, flex_states
from omniflex.flex.syncs import count_host_syncs


def test_counter_counts_each_host_read_once_and_restores_torch():
    t = torch.tensor([1.5, 0.0])
    equal = torch.equal
    with count_host_syncs() as syncs:
        t[0].item()
        t.tolist()
        float(t[0])  # calls item inside: one read
        bool(t[1])
        if t[0] > 0:  # __bool__
            pass
        t.cpu()
        torch.equal(t, t)
        t + 1  # no read
    assert syncs.total == 7
    assert syncs.kinds == {
        "item": 1, "tolist": 1, "__float__": 1, "__bool__": 2, "cpu": 1, "torch.equal": 1,
    }  # fmt: skip
    assert all("test_syncs.py" in site for site in syncs.sites)
    assert "item" not in torch.Tensor.__dict__ and torch.equal is equal  # restored
    with count_host_syncs() as after:
        pass
    t[0].item()  # outside any block: not counted
    assert after.total == 0


def test_nested_blocks_both_count():
    t = torch.ones(1)
    with count_host_syncs() as outer:
        t.item()
        with count_host_syncs() as inner:
            t.item()
    assert (outer.total, inner.total) == (2, 1)


def small_mlp_step(config: FlexConfig):
    """A 3-layer MLP, its FlexAdam and one training step (forward, backward, optimizer)."""
    torch.manual_seed(0)
    layers = [nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8)]
    model = convert_to_flex(nn.Sequential(*layers), config=config)
    opt = FlexAdam(model.parameters(), lr=1e-3, config=config)
    x, y = torch.randn(16, 32), torch.randn(16, 8)

    def step() -> None:
        loss = (model(x) - y).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, opt, step


def test_host_reference_step_reads_every_maximum_back():
    # Measured before device-resident Autoflex: every quantisation reads its maximum and its
    # flush count back (2 reads with the eager kernel), 41 quantisations in this step.
    model, opt, step = small_mlp_step(FlexConfig(kernel="eager"))
    step()  # first step: Algorithm 1 everywhere
    states = [*flex_states(model), *opt.flex_states()]
    before = sum(s.updates for s in states)
    with count_host_syncs() as syncs:
        step()
    quantisations = sum(s.updates for s in states) - before
    assert quantisations == 41
    assert syncs.total == 2 * quantisations == 82, syncs.sites
    assert set(syncs.kinds) == {"item"}


def test_device_resident_step_reads_back_once_at_the_step_check():
    model, opt, step = small_mlp_step(FlexConfig(kernel="eager", autoflex_state="device"))
    step()
    with count_host_syncs() as syncs:
        step()  # forward, backward and FlexAdam: 41 quantisations, nothing read back
    assert syncs.total == 0, syncs.sites
    with count_host_syncs() as syncs:
        step()
        check_flex_step(model, opt)  # NaN/Inf and saturation, for every state at once
    assert syncs.total == 1, syncs.sites
