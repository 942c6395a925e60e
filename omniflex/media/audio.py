"""Audio I/O: everything inside omniflex is 16 kHz mono float32 in [-1, 1].

Reading takes WAV or FLAC (a path or the file's bytes), checks size and duration limits before
decoding, rejects truncated files, empty files and NaN/Inf samples, averages the channels and
resamples to 16 kHz. Writing makes 16-bit PCM WAV or FLAC, chosen by the file extension.
"""

from __future__ import annotations

import io
import os
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from omniflex.media._source import (
    Source,
    check_source,
    label_of,
    read_source,
    suffix_of,
    write_atomic,
)
from omniflex.media.errors import MediaError

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MAX_SECONDS",
    "SAMPLE_RATE",
    "read_audio",
    "resample",
    "to_flac_bytes",
    "to_wav_bytes",
    "write_audio",
]

SAMPLE_RATE = 16_000
MAX_SECONDS = 600.0
MAX_AUDIO_BYTES = 200_000_000
# A small compressed file can declare a huge decode (a 94 KB FLAC of 60 s at 192 kHz x 8
# channels): rate and channels are capped from the header, and blocks are downmixed as they are
# decoded, so memory follows the mono length, not rate x channels x seconds.
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 8
_BLOCK_FRAMES = 1 << 16

