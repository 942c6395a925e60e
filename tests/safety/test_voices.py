import pytest

from omniflex.safety.voices import (
    OPENAI_VOICES,
    preset_voice,
    preset_voice_names,
    resolve_voice,
    validate_voice,
)


def test_preset_names_match_the_special_tokens():
    from omniflex.tokenizers.special import PRESET_VOICE_NAMES

    assert preset_voice_names() == PRESET_VOICE_NAMES
    assert preset_voice("bram").role == "preset"


@pytest.mark.parametrize("bad", ["kai", "Aria", "", None, 3])
def test_unknown_voice_lists_the_allowed_ones(bad):
    with pytest.raises(ValueError, match="aria, bram, cleo, dax"):
        validate_voice(bad)
    assert validate_voice("dax") == "dax"


def test_openai_voice_names_are_aliases_of_presets_only():
    assert len(OPENAI_VOICES) == 13 and set(OPENAI_VOICES.values()) == set(preset_voice_names())
    assert resolve_voice("alloy") == "aria" and resolve_voice("onyx") == "dax"
    assert resolve_voice("cleo") == "cleo"
    assert resolve_voice("nova", ("cleo",)) == "cleo"
    for bad in ("lia", "Alloy", None, "ash "):
        with pytest.raises(ValueError, match="alloy, ash"):
            resolve_voice(bad)
    with pytest.raises(ValueError, match="preset voices cleo"):
        resolve_voice("alloy", ("cleo",))  # alloy speaks as aria, which this model lacks
