"""Confidence intervals for the evaluation's rates.

A rate measured on ``n`` samples is reported with its 95% Wilson score interval (Wilson, 1927):
unlike the normal approximation it stays inside [0, 1] and is honest at rates near 0 or 1 and at
small ``n`` — 8 of 8 right gives [0.68, 1.00], 200 of 200 gives [0.98, 1.00].
"""

from __future__ import annotations

import math

__all__ = ["Z_95", "wilson_interval"]

Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (both ends in [0, 1])."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)