_EXPECTED = "a WAV or FLAC file"
_READ_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "FLAC"})  # libsndfile's major format names
_WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
# Writers that stream to a pipe cannot know the length, so they put a placeholder in the WAV
# header (espeak-ng writes 0x7FFFF000, ffmpeg and sox 0xFFFFFFFF). A declared size this large is
# "unknown", not a promise that a shorter file broke.
_WAV_UNKNOWN_SIZE = 0x7F00_0000


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample ``audio`` (N,) or (N, C) from ``rate_in`` to ``rate_out`` Hz as float32.

    Polyphase filtering (anti-aliased), exact for any pair of integer rates: 44.1 kHz -> 16 kHz
    is up 160, down 441.
    """
    for what, rate in (("rate_in", rate_in), ("rate_out", rate_out)):
        if int(rate) != rate or rate <= 0:
            raise MediaError(f"resample: {what} must be a positive whole number of Hz, got {rate}")
    rate_in, rate_out = int(rate_in), int(rate_out)
    if rate_in == rate_out:
        return np.asarray(audio).astype(np.float32, copy=False)
    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g, axis=0).astype(np.float32)


def read_audio(
    source: Source,
    *,
    max_seconds: float = MAX_SECONDS,
    max_bytes: int = MAX_AUDIO_BYTES,
    name: str | None = None,
) -> np.ndarray:
    """Read a WAV or FLAC file (path or bytes) as 16 kHz mono float32, shape (N,).

    Channels are averaged; other sample rates are resampled. ``name`` labels ``source`` in
    error messages (default: the path). Raises ``MediaError`` for a missing, empty, oversized
    (``max_bytes``, checked before reading), too long (``max_seconds``, checked from the header
    before decoding), truncated or undecodable file, a zero sample rate, or NaN/Inf samples.
    """
    label = label_of(source, name)
    check_source(source, kind="audio", label=label, max_bytes=max_bytes, expected=_EXPECTED)
    raw = read_source(source, kind="audio", label=label)
    try:
        with sf.SoundFile(io.BytesIO(raw)) as f:
            if f.format not in _READ_FORMATS:
                raise MediaError(
                    f"audio file {label} is {f.format_info}; expected {_EXPECTED} "
                    f"(convert it, e.g. `ffmpeg -i IN OUT.flac`)"
                )
            rate, declared = f.samplerate, f.frames
            _check_layout(label, rate, f.channels)
            _check_duration(label, declared / rate, max_seconds)
            mono = _read_mono(f, label, rate, max_seconds)
    except sf.LibsndfileError as err:
        raise MediaError(_decode_failure(raw, label, err.error_string)) from None
    _check_complete(raw, label, decoded=mono.shape[0], declared=declared)
    if mono.shape[0] == 0:
        raise MediaError(f"audio file {label} has no samples (0 s); expected at least one")
    return resample(mono, rate)


def _check_layout(label: str, rate: int, channels: int) -> None:
    if rate > MAX_SAMPLE_RATE:
        raise MediaError(
            f"audio file {label} is sampled at {rate} Hz, over the {MAX_SAMPLE_RATE} Hz limit; "
            "resample it (speech needs 16 kHz)"
        )
    if channels > MAX_CHANNELS:
        raise MediaError(
            f"audio file {label} has {channels} channels, over the {MAX_CHANNELS}-channel "
            "limit; mix it down to mono or stereo"
        )


def _read_mono(f: sf.SoundFile, label: str, rate: int, max_seconds: float) -> np.ndarray:
    """Decode block by block, averaging the channels of each block: (N,) float32. Stops at the
    first block past ``max_seconds`` (FLAC may not declare a length)."""
    blocks, frames = [], 0
    bad, first_bad = 0, -1
    for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):  # (n, C)
        finite = np.isfinite(block)
        if not finite.all():
            bad += int((~finite).sum())
            if first_bad < 0:
                first_bad = frames + int(np.argmin(finite.all(axis=1)))
        blocks.append(block.mean(axis=1))
        frames += block.shape[0]
        _check_duration(label, frames / rate, max_seconds)
    if bad:
        raise MediaError(
            f"audio file {label} has {bad} NaN or Inf samples (first at {first_bad / rate:.3f} "
            "s); expected finite samples in [-1, 1]"
        )
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _check_duration(label: str, seconds: float, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise MediaError(
            f"audio file {label} lasts {seconds:.1f} s, over the {max_seconds:g} s limit; "
            f"cut it shorter or pass a larger max_seconds"
        )


def _decode_failure(raw: bytes, label: str, reason: str) -> str:
    """The message for a file libsndfile refused, made specific where the header says why."""
    rate = _header_sample_rate(raw)
    if rate == 0:
        return (
            f"audio file {label} declares a sample rate of 0 Hz in its header; expected a "
            f"positive rate such as 16000 (the file is corrupt or was written wrongly)"
        )
    reason = reason.removeprefix("Error : ").rstrip(".")
    return (
        f"cannot decode audio file {label} ({reason}); expected {_EXPECTED}, whole and intact "
        f"(is it truncated or corrupt?)"
    )


def _header_sample_rate(raw: bytes) -> int | None:
    """Sample rate from a WAV ``fmt `` chunk or the FLAC STREAMINFO block, if there is one."""
    if raw[:4] == b"fLaC" and len(raw) >= 21:
        return int.from_bytes(raw[18:21], "big") >> 4  # 20 bits after 10 bytes of STREAMINFO
    chunk = _riff_chunk(raw, b"fmt ")
    if chunk is not None and chunk[1] >= 8:
        return int.from_bytes(raw[chunk[0] + 4 : chunk[0] + 8], "little")
    return None


def _riff_chunk(raw: bytes, chunk_id: bytes) -> tuple[int, int] | None:
    """(offset of the payload, declared size) of a top-level chunk in a RIFF/WAVE file."""
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if raw[pos : pos + 4] == chunk_id:
            return pos + 8, size
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _check_complete(raw: bytes, label: str, *, decoded: int, declared: int) -> None:
    """Raise if the header promises more audio than the file holds (a cut-off download)."""
    data = _riff_chunk(raw, b"data")
    if data is not None:
        offset, size = data
        missing = size - (len(raw) - offset)
        if 0 < size < _WAV_UNKNOWN_SIZE and missing > 0:
            raise MediaError(
                f"audio file {label} is truncated: its header declares {size} bytes of samples "
                f"but only {size - missing} are there; re-download or re-export it"
            )
    elif decoded < declared:
        raise MediaError(
            f"audio file {label} is truncated: its header declares {declared} samples but only "
            f"{decoded} decode; re-download or re-export it"
        )


def _encode(audio: np.ndarray, rate: int, container: str) -> bytes:
    """16-bit PCM in ``container`` ("WAV" or "FLAC"); no timestamps, so equal input, equal bytes."""
    if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating):
        dtype = getattr(audio, "dtype", type(audio).__name__)
        raise MediaError(
            f"cannot encode audio as {container}: expected a float numpy array in [-1, 1], "
            f"got {dtype} (divide int16 samples by 32768 first)"
        )
    if audio.ndim not in (1, 2) or audio.shape[0] == 0:
        raise MediaError(
            f"cannot encode audio as {container}: expected shape (N,) or (N, channels) with "
            f"N >= 1, got {audio.shape}"
        )
    if not np.isfinite(audio).all():
        raise MediaError(
            f"cannot encode audio as {container}: it has {int((~np.isfinite(audio)).sum())} "
            f"NaN or Inf samples; expected finite samples in [-1, 1]"
        )
    if int(rate) != rate or rate <= 0:
        raise MediaError(f"cannot encode audio as {container}: rate must be > 0 Hz, got {rate}")
    buf = io.BytesIO()
    try:
        sf.write(buf, np.clip(audio, -1.0, 1.0), int(rate), format=container, subtype="PCM_16")
    except sf.LibsndfileError as err:
        raise MediaError(
            f"cannot encode audio as {container} at {rate} Hz: {err.error_string}"
        ) from None
    return buf.getvalue()


def to_wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM WAV bytes of float ``audio`` (N,) or (N, C) in [-1, 1] (clipped beyond).

    Deterministic: no timestamps in the header.
    """
    return _encode(audio, rate, "WAV")


def to_flac_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit FLAC bytes of float ``audio`` (N,) or (N, C) in [-1, 1] (lossless at 16 bits)."""
    return _encode(audio, rate, "FLAC")


def write_audio(path: str | os.PathLike[str], audio: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write ``audio`` as 16-bit WAV or FLAC, chosen by the extension (.wav or .flac).

    The file appears whole or not at all (written to a temporary name, then renamed).
    """
    container = _WRITE_FORMATS.get(suffix_of(path))
    if container is None:
        raise MediaError(
            f"cannot write audio file {path}: extension {suffix_of(path) or '(none)'!r} is not "
            f"supported; use .wav or .flac"
        )
    return write_atomic(path, _encode(audio, rate, container), kind="audio")
