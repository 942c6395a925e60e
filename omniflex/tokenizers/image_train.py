"""Training data, held-out test sets and the training loop of the image tokenizer.

Data are the two image sources of the omni corpus: 64x64 scenes of coloured shapes
(``omniflex.data.scenes``, training-split pairs only) and scikit-learn's handwritten digits
upscaled to 64x64 RGB exactly as ``omniflex.data.tasks`` renders them. The test sets are fixed
and disjoint from training: scenes from a seed stream training never uses, drawn the held-out way
(each holds a (colour, kind) pair that training scenes never show), and the last 297 digits.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from omniflex.common.schedule import warmup_cosine
from omniflex.data.scenes import Scene, render_scene, sample_scene
from omniflex.flex import FlexAdam, FlexConfig, FlexWeight, convert_to_flex
from omniflex.flex.serialize import pack_state_dict, unpack_state_dict
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig

__all__ = [
    "DIGITS_TEST",
    "DIGITS_TRAIN",
    "Precision",
    "digit_image",
    "held_out_digit_images",
    "held_out_scenes",
    "psnr_db",
    "train_image_tokenizer",
    "train_scene_images",
]

Precision = Literal["float32", "flex16+5"]

DIGITS_TRAIN = range(0, 1500)  # of scikit-learn's 1797 digits
DIGITS_TEST = range(1500, 1797)
# First words of the seed sequences: training and test streams can never meet.
_TRAIN_STREAM = 0x1A6E_7A11
_TEST_STREAM = 0x1A6E_7E57


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images  # (1797, 8, 8) in 0..16


def digit_image(index: int) -> np.ndarray:
    """scikit-learn digit ``index`` as ``omniflex.data.tasks`` renders it: (64, 64, 3) uint8,
    dark ink on white, each of the 8x8 pixels an 8x8 block."""
    images = _digits()
    if not 0 <= index < len(images):
        raise ValueError(f"digit index must lie in [0, {len(images)}), got {index}")
    img = np.kron(images[index] / 16.0, np.ones((8, 8)))  # (64, 64)
    return (255 - img[..., None] * 255).clip(0, 255).astype(np.uint8).repeat(3, axis=2)


def held_out_scenes(n: int) -> list[Scene]:
    """``n`` fixed held-out scenes (test split: each holds a held-out colour/kind pair)."""
    return [sample_scene(np.random.default_rng([_TEST_STREAM, i]), held_out=True) for i in range(n)]


def held_out_digit_images(n: int) -> np.ndarray:
    """The first ``n`` held-out digits (at most 297): ``(n, 64, 64, 3)`` uint8."""
    if not 0 <= n <= len(DIGITS_TEST):
        raise ValueError(f"there are {len(DIGITS_TEST)} held-out digits, asked for {n}")
    if not n:
        return np.zeros((0, 64, 64, 3), np.uint8)
    return np.stack([digit_image(i) for i in DIGITS_TEST[:n]])


def train_scene_images(n: int, seed: int = 0, progress: bool = True) -> np.ndarray:
    """``n`` training-split scenes (no held-out pair) from seed stream ``seed``:
    ``(n, 64, 64, 3)`` uint8. Scene ``i`` depends only on ``(seed, i)``."""
    out = np.empty((n, 64, 64, 3), dtype=np.uint8)
    for i in tqdm(range(n), desc="render scenes", disable=not progress, leave=False):
        rng = np.random.default_rng([_TRAIN_STREAM, seed, i])
        out[i] = render_scene(sample_scene(rng, held_out=False))
    return out


def psnr_db(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of uint8 images ``(B, H, W, 3)`` (peak 255); identical images give
    ``inf``."""
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {estimate.shape}")
    diff = reference.astype(np.float64) - estimate.astype(np.float64)
    mse = (diff**2).reshape(len(diff), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0**2 / mse)


