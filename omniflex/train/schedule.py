"""The trainer's learning-rate schedule: ``omniflex.common.warmup_cosine``, validated.

The rate is a pure function of the optimizer step, so a resumed run needs no scheduler state:
the step in the checkpoint gives the same rate, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from omniflex.common.schedule import warmup_cosine

__all__ = ["CosineSchedule"]


@dataclass(frozen=True)
class CosineSchedule:
    """``lr`` rises linearly over ``warmup`` steps, then follows half a cosine down to ``min_lr``
    at ``steps``, and stays there.

    Steps count from 0 (the first optimizer step uses ``lr_at(0) = lr / warmup``, never 0, so no
    step is wasted).
    """

    lr: float
    min_lr: float
    warmup: int
    steps: int

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"CosineSchedule.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(
                f"CosineSchedule.min_lr must be in [0, lr={self.lr}], got {self.min_lr}"
            )
        if self.steps < 1:
            raise ValueError(f"CosineSchedule.steps must be >= 1, got {self.steps}")
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(
                f"CosineSchedule.warmup must be in [0, steps={self.steps}], got {self.warmup}"
            )

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        return warmup_cosine(
            step, lr=self.lr, warmup=self.warmup, steps=self.steps, min_lr=self.min_lr
        )
