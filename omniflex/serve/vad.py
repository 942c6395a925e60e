"""Server turn detection: silero-vad over 16 kHz audio as it streams in.

silero-vad scores 512-sample (32 ms) windows with a recurrent state. ``StreamingVad`` keeps that
state per stream and turns probabilities into turns with the Realtime API's ``server_vad``
options: speech *starts* at the first window at or above ``threshold``; it *stops* once windows
stay below ``threshold - 0.15`` (silero's own hysteresis) for ``silence_duration_ms``. The
start is reported ``prefix_padding_ms`` earlier, so the turn keeps the soft onset before it.
The model ships inside the ``silero-vad`` package: nothing is downloaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["WINDOW", "StreamingVad", "VadConfig", "VadEvent"]

WINDOW = 512  # samples per silero-vad window at 16 kHz
RATE = 16_000
_HYSTERESIS = 0.15

_LOAD_LOCK = threading.Lock()
_MODEL: Any = None


def _load() -> Any:
    """One silero-vad model per process; streams copy it (each copy holds its own state)."""
    global _MODEL
    with _LOAD_LOCK:
        if _MODEL is None:
            from silero_vad import load_silero_vad

            _MODEL = load_silero_vad()
        return _MODEL


@dataclass(frozen=True)
class VadConfig:
    """The ``server_vad`` turn detection options (the Realtime API's defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"turn_detection.threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.prefix_padding_ms <= 5000:
            raise ValueError(
                f"turn_detection.prefix_padding_ms must be in [0, 5000], "
                f"got {self.prefix_padding_ms}"
            )
        if not 0 <= self.silence_duration_ms <= 10000:
            raise ValueError(
                f"turn_detection.silence_duration_ms must be in [0, 10000], "
                f"got {self.silence_duration_ms}"
            )


@dataclass(frozen=True)
class VadEvent:
    """``kind`` at ``sample`` (16 kHz samples since the stream began): for ``"start"`` the
    padded start of the turn, for ``"stop"`` the end of the last speech window."""

    kind: Literal["start", "stop"]
    sample: int

    @property
    def ms(self) -> int:
        return int(self.sample * 1000 // RATE)


class StreamingVad:
    """Turn detection for one audio stream. ``push(samples)`` -> the turn events it completes."""

    def __init__(self, config: VadConfig | None = None) -> None:
        import copy

        self.config = config or VadConfig()
        self._model = copy.deepcopy(_load())
        self.reset()

    def reset(self) -> None:
        self._model.reset_states()
        self._pending = np.zeros(0, np.float32)
        self.samples = 0  # samples scored so far
        self.speaking = False
        self._last_speech = 0  # sample index just after the last speech window
        self.last_probability = 0.0

    def push(self, samples: np.ndarray) -> list[VadEvent]:
        x = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        n = x.size // WINDOW
        self._pending = x[n * WINDOW :]
        events: list[VadEvent] = []
        cfg = self.config
        silence = cfg.silence_duration_ms * RATE // 1000
        with torch.inference_mode():
            for i in range(n):
                window = torch.from_numpy(x[i * WINDOW : (i + 1) * WINDOW].copy())
                p = float(self._model(window, RATE).item())
                self.last_probability = p
                start = self.samples
                self.samples += WINDOW
                if not self.speaking:
                    if p >= cfg.threshold:
                        self.speaking = True
                        self._last_speech = self.samples
                        pad = cfg.prefix_padding_ms * RATE // 1000
                        events.append(VadEvent("start", max(0, start - pad)))
                elif p >= cfg.threshold - _HYSTERESIS:
                    self._last_speech = self.samples
                elif self.samples - self._last_speech >= silence:
                    self.speaking = False
                    events.append(VadEvent("stop", self._last_speech))
        return events
