import pytest

from omniflex.common.voices import PRESET_VOICE_NAMES
from omniflex.safety.voices import OPENAI_VOICES, preset_voice, resolve_voice


def test_preset_voice_is_the_registry_entry():
    assert preset_voice("bram").role == "preset"
    with pytest.raises(ValueError, match="aria, bram, cleo, dax"):
        preset_voice("kai")


def test_openai_voice_names_are_aliases_of_presets_only():
    assert len(OPENAI_VOICES) == 13 and set(OPENAI_VOICES.values()) == set(PRESET_VOICE_NAMES)
    assert resolve_voice("alloy") == "aria" and resolve_voice("onyx") == "dax"
    assert resolve_voice("cleo") == "cleo"
    assert resolve_voice("nova", ("cleo",)) == "cleo"
    for bad in ("lia", "Alloy", None, "ash "):
        with pytest.raises(ValueError, match="alloy, ash"):
            resolve_voice(bad)
    with pytest.raises(ValueError, match="preset voices cleo"):
        resolve_voice("alloy", ("cleo",))  # alloy speaks as aria, which this model lacks
