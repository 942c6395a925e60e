"""Media read as features: the template's placeholders and rows, the model's use of them,
streaming speech into a session equal to the whole turn, and prefill in chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniflex.data.tasks import TASKS, make_sample
from omniflex.media.audio import read_audio
from omniflex.model.chat import ChatFormatError, ChatTemplate, canonical
from omniflex.model.config import ModelConfig
from omniflex.model.encoders import InputFeatures
from omniflex.model.generate import Generator
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import load_tokenizer, special
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig

MEL, PATCH = special.special_index(special.MEL), special.special_index(special.PATCH)


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    image = ImageTokenizer(ImageTokenizerConfig.from_name("tiny")).eval()
    return ChatTemplate.from_tokenizers(
        load_tokenizer("text"), image, load_tokenizer("audio"), input_features=True
    )


def _user_media(conversation: dict) -> list[str]:
    return [
        part["type"]
        for message in conversation["messages"]
        if message["role"] != "assistant"
        for part in message["content"]
        if part["type"] in ("audio", "image", "video")
    ]


@pytest.mark.parametrize("task", ["asr", "vqa", "video_qa", "conversation", "tts", "caption"])
def test_user_media_become_placeholders_with_one_row_each(template: ChatTemplate, task: str):
    sample = make_sample(task, "test", 0)
    encoded = template.encode(sample.conversation, sample.media)
    features = encoded.features()
    n_mel, n_patch = encoded.ids.count(MEL), encoded.ids.count(PATCH)
    media = _user_media(sample.conversation)
    if not media:
        assert features is None and n_mel == n_patch == 0
        return
    assert features is not None
    assert (features.mel.shape, features.patches.shape) == ((n_mel, 320), (n_patch, 192))
    assert features.patches.dtype == torch.uint8 and n_patch % 64 == 0
    assert torch.equal(features.place, torch.arange(n_patch) % 64)
    if "audio" in media:  # one position per 40 ms of the user's speech
        wave = read_audio(
            next(
                sample.media[p["file"]]
                for m in sample.conversation["messages"]
                if m["role"] == "user"
                for p in m["content"]
                if p["type"] == "audio"
            )
        )
        assert n_mel >= len(wave) // 640
    # placeholders never carry loss, and the stream reads back to the same conversation
    assert all(
        not loss
        for i, loss in zip(encoded.ids, encoded.loss_mask, strict=True)
        if i in (MEL, PATCH)
    )
    decoded = template.decode(encoded.ids, media=False)
    assert canonical(decoded.conversation) == canonical(sample.conversation)


def test_every_task_encodes_in_feature_mode(template: ChatTemplate):
    for task in TASKS:
        sample = make_sample(task, "train", 1)
        encoded = template.encode(sample.conversation, sample.media)
        assert len(encoded.ids) == len(encoded.loss_mask), task


def test_ids_only_helpers_refuse_to_drop_features(template: ChatTemplate):
    sample = make_sample("asr", "test", 0)
    with pytest.raises(ChatFormatError, match="encode_prompt / encode_message"):
        template.prompt(sample.conversation, sample.media)
    encoded = template.encode_prompt(sample.conversation, sample.media)
    assert encoded.ids[-1] == special.special_index(special.ASSISTANT)
    assert encoded.features() is not None


def _model(seed: int = 0, speech_layers: int = 0) -> OmniModel:
    template_layout = ChatTemplate.from_shipped().layout
    config = ModelConfig(
        vocab=template_layout, dim=32, n_layers=2, n_heads=2, mlp_hidden=64, max_seq_len=512,
        precision="float32", input_encoders=True, speech_layers=speech_layers, speech_width=16,
    )  # fmt: skip
    return OmniModel.build(config, seed=seed).eval()


def _placeholder_batch(n_text: int = 5, n_mel: int = 6) -> tuple[torch.Tensor, InputFeatures]:
    ids = [1, 4, 9, *([MEL] * n_mel), 10, 11, *([PATCH] * 64), 12, *range(200, 200 + n_text)]
    gen = torch.Generator().manual_seed(0)
    rows = InputFeatures(
        torch.randn(n_mel, 320, generator=gen),
        torch.randint(0, 256, (64, 192), generator=gen, dtype=torch.uint8),
        torch.arange(64),
    )
    return torch.tensor([ids]), rows


def test_features_reach_the_logits_causally():
    model = _model()
    ids, rows = _placeholder_batch()
    base = model(ids, features=rows).logits
    changed = InputFeatures(rows.mel.clone(), rows.patches.clone(), rows.place)
    changed.patches[10] ^= 0xFF  # patch 10 of the picture
    after = model(ids, features=changed).logits
    where = ids[0].tolist().index(PATCH) + 10
    assert torch.equal(base[0, :where], after[0, :where])  # nothing before it moves
    assert not torch.allclose(base[0, where:], after[0, where:])  # it and later positions do
    with pytest.raises(ValueError, match="no InputFeatures"):
        model(ids)
    short = InputFeatures(rows.mel[:-1], rows.patches, rows.place)
    with pytest.raises(ValueError, match="do not match the placeholders"):
        model(ids, features=short)


def test_input_encoders_train_in_flex():
    config = _model().config.replace(precision="flex16+5")
    model = OmniModel.build(config, seed=0)
    names = {type(m).__name__ for m in model.encoders.modules()}
    assert "Linear" not in names and "Embedding" not in names  # all converted
    ids, rows = _placeholder_batch()
    targets = torch.roll(ids, -1, dims=1)
    out = model(ids, targets, features=rows)
    out.loss.backward()
    grads = [p.grad for p in model.encoders.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    ("speech_layers", "split"),
    [(0, 20), (2, 20), (2, 6)],  # inside the picture's placeholders; inside the clip's
)
def test_prefill_in_chunks_equals_the_whole_forward(speech_layers, split):
    model = _model(speech_layers=speech_layers)
    ids, rows = _placeholder_batch(n_mel=12)
    want = model(ids, features=rows).logits[0, -1]
    layout = ChatTemplate.from_shipped().layout
    gen = Generator(model, layout)
    first = ids[0, :split].tolist()
    n_mel = first.count(MEL)
    n_patch = first.count(PATCH)
    head = InputFeatures(rows.mel[:n_mel], rows.patches[:n_patch], rows.place[:n_patch])
    gen.prefill(first, features=head)
    rest = ids[0, split:].tolist()
    got = gen.prefill(
        rest,
        features=InputFeatures(rows.mel[n_mel:], rows.patches[n_patch:], rows.place[n_patch:]),
        chunk_size=3,
    )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="placeholders need as many feature rows"):
        gen.prefill([MEL, MEL])


@pytest.mark.parametrize("speech_layers", [0, 2])
def test_streamed_user_speech_equals_the_whole_turn(speech_layers):
    from omniflex.model.assistant import Assistant

    template = ChatTemplate.from_shipped(input_features=True)
    model = _model(speech_layers=speech_layers)
    assistant = Assistant(model, template)
    sample = make_sample("asr", "test", 0)
    audio_file = next(
        p["file"] for p in sample.conversation["messages"][0]["content"] if p["type"] == "audio"
    )
    wave = read_audio(sample.media[audio_file])
    whole = template.encode_message(
        {"messages": [{"role": "user", "content": [{"type": "audio", "file": "a.wav"}]}]},
        {"a.wav": sample.media[audio_file]},
    )
    session = assistant.session()
    session.begin_user_audio()
    for start in range(0, len(wave), 1234):
        session.push_user_audio(wave[start : start + 1234])
    session.end_user_audio()
    assert session.tokens[1:] == whole.ids
    streamed = torch.stack([session.generator._rows[p][0] for p in sorted(session.generator._rows)])
    torch.testing.assert_close(streamed, whole.features().mel, rtol=0, atol=1e-5)
    assert np.isfinite(session.generator.logits.numpy()).all()
    at_once = Generator(model, template.layout)  # the turn prefilled whole
    want = at_once.prefill(session.tokens, features=whole.features())
    torch.testing.assert_close(session.generator.logits, want, rtol=1e-4, atol=1e-5)
