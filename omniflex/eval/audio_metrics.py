"""Speech quality figures: mel-cepstral distortion and speaker similarity.

* **Mel-cepstral distortion (MCD, dB)** between a reference and a time-aligned estimate:
  ``(10 / ln 10) * sqrt(2 * sum_{k=1..24} (c_k - ĉ_k)^2)`` averaged over the reference's speech
  frames (within 40 dB of its loudest frame), ``c_0`` (energy) excluded. ``c`` is the cepstrum of
  the natural log of an 80-band mel *amplitude* spectrum (25 ms Hann window, 10 ms hop) in the
  usual convention ``log|H(w)| = c_0 + 2 sum_k c_k cos(k w)``: the orthonormal DCT-II of the
  ``N`` band values divided by ``sqrt(2 N)``. This is the usual definition with a mel filterbank
  standing in for SPTK's all-pass warped cepstrum; values are comparable in scale, not identical.
* **Speaker similarity**: cosine of the ``resemblyzer`` d-vectors of the two signals (its
  pretrained GE2E encoder ships inside the PyPI package; nothing is downloaded).
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from scipy.fft import dct

__all__ = [
    "mel_cepstral_distortion",
    "mel_cepstrum",
    "speaker_embedding",
    "speaker_similarity",
]

_N_FFT, _WIN, _HOP, _N_MELS, _N_CEPS = 512, 400, 160, 80, 24


@functools.lru_cache(maxsize=4)
def _mel_fb(sample_rate: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=_N_FFT, n_mels=_N_MELS)


def mel_cepstrum(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mel cepstra ``(F, 24)`` and frame energies ``(F,)`` (the MCD's features)."""
    import librosa

    spec = np.abs(
        librosa.stft(
            audio.astype(np.float32), n_fft=_N_FFT, hop_length=_HOP, win_length=_WIN, center=True
        )
    )  # (bins, frames)
    mel = _mel_fb(sample_rate) @ spec
    # Orthonormal DCT-II / sqrt(2N) = cepstral coefficients c_k of log|H| = c_0 + 2 sum c_k cos.
    ceps = dct(np.log(np.maximum(mel, 1e-5)), type=2, axis=0, norm="ortho") / np.sqrt(2 * _N_MELS)
    energy_db = 20 * np.log10(np.maximum(mel.sum(axis=0), 1e-9))
    return ceps[1 : _N_CEPS + 1].T, energy_db  # (frames, 24), (frames,)


def mel_cepstral_distortion(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 16_000
) -> float:
    """MCD in dB between time-aligned mono signals (the shorter length is used)."""
    n = min(len(reference), len(estimate))
    if n < _WIN:
        raise ValueError(f"signals too short for MCD: {n} samples (need at least {_WIN})")
    c_ref, energy = mel_cepstrum(reference[:n], sample_rate)
    c_est, _ = mel_cepstrum(estimate[:n], sample_rate)
    speech = energy > energy.max() - 40.0
    diff = c_ref[speech] - c_est[speech]
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * (diff**2).sum(axis=1))
    return float(per_frame.mean())


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder

        return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(audio: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """Unit-norm 256-d resemblyzer d-vector of one utterance."""
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(audio.astype(np.float32), source_sr=sample_rate)
    if len(wav) < 1600:  # resemblyzer's VAD trimmed almost everything: use the raw signal
        wav = audio.astype(np.float32)
    return _voice_encoder().embed_utterance(wav)


def speaker_similarity(a: np.ndarray, b: np.ndarray, sample_rate: int = 16_000) -> float:
    """Cosine similarity of two utterances' speaker embeddings, in [-1, 1]."""
    ea, eb = speaker_embedding(a, sample_rate), speaker_embedding(b, sample_rate)
    return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))
