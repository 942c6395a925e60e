"""The decoding grammar: it accepts what the chat template writes for the assistant, its closing
finishes any cut answer into a stream the template reads back, and the session decodes by it."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from omniflex.data.tasks import TASKS, make_sample
from omniflex.model.assistant import Assistant, Session
from omniflex.model.chat import ChatTemplate
from omniflex.model.config import ModelConfig
from omniflex.model.grammar import NEVER_PREDICTED, OUTPUTS, Closing, TokenGrammar
from omniflex.model.sampling import SamplingConfig
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import special
from tests.model import MICRO_LAYOUT

SID = special.special_index
TEXT, TEXT_END = SID(special.TEXT), SID(special.TEXT_END)
AUDIO, AUDIO_END = SID(special.AUDIO), SID(special.AUDIO_END)
IMAGE, IMAGE_END = SID(special.IMAGE), SID(special.IMAGE_END)
ASSISTANT, EOT, EOS = SID(special.ASSISTANT), SID(special.END_OF_TURN), SID(special.EOS)
VOICES = [SID(special.voice_token(v)) for v in special.PRESET_VOICE_NAMES]
WORD = special.NUM_SPECIAL + 6  # a byte token of the micro vocabulary
GRID = 2  # 4 codes per image in the micro tests
SAMPLES = 3  # training conversations per task


def name(token_id: int) -> str:
    return special.special_name(token_id) if token_id < special.NUM_SPECIAL else str(token_id)


def assistant_turns(ids: list[int]) -> Iterator[range]:
    """Positions of each assistant turn's tokens: after ``<|assistant|>``, up to and including
    ``<|end_of_turn|>``."""
    for i, token_id in enumerate(ids):
        if token_id == ASSISTANT:
            yield range(i + 1, ids.index(EOT, i) + 1)


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    torch.set_num_threads(1)
    return ChatTemplate.from_shipped()


@pytest.fixture(scope="module")
def corpus(template: ChatTemplate) -> dict[tuple[str, int, bool], list[int]]:
    """``(task, i, input_features)`` -> the ids of training conversation ``i`` of ``task``."""
    features = ChatTemplate.from_shipped(input_features=True)
    out = {}
    for task in TASKS:
        for i in range(SAMPLES):
            sample = make_sample(task, "train", i)
            for t in (template, features):
                out[task, i, t.input_features] = t.encode(sample.conversation, sample.media).ids
    return out


# ---------------------------------------------------------------------- the state machine
def test_states_counts_and_closing_along_a_spoken_answer() -> None:
    g = TokenGrammar(MICRO_LAYOUT, GRID).read([ASSISTANT])  # the turn is given
    a0, a1 = MICRO_LAYOUT.range_of("audio", 0).start, MICRO_LAYOUT.range_of("audio", 1).start
    i0 = MICRO_LAYOUT.image_offset
    steps = [
        # token, state after it, count after it, open span, closing
        (VOICES[0], "text", 0, None, Closing(0, ())),
        (TEXT, "spoken", 0, special.TEXT, Closing(0, (TEXT_END,))),
        (WORD, "spoken", 1, special.TEXT, Closing(0, (TEXT_END,))),
        (TEXT_END, "text", 0, None, Closing(0, ())),
        (AUDIO, "audio", 0, special.AUDIO, Closing(0, (AUDIO_END,))),
        (a0, "audio", 1, special.AUDIO, Closing(1, (AUDIO_END,))),  # a partial frame goes
        (a1, "audio", 2, special.AUDIO, Closing(0, (AUDIO_END,))),
        (a0, "audio", 3, special.AUDIO, Closing(1, (AUDIO_END,))),
        (a1, "audio", 4, special.AUDIO, Closing(0, (AUDIO_END,))),
        (AUDIO_END, "text", 0, None, Closing(0, ())),
        (IMAGE, "image", 0, special.IMAGE, Closing(1, ())),  # an image not whole goes
        (i0, "image", 1, special.IMAGE, Closing(2, ())),
        (i0, "image", 2, special.IMAGE, Closing(3, ())),
        (i0, "image", 3, special.IMAGE, Closing(4, ())),
        (i0, "image", 4, special.IMAGE, Closing(0, (IMAGE_END,))),
        (IMAGE_END, "text", 0, None, Closing(0, ())),
        (EOT, "text", 0, None, Closing(0, ())),
    ]
    for token_id, state, count, open_span, closing in steps:
        assert g.allowed()[token_id], f"{name(token_id)} refused in state {g.state}"
        g.feed(token_id)
        assert (g.state, g.count, g.open_span, g.closing()) == (state, count, open_span, closing)
    g.read([AUDIO, a0])
    g.reset()
    assert (g.state, g.count, g.open_span) == ("text", 0, None)


def test_a_token_that_breaks_the_grammar_ends_the_span() -> None:
    g = TokenGrammar(MICRO_LAYOUT, GRID)
    assert g.read([AUDIO, WORD]).state == "text"  # text inside audio: the span is over
    assert g.read([TEXT, WORD, AUDIO]).state == "audio"  # an opener opens its span
    assert g.read([IMAGE, *[MICRO_LAYOUT.image_offset] * 5]).state == "text"  # a fifth code
    assert g.read([TEXT, EOT]).state == "text"
    assert g.read([TEXT, MICRO_LAYOUT.size + 3]).state == "text"  # outside the vocabulary


def test_ids_never_predicted_are_masked_in_every_state() -> None:
    never = [SID(token) for token in NEVER_PREDICTED]
    for token in (special.MEL, special.PATCH, special.VIDEO, special.PAD, special.USER):
        assert SID(token) in never, token
    g = TokenGrammar(MICRO_LAYOUT, GRID)
    prefixes = {
        "text": [],
        "spoken": [TEXT, WORD],
        "audio k0": [AUDIO],
        "audio k1": [AUDIO, MICRO_LAYOUT.range_of("audio", 0).start],
        "image": [IMAGE],
        "image whole": [IMAGE, *[MICRO_LAYOUT.image_offset] * 4],
    }
    for what, prefix in prefixes.items():
        mask = g.read(prefix).allowed()
        assert mask.shape == (MICRO_LAYOUT.size,) and mask.dtype == torch.bool
        assert mask.any(), what
        assert not mask[never].any(), (what, [name(t) for t in never if mask[t]])
        if not what.startswith(("audio", "image")):  # no span of theirs is open
            assert not mask[[AUDIO_END, IMAGE_END]].any(), what
        g.reset()
    # Inside a span only its own ids (and its close marker where it may close).
    audio1 = g.read(prefixes["audio k1"]).allowed().nonzero().flatten().tolist()
    assert audio1 == list(MICRO_LAYOUT.range_of("audio", 1))
    g.reset()
    assert g.read(prefixes["image whole"]).allowed().nonzero().flatten().tolist() == [IMAGE_END]


def test_body_is_the_open_span_content_without_markers() -> None:
    g = TokenGrammar(MICRO_LAYOUT, GRID)
    plain = list(range(special.NUM_SPECIAL, MICRO_LAYOUT.text_size))
    assert g.body().nonzero().flatten().tolist() == plain
    assert g.read([TEXT]).body().nonzero().flatten().tolist() == plain
    assert g.read([AUDIO]).body().nonzero().flatten().tolist() == list(
        MICRO_LAYOUT.range_of("audio", 0)
    )  # no <|/audio|>, though the grammar allows it here
    assert g.read([IMAGE, *[MICRO_LAYOUT.image_offset] * 4]).body().sum() == 0


@pytest.mark.parametrize("outputs", [("text",), ("audio",), ("image",), ("text", "image")])
def test_outputs_ban_the_spans_an_answer_may_not_hold(outputs: tuple[str, ...]) -> None:
    mask = TokenGrammar(MICRO_LAYOUT, GRID, outputs=outputs).allowed()  # plain text
    for token_id in (AUDIO, *VOICES):
        assert bool(mask[token_id]) == ("audio" in outputs), name(token_id)
    assert bool(mask[IMAGE]) == ("image" in outputs)
    assert bool(mask[TEXT]) == ("text" in outputs or "audio" in outputs)
    assert mask[[WORD, EOT, EOS]].all()
    full = TokenGrammar(MICRO_LAYOUT, GRID, outputs=OUTPUTS).allowed()
    assert mask.sum() <= full.sum()


def test_a_transcript_chunk_holds_text_then_its_close() -> None:
    g = TokenGrammar(MICRO_LAYOUT, GRID)
    assert not g.allowed()[TEXT_END]  # no chunk open: nothing to close
    spoken = g.read([TEXT, WORD]).allowed().nonzero().flatten().tolist()
    assert spoken == sorted([TEXT_END, *range(special.NUM_SPECIAL, MICRO_LAYOUT.text_size)])


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="image_grid"):
        TokenGrammar(MICRO_LAYOUT, 0)
    with pytest.raises(ValueError, match="outputs"):
        TokenGrammar(MICRO_LAYOUT, outputs=("smell",))
    with pytest.raises(ValueError, match="outputs"):
        TokenGrammar(MICRO_LAYOUT, outputs=())


# ---------------------------------------------------------------------- the chat template
@pytest.mark.parametrize("input_features", [False, True], ids=["codes", "features"])
def test_every_training_answer_is_accepted(
    corpus: dict[tuple[str, int, bool], list[int]], template: ChatTemplate, input_features: bool
) -> None:
    visited = set()
    for task in TASKS:
        for i in range(SAMPLES):
            ids = corpus[task, i, input_features]
            answer = {p for turn in assistant_turns(ids) for p in turn}
            assert answer, f"{task} {i} has no assistant turn"
            g = TokenGrammar(template.layout, int(template.image.grid))
            for p, token_id in enumerate(ids):  # user turns only set the state
                if p in answer:
                    assert g.allowed()[token_id], (
                        f"{task} train {i}: {name(token_id)} at position {p} of an answer is "
                        f"refused in state {g.state} after {g.count}"
                    )
                    visited.add(g.state)
                g.feed(token_id)
            assert g.state == "text"
    assert visited == {"text", "spoken", "audio", "image"}  # the corpus writes every span


def test_closing_finishes_an_answer_cut_anywhere(
    corpus: dict[tuple[str, int, bool], list[int]], template: ChatTemplate
) -> None:
    layout, grid = template.layout, int(template.image.grid)
    seen = set()
    for task in TASKS:
        ids = corpus[task, 0, False]
        for turn in assistant_turns(ids):
            # every cut of short answers; of long ones (speech, images) one in a few (an odd
            # step: cuts fall inside audio frames too)
            for cut in range(turn.start, turn.stop, max(1, len(turn) // 60) | 1):
                g = TokenGrammar(layout, grid).read(ids[:cut])
                drop, closing = g.closing()
                seen.add((g.state, drop > 0))
                assert drop < layout.audio_codebooks or g.state == "image"
                kept = ids[: cut - drop]
                check = TokenGrammar(layout, grid).read(kept)
                for token_id in (*closing, EOT):  # what a decoder appends is allowed
                    assert check.allowed()[token_id], (task, cut, name(token_id), check.state)
                    check.feed(token_id)
                stream = [*kept, *closing, EOT, EOS]
                decoded = template.decode(stream, media=False, strict=True)  # raises if not
                assert decoded.conversation["messages"][-1]["role"] == "assistant"
    assert seen == {
        ("text", False), ("spoken", False), ("audio", False), ("audio", True), ("image", True),
    }  # fmt: skip


# ---------------------------------------------------------------------- the session
@pytest.fixture(scope="module")
def model(template: ChatTemplate) -> OmniModel:
    config = ModelConfig(
        vocab=template.layout, dim=32, n_layers=1, n_heads=2, mlp_hidden=64,
        max_seq_len=1024, precision="float32",
    )  # fmt: skip
    return OmniModel.build(config, seed=0)


def favouring(model: OmniModel, template: ChatTemplate, bias: dict[int, float]) -> Assistant:
    """An assistant over ``model`` whose logits get ``bias`` added (a random model seldom
    opens a span by itself)."""
    add = torch.zeros(template.layout.size)
    for token_id, value in bias.items():
        add[token_id] = value
    biased = copy.deepcopy(model)
    biased.lm_head.register_forward_hook(lambda _module, _args, out: out + add)
    return Assistant(biased, template)


def answer_of(session: Session) -> list[int]:
    """The last answer's ids, from ``<|assistant|>`` on."""
    return session.tokens[len(session.tokens) - 1 - session.tokens[::-1].index(ASSISTANT) :]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_of_a_random_model_are_accepted(
    model: OmniModel, template: ChatTemplate, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = {t: 6.0 for t in (TEXT, TEXT_END, AUDIO, AUDIO_END, IMAGE, IMAGE_END, *VOICES)}
    markers[TEXT] = markers[AUDIO] = 8.0  # ~4,000 text ids compete: let every seed open both
    assistant = favouring(model, template, {**markers, EOT: -4.0, EOS: -4.0})
    session = assistant.session()
    sampled: list[int] = []
    step = session.generator.step

    def recording_step(*args: Any, **kwargs: Any) -> int:
        sampled.append(step(*args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(session.generator, "step", recording_step)
    grid, visited = int(template.image.grid), set()
    for turn, (voice, length) in enumerate([("aria", 40), (None, 23), (None, 300), ("dax", 7)]):
        session.add_text(f"turn {turn}")
        sampled.clear()
        sampling = SamplingConfig(1.0, seed=seed + turn)
        session.answer(voice=voice, max_new_tokens=length, sampling=sampling)
        answer = answer_of(session)
        given = answer[: 1 + (voice is not None)]  # <|assistant|> and the voice asked for
        g = TokenGrammar(template.layout, grid).read(given)
        for p, token_id in enumerate(sampled):  # what the model wrote, as it wrote it
            assert g.allowed()[token_id], (turn, p, name(token_id), g.state, g.count)
            visited.add(g.state)
            g.feed(token_id)
        # What the conversation keeps: the answer, closed by the session as the grammar says.
        assert answer[-1] == EOT and session.grammar.state == "text"
        g = TokenGrammar(template.layout, grid).read(given)
        for p, token_id in enumerate(answer[len(given) :]):
            assert g.allowed()[token_id], (turn, p, name(token_id), g.state, g.count)
            g.feed(token_id)
    assert {"spoken", "audio", "image"} <= visited


@pytest.mark.parametrize(
    ("opener", "length", "kept"),
    [
        (AUDIO, 4, [AUDIO, "code", "code", AUDIO_END]),  # 3 codes: the partial frame goes
        (AUDIO, 5, [AUDIO, "code", "code", "code", "code", AUDIO_END]),
        (IMAGE, 30, []),  # an image not whole goes with its marker
    ],
    ids=["partial-frame", "whole-frames", "partial-image"],
)
def test_an_answer_cut_early_is_closed_by_the_grammar(
    model: OmniModel, template: ChatTemplate, opener: int, length: int, kept: list[int | str]
) -> None:
    never = {AUDIO_END: -50.0, EOT: -50.0, EOS: -50.0}  # only max_new_tokens stops it
    assistant = favouring(model, template, {opener: 50.0, **never})
    session = assistant.session()
    session.add_text("go")
    answer = session.answer(max_new_tokens=length)
    assert answer.stop_reason == "max_new_tokens" and answer.tokens == length
    got = answer_of(session)
    assert got[0] == ASSISTANT and got[-1] == EOT
    body = got[1:-1]
    assert len(body) == len(kept)
    assert all(k == "code" or k == t for k, t in zip(kept, body, strict=True)), body
    template.decode([*session.tokens, EOS], media=False, strict=True)  # reads back whole
