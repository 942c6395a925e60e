"""Stage 0: the speech encoder pretrained alone with CTC over letters, and a stage that starts
its encoder from there and the rest of the model from another run."""

import json

import numpy as np
import pytest
import torch

from omniflex.common.folder import save_folder
from omniflex.model.chat import ChatTemplate
from omniflex.model.config import ModelConfig
from omniflex.model.encoders import InputFeatures
from omniflex.model.pretrained import save_pretrained
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import load_tokenizer, special
from omniflex.train import write_token_cache
from omniflex.train.run import init_weights
from omniflex.train.speech_encoder import (
    LETTERS,
    HeardClips,
    SpeechCTC,
    greedy_spelling,
    load_speech_encoder_state,
    pretrain_speech_encoder,
    spell,
)

WORDS = ["the", "cat", "sat", "on", "a", "red", "mat", "dog", "ran", "to"]


def _clip(text: str, rng: np.random.Generator) -> np.ndarray:
    """A stand-in for speech: two rows a letter, each lighting that letter's band of the row
    (plus noise); a space is one quiet row."""
    rows = []
    for c in text:
        k = LETTERS.index(c)
        for _ in range(1 if c == " " else 2):
            row = rng.normal(0, 0.3, 320)
            if c != " ":
                row[k * 11 : k * 11 + 11] += 2.0
            rows.append(row)
    return np.stack(rows).astype(np.float32)


def _cache(path, sentences, seed):
    bpe = load_tokenizer("text")
    rng = np.random.default_rng(seed)
    mel, s = special.special_index(special.MEL), special.special_index
    docs = []
    for text in sentences:
        rows = _clip(text, rng)
        answer = bpe.encode(text)
        ids = [s(special.BOS), s(special.USER), *[mel] * len(rows), s(special.END_OF_TURN),
               s(special.ASSISTANT), *answer, s(special.END_OF_TURN)]  # fmt: skip
        mask = [0] * (len(ids) - len(answer) - 1) + [1] * (len(answer) + 1)
        features = InputFeatures(
            torch.from_numpy(rows), torch.zeros(0, 192, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.long),
        )  # fmt: skip
        docs.append((ids, mask, features))
    write_token_cache(path, docs)
    sidecar = {"tasks": ["asr", "tts"], "doc_tasks": [0] * len(docs)}
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar))


def _sentences(n, seed):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 5)))) for _ in range(n)]


def _config(**changes) -> ModelConfig:
    shape = dict(dim=32, n_layers=1, n_heads=2, mlp_hidden=64, max_seq_len=64,
                 input_encoders=True, speech_layers=2, speech_width=32)  # fmt: skip
    return ModelConfig(vocab=ChatTemplate.from_shipped().layout, **{**shape, **changes})


def test_spelling_targets_and_greedy_decoding():
    assert spell("It's 2 Cats!") == [LETTERS.index(c) + 1 for c in "it's cats"]
    best = torch.full((6, len(LETTERS) + 1), -9.0)
    for t, k in enumerate([3, 3, 0, 3, 1, 0]):  # c c _ c ' ' _
        best[t, k] = 0.0
    assert greedy_spelling(best) == "bb"


def test_heard_clips_read_rows_and_transcripts(tmp_path):
    sentences = _sentences(5, 0)
    _cache(tmp_path / "train", sentences, 0)
    clips = HeardClips.from_cache(tmp_path / "train")
    assert clips.texts == sentences
    _, starts, lengths = clips.batch(np.array([1, 3]))
    assert lengths == [len(_clip(sentences[i], np.random.default_rng(0))) for i in (1, 3)]
    assert starts.nonzero().flatten().tolist() == [0, lengths[0]]
    with pytest.raises(ValueError, match="no documents of tasks"):
        HeardClips.from_cache(tmp_path / "train", tasks=("vqa",))


@pytest.mark.parametrize("precision", ["float32", "flex16+5"])
def test_stage0_learns_to_spell_held_out_sentences(tmp_path, precision):
    _cache(tmp_path / "train", _sentences(120, 1), 1)
    _cache(tmp_path / "val", _sentences(20, 2), 2)
    config = _config(precision=precision)
    record = pretrain_speech_encoder(
        config, tmp_path / "train", tmp_path / "val", tmp_path / "stage0", steps=100,
        batch_size=16, lr=3e-3, warmup=10, val_every=10, threads=1, progress=False,
        augment=False,  # the stand-in rows are letter bands, not mel frames a warp keeps
        upsample=1,  # two rows a letter: one CTC frame a row is enough
    )  # fmt: skip
    history = record["training"]["history"]
    assert record["val"]["cer"] < 0.15, history  # spells sentences it never heard
    assert history[0]["val_cer"] > record["val"]["cer"], history
    state = load_speech_encoder_state(tmp_path / "stage0", config)
    assert state and all(k.startswith("encoders.speech.") for k in state)
    with pytest.raises(ValueError, match="another model"):
        load_speech_encoder_state(tmp_path / "stage0", config.replace(speech_width=16))


def test_the_letter_head_spells_upsample_frames_per_row():
    rows = torch.randn(10, 320)
    starts = torch.zeros(10, dtype=torch.bool)
    for upsample in (1, 2, 3):
        out = SpeechCTC(_config(), upsample=upsample)(rows, starts)
        assert out.shape == (10 * upsample, len(LETTERS) + 1)
        assert torch.allclose(out.exp().sum(-1), torch.ones(10 * upsample))
    with pytest.raises(ValueError, match="upsample"):
        SpeechCTC(_config(), upsample=0)


def test_stage0_needs_an_encoder_with_layers(tmp_path):
    with pytest.raises(ValueError, match="speech_layers >= 1"):
        pretrain_speech_encoder(_config(speech_layers=0), tmp_path, tmp_path, tmp_path)


def test_a_stage_takes_its_encoder_from_stage0_and_the_rest_from_a_model(tmp_path):
    old = OmniModel.build(_config(speech_layers=0, precision="flex16+5"), seed=1)
    save_pretrained(tmp_path / "old", old.state_dict(), old.config, name="old")
    ctc = SpeechCTC(_config(precision="flex16+5"))
    with torch.no_grad():
        for p in ctc.parameters():
            p.add_(0.01)  # weights a fresh model would not have
    encoder = ctc.encoder_state()
    save_folder(
        tmp_path / "stage0", {"model": _config(precision="flex16+5").to_dict()},
        {k: v for k, v in encoder.items() if isinstance(v, torch.Tensor)},
        extra={"autoflex.json": {k: v for k, v in encoder.items()
                                 if not isinstance(v, torch.Tensor)}},
    )  # fmt: skip
    new = OmniModel.build(_config(precision="flex16+5"), seed=2)
    init_weights(new, tmp_path / "old", speech_from=tmp_path / "stage0")
    mine = new.state_dict()
    for k, v in old.state_dict().items():
        if isinstance(v, torch.Tensor) and not k.startswith("encoders.speech."):
            assert torch.equal(mine[k], v), k
    for k, v in encoder.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(mine[k], v), k
    with pytest.raises(ValueError, match="different model"):  # without stage 0: refused
        init_weights(OmniModel.build(_config(precision="flex16+5")), tmp_path / "old")
