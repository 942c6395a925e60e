"""The voice registry: who speaks in the corpus, in which split, and in which voices the model
may answer. One list, in the bottom layer, because the corpus (``omniflex.data``), the special
tokens (``omniflex.tokenizers``, one ``<|voice:NAME|>`` per preset), the model and the safety
layer all name these voices, and none of those may import another's layer for it.

* **Preset voices** are the only voices the model ever answers in (the GPT-4o system card's first
  mitigation); they appear in training as *output* speech.
* **Input voices** only ever speak *to* the model, in training.
* **Held-out voices** never appear in training: evaluation uses them to measure generalisation to
  unseen speakers (and the voice classifier's false-accept rate).

Each voice is an espeak-ng voice, variant, pitch and speed; the names are omniflex's own.

The preset voices' order is the order of their special tokens: never reorder, rename or remove a
preset (it would shift the ids of every trained tokenizer and checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HELD_OUT_VOICES",
    "INPUT_VOICES",
    "PRESET_VOICES",
    "PRESET_VOICE_NAMES",
    "TEST_VOICES",
    "VAL_VOICES",
    "VOICES",
    "Voice",
    "check_preset_voice",
    "voice",
]

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


# fmt: off
VOICES: tuple[Voice, ...] = (
    # The model's own voices: the only ones it ever speaks in.
    Voice("aria", "en-us+f3", 55, 165, "preset"),
    Voice("bram", "en-gb+m3", 40, 160, "preset"),
    Voice("cleo", "en-us+f5", 70, 175, "preset"),
    Voice("dax", "en-us+m7", 30, 150, "preset"),
    # Training speakers: eight accents x fourteen variants, each at its own pitch and speed.
    Voice("eli", "en-gb-scotland+m1", 45, 170, "input"),
    Voice("fay", "en-029+f2", 60, 155, "input"),
    Voice("gus", "en-us+m2", 35, 180, "input"),
    Voice("hana", "en-gb-x-rp+f4", 65, 160, "input"),
    Voice("ivo", "en-gb-x-gbclan+m4", 50, 145, "input"),
    Voice("juno", "en-us+f1", 75, 185, "input"),
    Voice("nia", "en-us-nyc+f2", 58, 165, "input"),
    Voice("omar", "en-gb+m2", 38, 150, "input"),
    Voice("pia", "en-gb-scotland+f1", 72, 160, "input"),
    Voice("quin", "en-gb-x-gbcwmd+m6", 33, 175, "input"),
    Voice("rosa", "en-029+f1", 66, 180, "input"),
    Voice("sam", "en-us+m4", 44, 140, "input"),
    Voice("tess", "en-gb+f4", 62, 190, "input"),
    Voice("uma", "en-gb-x-gbclan+f2", 57, 170, "input"),
    Voice("vic", "en-us-nyc+m1", 40, 185, "input"),
    Voice("wren", "en-gb-x-rp+f1", 80, 150, "input"),
    Voice("xan", "en-us+m5", 36, 165, "input"),
    Voice("yara", "en-gb-x-gbcwmd+f4", 64, 145, "input"),
    Voice("zeke", "en-029+m2", 31, 160, "input"),
    Voice("abe", "en-gb+m6", 29, 175, "input"),
    Voice("bea", "en-us+f4", 70, 155, "input"),
    Voice("cal", "en-gb-x-rp+m2", 47, 185, "input"),
    Voice("dina", "en-us-nyc+f4", 74, 175, "input"),
    Voice("emil", "en-gb-scotland+m4", 39, 150, "input"),
    Voice("fern", "en-gb-x-gbclan+f1", 69, 185, "input"),
    Voice("gil", "en-us+adam", 42, 160, "input"),
    Voice("hugo", "en-gb+max", 37, 170, "input"),
    Voice("iris", "en-us+linda", 63, 165, "input"),
    Voice("jack", "en-gb-x-rp+john", 45, 155, "input"),
    Voice("kira", "en-029+steph", 67, 170, "input"),
    Voice("leo", "en-us-nyc+travis", 41, 180, "input"),
    # Never in training. kai and noor: validation; the rest: test. rex, sia and tom use espeak
    # variants that no training voice uses, so the test also meets voices of an unseen kind.
    Voice("kai", "en-gb-x-gbcwmd+m5", 42, 165, "held_out"),
    Voice("noor", "en-gb-scotland+f4", 61, 165, "held_out"),
    Voice("lia", "en-029+f4", 68, 170, "held_out"),
    Voice("moss", "en-us+m6", 28, 155, "held_out"),
    Voice("otto", "en-us-nyc+m6", 34, 160, "held_out"),
    Voice("rex", "en-gb+Andy", 43, 170, "held_out"),
    Voice("sia", "en-us+Annie", 66, 160, "held_out"),
    Voice("tom", "en-gb-x-rp+edward", 48, 150, "held_out"),
)
# fmt: on

PRESET_VOICES = tuple(v for v in VOICES if v.role == "preset")
PRESET_VOICE_NAMES: tuple[str, ...] = tuple(v.name for v in PRESET_VOICES)
INPUT_VOICES = tuple(v for v in VOICES if v.role == "input")
HELD_OUT_VOICES = tuple(v for v in VOICES if v.role == "held_out")
VAL_VOICES = HELD_OUT_VOICES[:2]
TEST_VOICES = HELD_OUT_VOICES[2:]
_BY_NAME = {v.name: v for v in VOICES}


def voice(name: str) -> Voice:
    """Look a voice up by name; the error lists the known ones."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown voice {name!r}; known voices: {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def check_preset_voice(name: object) -> str:
    """Return ``name`` if it is a preset voice; else a ``ValueError`` listing the presets."""
    if not isinstance(name, str) or name not in PRESET_VOICE_NAMES:
        raise ValueError(
            f"voice {name!r} is not a preset voice; the model speaks only in "
            f"{', '.join(PRESET_VOICE_NAMES)} — pick one of those (other voices cannot be "
            "requested)"
        )
    return name
