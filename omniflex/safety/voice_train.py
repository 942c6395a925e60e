"""Train and calibrate the output voice classifier on the corpus (``omniflex safety train-voice``).

Data, per split (train: fit; val: calibrate the threshold; test: ``eval/safety_classifiers.py``):

* **Allowed** (target 1 for its own voice's head): the assistant's preset-voice speech.
* **Deviations** (target 0 for every head, or 1 only for *another* preset's head): other presets
  (a switch to another preset is still a deviation from the session's voice), the user voices of
  the split (input voices in train, held-out ``kai`` in val, ``lia``/``moss`` in test), and
  presets pitch-shifted by 2.5-4 semitones or time-stretched by 0.7x / 1.45x (librosa).
* **Augmentation.** Real output is codec-decoded audio, so every clip is used raw *and* after an
  encode+decode round trip through the shipped audio codec (else real output would be falsely
  blocked), and a share of each gets pink background noise at 5-20 dB SNR.

The classifier learns from pooled 1 s windows (``voice_features.py``); the threshold is then set
on val *streams* (see ``stream_results``): the lowest-miss threshold whose stream-level precision
is at least ``target_precision``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from omniflex.common.voices import PRESET_VOICE_NAMES
from omniflex.common.voices import voice as voice_info
from omniflex.data.shards import read_shard
from omniflex.data.speech import add_noise
from omniflex.media.audio import read_audio
from omniflex.safety.voice_classifier import (
    SHIPPED,
    VoiceClassifier,
    VoiceGuard,
    first_block_step,
    save_voice_classifier,
)
from omniflex.safety.voice_features import clip_frame_features, window_features
from omniflex.tokenizers.base import load_tokenizer

__all__ = [
    "Clip",
    "VoiceTrainConfig",
    "codec_roundtrip",
    "load_clips",
    "stream_results",
    "stream_set",
    "summarise_streams",
    "train_voice_classifier",
]


@dataclass(frozen=True)
class VoiceTrainConfig:
    """Sizes of one training run."""

    clips_per_preset: int = 250
    input_clips: int = 600
    steps: int = 3000
    batch_size: int = 256
    lr: float = 2e-3
    hidden: int = 96
    patience: int = 3
    target_precision: float = 0.96
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clips_per_preset", "input_clips", "steps", "batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"VoiceTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.target_precision <= 1:
            raise ValueError("VoiceTrainConfig.target_precision must be in (0, 1]")


@dataclass(frozen=True)
class Clip:
    voice: str
    role: str  # "assistant" (preset) or "user"
    audio: np.ndarray


def load_clips(corpus: str | Path, split: str) -> list[Clip]:
    """Every speech clip of ``split``: assistant (preset) and user parts of conversations."""
    shards = sorted(Path(corpus).glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(
            f"no {split} shards in {corpus}; build the corpus: "
            f"`omniflex data build --size tiny --out {corpus}`"
        )
    clips = []
    for shard in shards:
        for sample in read_shard(shard):
            for message in sample.conversation["messages"]:
                for part in message["content"]:
                    if part.get("type") == "audio":
                        audio = read_audio(sample.file(part["file"]), name=part["file"])
                        clips.append(Clip(part["voice"], message["role"], audio))
    return clips


_CODEC: Any = None


def codec_roundtrip(audio: np.ndarray) -> np.ndarray:
    """Encode and decode with the shipped audio codec, cut back to the input's length."""
    global _CODEC
    if _CODEC is None:
        _CODEC = load_tokenizer("audio")
    out = _CODEC.decode(_CODEC.encode(audio))[0].numpy()
    return np.clip(out[: len(audio)], -1, 1).astype(np.float32)


def _noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(add_noise(audio, snr_db, rng), -1, 1).astype(np.float32)


def pitch_shift(audio: np.ndarray, semitones: float) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(audio, sr=16_000, n_steps=semitones).astype(np.float32)


def time_stretch(audio: np.ndarray, rate: float) -> np.ndarray:
    import librosa

    return librosa.effects.time_stretch(audio, rate=rate).astype(np.float32)


