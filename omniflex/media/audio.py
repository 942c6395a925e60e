"""Audio I/O: everything inside omniflex is 16 kHz mono float32 in [-1, 1]."""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from omniflex.media.errors import MediaError

__all__ = ["SAMPLE_RATE", "read_audio", "resample", "to_wav_bytes", "write_audio"]

SAMPLE_RATE = 16_000
MAX_SECONDS = 600.0


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float audio (anti-aliased)."""
    if rate_in == rate_out:
        return audio.astype(np.float32, copy=False)
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def read_audio(
    source: str | Path | bytes, *, max_seconds: float = MAX_SECONDS, name: str | None = None
) -> np.ndarray:
    """Read WAV/FLAC (path or bytes) as 16 kHz mono float32; errors name the file."""
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise MediaError(f"audio file {label} does not exist")
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                             dtype="float32", always_2d=True)  # fmt: skip
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise MediaError(
            f"cannot decode audio {label}: {err}; expected a WAV or FLAC file"
        ) from None
    if data.shape[0] == 0:
        raise MediaError(f"audio {label} is empty (0 samples)")
    if data.shape[0] / rate > max_seconds:
        raise MediaError(
            f"audio {label} lasts {data.shape[0] / rate:.0f} s, over the {max_seconds:.0f} s limit"
        )
    if not np.isfinite(data).all():
        raise MediaError(f"audio {label} contains NaN or Inf samples")
    return resample(data.mean(axis=1), rate)


def to_wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes (deterministic: no timestamps in the header)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_audio(path: str | Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    path = Path(path)
    path.write_bytes(to_wav_bytes(audio, rate))
    return path
