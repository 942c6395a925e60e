"""Emulated float16/bfloat16: values crossing ops and weights after updates lie in the format."""

import copy

import torch
from torch import nn

from omniflex.flex import LowPrecisionOptimizer, Matmul, convert_to_float_emulation, round_to
from omniflex.flex.emulate import EmulatedLinear, EmulatedMatmul


def in_format(t: torch.Tensor, dtype: torch.dtype) -> bool:
    return torch.equal(t, round_to(t, dtype))


def test_forward_backward_and_update_are_rounded():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    convert_to_float_emulation(model, "float16")
    assert isinstance(model[0], EmulatedLinear)
    x = torch.randn(4, 8, requires_grad=True)
    y = model(x)
    y.sum().backward()
    assert in_format(y, torch.float16)
    assert in_format(x.grad, torch.float16)
    assert in_format(model[0].inner.weight.grad, torch.float16)
    opt = LowPrecisionOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), "float16"
    )
    opt.step()
    for p in model.parameters():
        assert in_format(p.detach(), torch.float16)
        assert in_format(opt.optimizer.state[p]["momentum_buffer"], torch.float16)


def test_float16_loses_tiny_updates_that_float32_keeps():
    # The paper's point: without loss scaling or master weights, small updates vanish.
    w32 = nn.Parameter(torch.ones(4))
    w16 = nn.Parameter(torch.ones(4))
    opt32 = torch.optim.SGD([w32], lr=1e-4)
    opt16 = LowPrecisionOptimizer(torch.optim.SGD([w16], lr=1e-4), "float16")
    for _ in range(10):
        for w, opt in ((w32, opt32), (w16, opt16)):
            w.grad = torch.ones(4)
            opt.step()
    assert w32.detach()[0] < 1.0
    assert w16.detach()[0] == 1.0  # 1 - 1e-4 rounds back to 1 in float16


def test_matmul_sites_are_converted():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk = Matmul()

        def forward(self, q, k):
            return self.qk(q, k.transpose(-1, -2))

    ref = Attn()
    emu = convert_to_float_emulation(copy.deepcopy(ref), "bfloat16")
    assert isinstance(emu.qk, EmulatedMatmul)
    q, k = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    out = emu(q, k)
    assert in_format(out, torch.bfloat16)
    assert torch.allclose(out, ref(q, k), rtol=0.02, atol=0.05)
