"""Image tokenizer: a 64x64 RGB image <-> a 16x16 grid of FSQ codes (256 tokens per image).

The omni model writes images as tokens, so the tokenizer must be small, deterministic and good
enough that a decoded image still shows the right shapes in the right colours. A convolutional
autoencoder does it:

* the encoder folds space into channels (``PixelUnshuffle``) twice, 64x64 -> 32x32 -> 16x16,
  with residual blocks at each resolution, and projects to ``len(levels)`` latents per cell;
* finite scalar quantisation (``FSQ``) rounds them to one of ``prod(levels)`` codes; there is no
  codebook to learn and none can collapse;
* the decoder mirrors the encoder with ``PixelShuffle`` upsampling.

Every weight layer is an ``nn.Conv2d`` (no ``ConvTranspose2d``), and the only norm is a
parameter-free RMS over channels, so ``convert_to_flex`` turns the whole network into Flexpoint.
Without that norm, training at a useful learning rate spiked and lost thousands of steps.

Pixels are float ``[0, 1]`` at the tensor API and uint8 ``(H, W, 3)`` at the array API; inside
the network they live in ``[-1, 1]``. The shipped tokenizer reaches 31.8 dB PSNR on held-out
scenes (whose own pixel noise caps PSNR at 36 dB) and 39.9 dB on held-out digits; the scene
judge finds every object of 82.5% of reconstructed scenes (100% of the originals). Small shapes
(radius 6 px) are where it is weakest: a small star can come back as a diamond. Training
figures are in the shipped ``config.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from omniflex.tokenizers.base import NeuralTokenizer, register_tokenizer
from omniflex.tokenizers.fsq import FSQ

__all__ = ["IMAGE_PRESETS", "ImageTokenizer", "ImageTokenizerConfig"]

_CHUNK = 64  # images per forward pass in encode/decode: bounds memory on big batches


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """Shape of an ``ImageTokenizer``.

    Args:
        image_size: side of the square RGB images it codes; other sizes are resized to it.
        grid: side of the code grid; ``image_size / grid`` must be a power of two.
        levels: FSQ levels per latent channel; the codebook has ``prod(levels)`` codes.
        channels: conv widths from full resolution down to the grid, one per resolution
            (``log2(image_size / grid) + 1`` entries).
        encoder_blocks: residual blocks per resolution in the encoder (same length).
        decoder_blocks: residual blocks per resolution in the decoder (same length).
    """

    image_size: int = 64
    grid: int = 16
    levels: tuple[int, ...] = (8, 5, 5, 5)
    channels: tuple[int, ...] = (24, 48, 96)
    encoder_blocks: tuple[int, ...] = (0, 1, 1)
    decoder_blocks: tuple[int, ...] = (1, 1, 2)

    def __post_init__(self) -> None:
        for name in ("levels", "channels", "encoder_blocks", "decoder_blocks"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.grid < 1 or self.image_size < self.grid or self.image_size % self.grid:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of grid ({self.grid}) >= 1"
            )
        ratio = self.image_size // self.grid
        if ratio & (ratio - 1):
            raise ValueError(f"image_size / grid must be a power of two, got {ratio}")
        if not self.levels or any(int(n) < 2 for n in self.levels):
            raise ValueError(f"levels must be integers >= 2, got {self.levels}")
        n_res = self.num_resolutions
        for name in ("channels", "encoder_blocks", "decoder_blocks"):
            value = getattr(self, name)
            if len(value) != n_res:
                raise ValueError(
                    f"{name} needs one entry per resolution ({n_res} for image_size "
                    f"{self.image_size} and grid {self.grid}), got {value}"
                )
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if any(b < 0 for b in self.encoder_blocks + self.decoder_blocks):
            raise ValueError("encoder_blocks and decoder_blocks must be >= 0")

    @property
    def num_resolutions(self) -> int:
        return int(math.log2(self.image_size // self.grid)) + 1

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    @property
    def tokens_per_image(self) -> int:
        return self.grid * self.grid

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ImageTokenizerConfig:
        """A named preset (see ``IMAGE_PRESETS``), optionally with fields replaced."""
        if name not in IMAGE_PRESETS:
            raise ValueError(
                f"unknown image tokenizer preset {name!r}; choose from {sorted(IMAGE_PRESETS)}"
            )
        return replace(IMAGE_PRESETS[name], **overrides)


IMAGE_PRESETS: dict[str, ImageTokenizerConfig] = {
    # The shipped tokenizer: 16x16 codes of 1000 (8*5*5*5) values. A 12800-code variant
    # (8, 8, 8, 5, 5) scored no better at equal steps, and its test scenes used < 1000 codes.
    "default": ImageTokenizerConfig(),
    # For tests: the same structure, a few thousand parameters.
    "tiny": ImageTokenizerConfig(
        levels=(8, 5, 5, 5),
        channels=(8, 16, 16),
        encoder_blocks=(0, 0, 1),
        decoder_blocks=(0, 0, 1),
    ),
}


class _ChannelNorm(nn.Module):
    """Divide each pixel's feature vector by its RMS over channels (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)


