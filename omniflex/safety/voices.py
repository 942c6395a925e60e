"""The preset voices: the only voices the model may answer in (the GPT-4o card's first mitigation).

A session chooses one of them; the output voice classifier (``voice_classifier.py``) then checks
that every chunk the model speaks still sounds like *that* voice. The presets and their check
are the voice registry's (``omniflex.common.voices``: ``PRESET_VOICE_NAMES``,
``check_preset_voice``), and each has a ``<|voice:NAME|>`` special token; this module maps
OpenAI's voice names onto them.
"""

from __future__ import annotations

from omniflex.common.voices import PRESET_VOICE_NAMES, Voice, check_preset_voice, voice

__all__ = ["OPENAI_VOICES", "preset_voice", "resolve_voice"]

#: OpenAI's voice names, each spoken by the preset voice nearest in register (a name is only an
#: alias: the model still speaks only in its four preset voices, and the voice classifier checks
#: the preset). Lets every copy-pasted OpenAI example (``voice="alloy"``) run unchanged.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "aria", "ash": "bram", "ballad": "bram", "cedar": "dax", "coral": "cleo",
    "echo": "dax", "fable": "bram", "marin": "aria", "nova": "cleo", "onyx": "dax",
    "sage": "aria", "shimmer": "cleo", "verse": "dax",
}  # fmt: skip


def resolve_voice(name: object, allowed: tuple[str, ...] | None = None) -> str:
    """The preset voice that speaks for ``name``: a preset name itself, or one of OpenAI's
    names (``OPENAI_VOICES``). ``allowed``: the presets a model offers (default: all). Anything
    else is a ``ValueError`` that lists what may be asked for."""
    allowed = allowed or PRESET_VOICE_NAMES
    preset = OPENAI_VOICES.get(name, name) if isinstance(name, str) else name
    if not isinstance(preset, str) or preset not in allowed:
        raise ValueError(
            f"unknown voice {name!r}: this model speaks only in its preset voices "
            f"{', '.join(allowed)} (OpenAI's names {', '.join(OPENAI_VOICES)} map onto them)"
        )
    return check_preset_voice(preset)


def preset_voice(name: str) -> Voice:
    """The registry entry of a preset voice (espeak-ng voice, pitch, speed)."""
    return voice(check_preset_voice(name))
