"""Wire audio: the Realtime API's 16-bit PCM at 24 kHz (base64) <-> the model's float32 at 16 kHz.

``StreamResampler`` resamples a stream chunk by chunk with a fixed causal polyphase filter, so
that the output of any chunking equals the output of the whole signal (no clicks at chunk
edges, no look-ahead: it never waits for later audio). Whole files go through
``omniflex.media.resample`` instead.
"""

from __future__ import annotations

import base64
import binascii
from math import gcd

import numpy as np
from scipy.signal import firwin, upfirdn

from omniflex.media.audio import SAMPLE_RATE, read_audio, resample, to_wav_bytes

__all__ = [
    "MODEL_RATE",
    "WIRE_RATE",
    "StreamResampler",
    "b64_to_pcm16",
    "float_to_pcm16",
    "pcm16_to_float",
    "read_audio",
    "resample",
    "to_wav_bytes",
]

WIRE_RATE = 24_000  # the Realtime API's audio/pcm rate
MODEL_RATE = SAMPLE_RATE  # 16 kHz inside omniflex
_TAPS_PER_PHASE = 16


def b64_to_pcm16(data: str, *, what: str = "audio") -> bytes:
    """Decode base64 PCM16; ``ValueError`` names ``what`` if it is not valid base64 or has an
    odd number of bytes."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(
            f"{what} is not valid base64; send base64-encoded 16-bit little-endian PCM"
        ) from None
    if len(raw) % 2:
        raise ValueError(f"{what} holds {len(raw)} bytes, not whole 16-bit samples")
    return raw


def pcm16_to_float(raw: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes -> float32 in [-1, 1)."""
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 samples (clipped to [-1, 1]) -> 16-bit little-endian PCM bytes."""
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (np.round(x * 32767.0)).astype("<i2").tobytes()


class StreamResampler:
    """Chunked resampling from ``rate_in`` to ``rate_out`` Hz with a causal polyphase filter.

    ``push(chunk)`` returns every output sample whose inputs have all arrived. Chunking does
    not change the output: ``concat(push(a), push(b)) == push(concat(a, b))``.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        g = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        n = max(self.up, self.down)
        self._h = (firwin(_TAPS_PER_PHASE * n, 0.9 / n) * self.up).astype(np.float64)
        # The kept history must start where the upsampled grid meets the output grid.
        self._align = self.down // gcd(self.up, self.down)
        self._buf = np.zeros(0, np.float64)
        self._start = 0  # global index of _buf[0] (input samples)
        self._received = 0
        self._emitted = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if self.up == self.down:
            return x.astype(np.float32)
        self._buf = np.concatenate([self._buf, x])
        self._received += x.size
        up, down = self.up, self.down
        # Output n needs upsampled index n*down <= (received-1)*up.
        last = ((self._received - 1) * up) // down if self._received else -1
        if last < self._emitted:
            return np.zeros(0, np.float32)
        y = upfirdn(self._h, self._buf, up, down)
        offset = self._start * up // down  # output index of y[0]
        out = y[self._emitted - offset : last + 1 - offset]
        self._emitted = last + 1
        # Keep the inputs the next outputs still need (filter length back from output n).
        need = (self._emitted * down - len(self._h) + 1) // up
        keep_from = max(self._start, (need // self._align) * self._align)
        if keep_from > self._start:
            self._buf = self._buf[keep_from - self._start :]
            self._start = keep_from
        return out.astype(np.float32)
