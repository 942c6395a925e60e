"""The preset voices: the only voices the model may answer in (the GPT-4o card's first mitigation).

A session chooses one of them; the output voice classifier (``voice_classifier.py``) then checks
that every chunk the model speaks still sounds like *that* voice. Names come from the corpus's
voice registry (``omniflex.data.voices``) and each has a ``<|voice:NAME|>`` special token.
"""

from __future__ import annotations

from omniflex.data.voices import PRESET_VOICES, Voice
from omniflex.tokenizers.special import voice_token

__all__ = ["OPENAI_VOICES", "preset_voice", "preset_voice_names", "resolve_voice", "validate_voice"]

#: OpenAI's voice names, each spoken by the preset voice nearest in register (a name is only an
#: alias: the model still speaks only in its four preset voices, and the voice classifier checks
#: the preset). Lets every copy-pasted OpenAI example (``voice="alloy"``) run unchanged.
OPENAI_VOICES: dict[str, str] = {
    "alloy": "aria", "ash": "bram", "ballad": "bram", "cedar": "dax", "coral": "cleo",
    "echo": "dax", "fable": "bram", "marin": "aria", "nova": "cleo", "onyx": "dax",
    "sage": "aria", "shimmer": "cleo", "verse": "dax",
}  # fmt: skip


def preset_voice_names() -> tuple[str, ...]:
    """Names of the preset voices, in registry order (``("aria", "bram", "cleo", "dax")``)."""
    return tuple(v.name for v in PRESET_VOICES)


def validate_voice(name: object) -> str:
    """Return ``name`` if it is a preset voice; else a ``ValueError`` listing the allowed ones."""
    allowed = preset_voice_names()
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(
            f"voice {name!r} is not a preset voice; the model speaks only in "
            f"{', '.join(allowed)} — pick one of those (other voices cannot be requested)"
        )
    voice_token(name)  # the special token must exist: the model has no other way to ask
    return name


def resolve_voice(name: object, allowed: tuple[str, ...] | None = None) -> str:
    """The preset voice that speaks for ``name``: a preset name itself, or one of OpenAI's
    names (``OPENAI_VOICES``). ``allowed``: the presets a model offers (default: all). Anything
    else is a ``ValueError`` that lists what may be asked for."""
    allowed = allowed or preset_voice_names()
    preset = OPENAI_VOICES.get(name, name) if isinstance(name, str) else name
    if not isinstance(preset, str) or preset not in allowed:
        raise ValueError(
            f"unknown voice {name!r}: this model speaks only in its preset voices "
            f"{', '.join(allowed)} (OpenAI's names {', '.join(OPENAI_VOICES)} map onto them)"
        )
    return validate_voice(preset)


def preset_voice(name: str) -> Voice:
    """The registry entry of a preset voice (espeak-ng voice, pitch, speed)."""
    name = validate_voice(name)
    return next(v for v in PRESET_VOICES if v.name == name)
