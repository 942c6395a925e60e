"""``config.json`` + ``model.safetensors`` folders: one writer and one reader for every
component that ships weights; the shipped assets load as they are, untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import omniflex
from omniflex.common.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_folder,
    read_folder_config,
    save_folder,
)

ASSETS = Path(omniflex.__file__).resolve().parent / "assets"
WEIGHT_FOLDERS = sorted(p.parent for p in ASSETS.rglob(WEIGHTS_FILE))


def _digests() -> dict[str, str]:
    return {
        str(p.relative_to(ASSETS)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ASSETS.rglob("*"))
        if p.is_file()
    }


def test_save_then_load_round_trips(tmp_path):
    tensors = {"w": torch.randn(3, 4), "m": torch.arange(5, dtype=torch.int16)}
    config = {"kind": "toy", "config": {"b": [1, 2], "a": 0.5}, "metadata": {}}
    folder = save_folder(
        tmp_path / "toy", config, tensors, metadata={"format": "flex16+5"}, extra={"x.json": [1]}
    )
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, "x.json"]
    loaded_config, loaded = load_folder(folder, what="a toy", fix="make one")
    assert loaded_config == config
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert json.loads((folder / "x.json").read_text()) == [1]
    # sorted keys and 2-space indent by default; the caller may choose another layout
    assert (folder / CONFIG_FILE).read_text() == json.dumps(config, indent=2, sort_keys=True) + "\n"
    save_folder(folder, config, tensors, indent=1, sort_keys=False)
    assert (folder / CONFIG_FILE).read_text() == json.dumps(config, indent=1) + "\n"


def test_the_config_is_written_last(tmp_path, monkeypatch):
    import omniflex.common.folder as folder_module

    order: list[str] = []
    real = folder_module.write_json

    def spy(path, *args, **kwargs):
        order.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "write_json", spy)
    save_folder(tmp_path, {}, {"w": torch.zeros(1)}, extra={"autoflex.json": {}})
    assert order == ["autoflex.json", CONFIG_FILE]


def test_a_missing_file_names_the_folder_and_the_fix(tmp_path):
    save_folder(tmp_path, {"a": 1}, {"w": torch.zeros(1)})
    (tmp_path / WEIGHTS_FILE).unlink()
    message = r"not a scene judge folder: it has no model\.safetensors; train one"
    with pytest.raises(FileNotFoundError, match=message):
        load_folder(tmp_path, what="a scene judge", fix="train one")
    assert read_folder_config(tmp_path, what="x", fix="y", weights=False) == {"a": 1}

    class Custom(ValueError):
        pass

    with pytest.raises(Custom, match=r"no config\.json and no model\.safetensors; train$"):
        read_folder_config(tmp_path / "nope", what="a tokenizer", fix="train", error=Custom)
    (tmp_path / CONFIG_FILE).write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_folder_config(tmp_path, what="x", fix="y", weights=False)


def test_the_shipped_weight_folders_are_all_found():
    names = {str(p.relative_to(ASSETS)) for p in WEIGHT_FOLDERS}
    assert names >= {
        "models/tiny",
        "safety/voice_classifier",
        "scene_judge",
        "speech_judge",
        "tokenizers/audio",
        "tokenizers/image",
    }


@pytest.mark.parametrize("folder", WEIGHT_FOLDERS, ids=lambda p: str(p.relative_to(ASSETS)))
def test_every_shipped_folder_reads_through_load_folder(folder):
    config, tensors = load_folder(folder, what="a shipped asset", fix="reinstall omniflex")
    assert isinstance(config, dict) and tensors


def test_every_shipped_component_loads_unchanged():
    from omniflex.eval.scene_judge import SceneJudge
    from omniflex.model.pretrained import load_pretrained
    from omniflex.safety.speech_judge import SpeechJudge
    from omniflex.safety.voice_classifier import load_voice_classifier
    from omniflex.tokenizers import load_tokenizer

    before = _digests()
    assert SceneJudge.load().metadata
    assert SpeechJudge.load().vocabulary
    assert load_voice_classifier().voices
    for name in ("text", "image", "audio"):
        assert load_tokenizer(name).vocab_size > 0
    model, info = load_pretrained("tiny")
    assert info.model_config.vocab_size == model.config.vocab_size
    assert _digests() == before  # reading never rewrites a shipped file


def test_components_round_trip_through_save_folder(tmp_path):
    from omniflex.eval.scene_judge import SceneJudge, SceneJudgeConfig
    from omniflex.safety.voice_classifier import load_voice_classifier, save_voice_classifier
    from omniflex.tokenizers import load_tokenizer

    judge = SceneJudge(SceneJudgeConfig(channels=(2, 3, 4), hidden=5))
    judge.metadata = {"note": "tiny"}
    again = SceneJudge.load(judge.save(tmp_path / "judge"))
    assert again.config == judge.config and again.metadata == judge.metadata

    voices = load_voice_classifier()
    copy = load_voice_classifier(save_voice_classifier(voices, tmp_path / "voices"))
    assert copy.voices == voices.voices
    for key, value in voices.state_dict().items():
        assert torch.equal(copy.state_dict()[key], value)

    codec = load_tokenizer("image")
    reloaded = load_tokenizer(codec.save(tmp_path / "image"))
    assert reloaded.config == codec.config
    for key, value in codec.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
