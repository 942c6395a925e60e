"""The one voice registry: roles, the preset list the special tokens are built from, its check."""

import pytest

import omniflex.common.voices as voices_module
from omniflex.common.voices import (
    HELD_OUT_VOICES,
    INPUT_VOICES,
    PRESET_VOICE_NAMES,
    PRESET_VOICES,
    VOICES,
    check_preset_voice,
    voice,
)
from tests.imports import imported_modules


def test_voice_registry_roles():
    assert len(PRESET_VOICES) == 4 and len(INPUT_VOICES) >= 4 and len(HELD_OUT_VOICES) >= 2
    assert len({v.name for v in VOICES}) == len(VOICES)
    assert len({(v.espeak, v.pitch, v.speed) for v in VOICES}) == len(VOICES)
    with pytest.raises(ValueError, match="known voices"):
        voice("morgan")


def test_preset_names_keep_the_order_of_their_special_tokens():
    assert tuple(v.name for v in PRESET_VOICES) == PRESET_VOICE_NAMES
    assert PRESET_VOICE_NAMES == ("aria", "bram", "cleo", "dax")  # token ids depend on it


@pytest.mark.parametrize("bad", ["kai", "Aria", "", None, 3])
def test_unknown_voice_lists_the_allowed_ones(bad):
    with pytest.raises(ValueError, match=r"not a preset voice.*aria, bram, cleo, dax"):
        check_preset_voice(bad)
    assert check_preset_voice("dax") == "dax"


def test_the_registry_imports_nothing_else_from_omniflex():
    names = imported_modules(voices_module.__file__)
    assert not any(n.startswith("omniflex") for n in names), names
