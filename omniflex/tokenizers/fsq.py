"""Finite scalar quantisation (FSQ, Mentzer et al. 2023): no codebook, no collapse.

Each of ``len(levels)`` latent channels is bounded with ``tanh`` and rounded to one of
``levels[i]`` values; the code is the mixed-radix number of the rounded digits, so the implicit
codebook has ``prod(levels)`` entries, all of them used from the first step. Gradients pass the
rounding straight through.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FSQ"]


class FSQ(nn.Module):
    """``(..., groups * len(levels))`` latents <-> ``(..., groups)`` integer codes."""

    def __init__(self, levels: tuple[int, ...], groups: int = 1) -> None:
        super().__init__()
        if not levels or any(int(n) < 2 for n in levels):
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        if groups < 1:
            raise ValueError(f"FSQ groups must be >= 1, got {groups}")
        self.levels = tuple(int(n) for n in levels)
        self.groups = groups
        self.dim = len(levels)
        self.codebook_size = math.prod(self.levels)
        basis = [math.prod(self.levels[:i]) for i in range(self.dim)]
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32), False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), False)
        half_width = [n // 2 for n in self.levels]
        self.register_buffer("_half_width", torch.tensor(half_width, dtype=torch.float32), False)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        # Rounds to the integers {-(L//2) .. (L-1)//2}: L values for odd and even L alike.
        half = (self._levels - 1) * (1 - 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Rounded latents in [-1, 1) (straight-through gradient): ``(..., groups * dim)``."""
        z = z.unflatten(-1, (self.groups, self.dim))
        bounded = self._bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return (rounded / self._half_width).flatten(-2)

    def codes_from_quantized(self, q: torch.Tensor) -> torch.Tensor:
        """``(..., groups * dim)`` quantised latents -> ``(..., groups)`` int64 codes."""
        half = self._half_width
        digits = torch.round(q.unflatten(-1, (self.groups, self.dim)) * half + half).long()
        return (digits * self._basis).sum(-1)

    def quantized_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., groups)`` codes -> ``(..., groups * dim)`` quantised latents in [-1, 1]."""
        if codes.dtype.is_floating_point:
            raise TypeError(f"FSQ codes must be integers, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"FSQ codes must lie in [0, {self.codebook_size}), got "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        levels = self._levels.long()
        digits = (codes.unsqueeze(-1) // self._basis) % levels
        half = self._half_width
        return ((digits.float() - half) / half).flatten(-2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.quantize(z)
        return q, self.codes_from_quantized(q.detach())
