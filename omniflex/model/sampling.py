"""Choosing the next token from logits: constraint, repetition penalty, temperature, top-k/top-p.

``sample_next`` applies, in order: the constraint mask (``constrain``: ids the decoding state
forbids get ``-inf``, so no setting below can ever pick them), the repetition penalty over the
recent tokens, then greedy argmax (``temperature == 0``) or temperature, top-k and top-p
filtering and a draw from a seeded ``torch.Generator``. The same seed and the same logits give
the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "GREEDY",
    "SamplingConfig",
    "apply_repetition_penalty",
    "constrain",
    "make_generator",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens.

    Args:
        temperature: divides the logits; ``0`` means greedy (argmax).
        top_k: keep only the k most likely ids (``None``: all).
        top_p: keep the smallest set of ids whose probability reaches p (``None``: all).
        repetition_penalty: > 1 discourages ids among the last ``repetition_window`` tokens
            (CTRL: positive logits are divided by it, negative ones multiplied).
        repetition_window: how many recent tokens the penalty looks at. Audio codes repeat by
            nature, so keep the window short or the penalty at 1 for speech.
        seed: seeds the ``torch.Generator`` of a stream; ``None`` draws from torch's global RNG.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    repetition_window: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"SamplingConfig.top_k must be >= 1 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1] or None, got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(
                f"SamplingConfig.repetition_penalty must be > 0, got {self.repetition_penalty}"
            )
        if self.repetition_window < 0:
            raise ValueError(
                f"SamplingConfig.repetition_window must be >= 0, got {self.repetition_window}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = SamplingConfig(temperature=0.0)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` seeded with ``seed``, or ``None`` (global RNG) without one."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def constrain(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``logits`` (..., V) with ids where ``mask`` (V,) or (..., V) is False set to ``-inf``."""
    if mask is None:
        return logits
    if mask.dtype != torch.bool or mask.shape[-1] != logits.shape[-1]:
        raise ValueError(
            f"constraint mask must be bool with {logits.shape[-1]} entries (one per id), got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("constraint mask allows no id at all; the decoding state is stuck")
    return logits.masked_fill(~mask.to(logits.device), float("-inf"))


def apply_repetition_penalty(
    logits: torch.Tensor, previous: Sequence[int] | torch.Tensor, penalty: float
) -> torch.Tensor:
    """Penalise the ids in ``previous`` in ``logits`` (V,) (CTRL, Keskar et al. 2019)."""
    if penalty == 1.0 or len(previous) == 0:
        return logits
    ids = torch.as_tensor(previous, dtype=torch.long, device=logits.device).unique()
    picked = logits[ids]
    logits = logits.clone()
    logits[ids] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of (..., V); the rest become ``-inf``."""
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering of (..., V): keep the fewest top ids whose probability sum reaches
    ``p`` (the most likely id always stays)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each id
    drop_sorted = before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    config: SamplingConfig,
    *,
    previous: Sequence[int] = (),
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One token id from ``logits`` (V,), never outside ``mask`` (V,) bool."""
    if logits.dim() != 1:
        raise ValueError(f"sample_next takes one position's logits (V,), got {tuple(logits.shape)}")
    logits = constrain(logits.float(), mask)
    window = config.repetition_window
    if config.repetition_penalty != 1.0 and window > 0:
        logits = apply_repetition_penalty(logits, previous[-window:], config.repetition_penalty)
    if config.greedy:
        return int(torch.argmax(logits))
    logits = logits / config.temperature
    if config.top_k is not None:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p is not None:
        logits = top_p_filter(logits, config.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