def _training_windows(
    clips: list[Clip], cfg: VoiceTrainConfig, progress: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled windows ``(N, POOLED_DIM)`` and multi-hot targets ``(N, V)``."""
    voices = PRESET_VOICE_NAMES
    rng = np.random.default_rng(cfg.seed)
    presets = {v: [c for c in clips if c.role == "assistant" and c.voice == v] for v in voices}
    users = [c for c in clips if c.role == "user"]
    chosen: list[tuple[np.ndarray, int]] = []  # (audio, preset index or -1)
    for i, v in enumerate(voices):
        picks = rng.permutation(len(presets[v]))[: cfg.clips_per_preset]
        for j in picks:
            audio = presets[v][j].audio
            chosen.append((audio, i))
            shift = float(rng.choice([-4, -3, -2.5, 2.5, 3, 4]))
            chosen.append((pitch_shift(audio, shift), -1))
            chosen.append((time_stretch(audio, float(rng.choice([0.7, 1.45]))), -1))
    for j in rng.permutation(len(users))[: cfg.input_clips]:
        chosen.append((users[j].audio, -1))
    xs, ys = [], []
    for n, (audio, label) in enumerate(chosen):
        target = np.zeros(len(voices), np.float32)
        if label >= 0:
            target[label] = 1.0
        coded = codec_roundtrip(audio)
        variants = [audio, coded]
        snr = float(rng.choice([5.0, 10.0, 15.0, 20.0]))
        variants.append(_noise(coded if rng.random() < 0.5 else audio, snr, rng))
        for variant in variants:
            gain = float(10 ** (rng.uniform(-6, 3) / 20))
            w = window_features(clip_frame_features(np.clip(variant * gain, -1, 1)), 3)
            xs.append(w)
            ys.append(np.repeat(target[None], len(w), axis=0))
        if n % 200 == 0:
            progress(f"features: clip {n}/{len(chosen)}")
    return np.concatenate(xs), np.concatenate(ys)


def _fit(
    x: np.ndarray, y: np.ndarray, cfg: VoiceTrainConfig, progress: Callable
) -> VoiceClassifier:
    torch.manual_seed(cfg.seed)
    model = VoiceClassifier(PRESET_VOICE_NAMES, cfg.hidden, patience=cfg.patience)
    x_t, y_t = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    model.feature_mean.copy_(x_t.mean(0))
    model.feature_std.copy_(x_t.std(0).clamp_min(1e-3))
    # Each head sees many more "not me" windows than "me": weight its positives up to balance.
    pos_weight = ((1 - y_t).sum(0) / y_t.sum(0).clamp_min(1)).clamp(max=10)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(x_t), (cfg.batch_size,), generator=gen)
        loss = loss_fn(model(x_t[idx]), y_t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == cfg.steps - 1:
            progress(f"step {step}/{cfg.steps} loss {loss.item():.4f}")
    model.metadata["final_loss"] = round(loss.item(), 5)
    return model.eval()


# ----------------------------------------------------------------------------- streams
def stream_set(
    clips: list[Clip], *, noise_snr_db: float | None = None, seed: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Evaluation streams of one split, each as it would leave the model (codec round trip).

    Every stream is ``{"audio", "source", "group", "kind", "switch_at"}``; ``group`` is the
    speaking voice's role (``preset`` or ``held_out``/``input``), ``kind`` says how the audio was
    made (``plain``, ``pitch_shift``, ``switch``: a preset clip then another voice).
    Sessions are assigned in ``stream_results``."""
    rng = np.random.default_rng(seed)
    presets = [c for c in clips if c.role == "assistant"]
    users = [c for c in clips if c.role == "user" and len(c.audio) >= 8000]
    if limit is not None:
        presets, users = presets[:limit], users[:limit]
    streams: list[dict[str, Any]] = []

    def add(audio: np.ndarray, source: str, kind: str, switch_at: int | None = None) -> None:
        audio = codec_roundtrip(audio)
        if noise_snr_db is not None:
            audio = _noise(audio, noise_snr_db, rng)
        group = voice_info(source).role  # the (first) speaker's role: preset / held_out
        streams.append(
            {"audio": audio, "source": source, "group": group, "kind": kind, "switch_at": switch_at}
        )

    for i, c in enumerate(presets):
        add(c.audio, c.voice, "plain")
        add(pitch_shift(c.audio, (3.0 if i % 2 else -3.0)), c.voice, "pitch_shift")
        if users and i % 2 == 0:
            other = users[int(rng.integers(len(users)))]
            add(np.concatenate([c.audio, other.audio]), c.voice, "switch", len(c.audio))
    for c in users:
        add(c.audio, c.voice, "plain")
    return streams


def stream_results(model: VoiceClassifier, streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (stream, session voice): step scores of the session voice and whether it must block.

    A stream *must be blocked* (a positive, as in the GPT-4o card's "deviation from the system
    voice") when its speaker is not the session voice, when it is the session voice pitch-shifted,
    or when it switches to another voice mid-answer; the session voice's own plain speech must
    pass. Plain preset clips make one allowed and three deviation pairs (other sessions)."""
    voices = model.voices
    guard = VoiceGuard(voices[0], model)
    rows = []
    for s in streams:
        scores = guard.step_scores(s["audio"])  # (steps, V)
        for vi, session in enumerate(voices):
            if s["kind"] in ("pitch_shift", "switch") and s["source"] != session:
                continue  # altered clips are paired with their own voice's session only
            deviation = s["kind"] != "plain" or s["source"] != session
            rows.append(
                {
                    "session": session,
                    "source": s["source"],
                    "group": s["group"],
                    "kind": s["kind"] if s["source"] == session else "other_voice",
                    "deviation": deviation,
                    "scores": scores[:, vi],
                    "switch_step": None if s["switch_at"] is None else s["switch_at"] // 640,
                }
            )
    return rows


def summarise_streams(
    rows: list[dict[str, Any]], threshold: float, patience: int
) -> dict[str, Any]:
    """Stream-level precision/recall of *blocking deviations* at one threshold.

    positive = a stream that must be blocked; predicted positive = the guard blocked it at some
    step. precision = TP / (TP + FP), recall = TP / (TP + FN); ``false_block_rate`` = FP / allowed
    streams. Switch streams blocked only before the switch count as true positives but are also
    reported (``switch_blocked_early``)."""
    tp = fp = fn = tn = early = 0
    delays = []
    for r in rows:
        at = first_block_step(r["scores"], threshold, patience)
        blocked = at is not None
        if r["deviation"]:
            tp += blocked
            fn += not blocked
            if r["switch_step"] is not None and blocked:
                if at < r["switch_step"]:
                    early += 1
                else:
                    delays.append((at - r["switch_step"] + 1) * 0.04)
        else:
            fp += blocked
            tn += not blocked
    return {
        "precision": round(tp / max(1, tp + fp), 4),
        "recall": round(tp / max(1, tp + fn), 4),
        "false_block_rate": round(fp / max(1, fp + tn), 4),
        "deviation_streams": tp + fn,
        "allowed_streams": fp + tn,
        "switch_blocked_early": early,
        "switch_delay_s_mean": round(float(np.mean(delays)), 3) if delays else None,
        "switch_delay_s_max": round(float(np.max(delays)), 3) if delays else None,
    }


def calibrate(rows: list[dict[str, Any]], patience: int, target_precision: float) -> dict:
    """The threshold with the highest recall at ``target_precision`` (ties: highest precision)."""
    best = None
    for threshold in np.round(np.arange(0.02, 0.98, 0.02), 2):
        s = summarise_streams(rows, float(threshold), patience)
        key = (s["precision"] >= target_precision, s["recall"], s["precision"])
        if best is None or key > best[0]:
            best = (key, float(threshold), s)
    assert best is not None
    return {"threshold": best[1], **best[2]}


def train_voice_classifier(
    corpus: str | Path = "data/tiny",
    out: str | Path = SHIPPED,
    cfg: VoiceTrainConfig | None = None,
    progress: Callable[[str], None] = print,
) -> VoiceClassifier:
    """Fit on train, calibrate the threshold on val streams, save to ``out``; returns the model."""
    cfg = cfg or VoiceTrainConfig()
    t0 = time.process_time()
    x, y = _training_windows(load_clips(corpus, "train"), cfg, progress)
    progress(f"{len(x)} training windows ({time.process_time() - t0:.0f} s CPU)")
    model = _fit(x, y, cfg, progress)
    val = stream_set(load_clips(corpus, "val"), seed=cfg.seed)
    rows = stream_results(model, val)
    chosen = calibrate(rows, cfg.patience, cfg.target_precision)
    model.threshold = chosen["threshold"]
    model.metadata.update(
        {
            "corpus": str(corpus),
            "train_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "train_windows": len(x),
            "val_calibration": chosen,
            "cpu_seconds": round(time.process_time() - t0, 1),
        }
    )
    progress(f"val: {chosen}")
    save_voice_classifier(model, out)
    return model
