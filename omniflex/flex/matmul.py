"""``Matmul``: a float32 matmul call site as a module, so converters can find and swap it.

Write attention as ``self.qk = Matmul()`` … ``scores = self.qk(q, k.transpose(-1, -2))``;
``convert_to_flex`` turns each ``Matmul`` into a ``FlexMatmul`` with its own Autoflex states, and
``convert_to_float_emulation`` into an emulated float16/bfloat16 one.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Matmul"]


class Matmul(nn.Module):
    """``torch.matmul(a, b)`` as a module (no parameters)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)
