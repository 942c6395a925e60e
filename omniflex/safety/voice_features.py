"""Causal speech features for the output voice classifier, computed in fixed 40 ms steps.

Why this shape:

* **Frames.** A frame is the 32 ms of samples ending at a 10 ms hop boundary (zeros before the
  stream starts), so it is complete as soon as its last sample arrives: nothing looks ahead.
  Per frame: 40 log-mel bands (the spectral envelope: formants, brightness), the frame energy
  (a speech/silence gate) and an autocorrelation pitch estimate with its voicing strength (the
  espeak-ng presets differ most in pitch; a pitch-shifted preset keeps its formants but not its
  pitch histogram).
* **Steps.** Frames are computed ``STEP_FRAMES`` (4) at a time, always with the same array
  shapes, whatever the chunk sizes pushed by the caller: the features, and so every decision,
  are bit-identical for any chunking of the same samples.
* **Window.** A decision reads the last ``WINDOW_FRAMES`` (1 s) of frames and pools them over its
  speech frames (``pool_window``): mean and spread of each band, mean frame-to-frame change
  (speaking rate and articulation), a soft pitch histogram, voiced share. Pooling makes the
  decision cheap and independent of where words fall in the window; level (gain) is removed.

Shapes: ``frame_features`` takes ``(n, WINDOW)`` sample frames and returns ``(n, FRAME_DIM)``;
``pool_window`` takes ``(WINDOW_FRAMES, FRAME_DIM)`` and returns ``(POOLED_DIM,)`` or ``None``.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "FRAME_DIM",
    "HOP",
    "MIN_SPEECH_FRAMES",
    "POOLED_DIM",
    "SAMPLE_RATE",
    "STEP_FRAMES",
    "STEP_SAMPLES",
    "WINDOW",
    "WINDOW_FRAMES",
    "clip_frame_features",
    "frame_features",
    "pool_window",
    "window_features",
]

SAMPLE_RATE = 16_000
HOP = 160  # 10 ms
WINDOW = 512  # 32 ms analysis frame
N_FFT = 1024  # zero-padded: the autocorrelation up to lag 511 does not wrap around
N_MELS = 40
STEP_FRAMES = 4  # one decision step = 40 ms
STEP_SAMPLES = STEP_FRAMES * HOP
WINDOW_FRAMES = 100  # a decision reads the last 1 s
MIN_SPEECH_FRAMES = 30  # a window needs 0.3 s of speech before it is judged (the warm-up)
SPEECH_DB = -45.0  # frame energy (dBFS) above which a frame counts as speech
VOICED_R = 0.45  # normalised autocorrelation peak above which a speech frame is voiced
F0_MIN, F0_MAX = 60.0, 400.0
F0_BINS = 16  # soft histogram over log2 f0: about 2 semitones a bin
FRAME_DIM = N_MELS + 3  # log-mel, energy dB, log2 f0, voicing strength
POOLED_DIM = 3 * N_MELS + F0_BINS + 4

_LAG_MIN = int(SAMPLE_RATE / F0_MAX)
_LAG_MAX = int(SAMPLE_RATE / F0_MIN)


@functools.lru_cache(maxsize=1)
def _constants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import librosa

    window = np.hanning(WINDOW + 1)[:WINDOW]  # periodic Hann
    mel_fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=50.0)
    # Autocorrelation of the window itself: dividing by it removes the taper's bias (Boersma).
    win_ac = np.fft.irfft(np.abs(np.fft.rfft(window, N_FFT)) ** 2, N_FFT)[:WINDOW]
    return window, mel_fb.astype(np.float64), win_ac / win_ac[0]


def frame_features(frames: np.ndarray) -> np.ndarray:
    """Sample frames ``(n, WINDOW)`` -> features ``(n, FRAME_DIM)`` float64.

    Columns: ``[0, N_MELS)`` natural-log mel power; ``N_MELS`` energy in dBFS; ``N_MELS + 1``
    log2 f0 (0 where unvoiced); ``N_MELS + 2`` voicing strength in [0, 1]."""
    window, mel_fb, win_ac = _constants()
    x = frames.astype(np.float64) * window
    power = np.abs(np.fft.rfft(x, N_FFT, axis=-1)) ** 2  # (n, N_FFT/2+1)
    log_mel = np.log(power @ mel_fb.T + 1e-8)  # (n, N_MELS)
    energy_db = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=-1) + 1e-10)
    ac = np.fft.irfft(power, N_FFT, axis=-1)[:, :WINDOW]  # (n, WINDOW)
    r = ac / (ac[:, :1] + 1e-12) / win_ac
    search = r[:, _LAG_MIN : _LAG_MAX + 1]
    lag = np.argmax(search, axis=-1)
    strength = np.clip(search[np.arange(len(lag)), lag], 0.0, 1.0)
    log2_f0 = np.log2(SAMPLE_RATE / (lag + _LAG_MIN))
    voiced = (strength > VOICED_R) & (energy_db > SPEECH_DB)
    return np.concatenate(
        [
            log_mel,
            energy_db[:, None],
            np.where(voiced, log2_f0, 0.0)[:, None],
            np.where(energy_db > SPEECH_DB, strength, 0.0)[:, None],
        ],
        axis=-1,
    )


def clip_frame_features(audio: np.ndarray) -> np.ndarray:
    """Every complete frame of a whole clip at once (the training path): ``(T // HOP, FRAME_DIM)``.

    Equal, up to float rounding, to what streaming computes step by step."""
    padded = np.concatenate([np.zeros(WINDOW - HOP), audio.astype(np.float64)])
    n = (len(padded) - (WINDOW - HOP)) // HOP
    if n <= 0:
        return np.zeros((0, FRAME_DIM))
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n)[:, None]
    return frame_features(padded[idx])


def pool_window(window: np.ndarray) -> np.ndarray | None:
    """Frames of one window ``(W, FRAME_DIM)`` -> pooled features ``(POOLED_DIM,)``.

    ``None`` while the window holds fewer than ``MIN_SPEECH_FRAMES`` speech frames: too little
    speech to judge a voice (silence is never a deviation)."""
    log_mel = window[:, :N_MELS]
    speech = window[:, N_MELS] > SPEECH_DB
    n_speech = int(speech.sum())
    if n_speech < MIN_SPEECH_FRAMES:
        return None
    s = log_mel[speech]
    mean = s.mean(axis=0)
    spread = s.std(axis=0)
    both = speech[1:] & speech[:-1]
    delta = np.abs(log_mel[1:] - log_mel[:-1])[both]
    change = delta.mean(axis=0) if len(delta) else np.zeros(N_MELS)
    log2_f0 = window[:, N_MELS + 1]
    voiced = speech & (log2_f0 > 0)
    f = log2_f0[voiced]
    lo, hi = np.log2(F0_MIN), np.log2(F0_MAX)
    pos = np.clip((f - lo) / (hi - lo) * (F0_BINS - 1), 0, F0_BINS - 1)
    # Triangular (linear) soft binning: a small pitch change moves mass smoothly between bins.
    hist = np.zeros(F0_BINS)
    left = np.floor(pos).astype(int)
    frac = pos - left
    np.add.at(hist, left, 1.0 - frac)
    np.add.at(hist, np.minimum(left + 1, F0_BINS - 1), frac)
    hist /= n_speech
    f0_stats = [f.mean() - 7.3, f.std()] if len(f) else [0.0, 0.0]
    return np.concatenate(
        [
            mean - mean.mean(),  # spectral shape; the overall level (gain) removed
            spread,
            change,
            hist,
            f0_stats,
            [len(f) / n_speech, n_speech / len(window)],
        ]
    ).astype(np.float32)


def window_features(frames: np.ndarray, stride_steps: int = 1) -> np.ndarray:
    """Pooled features at every ``stride_steps``-th decision step of a clip's frames.

    Returns ``(n, POOLED_DIM)`` for the steps whose window holds enough speech (the training
    path; streaming pools the same windows one step at a time)."""
    out = []
    for end in range(STEP_FRAMES, len(frames) + 1, STEP_FRAMES * stride_steps):
        pooled = pool_window(frames[max(0, end - WINDOW_FRAMES) : end])
        if pooled is not None:
            out.append(pooled)
    return np.stack(out) if out else np.zeros((0, POOLED_DIM), np.float32)
