"""A causal, streaming neural audio codec at 16 kHz: 25 frames a second, 2 codebooks, 50 tokens/s.

Why this shape:

* **Frame rate and latency.** The codec must let speech start within a human pause. A frame of
  40 ms (25 Hz) with a 40 ms synthesis window gives an algorithmic latency of 70 ms (one frame to
  fill plus the 30 ms overlap still open in the overlap-add), under the 80 ms budget; Mimi's
  12.5 Hz frames alone would already spend 80 ms. Two FSQ codebooks of 1000 codes per frame keep
  the total at 50 tokens a second (about 500 bits/s).
* **Cheap analysis, cheap synthesis.** The encoder reads causal log-mel frames (hop 10 ms, window
  40 ms ending at the current sample), not raw samples; the decoder predicts a magnitude and a
  phase per 10 ms frame and an inverse FFT with overlap-add turns them into samples (a Vocos-style
  head), so nothing runs at the sample rate except one FFT per frame. Decoding is tens of times
  faster than real time on one CPU core.
* **Every layer is a ``nn.Linear``** (causal convolutions are written as a ``Linear`` over the
  stacked past frames), so ``convert_to_flex`` turns the whole codec into flex16+5, the same path
  the omni model trains on.
* **Streaming by construction.** Every stage is causal; inside ``with codec.streaming():`` the
  same ``encode``/``decode`` accept chunks of any length and keep what they need of the past, and
  the output equals the full-sequence path.

Timing: output sample ``s`` reconstructs input sample ``s`` (the decoder's internal signal runs
``window - hop`` samples late and ``decode`` removes that offset); the last ``window - hop`` samples
of a stream fade out with the synthesis window unless more frames follow.

Shapes: audio ``(B, T)`` float32 at 16 kHz; codes ``(B, K, F)`` int64 with ``K`` codebooks and
``F = T // 640`` frames (moshi's ``[B, K, T]`` layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omniflex.tokenizers.base import NeuralTokenizer, register_tokenizer
from omniflex.tokenizers.fsq import FSQ
from omniflex.tokenizers.streaming import StreamingModule

__all__ = ["AudioCodec", "AudioCodecConfig"]


@dataclass(frozen=True)
class AudioCodecConfig:
    """Sizes of the codec. ``frame_rate = sample_rate / (hop * downsample)``."""

    sample_rate: int = 16_000
    hop: int = 160  # samples per analysis/synthesis frame (10 ms)
    window: int = 640  # analysis and synthesis window (40 ms); a multiple of hop
    downsample: int = 4  # analysis frames per code frame
    n_mels: int = 80
    dim: int = 192  # width at 100 frames/s
    latent_dim: int = 256  # width at 25 frames/s
    encoder_blocks: tuple[int, ...] = (1, 2, 4)  # dilations at 100 frames/s
    encoder_latent_blocks: tuple[int, ...] = (1, 2)  # dilations at 25 frames/s
    decoder_latent_blocks: tuple[int, ...] = (1, 2)
    decoder_blocks: tuple[int, ...] = (1, 2, 4, 1)
    kernel_size: int = 3
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    codebooks: int = 2

    def __post_init__(self) -> None:
        for name in ("sample_rate", "hop", "window", "downsample", "n_mels", "dim", "latent_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AudioCodecConfig.{name} must be positive")
        if self.window % self.hop:
            raise ValueError(
                f"AudioCodecConfig.window ({self.window}) must be a multiple of hop ({self.hop})"
            )
        if self.kernel_size < 1:
            raise ValueError("AudioCodecConfig.kernel_size must be >= 1")
        if self.codebooks < 1:
            raise ValueError("AudioCodecConfig.codebooks must be >= 1")

    @property
    def samples_per_frame(self) -> int:
        return self.hop * self.downsample

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.samples_per_frame

    @property
    def delay(self) -> int:
        """Samples the overlap-add keeps open: the synthesis lags analysis by this much."""
        return self.window - self.hop

    @property
    def latency_seconds(self) -> float:
        """Algorithmic latency: one code frame to fill plus the open overlap."""
        return (self.samples_per_frame + self.delay) / self.sample_rate


# ----------------------------------------------------------------------------- building blocks
class CausalFrontend(StreamingModule):
    """Samples ``(B, T)`` -> causal log-mel frames ``(B, T // hop, n_mels)``.

    Frame ``t`` is the window of samples ``[(t + 1) * hop - window, (t + 1) * hop)`` (zeros before
    the start): it is complete as soon as its last sample arrives.
    """

    def __init__(self, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.hop, self.window = cfg.hop, cfg.window
        import librosa

        mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.window, n_mels=cfg.n_mels)
        self.register_buffer("mel_fb", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer(
            "analysis_window", torch.hann_window(cfg.window, periodic=True), persistent=False
        )

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (B, T, window)
        spec = torch.fft.rfft(frames * self.analysis_window, dim=-1).abs()  # (B, T, window/2+1)
        return torch.log(spec @ self.mel_fb.T + 1e-5)  # (B, T, n_mels)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        context = self.window - self.hop
        if self._stream is None:
            padded = F.pad(audio, (context, 0))
        else:
            past = self._stream.get("past")
            if past is None:
                past = audio.new_zeros(audio.shape[0], context)
            padded = torch.cat([past, audio], dim=-1)
        n = (padded.shape[-1] - context) // self.hop
        if self._stream is not None:
            self._stream["past"] = padded[:, n * self.hop :]
        if n == 0:
            return audio.new_zeros(audio.shape[0], 0, self.mel_fb.shape[0])
        frames = padded[:, : context + n * self.hop].unfold(-1, self.window, self.hop)
        return self._features(frames)


class CausalConv(StreamingModule):
    """A causal, dilated 1-D convolution written as a ``Linear`` over stacked past frames.

    ``(B, T, C_in) -> (B, T, C_out)``; output ``t`` sees inputs ``t, t - d, ..., t - (k-1) d``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.proj = nn.Linear(c_in * kernel_size, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        span = (self.kernel_size - 1) * self.dilation
        if span == 0:
            return self.proj(x)
        if self._stream is None:
            padded = F.pad(x, (0, 0, span, 0))
        else:
            past = self._stream.get("past")
            if past is None:
                past = x.new_zeros(x.shape[0], span, x.shape[-1])
            padded = torch.cat([past, x], dim=1)
            self._stream["past"] = padded[:, padded.shape[1] - span :]
        t = x.shape[1]
        taps = [
            padded[:, i * self.dilation : i * self.dilation + t] for i in range(self.kernel_size)
        ]
        return self.proj(torch.cat(taps, dim=-1))


class Block(nn.Module):
    """Pre-norm residual block: causal conv + SiLU MLP. ``(B, T, C) -> (B, T, C)``."""

    def __init__(self, dim: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.conv = CausalConv(dim, dim, kernel_size, dilation)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + F.silu(self.conv(self.norm1(x)))
        return x + self.down(F.silu(self.up(self.norm2(x))))


class Downsample(StreamingModule):
    """Stack ``factor`` consecutive frames into one: ``(B, T, C) -> (B, T // factor, C_out)``."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(c_in * factor, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._stream is not None:
            pending = self._stream.get("pending")
            if pending is not None:
                x = torch.cat([pending, x], dim=1)
        n = x.shape[1] // self.factor
        if self._stream is not None:
            self._stream["pending"] = x[:, n * self.factor :]
        stacked = x[:, : n * self.factor].reshape(x.shape[0], n, self.factor * x.shape[-1])
        return self.proj(stacked)


class Upsample(nn.Module):
    """One frame into ``factor`` frames: ``(B, T, C_in) -> (B, T * factor, C_out)``."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        self.factor, self.c_out = factor, c_out
        self.proj = nn.Linear(c_in, c_out * factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return self.proj(x).reshape(b, t * self.factor, self.c_out)


class ISTFTHead(StreamingModule):
    """Frames ``(B, T, C)`` -> magnitude and phase per frame -> samples by overlap-add.

    Frame ``t`` is synthesised over samples ``[t * hop, t * hop + window)`` of an internal
    signal that lags the input by ``window - hop``; ``forward`` returns only finished samples
    (``(B, T * hop)``, lag included) and keeps the open overlap for the next call (streaming) or
    appends it (full sequence).
    """

    def __init__(self, dim: int, cfg: AudioCodecConfig) -> None:
        super().__init__()
        self.hop, self.window = cfg.hop, cfg.window
        self.bins = cfg.window // 2 + 1
        self.proj = nn.Linear(dim, 2 * self.bins)
        win = torch.hann_window(cfg.window, periodic=True)
        # Constant overlap-add gain of the squared Hann window at this overlap.
        gain = float((win**2).reshape(-1, cfg.hop).sum(0).mean())
        self.register_buffer("synthesis_window", win / gain, persistent=False)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` -> windowed time-domain frames ``(B, T, window)``."""
        log_mag, phase = self.proj(x).float().chunk(2, dim=-1)
        mag = torch.exp(log_mag.clamp(max=6.0))  # bounded: no inf from an untrained head
        spec = torch.polar(mag, phase)
        return torch.fft.irfft(spec, n=self.window, dim=-1) * self.synthesis_window

    def overlap_add(self, frames: torch.Tensor, tail: torch.Tensor | None) -> torch.Tensor:
        """Sum frames at hop spacing; returns ``(B, T * hop + window - hop)`` samples."""
        b, t, _ = frames.shape
        r = self.window // self.hop
        parts = frames.reshape(b, t, r, self.hop)
        out = frames.new_zeros(b, t + r - 1, self.hop)
        for i in range(r):
            out[:, i : i + t] += parts[:, :, i]
        out = out.reshape(b, -1)
        if tail is not None:
            out[:, : tail.shape[-1]] += tail
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        samples = self.overlap_add(
            self.frames(x), None if self._stream is None else self._stream.get("tail")
        )
        if self._stream is None:
            return samples
        done = x.shape[1] * self.hop
        self._stream["tail"] = samples[:, done:]
        return samples[:, :done]

    def flush(self) -> torch.Tensor:
        """Streaming: the open overlap after the last frame (fades out with the window)."""
        if self._stream is None:
            raise RuntimeError("flush() is for streaming; call it inside codec.streaming()")
        tail = self._stream.pop("tail", None)
        if tail is None:
            return torch.zeros(self._stream["batch_size"], 0)
        return tail


# ----------------------------------------------------------------------------- the codec
@register_tokenizer("audio")
class AudioCodec(NeuralTokenizer, StreamingModule):
    """Causal streaming codec: 16 kHz mono <-> ``(B, codebooks, frames)`` codes at 25 Hz."""

    config_cls = AudioCodecConfig

    def __init__(self, config: AudioCodecConfig | None = None) -> None:
        config = config or AudioCodecConfig()
        super().__init__(config)
        c = config
        self.quantizer = FSQ(c.fsq_levels, groups=c.codebooks)
        self.frontend = CausalFrontend(c)
        self.enc_in = nn.Linear(c.n_mels, c.dim)
        self.enc_blocks = nn.ModuleList(Block(c.dim, c.kernel_size, d) for d in c.encoder_blocks)
        self.enc_down = Downsample(c.dim, c.latent_dim, c.downsample)
        self.enc_latent = nn.ModuleList(
            Block(c.latent_dim, c.kernel_size, d) for d in c.encoder_latent_blocks
        )
        self.enc_norm = nn.LayerNorm(c.latent_dim)
        self.enc_out = nn.Linear(c.latent_dim, self.quantizer.dim * c.codebooks)
        self.dec_in = nn.Linear(self.quantizer.dim * c.codebooks, c.latent_dim)
        self.dec_latent = nn.ModuleList(
            Block(c.latent_dim, c.kernel_size, d) for d in c.decoder_latent_blocks
        )
        self.dec_up = Upsample(c.latent_dim, c.dim, c.downsample)
        self.dec_blocks = nn.ModuleList(Block(c.dim, c.kernel_size, d) for d in c.decoder_blocks)
        self.dec_norm = nn.LayerNorm(c.dim)
        self.head = ISTFTHead(c.dim, c)

    # ------------------------------------------------------------------ interface
    @property
    def cardinality(self) -> int:
        return self.quantizer.codebook_size

    @property
    def num_codebooks(self) -> int:
        return self.config.codebooks

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    # ------------------------------------------------------------------ tensors
    def encode_latent(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` samples -> ``(B, F, codebooks * fsq_dim)`` unquantised latents."""
        x = self.enc_in(self.frontend(audio))  # (B, T/hop, dim)
        for blk in self.enc_blocks:
            x = blk(x)
        x = self.enc_down(x)  # (B, F, latent_dim)
        for blk in self.enc_latent:
            x = blk(x)
        return self.enc_out(self.enc_norm(x))

    def decode_latent(self, q: torch.Tensor) -> torch.Tensor:
        """``(B, F, codebooks * fsq_dim)`` quantised latents -> lagged samples (see ISTFTHead)."""
        x = self.dec_in(q)
        for blk in self.dec_latent:
            x = blk(x)
        x = self.dec_up(x)  # (B, F * downsample, dim)
        for blk in self.dec_blocks:
            x = blk(x)
        return self.head(self.dec_norm(x))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training path: ``(B, T)`` -> (reconstruction ``(B, T')`` aligned to the input, codes).

        ``T' = (T // samples_per_frame) * samples_per_frame``: the reconstruction of the whole
        frames, the fading tail dropped."""
        q, codes = self.quantizer(self.encode_latent(audio))
        lagged = self.decode_latent(q)
        n = q.shape[1] * self.config.samples_per_frame
        return lagged[:, self.config.delay : self.config.delay + n], codes

    # ------------------------------------------------------------------ codes
    def encode(self, audio: Any) -> torch.Tensor:
        """Audio ``(T,)`` or ``(B, T)`` (numpy or torch, float in [-1, 1]) -> codes ``(B, K, F)``.

        Outside ``streaming()`` the audio is zero-padded to whole frames; inside, samples that do
        not yet fill a frame wait for the next call."""
        x = _as_batch(audio)
        if self._stream is None:
            spf = self.config.samples_per_frame
            x = F.pad(x, (0, (-x.shape[-1]) % spf))
        with torch.no_grad():
            z = self.encode_latent(x)
            codes = self.quantizer.codes_from_quantized(self.quantizer.quantize(z))
        return codes.transpose(1, 2).contiguous()  # (B, K, F)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, K, F)`` (or ``(K, F)``) -> float32 audio ``(B, F * 640)`` at 16 kHz.

        Outside ``streaming()``: the whole signal, its last 30 ms fading out. Inside: the samples
        finished so far (30 ms fewer than ``F * 640`` on the first call); ``flush()`` ends it."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"audio codes must be (B, {self.num_codebooks}, F), got {tuple(codes.shape)}"
            )
        with torch.no_grad():
            q = self.quantizer.quantized_from_codes(codes.transpose(1, 2))
            lagged = self.decode_latent(q)
        delay = self.config.delay
        if self._stream is None:
            return lagged[:, delay:]
        skip = self._stream.setdefault("to_skip", delay)
        drop = min(skip, lagged.shape[-1])
        self._stream["to_skip"] = skip - drop
        return lagged[:, drop:]

    def flush(self) -> torch.Tensor:
        """Streaming decode: the last 30 ms after the final frame (fading out)."""
        tail = self.head.flush()
        skip = self._stream.get("to_skip", 0) if self._stream is not None else 0
        return tail[:, skip:]


def _as_batch(audio: Any) -> torch.Tensor:
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, torch.Tensor):
        raise TypeError(f"audio must be a numpy array or torch tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise TypeError(f"audio must be float samples in [-1, 1], got dtype {audio.dtype}")
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    if audio.dim() != 2:
        raise ValueError(f"audio must be (T,) or (B, T), got shape {tuple(audio.shape)}")
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or Inf samples")
    return audio.float()
