"""Figures for the tokenizer report: spectrograms and images before and after a round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_audio_roundtrips", "plot_image_roundtrips", "plot_training_curve"]


def _log_mel(audio: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio.astype(np.float32), sr=16_000, n_fft=1024, hop_length=160, n_mels=80
    )
    return librosa.power_to_db(mel, ref=1.0, top_db=80)


def plot_audio_roundtrips(codec: Any, clips: list[tuple[str, np.ndarray]], out: Path) -> Path:
    """Log-mel spectrograms of each clip (left) and its codec reconstruction (right)."""
    fig, axes = plt.subplots(len(clips), 2, figsize=(11, 2.2 * len(clips)), squeeze=False)
    for row, (label, audio) in enumerate(clips):
        with torch.inference_mode():
            recon = codec.decode(codec.encode(audio))[0].numpy()[: len(audio)]
        for col, (sig, title) in enumerate(((audio, "input"), (recon, "reconstruction"))):
            ax = axes[row][col]
            ax.imshow(_log_mel(sig), origin="lower", aspect="auto", cmap="magma",
                      extent=(0, len(sig) / 16_000, 0, 80))  # fmt: skip
            ax.set_title(f"{label}: {title}", fontsize=9)
            ax.set_ylabel("mel band")
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    fig.suptitle(
        f"audio codec round trip ({codec.frame_rate:g} frames/s x {codec.num_codebooks} "
        f"codebooks = {codec.frame_rate * codec.num_codebooks:g} tokens/s)"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def plot_image_roundtrips(
    tokenizer: Any, images: np.ndarray, out: Path, title: str = "image tokenizer"
) -> Path:
    """Originals (top row) and reconstructions (bottom row)."""
    recon = np.asarray(tokenizer.decode(tokenizer.encode(images)))
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n, 3.1), squeeze=False)
    for i in range(n):
        for row, img in enumerate((images[i], recon[i])):
            axes[row][i].imshow(img, interpolation="nearest")
            axes[row][i].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    fig.suptitle(f"{title}: {tokenizer.tokens_per_image} tokens per image", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_training_curve(log: Path, out: Path, title: str) -> Path:
    """Training loss (smoothed) and validation loss from a ``train_log.jsonl``."""
    records = [json.loads(line) for line in Path(log).read_text().splitlines() if line]
    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    k = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps[k - 1 :], smooth, label=f"train (mean of {k})")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("multi-resolution STFT + mel loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
