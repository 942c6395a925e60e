"""The learning-rate schedule of every trainer in omniflex: linear warm-up, then half a cosine.

``warmup_cosine(step, ...)`` is a pure function of the step, so a resumed run needs no scheduler
state. The floor is given either as an absolute ``min_lr`` or as a ``min_ratio`` of ``lr``. The
two describe the same curve; each is computed in its own order of operations
(``min_lr + (lr - min_lr)·c`` and ``lr·(min_ratio + (1 - min_ratio)·c)``), which keeps the
rates of the trainers that used one or the other bit for bit what they were.
"""

from __future__ import annotations

import math

__all__ = ["cosine_decay", "warmup_cosine"]


def _half_cosine(progress: float, high: float, low: float) -> float:
    """``high`` at progress 0, ``low`` at progress 1, half a cosine between."""
    return low + (high - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_decay(progress: float, end: float = 0.0) -> float:
    """A factor that falls from 1 at ``progress`` 0 to ``end`` at ``progress`` 1 along half a
    cosine (for a schedule that scales it, e.g. by a warm-up ramp of its own)."""
    return _half_cosine(progress, 1.0, end)


def warmup_cosine(
    step: int,
    *,
    lr: float,
    warmup: int,
    steps: int,
    min_lr: float | None = None,
    min_ratio: float | None = None,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    The rate rises linearly over ``warmup`` steps (step 0 gets ``lr / warmup``, never 0, so no
    step is wasted), then follows half a cosine from ``lr`` down to the floor at ``steps``, and
    stays there. The floor is ``min_lr``, or ``min_ratio * lr``, or 0 when neither is given.
    """
    if min_lr is not None and min_ratio is not None:
        raise ValueError(
            f"warmup_cosine takes min_lr or min_ratio, not both (got {min_lr}, {min_ratio})"
        )
    if step < warmup:
        return lr * (step + 1) / warmup
    if steps <= warmup:
        return lr
    progress = min((step - warmup) / (steps - warmup), 1.0)
    if min_lr is not None:
        return _half_cosine(progress, lr, min_lr)
    return lr * _half_cosine(progress, 1.0, min_ratio or 0.0)