class _ResBlock(nn.Module):
    """``x + conv(silu(conv(silu(norm(x)))))``: pre-norm, so the branch always sees inputs of
    unit scale; the second conv starts small so blocks start near identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _ChannelNorm()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(0.1)
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


def _encoder(cfg: ImageTokenizerConfig, latent_dim: int) -> nn.Sequential:
    ch = cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
    for i, width in enumerate(ch):
        if i > 0:  # halve the resolution: 2x2 pixels -> channels, then mix them
            layers += [nn.PixelUnshuffle(2), nn.Conv2d(4 * ch[i - 1], width, 1)]
        layers += [_ResBlock(width) for _ in range(cfg.encoder_blocks[i])]
    layers += [_ChannelNorm(), nn.SiLU(), nn.Conv2d(ch[-1], latent_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: ImageTokenizerConfig, latent_dim: int) -> nn.Sequential:
    ch = cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(latent_dim, ch[-1], 3, padding=1)]
    for i in reversed(range(len(ch))):
        layers += [_ResBlock(ch[i]) for _ in range(cfg.decoder_blocks[i])]
        if i > 0:  # double the resolution: channels -> 2x2 pixels
            layers += [nn.SiLU(), nn.Conv2d(ch[i], 4 * ch[i - 1], 1), nn.PixelShuffle(2)]
    layers += [_ChannelNorm(), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
    return nn.Sequential(*layers)


@register_tokenizer("image")
class ImageTokenizer(NeuralTokenizer):
    """RGB images <-> ``(grid, grid)`` integer codes in ``[0, cardinality)``.

    ``encode``/``decode`` take and give uint8 arrays; ``encode_tensor``/``decode_tensor`` take
    and give float tensors ``(B, 3, H, W)`` in ``[0, 1]``; ``forward`` is the training path
    (straight-through quantisation).
    """

    config_cls = ImageTokenizerConfig

    def __init__(self, config: ImageTokenizerConfig | None = None) -> None:
        super().__init__(config or ImageTokenizerConfig())
        cfg: ImageTokenizerConfig = self.config
        self.fsq = FSQ(cfg.levels)
        self.encoder = _encoder(cfg, self.fsq.dim)
        self.decoder = _decoder(cfg, self.fsq.dim)

    # ------------------------------------------------------------------ interface
    @property
    def cardinality(self) -> int:
        return self.fsq.codebook_size

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def grid(self) -> int:
        return self.config.grid

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ training path
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` in [0, 1] -> (reconstruction ``(B, 3, H, W)``, unclamped, in [0, 1]
        scale; codes ``(B, grid, grid)``). Gradients pass the rounding straight through."""
        self._check_tensor(x)
        z = self.encoder(x * 2 - 1)  # (B, D, g, g)
        q, codes = self.fsq(z.permute(0, 2, 3, 1))  # (B, g, g, D), (B, g, g, 1)
        x_hat = self.decoder(q.permute(0, 3, 1, 2))  # (B, 3, H, W) in [-1, 1] scale
        return (x_hat + 1) / 2, codes.squeeze(-1)

    # ------------------------------------------------------------------ tensors
    @torch.no_grad()
    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, image_size, image_size)`` float in [0, 1] -> ``(B, grid, grid)`` int64."""
        self._check_tensor(x)
        if not len(x):
            return torch.empty(0, self.grid, self.grid, dtype=torch.long)
        out = []
        for chunk in x.split(_CHUNK):
            z = self.encoder(chunk.to(self._device, torch.float32) * 2 - 1)  # (b, D, g, g)
            _, codes = self.fsq(z.permute(0, 2, 3, 1))  # (b, g, g, 1)
            out.append(codes.squeeze(-1))
        return torch.cat(out)

    @torch.no_grad()
    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, grid, grid)`` int codes -> ``(B, 3, image_size, image_size)`` float in [0, 1]."""
        codes = self._check_codes(codes, batched_only=True)
        if not len(codes):
            return torch.empty(0, 3, self.image_size, self.image_size)
        out = []
        for chunk in codes.split(_CHUNK):
            q = self.fsq.quantized_from_codes(chunk.to(self._device).unsqueeze(-1))  # (b,g,g,D)
            x_hat = self.decoder(q.permute(0, 3, 1, 2))  # (b, 3, H, W)
            out.append(((x_hat + 1) / 2).clamp(0, 1))
        return torch.cat(out)

    # ------------------------------------------------------------------ arrays
    def encode(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 RGB ``(H, W, 3)`` or ``(B, H, W, 3)`` (or a list of ``(H, W, 3)``) -> int64
        codes ``(grid, grid)`` or ``(B, grid, grid)``. Other sizes are resized (bicubic)."""
        batch, single = self._images_to_tensor(images)  # (B, 3, S, S) in [0, 1]
        codes = self.encode_tensor(batch)
        return codes[0] if single else codes

    def decode(self, codes: torch.Tensor | np.ndarray) -> np.ndarray:
        """int codes ``(grid, grid)`` or ``(B, grid, grid)`` -> uint8 ``(S, S, 3)`` or
        ``(B, S, S, 3)`` with ``S = image_size``."""
        single = getattr(codes, "ndim", 0) == 2
        checked = self._check_codes(codes, batched_only=False)
        x = self.decode_tensor(checked.unsqueeze(0) if single else checked)  # (B, 3, S, S)
        images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return images[0] if single else images

    # ------------------------------------------------------------------ checks
    def _check_tensor(self, x: torch.Tensor) -> None:
        s = self.image_size
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(
                f"image tensor must be a float torch.Tensor (B, 3, {s}, {s}) in [0, 1], got "
                f"{type(x).__name__} {getattr(x, 'dtype', '')}; use encode() for uint8 arrays"
            )
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(
                f"image tensor must have shape (B, 3, {s}, {s}), got {tuple(x.shape)}; "
                "encode() resizes uint8 arrays of other sizes"
            )

    def _check_codes(self, codes: torch.Tensor | np.ndarray, *, batched_only: bool) -> torch.Tensor:
        g = self.grid
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be a torch.Tensor or np.ndarray, got {type(codes)}")
        if codes.dtype.is_floating_point or codes.dtype in (torch.bool, torch.complex64):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        want = "(B, {g}, {g})" if batched_only else "({g}, {g}) or (B, {g}, {g})"
        ok_ndim = (3,) if batched_only else (2, 3)
        if codes.ndim not in ok_ndim or tuple(codes.shape[-2:]) != (g, g):
            raise ValueError(f"codes must have shape {want.format(g=g)}, got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise ValueError(
                f"codes must lie in [0, {self.cardinality}), got "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.long()

    def _images_to_tensor(
        self, images: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[torch.Tensor, bool]:
        """uint8 images -> ``(B, 3, S, S)`` float in [0, 1], and whether one image came in."""
        batched = isinstance(images, (list, tuple)) or (
            isinstance(images, np.ndarray) and images.ndim == 4
        )
        if batched:
            arrays = [self._one_image(im, f"images[{i}]") for i, im in enumerate(images)]
        elif isinstance(images, np.ndarray):
            arrays = [self._one_image(images, "image")]
        else:
            raise ValueError(
                f"images must be a uint8 np.ndarray (H, W, 3) or (B, H, W, 3), got "
                f"{type(images).__name__}; use encode_tensor() for float tensors"
            )
        s = self.image_size
        batch = np.stack(arrays) if arrays else np.zeros((0, s, s, 3), np.uint8)  # (B, S, S, 3)
        x = torch.from_numpy(batch).to(self._device).permute(0, 3, 1, 2).float() / 255
        return x, not batched

    def _one_image(self, image: Any, label: str) -> np.ndarray:
        if not isinstance(image, np.ndarray):
            raise ValueError(f"{label} must be a uint8 np.ndarray (H, W, 3), got {type(image)}")
        if image.dtype != np.uint8:
            raise ValueError(
                f"{label} must be uint8 RGB, got dtype {image.dtype}; scale floats to 0..255 "
                "and cast, or use encode_tensor() for float tensors in [0, 1]"
            )
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            hint = " (drop the alpha channel)" if image.ndim == 3 and image.shape[2] == 4 else ""
            raise ValueError(f"{label} must have shape (H, W, 3), got {image.shape}{hint}")
        s = self.image_size
        if image.shape[:2] != (s, s):
            image = np.asarray(
                Image.fromarray(image).resize((s, s), Image.Resampling.BICUBIC), dtype=np.uint8
            )
        return image
