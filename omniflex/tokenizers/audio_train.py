"""Training the audio codec: multi-resolution STFT and mel losses on the corpus's speech.

No adversarial loss: spectral losses at four resolutions constrain the phase enough for
intelligible, speaker-preserving speech at this size, and keep training within minutes on a CPU.
The codec trains in float32 or, through ``convert_to_flex``, in flex16+5 (the same code path as
the omni model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from omniflex.common.schedule import warmup_cosine
from omniflex.data.shards import read_shard
from omniflex.flex import FlexConfig, convert_to_flex
from omniflex.media.audio import read_audio
from omniflex.tokenizers.audio import AudioCodec, AudioCodecConfig

__all__ = [
    "AudioTrainConfig",
    "corpus_audio",
    "mel_loss",
    "multi_resolution_stft_loss",
    "train_audio_codec",
]

_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))


@dataclass(frozen=True)
class AudioTrainConfig:
    steps: int = 4000
    batch_size: int = 8
    segment_seconds: float = 1.28
    lr: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mel_weight: float = 1.0
    precision: str = "float32"  # or a flex recipe name, e.g. "flex16+5"
    threads: int = 2
    seed: int = 0
    val_every: int = 200

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("AudioTrainConfig.steps and batch_size must be >= 1")
        if self.segment_seconds <= 0:
            raise ValueError("AudioTrainConfig.segment_seconds must be positive")


def corpus_audio(corpus_dir: str | Path, split: str = "train") -> list[np.ndarray]:
    """Every WAV of a corpus split (users' augmented voices and the preset voices), 16 kHz."""
    corpus_dir = Path(corpus_dir)
    shards = sorted(corpus_dir.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(
            f"no {split} shards in {corpus_dir}; build the corpus first: "
            f"`omniflex data build --size tiny --out {corpus_dir}`"
        )
    clips = []
    for shard in shards:
        for sample in read_shard(shard):
            for name, data in sorted(sample.files.items()):
                if name.endswith(".wav"):
                    clips.append(read_audio(data, name=f"{sample.key}.{name}"))
    return clips


def _stft_mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    return spec.abs().clamp(min=1e-5)


def multi_resolution_stft_loss(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over resolutions of spectral convergence + L1 log-magnitude."""
    total = y.new_zeros(())
    for n_fft, hop in _RESOLUTIONS:
        s_hat, s = _stft_mag(y_hat, n_fft, hop), _stft_mag(y, n_fft, hop)
        sc = torch.linalg.norm(s - s_hat) / torch.linalg.norm(s)
        total = total + sc + F.l1_loss(s_hat.log(), s.log())
    return total / len(_RESOLUTIONS)


_MEL_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def mel_loss(y_hat: torch.Tensor, y: torch.Tensor, sample_rate: int = 16_000) -> torch.Tensor:
    """L1 between log-mel spectrograms (80 bands) at a 64 ms/16 ms and a 25 ms/10 ms analysis
    (the second is the resolution speaker encoders and recognisers look at)."""
    total = y.new_zeros(())
    for n_fft, hop in ((1024, 256), (400, 160)):
        key = (sample_rate, n_fft)
        if key not in _MEL_CACHE:
            import librosa

            fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=80)
            _MEL_CACHE[key] = torch.from_numpy(fb).float()
        fb = _MEL_CACHE[key].to(y.device)
        m_hat = (fb @ _stft_mag(y_hat, n_fft, hop)).clamp(min=1e-5).log()
        m = (fb @ _stft_mag(y, n_fft, hop)).clamp(min=1e-5).log()
        total = total + F.l1_loss(m_hat, m)
    return total / 2


def _batches(
    clips: list[np.ndarray], batch_size: int, length: int, rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    weights = np.array([max(len(c), 1) for c in clips], dtype=np.float64)
    weights /= weights.sum()
    while True:
        batch = np.zeros((batch_size, length), dtype=np.float32)
        for i, k in enumerate(rng.choice(len(clips), size=batch_size, p=weights)):
            clip = clips[k]
            if len(clip) > length:
                start = int(rng.integers(0, len(clip) - length))
                batch[i] = clip[start : start + length]
            else:
                batch[i, : len(clip)] = clip
        yield torch.from_numpy(batch)


def _lr_at(step: int, cfg: AudioTrainConfig) -> float:
    """Linear warm-up, then cosine decay to 5% of ``lr``."""
    return warmup_cosine(step, lr=cfg.lr, warmup=cfg.warmup_steps, steps=cfg.steps, min_ratio=0.05)


def _loss(codec: AudioCodec, audio: torch.Tensor, cfg: AudioTrainConfig) -> torch.Tensor:
    recon, _ = codec(audio)
    target = audio[:, : recon.shape[-1]]
    return multi_resolution_stft_loss(recon, target) + cfg.mel_weight * mel_loss(recon, target)


def train_audio_codec(
    corpus_dir: str | Path,
    out: str | Path | None = None,
    *,
    config: AudioCodecConfig | None = None,
    train: AudioTrainConfig | None = None,
    clips: list[np.ndarray] | None = None,
    val_clips: list[np.ndarray] | None = None,
    progress: bool = True,
) -> AudioCodec:
    """Train a codec on the corpus's train-split speech; save it to ``out`` when given.

    Losses go to ``out/train_log.jsonl``. ``clips`` overrides the corpus (used by tests)."""
    train = train or AudioTrainConfig()
    torch.manual_seed(train.seed)
    torch.set_num_threads(train.threads)
    codec = AudioCodec(config or AudioCodecConfig())
    if clips is None:
        clips = corpus_audio(corpus_dir, "train")
    if val_clips is None and clips is not None and corpus_dir:
        try:
            val_clips = corpus_audio(corpus_dir, "val")[:64]
        except FileNotFoundError:
            val_clips = None
    if train.precision != "float32":
        convert_to_flex(codec, config=FlexConfig.from_recipe_name(train.precision))
    opt = torch.optim.AdamW(codec.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    rng = np.random.default_rng(train.seed)
    spf = codec.config.samples_per_frame
    length = max(spf, int(train.segment_seconds * codec.sample_rate) // spf * spf)
    batches = _batches(clips, train.batch_size, length, rng)
    log_path = Path(out) / "train_log.jsonl" if out else None
    if log_path:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    start = time.perf_counter()
    bar = tqdm(range(train.steps), desc="audio codec", disable=not progress, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, train)
        loss = _loss(codec, next(batches), train)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), train.grad_clip)
        opt.step()
        record = {"step": step, "loss": float(loss.detach()), "lr": _lr_at(step, train)}
        last = step == train.steps - 1
        if val_clips and (last or (step + 1) % train.val_every == 0):
            record["val_loss"] = validation_loss(codec, val_clips, train)
        record["seconds"] = time.perf_counter() - start
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if log_path:
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
    codec.eval()
    codec.metadata = {
        "train": asdict(train),
        "corpus": str(corpus_dir),
        "train_clips": len(clips),
        "train_hours": round(sum(len(c) for c in clips) / codec.sample_rate / 3600, 3),
        "train_seconds": round(time.perf_counter() - start, 1),
        "final_loss": record["loss"],
        "final_val_loss": record.get("val_loss"),
    }
    if out:
        codec.save(out)
    return codec


def validation_loss(
    codec: AudioCodec, clips: list[np.ndarray], cfg: AudioTrainConfig, seconds: float = 2.56
) -> float:
    """Mean loss on the first ``seconds`` of each clip (deterministic)."""
    spf = codec.config.samples_per_frame
    length = int(seconds * codec.sample_rate) // spf * spf
    batch = np.zeros((len(clips), length), dtype=np.float32)
    for i, c in enumerate(clips):
        batch[i, : min(len(c), length)] = c[:length]
    was_training = codec.training
    codec.eval()
    with torch.no_grad():
        value = float(_loss(codec, torch.from_numpy(batch), cfg))
    codec.train(was_training)
    return value
