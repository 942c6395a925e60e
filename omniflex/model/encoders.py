"""Continuous input encoders: how speech and pictures enter the omni transformer.

What the model *reads* enters as continuous features through small encoders that are part of the
network and train with it (their ``nn.Linear`` layers become flex layers under
``convert_to_flex``, like every other). What it *writes* stays tokens of the one vocabulary.
Measured on this project's corpus (``shared/EXPERIMENTS.md``): the same small transformer learns
ASR of unseen voices to WER 0.10 from log-mel frames and only to 0.88 from codec-id embeddings,
and VQA from 8x8-pixel patches (64 positions) faster per step than from 256 image-code ids.

* ``SpeechEncoder``: 16 kHz samples -> causal 80-band log-mel frames every 10 ms (a 30 ms window
  that ends at the frame's last sample) -> four frames stacked into one position every 40 ms ->
  one ``Linear`` to the model width. Causal and streaming (``with encoder.streaming():``):
  chunks of any size give the frames the whole signal gives, so the Realtime server can prefill
  speech while the user talks.
* ``ImagePatchEncoder``: an RGB picture, resized to 64x64, cut into 8x8-pixel patches (64
  positions, row-major) -> one ``Linear`` each, plus a learned embedding of the patch's place.

Both return ``(B, positions, dim)`` float tensors that take the place of token embeddings at
the positions a conversation marks for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omniflex.tokenizers.audio import CausalFrontend, Downsample
from omniflex.tokenizers.streaming import StreamingModule

__all__ = ["ImagePatchEncoder", "MelConfig", "SpeechEncoder"]


@dataclass(frozen=True)
class MelConfig:
    """The log-mel front end: ``hop`` and ``window`` in samples (``window`` a multiple of
    ``hop``), ``stack`` frames per model position."""

    sample_rate: int = 16_000
    hop: int = 160  # 10 ms
    window: int = 480  # 30 ms
    n_mels: int = 80
    stack: int = 4  # one position per 40 ms

    def __post_init__(self) -> None:
        for name in ("sample_rate", "hop", "window", "n_mels", "stack"):
            if getattr(self, name) <= 0:
                raise ValueError(f"MelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.window % self.hop:
            raise ValueError(
                f"MelConfig.window ({self.window}) must be a multiple of hop ({self.hop})"
            )

    @property
    def samples_per_position(self) -> int:
        return self.hop * self.stack


# Log-mel of speech at 0.7 peak lies around -11 (silence) .. +3: centred and scaled to ~unit
# range so the projection starts well conditioned; fixed, so streaming needs no statistics.
_MEL_CENTRE, _MEL_SCALE = -4.0, 4.0


class SpeechEncoder(StreamingModule):
    """Samples ``(B, T)`` at 16 kHz -> ``(B, T // samples_per_position, dim)``, causal."""

    def __init__(self, dim: int, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        self.frontend = CausalFrontend(self.config)  # reads sample_rate, hop, window, n_mels
        self.stack = Downsample(self.config.n_mels, dim, self.config.stack)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 2:
            raise ValueError(f"SpeechEncoder takes samples (B, T), got {tuple(audio.shape)}")
        mel = self.frontend(audio.float())  # (B, frames, n_mels)
        return self.stack((mel - _MEL_CENTRE) / _MEL_SCALE)  # (B, positions, dim)

    def positions(self, samples: int) -> int:
        """Positions a whole signal of ``samples`` gives."""
        return samples // self.config.samples_per_position


class ImagePatchEncoder(nn.Module):
    """Pictures ``(B, H, W, 3)`` uint8 (or float in [0, 1]) -> ``(B, 64, dim)``: 8x8 patches
    of the picture resized to 64x64, each projected, plus a learned place embedding."""

    def __init__(self, dim: int, image_size: int = 64, patch: int = 8) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
        self.image_size, self.patch = image_size, patch
        self.grid = image_size // patch
        self.proj = nn.Linear(3 * patch * patch, dim)
        self.place = nn.Parameter(torch.randn(self.grid * self.grid, dim) * 0.02)

    @property
    def positions(self) -> int:
        return self.grid * self.grid

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"ImagePatchEncoder takes (B, H, W, 3) pictures, got {tuple(x.shape)}")
        x = x.float() / 255.0 if not x.is_floating_point() else x.float()
        x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)  # fmt: skip
        x = x * 2.0 - 1.0
        B, p, g = x.shape[0], self.patch, self.grid
        patches = x.reshape(B, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, -1)
        return self.proj(patches) + self.place  # (B, 64, dim)
