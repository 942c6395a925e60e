"""The voice registry: who speaks in the corpus, and in which split.

* **Preset voices** are the only voices the model ever answers in (the GPT-4o system card's first
  mitigation); they appear in training as *output* speech.
* **Input voices** only ever speak *to* the model, in training.
* **Held-out voices** never appear in training: evaluation uses them to measure generalisation to
  unseen speakers (and the voice classifier's false-accept rate).

Each voice is an espeak-ng voice, variant, pitch and speed; the names are omniflex's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HELD_OUT_VOICES", "INPUT_VOICES", "PRESET_VOICES", "VOICES", "Voice", "voice"]

Role = Literal["preset", "input", "held_out"]


@dataclass(frozen=True)
class Voice:
    name: str
    espeak: str  # espeak-ng voice+variant, e.g. "en-us+f3"
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # espeak-ng -s, words per minute
    role: Role

    def __post_init__(self) -> None:
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"voice {self.name}: pitch must be in [0, 99], got {self.pitch}")
        if not 80 <= self.speed <= 450:
            raise ValueError(f"voice {self.name}: speed must be in [80, 450] wpm, got {self.speed}")


VOICES: tuple[Voice, ...] = (
    Voice("aria", "en-us+f3", 55, 165, "preset"),
    Voice("bram", "en-gb+m3", 40, 160, "preset"),
    Voice("cleo", "en-us+f5", 70, 175, "preset"),
    Voice("dax", "en-us+m7", 30, 150, "preset"),
    Voice("eli", "en-gb-scotland+m1", 45, 170, "input"),
    Voice("fay", "en-029+f2", 60, 155, "input"),
    Voice("gus", "en-us+m2", 35, 180, "input"),
    Voice("hana", "en-gb-x-rp+f4", 65, 160, "input"),
    Voice("ivo", "en-gb-x-gbclan+m4", 50, 145, "input"),
    Voice("juno", "en-us+f1", 75, 185, "input"),
    Voice("kai", "en-gb-x-gbcwmd+m5", 42, 165, "held_out"),
    Voice("lia", "en-029+f4", 68, 170, "held_out"),
    Voice("moss", "en-us+m6", 28, 155, "held_out"),
)

PRESET_VOICES = tuple(v for v in VOICES if v.role == "preset")
INPUT_VOICES = tuple(v for v in VOICES if v.role == "input")
HELD_OUT_VOICES = tuple(v for v in VOICES if v.role == "held_out")
_BY_NAME = {v.name: v for v in VOICES}


def voice(name: str) -> Voice:
    """Look a voice up by name; the error lists the known ones."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown voice {name!r}; known voices: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]
