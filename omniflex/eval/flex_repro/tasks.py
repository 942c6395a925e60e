"""Offline data for the experiments: generated shapes, real digits, templated text."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from omniflex.data.shapes import COLOURS, SHAPE_KINDS, make_shapes_classification

__all__ = ["digits_16", "shapes_cifar", "template_text"]


@functools.lru_cache(maxsize=4)
def shapes_cifar(train: int, test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """CIFAR-like 10-class 32x32 shapes, normalised: (x_train, y_train, x_test, y_test)."""
    x, y = make_shapes_classification(train + test, seed=seed, size=32)
    xf = torch.from_numpy(x).float().div_(255.0)
    mean = xf[:train].mean(dim=(0, 2, 3), keepdim=True)
    std = xf[:train].std(dim=(0, 2, 3), keepdim=True)
    xf = (xf - mean) / std
    yt = torch.from_numpy(y)
    return xf[:train], yt[:train], xf[train:], yt[train:]


@functools.lru_cache(maxsize=1)
def digits_16() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 real handwritten digits, upsampled to 16x16 in [-1, 1]: (x, y)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1) * 2 - 1
    return x, torch.tensor(data.target)


_RELATIONS = ("left of", "right of", "above", "below", "next to", "far from")
_SIZES = ("small", "large", "tiny", "big")


def template_text(sentences: int, seed: int) -> str:
    """Sentences about shapes from a small grammar; the same seed gives the same text."""
    rng = np.random.default_rng(seed)
    colours = sorted(COLOURS)
    out = []
    for _ in range(sentences):
        a, b = rng.choice(SHAPE_KINDS, 2)
        ca, cb = rng.choice(colours, 2)
        form = int(rng.integers(3))
        if form == 0:
            s = f"the {rng.choice(_SIZES)} {ca} {a} is {rng.choice(_RELATIONS)} the {cb} {b}."
        elif form == 1:
            n = int(rng.integers(2, 6))
            s = f"there are {n} {ca} {a}s and one {cb} {b}."
        else:
            s = f"is the {ca} {a} {rng.choice(_RELATIONS)} the {b}? yes, it is."
        out.append(s)
    return " ".join(out)
