"""AnswerShape: spoken answers forced into a fixed layout, through the Assistant's public option."""

from __future__ import annotations

import pytest
import torch

from omniflex.model.answer_shape import BODY, AnswerShape
from omniflex.model.assistant import Assistant, AudioDelta, TextDelta
from omniflex.model.chat import ChatTemplate
from omniflex.model.config import ModelConfig
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import special

SID = special.special_index


@pytest.fixture(scope="module")
def assistant() -> Assistant:
    torch.set_num_threads(1)
    template = ChatTemplate.from_shipped()
    config = ModelConfig(
        vocab=template.layout, dim=32, n_layers=1, n_heads=2, mlp_hidden=64,
        max_seq_len=2048, precision="float32",
    )  # fmt: skip
    return Assistant(OmniModel.build(config, seed=0), template)


def test_plan_is_the_corpus_spoken_layout(assistant: Assistant) -> None:
    k = assistant.layout.audio_codebooks
    plan = AnswerShape(chunks=2, text_tokens=3, frames=5).plan(assistant.layout)
    chunk = [SID(special.TEXT), *[BODY] * 3, SID(special.TEXT_END),
             SID(special.AUDIO), *[BODY] * (5 * k), SID(special.AUDIO_END)]  # fmt: skip
    assert plan == [*chunk, *chunk, SID(special.END_OF_TURN)]


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        AnswerShape(frames=0)


def test_spoken_answer_takes_the_shape_and_text_answers_do_not(assistant: Assistant) -> None:
    shape = AnswerShape(chunks=2, text_tokens=3, frames=4)
    shaped = assistant.with_answer_shape(shape)
    assert shaped.model is assistant.model and shaped.lock is assistant.lock
    assert assistant.answer_shape is None  # the view leaves the original alone

    session = shaped.session()
    session.add_text("Say something.")
    start = len(session.tokens)
    events = list(session.respond(voice=shaped.voices[0], max_new_tokens=200))
    answer = session.tokens[start + 2 :]  # after <|assistant|> and the voice token
    plan = shape.plan(assistant.layout)
    assert len(answer) == len(plan)
    layout, k = assistant.layout, assistant.layout.audio_codebooks
    span, n = None, 0
    for want, got in zip(plan, answer, strict=True):
        if want != BODY:
            assert got == want
            span, n = got, 0
        elif span == SID(special.TEXT):  # the model's choice: a plain text id
            assert special.NUM_SPECIAL <= got < layout.text_size
        else:  # the model's choice: a code of the frame's next codebook
            assert span == SID(special.AUDIO) and got in layout.range_of("audio", n % k)
            n += 1
    frames = sum(e.samples.shape[-1] for e in events if isinstance(e, AudioDelta))
    assert frames == 2 * 4 * assistant.template.audio.config.samples_per_frame
    assert sum(isinstance(e, TextDelta) for e in events) >= 1

    text_only = shaped.session()
    text_only.add_text("Say something.")
    plain = assistant.session()
    plain.add_text("Say something.")
    a = list(text_only.respond(modalities=("text",), max_new_tokens=30))
    b = list(plain.respond(modalities=("text",), max_new_tokens=30))
    assert text_only.tokens == plain.tokens and len(a) == len(b)
