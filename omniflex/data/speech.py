"""Speech synthesis with espeak-ng, and the augmentations applied to input speech."""

from __future__ import annotations

import functools
import shutil
import subprocess

import numpy as np

from omniflex.common.voices import Voice
from omniflex.media.audio import SAMPLE_RATE, read_audio, resample

__all__ = ["EspeakMissingError", "add_noise", "augment", "reverberate", "synthesize"]


class EspeakMissingError(FileNotFoundError):
    """espeak-ng is not installed."""


@functools.cache
def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakMissingError(
            "espeak-ng is not installed, and omniflex synthesises its speech with it. Install it "
            "with `sudo apt-get install espeak-ng` (Debian/Ubuntu) — `make run` and `make test` "
            "do this for you."
        )
    return path


def synthesize(text: str, voice: Voice, pitch_shift: int = 0) -> np.ndarray:
    """``text`` spoken by ``voice`` as 16 kHz mono float32. Deterministic for equal inputs.

    ``pitch_shift`` moves espeak-ng's pitch (0-99 scale) for augmentation; the duration and the
    words stay the same, unlike a speed change."""
    if not text.strip():
        raise ValueError("cannot synthesise empty text")
    pitch = min(max(voice.pitch + pitch_shift, 0), 99)
    cmd = [
        _espeak(),
        "-v",
        voice.espeak,
        "-p",
        str(pitch),
        "-s",
        str(voice.speed),
        "--stdout",
        text,
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(
            f"espeak-ng failed for voice {voice.name} ({voice.espeak}): "
            f"{proc.stderr.decode(errors='replace').strip() or 'no audio produced'}"
        )
    audio = read_audio(proc.stdout, name=f"espeak-ng output for {voice.name}")
    peak = float(np.abs(audio).max())
    return (audio * (0.7 / peak)).astype(np.float32) if peak > 0 else audio


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (pitch moves with it, like a tape)."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    rate = round(SAMPLE_RATE * factor)
    return resample(audio, rate, SAMPLE_RATE)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink-ish background noise at ``snr_db`` (signal power / noise power)."""
    white = rng.standard_normal(len(audio))
    pink = np.cumsum(white)
    pink -= np.convolve(pink, np.ones(64) / 64, mode="same")  # remove the drift
    p_signal = float(np.mean(audio**2)) + 1e-12
    p_noise = float(np.mean(pink**2)) + 1e-12
    scale = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (audio + scale * pink).astype(np.float32)


def reverberate(audio: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response (exponentially decaying noise)."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0
    ir /= np.sqrt(np.sum(ir**2))
    wet = np.convolve(audio, ir)[: len(audio)]
    peak = float(np.abs(wet).max()) + 1e-9
    return (wet * (float(np.abs(audio).max()) / peak)).astype(np.float32)


def augment(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Random speed, background noise and reverberation; returns the audio and what was done."""
    applied: dict[str, float] = {}
    if rng.random() < 0.5:
        applied["speed"] = float(rng.uniform(0.9, 1.1))
        audio = change_speed(audio, applied["speed"])
    if rng.random() < 0.4:
        applied["rt60"] = float(rng.uniform(0.15, 0.5))
        audio = reverberate(audio, applied["rt60"], rng)
    if rng.random() < 0.5:
        applied["snr_db"] = float(rng.choice([5.0, 10.0, 20.0, 30.0]))
        audio = add_noise(audio, applied["snr_db"], rng)
    return np.clip(audio, -1, 1).astype(np.float32), applied
