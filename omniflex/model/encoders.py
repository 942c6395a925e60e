"""Continuous input encoders: how speech and pictures enter the omni transformer.

What the model *reads* enters as continuous features through small encoders that are part of the
network and train with it (their layers become flex layers under ``convert_to_flex``, like every
other). What it *writes* stays tokens of the one vocabulary. Measured on this project's corpus
(``shared/EXPERIMENTS.md``): the same small transformer learns ASR of unseen voices to WER 0.10
from log-mel frames and only to 0.88 from codec-id embeddings.

A conversation marks where features go with placeholder tokens (``special.MEL``,
``special.PATCH``, one per position); the network adds each position's projected features to
its placeholder's embedding. Features are computed outside the network, once, by code without
weights (so the token cache can store them); the projections inside it learn:

* ``SpeechEncoder``: 16 kHz samples -> causal 80-band log-mel frames every 10 ms (a 30 ms window
  that ends at the frame's last sample) -> four frames stacked into one row every 40 ms
  (``features``) -> one ``Linear`` to the model width (``project``). Causal and streaming
  (``with encoder.streaming():``): chunks of any size give the rows the whole signal gives, so
  the Realtime server can prefill speech while the user talks.
* ``ImagePatchEncoder``: an RGB picture of any size, resized to 64x64, cut into 8x8-pixel
  patches (64 rows of 192 bytes, row-major: ``patches``) -> one ``Linear`` each, plus a learned
  embedding of the patch's place (``project``).
* ``InputFeatures``: the rows of a batch, in the order their placeholders occur (row-major over
  ``(batch, time)``); ``InputEncoders`` adds them to the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omniflex.model.layers import RMSNorm
from omniflex.tokenizers import special
from omniflex.tokenizers.audio import CausalFrontend
from omniflex.tokenizers.streaming import StreamingModule

__all__ = [
    "MEL_ROW",
    "PATCHES",
    "PATCH_ROW",
    "ImagePatchEncoder",
    "InputEncoders",
    "InputFeatures",
    "MelConfig",
    "SpeechEncoder",
    "SpeechFeatures",
    "image_patches",
]


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


#: The row layout every user of input features shares: a log-mel row (``n_mels * stack``
#: values), a patch row (3 x 8 x 8 bytes), and the patches of one picture (an 8 x 8 grid).
MEL_ROW = MelConfig().n_mels * MelConfig().stack  # 320
PATCH_ROW = 3 * 8 * 8  # 192
PATCHES = (64 // 8) ** 2  # 64

# Log-mel of speech at 0.7 peak lies around -11 (silence) .. +3: centred and scaled to ~unit
# range so the projection starts well conditioned; fixed, so streaming needs no statistics.
_MEL_CENTRE, _MEL_SCALE = -4.0, 4.0


class SpeechFeatures(StreamingModule):
    """Samples ``(B, T)`` at 16 kHz -> normalised log-mel rows ``(B, positions, row_size)``:
    no weights, causal; in ``streaming()`` a partial position waits for the next chunk."""

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        self.frontend = CausalFrontend(self.config)  # reads sample_rate, hop, window, n_mels

    @property
    def row_size(self) -> int:
        return self.config.n_mels * self.config.stack

    def positions(self, samples: int) -> int:
        """Positions a whole signal of ``samples`` gives."""
        return samples // self.config.samples_per_position

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 2:
            raise ValueError(f"SpeechEncoder takes samples (B, T), got {tuple(audio.shape)}")
        mel = (self.frontend(audio.float()) - _MEL_CENTRE) / _MEL_SCALE  # (B, frames, n_mels)
        if self._stream is not None:
            pending = self._stream.get("pending")
            if pending is not None:
                mel = torch.cat([pending, mel], dim=1)
        k = self.config.stack
        n = mel.shape[1] // k
        if self._stream is not None:
            self._stream["pending"] = mel[:, n * k :]
        return mel[:, : n * k].reshape(mel.shape[0], n, k * mel.shape[-1])


class SpeechEncoder(StreamingModule):
    """Samples ``(B, T)`` at 16 kHz -> ``(B, T // samples_per_position, dim)``, causal:
    ``SpeechFeatures`` then the encoder of its rows (``project``).

    With ``layers == 0`` the encoder is one ``Linear`` per 40 ms row (the first default model).
    Otherwise a row goes through a ``Linear`` to ``width``, then ``layers`` causal residual
    convolutions over the rows of its clip (``kernel`` rows each, dilations 1, 2, 4, ...: with
    the defaults 15 rows, 600 ms, of left context), then a ``Linear`` to ``dim``. The
    convolutions are ``Linear`` layers over stacked past rows, so ``convert_to_flex`` converts
    them like any other. With ``ffn`` each layer is a pre-norm block instead: RMSNorm, the
    convolution, then RMSNorm and a feed-forward of ``ffn * width`` units, each added to the
    row; an RMSNorm before the last ``Linear`` (position-wise parts: streaming is unchanged).
    A row's context is the ``history`` rows before it *in its clip* (a run of consecutive
    ``<|mel|>`` positions); rows before a clip's start read zeros.
    """

    def __init__(
        self,
        dim: int,
        config: MelConfig | None = None,
        *,
        layers: int = 0,
        width: int = 256,
        kernel: int = 3,
        ffn: int = 0,
    ) -> None:
        super().__init__()
        if layers < 0 or width < 1 or kernel < 1 or ffn < 0:
            raise ValueError(
                f"SpeechEncoder needs layers and ffn >= 0, width and kernel >= 1; got "
                f"layers={layers}, width={width}, kernel={kernel}, ffn={ffn}"
            )
        self.features = SpeechFeatures(config)
        self.config = self.features.config
        self.dilations = tuple(2**i for i in range(layers))
        self.kernel = kernel
        if layers == 0:
            self.proj = nn.Linear(self.features.row_size, dim)
        else:
            self.inp = nn.Linear(self.features.row_size, width)
            self.convs = nn.ModuleList(nn.Linear(kernel * width, width) for _ in self.dilations)
            self.out = nn.Linear(width, dim)
        self.ffn = ffn
        if layers and ffn:
            self.conv_norms = nn.ModuleList(RMSNorm(width) for _ in self.dilations)
            self.ffn_norms = nn.ModuleList(RMSNorm(width) for _ in self.dilations)
            self.ffns = nn.ModuleList(
                nn.Sequential(nn.Linear(width, ffn * width), nn.GELU(),
                              nn.Linear(ffn * width, width))
                for _ in self.dilations
            )  # fmt: skip
            self.out_norm = RMSNorm(width)

    @property
    def history(self) -> int:
        """Rows of left context an output row depends on (besides its own)."""
        return sum((self.kernel - 1) * d for d in self.dilations)

    def project(self, rows: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
        """Feature rows ``(M, row_size)`` -> ``(M, dim)``. ``starts`` (``(M,)`` bool) marks the
        rows that begin a clip (default: only the first); each row reads only the rows of its
        own clip before it."""
        rows = rows.float()
        if not self.dilations:
            return self.proj(rows)
        M = rows.shape[0]
        index = torch.arange(M, device=rows.device)
        if starts is None:
            starts = index == 0
        starts = starts.to(rows.device).bool() | (index == 0)
        offset = index - torch.cummax(torch.where(starts, index, 0), 0).values  # within clip
        x = F.gelu(self.inp(rows))
        for i, (conv, d) in enumerate(zip(self.convs, self.dilations, strict=True)):
            h = self.conv_norms[i](x) if self.ffn else x
            taps = []
            for j in reversed(range(self.kernel)):  # oldest row first
                s = j * d
                if s == 0:
                    taps.append(h)
                else:
                    past = F.pad(h, (0, 0, s, 0))[:M]  # row r reads row r - s ...
                    taps.append(past * (offset >= s).unsqueeze(1).to(h.dtype))  # ... of its clip
            x = x + F.gelu(conv(torch.cat(taps, dim=1)))
            if self.ffn:
                x = x + self.ffns[i](self.ffn_norms[i](x))
        return self.out(self.out_norm(x) if self.ffn else x)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        rows = self.features(audio)  # (B, positions, row_size)
        B, _, R = rows.shape
        keep = 0
        if self._stream is not None and self.history:
            past = self._stream.get("history")
            if past is not None:
                keep = past.shape[1]
                rows = torch.cat([past, rows], dim=1)
            self._stream["history"] = rows[:, -self.history :]
        n = rows.shape[1]
        starts = (torch.arange(B * n) % n) == 0
        out = self.project(rows.reshape(B * n, R), starts)
        return out.reshape(B, n, out.shape[-1])[:, keep:]  # (B, positions, dim)

    def positions(self, samples: int) -> int:
        """Positions a whole signal of ``samples`` gives."""
        return self.features.positions(samples)


def image_patches(
    images: torch.Tensor | np.ndarray, image_size: int = 64, patch: int = 8
) -> torch.Tensor:
    """Pictures ``(B, H, W, 3)`` or ``(H, W, 3)`` (uint8, or float in [0, 1]) of any size ->
    uint8 rows ``(B, (image_size / patch)**2, 3 * patch * patch)``: the picture resized to
    ``image_size`` square, cut into patches, row-major."""
    x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"ImagePatchEncoder takes (B, H, W, 3) pictures, got {tuple(x.shape)}")
    x = x.float() / 255.0 if not x.is_floating_point() else x.float()
    x = x.permute(0, 3, 1, 2)  # (B, 3, H, W)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    B, p, g = x.shape[0], patch, image_size // patch
    return x.reshape(B, 3, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, -1)


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
        self.place = nn.Embedding(self.grid * self.grid, dim)

    @property
    def positions(self) -> int:
        return self.grid * self.grid

    @property
    def row_size(self) -> int:
        return 3 * self.patch * self.patch

    def patches(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Pictures ``(B, H, W, 3)`` or ``(H, W, 3)`` -> uint8 patch rows ``(B, 64, 192)``."""
        return image_patches(images, self.image_size, self.patch)

    def project(self, rows: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
        """uint8 patch rows ``(..., 192)`` and their places ``(...)`` in ``[0, 64)`` ->
        ``(..., dim)``."""
        x = rows.float() / 127.5 - 1.0
        return self.proj(x) + self.place(place)

    def forward(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        rows = self.patches(images)  # (B, 64, 192)
        return self.project(rows, torch.arange(self.positions, device=rows.device))


@dataclass
class InputFeatures:
    """The feature rows of a batch, in the order their placeholders occur in ``ids`` (row-major
    over ``(batch, time)``): ``mel`` for ``<|mel|>``, ``patches`` and ``place`` for
    ``<|patch|>``. ``mel_history``: when ``ids`` continue a sequence whose last positions were
    ``<|mel|>`` (streaming prefill, one sequence), up to ``SpeechEncoder.history`` rows of that
    clip before the first one here, oldest first, which the speech encoder reads as context."""

    mel: torch.Tensor  # (M, 320) float
    patches: torch.Tensor  # (P, 192) uint8
    place: torch.Tensor  # (P,) int64 in [0, 64)
    mel_history: torch.Tensor | None = None  # (H, 320) float

    @classmethod
    def empty(cls) -> InputFeatures:
        return cls(
            torch.zeros(0, MEL_ROW), torch.zeros(0, PATCH_ROW, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.long),
        )  # fmt: skip

    @staticmethod
    def places(patch_rows: int) -> torch.Tensor:
        """The place of each of ``patch_rows`` rows of whole pictures, in order (0..63 each)."""
        return torch.arange(patch_rows) % PATCHES

    @classmethod
    def cat(cls, parts: list[InputFeatures]) -> InputFeatures:
        if not parts:
            return cls.empty()
        return cls(
            torch.cat([p.mel for p in parts]), torch.cat([p.patches for p in parts]),
            torch.cat([p.place for p in parts]),
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.mel.shape[0] + self.patches.shape[0])

    def to(self, device: torch.device | str) -> InputFeatures:
        history = None if self.mel_history is None else self.mel_history.to(device)
        return InputFeatures(
            self.mel.to(device), self.patches.to(device), self.place.to(device), history
        )


class InputEncoders(nn.Module):
    """Adds projected features to the embeddings of the placeholder positions."""

    def __init__(self, dim: int, *, speech_layers: int = 0, speech_width: int = 256,
                 speech_kernel: int = 3, speech_ffn: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.speech = SpeechEncoder(
            dim, layers=speech_layers, width=speech_width, kernel=speech_kernel, ffn=speech_ffn
        )
        self.image = ImagePatchEncoder(dim)
        self.mel_id = special.special_index(special.MEL)
        self.patch_id = special.special_index(special.PATCH)

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor, features: InputFeatures | None
    ) -> torch.Tensor:
        """``x`` (B, T, C) embeddings of ``ids`` (B, T) -> with features added."""
        if features is None:
            if bool(((ids == self.mel_id) | (ids == self.patch_id)).any()):
                raise ValueError(
                    "input ids hold <|mel|>/<|patch|> placeholders but no InputFeatures were "
                    "given; pass features= (the chat template's encode gives them)"
                )
            return x
        delta = torch.zeros_like(x)
        try:
            if features.mel.shape[0]:
                delta[ids == self.mel_id] = self._speech(ids, features).to(x.dtype)
            if features.patches.shape[0]:
                rows = self.image.project(features.patches, features.place)
                delta[ids == self.patch_id] = rows.to(x.dtype)
        except RuntimeError as err:  # index_put: counts differ
            raise ValueError(
                f"InputFeatures do not match the placeholders: {features.mel.shape[0]} mel "
                f"rows for {int((ids == self.mel_id).sum())} <|mel|>, {features.patches.shape[0]}"
                f" patch rows for {int((ids == self.patch_id).sum())} <|patch|> ({err})"
            ) from None
        return x + delta

    def _speech(self, ids: torch.Tensor, features: InputFeatures) -> torch.Tensor:
        """The encoded rows of the ``<|mel|>`` positions: a clip is a run of consecutive
        ``<|mel|>`` positions in one row of ``ids``, continued from ``features.mel_history``
        when ``ids`` start with ``<|mel|>``."""
        is_mel = ids == self.mel_id
        before = torch.zeros_like(is_mel)
        before[:, 1:] = is_mel[:, :-1]
        starts = (is_mel & ~before)[is_mel]
        rows, history = features.mel, features.mel_history
        if history is None or not len(history) or not bool(is_mel[0, 0]):
            return self.speech.project(rows, starts)
        starts = torch.cat(
            [torch.ones(len(history), dtype=torch.bool, device=starts.device), starts]
        )
        starts[1 : len(history) + 1] = False  # one clip: the history, then this chunk's rows
        out = self.speech.project(
            torch.cat([history.to(rows.device).float(), rows.float()]), starts
        )
        return out[len(history) :]
