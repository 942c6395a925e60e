import pytest

from omniflex.safety.voices import preset_voice, preset_voice_names, validate_voice


def test_preset_names_match_the_special_tokens():
    from omniflex.tokenizers.special import PRESET_VOICE_NAMES

    assert preset_voice_names() == PRESET_VOICE_NAMES
    assert preset_voice("bram").role == "preset"


@pytest.mark.parametrize("bad", ["kai", "Aria", "", None, 3])
def test_unknown_voice_lists_the_allowed_ones(bad):
    with pytest.raises(ValueError, match="aria, bram, cleo, dax"):
        validate_voice(bad)
    assert validate_voice("dax") == "dax"