def _dihedral(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and transposes of a batch ``(B, 3, H, W)``: 8 views of every image."""
    k = torch.randint(0, 8, (1,), generator=gen).item()
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-1, -2)
    return x


def _edge_l1(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the horizontal and vertical differences of two image batches."""
    dx = (x_hat.diff(dim=-1) - x.diff(dim=-1)).abs().mean()
    dy = (x_hat.diff(dim=-2) - x.diff(dim=-2)).abs().mean()
    return dx + dy


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 2% of ``lr``."""
    return warmup_cosine(step, lr=lr, warmup=warmup, steps=steps, min_ratio=0.02)


def _evaluate(tok: ImageTokenizer, n_scenes: int, n_digits: int) -> dict[str, float]:
    scenes = np.stack([render_scene(s) for s in held_out_scenes(n_scenes)])
    digits = held_out_digit_images(n_digits)
    return {
        "psnr_scenes_db": float(psnr_db(scenes, tok.decode(tok.encode(scenes))).mean()),
        "psnr_digits_db": float(psnr_db(digits, tok.decode(tok.encode(digits))).mean()),
    }


def train_image_tokenizer(
    out: str | Path | None,
    *,
    config: ImageTokenizerConfig | None = None,
    steps: int = 3000,
    batch_size: int = 8,
    lr: float = 2e-3,
    precision: Precision = "float32",
    threads: int = 1,
    seed: int = 0,
    n_scenes: int = 8000,
    digit_fraction: float = 0.2,
    edge_weight: float = 0.05,
    eval_images: int = 100,
    progress: bool = True,
) -> ImageTokenizer:
    """Train an ``ImageTokenizer`` on scenes and digits; save it to ``out`` (unless ``None``).

    Args:
        out: tokenizer folder to write (config, flex16 weights, training figures in metadata).
        config: network shape; default ``ImageTokenizerConfig()``.
        steps, batch_size, lr: Adam steps, images per step, peak learning rate (linear warmup,
            cosine decay). Small batches and many steps beat the reverse at equal compute here.
        precision: ``"float32"`` (Adam, gradients clipped to norm 1), or ``"flex16+5"``: the
            network is converted with ``convert_to_flex`` and trained with ``FlexAdam``, so
            weights, activations, gradients and optimizer state are all Flexpoint. Either way
            the returned tokenizer is a plain float32 module holding the trained weights.
        threads: torch CPU threads while training (the previous count is restored afterwards).
        seed: seeds the weights, the training scenes and the batch order.
        n_scenes: training scenes rendered up front, seen under 8 flips/transposes.
        digit_fraction: chance that an image of a batch is one of the 1500 training digits.
        edge_weight: weight of an L1 loss on horizontal and vertical pixel differences, added
            to the MSE: it asks for sharp shape outlines, which MSE alone trades for background.
        eval_images: held-out scenes and digits for the PSNR written into the metadata (0: skip).
        progress: show tqdm bars.

    The metadata records ``steps``, ``train_seconds`` (rendering included, evaluation
    excluded), ``precision``, the held-out ``psnr_scenes_db`` / ``psnr_digits_db`` and, under
    ``training``, the hyperparameters and the learning curve.
    """
    if precision not in ("float32", "flex16+5"):
        raise ValueError(f"precision must be 'float32' or 'flex16+5', got {precision!r}")
    if steps < 1 or batch_size < 1 or lr <= 0 or n_scenes < 1 or threads < 1 or eval_images < 0:
        raise ValueError(
            f"need steps, batch_size, n_scenes, threads >= 1, eval_images >= 0 and lr > 0; got "
            f"steps={steps}, batch_size={batch_size}, n_scenes={n_scenes}, threads={threads}, "
            f"eval_images={eval_images}, lr={lr}"
        )
    if not 0 <= digit_fraction <= 1:
        raise ValueError(f"digit_fraction must lie in [0, 1], got {digit_fraction}")
    config = config or ImageTokenizerConfig()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        scenes = torch.from_numpy(train_scene_images(n_scenes, seed, progress))  # (N, 64, 64, 3)
        digits = torch.from_numpy(np.stack([digit_image(i) for i in DIGITS_TRAIN]))  # (1500,...)

        tok = ImageTokenizer(config)
        opt: torch.optim.Optimizer
        if precision == "flex16+5":
            flex_config = FlexConfig.from_recipe_name("flex16+5")
            convert_to_flex(tok, config=flex_config)
            opt = FlexAdam(tok.parameters(), lr=lr, betas=(0.9, 0.99), config=flex_config)
        else:
            opt = torch.optim.Adam(tok.parameters(), lr=lr, betas=(0.9, 0.99))
        tok.train()

        log_every = max(1, min(50, steps // 20))
        losses: list[float] = []
        mses: list[float] = []
        curve: list[tuple[int, float]] = []
        bar = tqdm(range(steps), desc=f"image tokenizer ({precision})", disable=not progress)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps, lr, warmup=min(200, steps // 10 + 1))
            n_digits = int((torch.rand(batch_size, generator=gen) < digit_fraction).sum())
            idx_s = torch.randint(0, len(scenes), (batch_size - n_digits,), generator=gen)
            idx_d = torch.randint(0, len(digits), (n_digits,), generator=gen)
            batch = torch.cat([scenes[idx_s], digits[idx_d]]).permute(0, 3, 1, 2).float() / 255
            x = _dihedral(batch, gen)  # (B, 3, 64, 64) in [0, 1]
            x_hat, _ = tok(x)
            mse = F.mse_loss(x_hat, x)
            loss = mse + edge_weight * _edge_l1(x_hat, x) if edge_weight else mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if precision == "float32":
                torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            mses.append(mse.item())
            if (step + 1) % log_every == 0 or step + 1 == steps:
                curve.append((step + 1, float(np.mean(losses[-log_every:]))))
                train_mse = max(float(np.mean(mses[-log_every:])), 1e-12)
                bar.set_postfix(train_psnr=f"{-10 * math.log10(train_mse):.2f}dB")
        train_seconds = time.perf_counter() - start
        # Measure what ships: a float32 module holding the flex16 values that ``save`` stores.
        tok = _shipped_copy(tok)
        figures = _evaluate(tok, eval_images, eval_images) if eval_images else {}
    finally:
        torch.set_num_threads(previous_threads)

    tok.metadata = {
        # Headline figures, flat: what benchmarks and the system card read.
        "steps": steps,
        "precision": precision,
        "train_seconds": round(train_seconds, 1),
        **{k: round(v, 3) for k, v in figures.items()},
        "training": {
            "batch_size": batch_size,
            "lr": lr,
            "threads": threads,
            "seed": seed,
            "data": (
                f"{n_scenes} training-split scenes x 8 flips/transposes; digits "
                f"{DIGITS_TRAIN.start}..{DIGITS_TRAIN.stop - 1} for {digit_fraction:.0%} of images"
            ),
            "test": f"{eval_images} images each of held_out_scenes and held_out_digit_images",
            "loss": f"MSE on [0, 1] pixels + {edge_weight} * L1 of pixel differences",
            "final_loss": round(curve[-1][1], 7),
            # (step, mean loss of the last log_every steps), thinned to about 50 points
            "curve": [[s, round(v, 7)] for s, v in curve[:: max(1, len(curve) // 50)]],
        },
    }
    if out is not None:
        tok.save(out)
    return tok


def _shipped_copy(tok: ImageTokenizer) -> ImageTokenizer:
    """A plain float32 tokenizer in eval mode holding ``tok``'s weights rounded to flex16 as
    ``save`` stores them (``tok`` may be flex-converted)."""
    state = {
        name: p.dequantize() if isinstance(p, FlexWeight) else p.detach().clone()
        for name, p in tok.named_parameters()
    }
    plain = ImageTokenizer(tok.config)
    plain.load_state_dict(unpack_state_dict(pack_state_dict(state)))  # strict: no buffers saved
    return plain.eval()
