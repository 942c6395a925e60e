"""Sampling, constrained decoding and the streaming Generator."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniflex.model.generate import Generator, ModalityConstraint
from omniflex.model.sampling import (
    SamplingConfig,
    apply_repetition_penalty,
    constrain,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from omniflex.model.transformer import OmniModel
from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import special
from tests.model import MICRO_LAYOUT, micro_config

V = MICRO_LAYOUT.size
GRID = 2  # 4 tokens per image in these tests
sid = special.special_index
AUDIO, AUDIO_END = sid(special.AUDIO), sid(special.AUDIO_END)
IMAGE, IMAGE_END = sid(special.IMAGE), sid(special.IMAGE_END)
EOS = sid(special.EOS)


def check_grammar(tokens: list[int], layout: VocabLayout, grid: int, start: int = 0) -> None:
    """Independent statement of the grammar: fails on the first generated token (index >=
    ``start``) that breaks it. Prompt tokens only set the state."""
    state, count, K = "text", 0, layout.audio_codebooks
    for i, t in enumerate(tokens):
        kind = layout.kind_of(t)
        if i >= start:
            if state == "audio":
                ok = (kind == "audio" and layout.range_of("audio", count % K).start <= t
                      < layout.range_of("audio", count % K).stop) or (
                    t == AUDIO_END and count % K == 0
                )  # fmt: skip
            elif state == "image":
                ok = kind == "image" if count < grid * grid else t == IMAGE_END
            else:
                ok = kind == "text" and t not in (sid(special.PAD), sid(special.BOS), AUDIO_END,
                                                  IMAGE_END)  # fmt: skip
            assert ok, f"token {i} ({t}) breaks the grammar in state {state} after {count}"
        if state in ("audio", "image") and kind == state:
            count += 1
        elif t == AUDIO:
            state, count = "audio", 0
        elif t == IMAGE:
            state, count = "image", 0
        else:
            state, count = "text", 0


# ---------------------------------------------------------------------- sampling
def test_same_seed_same_tokens() -> None:
    logits = torch.randn(V)
    cfg = SamplingConfig(temperature=0.9, top_k=50, top_p=0.9)

    def draw(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [sample_next(logits, cfg, generator=gen) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_greedy_is_argmax_and_respects_the_mask() -> None:
    logits = torch.randn(V)
    greedy = SamplingConfig(temperature=0.0)
    assert sample_next(logits, greedy) == int(logits.argmax())
    mask = torch.zeros(V, dtype=torch.bool)
    mask[10:20] = True
    assert sample_next(logits, greedy, mask=mask) == 10 + int(logits[10:20].argmax())


def test_filters() -> None:
    logits = torch.tensor([3.0, 1.0, 2.0, 0.0])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [False, True, False, True]
    # probabilities ~ [0.64, 0.09, 0.24, 0.03]: 0.64 < 0.8, so the nucleus takes two ids
    assert torch.isinf(top_p_filter(logits, 0.8)).tolist() == [False, True, False, True]
    assert torch.isinf(top_p_filter(logits, 0.1)).tolist() == [False, True, True, True]
    penalised = apply_repetition_penalty(torch.tensor([2.0, -2.0, 1.0]), [0, 1, 1], 2.0)
    assert penalised.tolist() == [1.0, -4.0, 1.0]


def test_repetition_penalty_changes_greedy_choice() -> None:
    logits = torch.tensor([2.0, 1.9, -1.0])
    cfg = SamplingConfig(temperature=0.0, repetition_penalty=1.5)
    assert sample_next(logits, cfg, previous=[0]) == 1
    assert sample_next(logits, cfg, previous=[2]) == 0


def test_sampling_config_validation_and_empty_mask() -> None:
    for field, value in [("temperature", -1.0), ("top_k", 0), ("top_p", 0.0),
                         ("repetition_penalty", 0.0)]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            SamplingConfig(**{field: value})
    with pytest.raises(ValueError, match="allows no id"):
        constrain(torch.zeros(4), torch.zeros(4, dtype=torch.bool))


# ---------------------------------------------------------------------- constrained decoding
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    prompt=st.lists(st.sampled_from([AUDIO, IMAGE, 190, 205, 7, 30, EOS]), max_size=4),
    temperature=st.sampled_from([0.0, 0.7, 1.0, 3.0]),
    top_k=st.sampled_from([None, 1, 5]),
    marker_boost=st.floats(0.0, 8.0),
)
def test_constrained_decoding_never_leaves_its_range(
    seed: int, prompt: list[int], temperature: float, top_k: int | None, marker_boost: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    constraint = ModalityConstraint(MICRO_LAYOUT, image_grid=GRID)
    cfg = SamplingConfig(temperature=temperature, top_k=top_k)
    tokens = list(prompt)
    for _ in range(60):
        logits = torch.randn(V, generator=gen) * 3
        logits[[AUDIO, AUDIO_END, IMAGE, IMAGE_END]] += marker_boost  # visit every state
        tokens.append(sample_next(logits, cfg, mask=constraint(tokens), generator=gen))
    check_grammar(tokens, MICRO_LAYOUT, GRID, start=len(prompt))


def test_constraint_masks() -> None:
    c = ModalityConstraint(MICRO_LAYOUT, image_grid=GRID)
    TEXT_ID = special.NUM_SPECIAL + 6  # a byte token
    audio0 = MICRO_LAYOUT.range_of("audio", 0)
    audio1 = MICRO_LAYOUT.range_of("audio", 1)
    m = c([TEXT_ID, AUDIO])
    assert m[audio0.start] and m[AUDIO_END] and not m[audio1.start] and not m[TEXT_ID]
    m = c([TEXT_ID, AUDIO, audio0.start])
    assert m[audio1.start] and not m[AUDIO_END] and not m[audio0.start]
    m = c([IMAGE, *([MICRO_LAYOUT.image_offset] * 4)])  # shrinking input: rescans
    assert m.sum() == 1 and m[IMAGE_END]
    m = c([IMAGE, *([MICRO_LAYOUT.image_offset] * 4), IMAGE_END])
    assert m[TEXT_ID] and not m[IMAGE_END] and not m[MICRO_LAYOUT.image_offset]


def test_constraint_never_opens_another_turn_or_an_unused_slot() -> None:
    m = ModalityConstraint(MICRO_LAYOUT, image_grid=GRID)([sid(special.BOS)])
    for token in (special.USER, special.ASSISTANT, special.SYSTEM, special.VIDEO, "<|t:0.5|>"):
        assert not m[sid(token)], token
    assert not m[sid("<|reserved_0|>")]
    assert m[sid(special.END_OF_TURN)] and m[sid(special.EOS)] and m[sid(special.AUDIO)]


# ---------------------------------------------------------------------- Generator
@pytest.fixture(scope="module")
def model() -> OmniModel:
    return OmniModel.build(micro_config(), seed=0)


def test_stream_is_seeded_typed_and_follows_the_grammar(model: OmniModel) -> None:
    gen = Generator(model, MICRO_LAYOUT, image_grid=GRID)
    cfg = SamplingConfig(temperature=1.0, seed=11)
    prompt = [sid(special.BOS), 190, AUDIO]
    events = list(gen.stream(prompt, max_new_tokens=12, sampling=cfg))
    assert len(events) == 12 and gen.stop_reason == "max_new_tokens"
    ids = [e.token_id for e in events]
    check_grammar(prompt + ids, MICRO_LAYOUT, GRID, start=len(prompt))
    first = events[0]
    assert first.modality == "audio" and first.codebook == 0 and first.position == 3
    assert [e.codebook for e in events[:4] if e.modality == "audio"] == [0, 1, 0, 1][: len(
        [e for e in events[:4] if e.modality == "audio"])]  # fmt: skip
    again = Generator(model, MICRO_LAYOUT, image_grid=GRID)
    assert [e.token_id for e in again.stream(prompt, max_new_tokens=12, sampling=cfg)] == ids


def test_stream_stops_at_a_stop_token(model: OmniModel) -> None:
    gen = Generator(model, MICRO_LAYOUT, image_grid=GRID)

    def only_eos(tokens) -> torch.Tensor:
        mask = torch.zeros(V, dtype=torch.bool)
        mask[EOS] = True
        return mask

    events = list(gen.stream([1, 190], max_new_tokens=10, stop_tokens=[EOS],
                             constraint_fn=only_eos))  # fmt: skip
    assert [e.token_id for e in events] == [EOS] and gen.stop_reason == "stop_token"
    assert events[0].modality == "special"


def test_cancel_stops_the_stream_at_once(model: OmniModel) -> None:
    gen = Generator(model, MICRO_LAYOUT, image_grid=GRID)
    cancel = threading.Event()
    got = []
    for event in gen.stream([1, 190], max_new_tokens=50, cancel=cancel):
        got.append(event.token_id)
        if len(got) == 3:
            cancel.set()  # the user barged in
    assert len(got) == 3 and gen.stop_reason == "cancelled"
    assert gen.tokens == [1, 190, *got]
    # the conversation goes on from where it stopped
    gen.prefill([sid(special.INTERRUPT)])
    assert gen.cache.length == 6


def test_cancel_from_another_thread(model: OmniModel) -> None:
    gen = Generator(model, MICRO_LAYOUT, image_grid=GRID)
    cancel = threading.Event()
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    count = sum(1 for _ in gen.stream([1], max_new_tokens=10_000 // 200, cancel=cancel))
    timer.join()
    assert gen.stop_reason in ("cancelled", "max_new_tokens") and count <= 50


def test_generator_incremental_prefill_and_truncate_match_fresh(model: OmniModel) -> None:
    ids = torch.randint(200, V, (30,), generator=torch.Generator().manual_seed(5)).tolist()
    one = Generator(model, MICRO_LAYOUT)
    whole = one.prefill(ids)
    pieces = Generator(model, MICRO_LAYOUT)
    for start in range(0, 30, 4):  # audio tokens arriving 4 at a time
        logits = pieces.prefill(ids[start : start + 4])
    torch.testing.assert_close(logits, whole, atol=1e-5, rtol=1e-5)
    pieces.truncate(17)
    fresh = Generator(model, MICRO_LAYOUT)
    torch.testing.assert_close(pieces.prefill([]), fresh.prefill(ids[:17]), atol=1e-5, rtol=1e-5)
    greedy = SamplingConfig(temperature=0.0)
    assert pieces.step(greedy) == fresh.step(greedy)


def test_generator_rejects_bad_input(model: OmniModel) -> None:
    gen = Generator(model, MICRO_LAYOUT)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gen.prefill([V])
    with pytest.raises(ValueError, match="empty"):
        gen.prefill([])
    with pytest.raises(ValueError, match="VocabLayout"):
        Generator(model, VocabLayout(200, 16, 8, 3))


def test_flex_model_streams_with_flex16_cache() -> None:
    flex = OmniModel.build(micro_config(precision="flex16+5"), seed=0)
    gen = Generator(flex, MICRO_LAYOUT, cache_storage="flex16", image_grid=GRID)
    prompt = [1, IMAGE]
    events = list(gen.stream(prompt, max_new_tokens=6, sampling=SamplingConfig(seed=0)))
    ids = [e.token_id for e in events]
    check_grammar(prompt + ids, MICRO_LAYOUT, GRID, start=2)
    assert [e.modality for e in events[:4]] == ["image"] * 4 and ids[4] == IMAGE_END
