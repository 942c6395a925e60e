"""``audio_reliance``: a model that cannot hear scores the same with any audio; one whose
speech encoder is live does not."""

import json

import numpy as np
import pytest
import torch

from omniflex.eval.hearing import audio_reliance
from omniflex.model.chat import ChatTemplate
from omniflex.model.config import ModelConfig
from omniflex.model.encoders import InputFeatures
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import load_tokenizer, special
from omniflex.train import write_token_cache


def _cache(path, n=6):
    bpe = load_tokenizer("text")
    rng = np.random.default_rng(0)
    s, mel = special.special_index, special.special_index(special.MEL)
    docs = []
    for i in range(n):
        rows = rng.normal(0, 1, (5 + i, 320)).astype(np.float32)
        answer = bpe.encode(f"the cat sat {i}")
        ids = [s(special.BOS), s(special.USER), *[mel] * len(rows), s(special.END_OF_TURN),
               s(special.ASSISTANT), *answer, s(special.END_OF_TURN)]  # fmt: skip
        mask = [0] * (len(ids) - len(answer) - 1) + [1] * (len(answer) + 1)
        features = InputFeatures(
            torch.from_numpy(rows), torch.zeros(0, 192, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.long),
        )  # fmt: skip
        docs.append((ids, mask, features))
    write_token_cache(path, docs)
    path.with_name(path.name + ".json").write_text(
        json.dumps({"tasks": ["asr", "tts"], "doc_tasks": [0] * n})
    )


def _model() -> OmniModel:
    config = ModelConfig(
        vocab=ChatTemplate.from_shipped().layout, dim=32, n_layers=1, n_heads=2, mlp_hidden=64,
        max_seq_len=64, input_encoders=True, speech_layers=2, speech_width=16,
        precision="float32",
    )  # fmt: skip
    return OmniModel.build(config, seed=0)


def test_a_deaf_model_scores_the_same_with_any_audio(tmp_path):
    _cache(tmp_path / "test")
    model = _model()
    with torch.no_grad():
        model.encoders.speech.out.weight.zero_()
        model.encoders.speech.out.bias.zero_()
    result = audio_reliance(model, tmp_path / "test")
    assert result["documents"] == 6
    assert result["own"] == result["other"] == result["zeros"]


def test_a_listening_model_scores_differently_with_its_own_audio(tmp_path):
    _cache(tmp_path / "test")
    model = _model()
    with torch.no_grad():
        model.encoders.speech.out.weight.mul_(50.0)  # speech that moves every answer
    result = audio_reliance(model, tmp_path / "test", documents=4)
    assert result["documents"] == 4 and model.training  # left as it was found
    assert len({result["own"], result["other"], result["zeros"]}) == 3, result


def test_a_cache_without_those_tasks_is_refused(tmp_path):
    _cache(tmp_path / "test")
    with pytest.raises(ValueError, match="need at least 2"):
        audio_reliance(_model(), tmp_path / "test", tasks=("vqa",))
