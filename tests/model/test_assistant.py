"""Assistant and Session: streaming decode of answers, incremental prefill, cancel, barge-in."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch

from omniflex.data.tasks import make_sample
from omniflex.model.assistant import Assistant, AudioDelta, ImageOutput, TextDelta
from omniflex.model.chat import ChatTemplate
from omniflex.model.config import ModelConfig
from omniflex.model.generate import TokenEvent
from omniflex.model.transformer import OmniModel
from omniflex.tokenizers import special

SID = special.special_index


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    torch.set_num_threads(1)
    return ChatTemplate.from_shipped()


@pytest.fixture(scope="module")
def assistant(template: ChatTemplate) -> Assistant:
    config = ModelConfig(
        vocab=template.layout, dim=32, n_layers=1, n_heads=2, mlp_hidden=64,
        max_seq_len=2048, precision="float32",
    )  # fmt: skip
    return Assistant(OmniModel.build(config, seed=0), template)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 1.5 s of a corpus utterance (16 kHz)."""
    from omniflex.media.audio import read_audio

    sample = make_sample("asr", "test", 0)
    part = next(
        p for m in sample.conversation["messages"] for p in m["content"]
        if isinstance(p, dict) and p.get("type") == "audio"
    )  # fmt: skip
    return read_audio(sample.media[part["file"]])[:24_000]  # 16-bit values: WAV round trips


def _scripted(session: Any, ids: list[int]) -> list[Any]:
    """Run the session's answer decoder over a fixed token sequence."""
    start = len(session.tokens)
    events = [
        session.generator.event(t, start + i) for i, t in enumerate(ids)
    ]  # the Generator's own TokenEvents
    assert all(isinstance(e, TokenEvent) for e in events)
    return list(session._decode(iter(events), None, 1))


def test_spoken_answer_streams_transcript_then_audio_equal_to_full_decode(
    assistant: Assistant, template: ChatTemplate, speech: np.ndarray
):
    codes = template.audio.encode(torch.from_numpy(speech))[0]  # (K, F)
    text = "a red circle."
    text_ids = template.text.encode(text)
    ids = [SID(special.voice_token("cleo")), SID(special.TEXT), *text_ids, SID(special.TEXT_END)]
    ids += [SID(special.AUDIO), *template.layout.audio_ids(codes).tolist(), SID(special.AUDIO_END)]
    ids.append(SID(special.END_OF_TURN))
    session = assistant.session()
    events = _scripted(session, ids)
    transcript = "".join(e.text for e in events if isinstance(e, TextDelta) and e.spoken)
    assert transcript == text
    assert not [e for e in events if isinstance(e, TextDelta) and not e.spoken]
    audio = [e for e in events if isinstance(e, AudioDelta)]
    assert len(audio) > codes.shape[-1] // 2  # streamed frame by frame, not all at the end
    assert {e.voice for e in audio} == {"cleo"}
    streamed = np.concatenate([e.samples for e in audio])
    full = template.audio.decode(codes.unsqueeze(0))[0].numpy()
    assert streamed.shape == full.shape
    np.testing.assert_allclose(streamed, full, atol=1e-5)
    # The first event is text: the transcript leads the audio that speaks it.
    assert isinstance(events[0], TextDelta)


def test_text_deltas_hold_back_split_utf8(assistant: Assistant, template: ChatTemplate):
    text = "café ☕ ok"
    ids = [*template.text.encode(text), SID(special.END_OF_TURN)]
    events = _scripted(assistant.session(), ids)
    pieces = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_image_answer_is_decoded_once_complete(assistant: Assistant, template: ChatTemplate):
    grid = template.image.grid
    codes = torch.randint(0, template.image.cardinality, (grid, grid))
    ids = [SID(special.IMAGE), *template.layout.image_ids(codes).tolist(), SID(special.IMAGE_END)]
    events = _scripted(assistant.session(), [*ids, SID(special.END_OF_TURN)])
    images = [e for e in events if isinstance(e, ImageOutput)]
    assert len(images) == 1
    assert torch.equal(images[0].codes, codes)
    assert images[0].pixels.dtype == np.uint8 and images[0].pixels.shape[-1] == 3


def test_incremental_user_audio_equals_whole_turn(
    assistant: Assistant, template: ChatTemplate, speech: np.ndarray
):
    from omniflex.media.audio import to_wav_bytes

    whole = template.message_ids(
        {"messages": [{"role": "user", "content": [{"type": "audio", "file": "q.wav"}]}]},
        {"q.wav": to_wav_bytes(speech)},
    )
    streamed = assistant.session()
    streamed.begin_user_audio()
    for chunk in np.array_split(speech, [333, 1000, 1001, 7777, 15000]):  # odd chunk sizes
        streamed.push_user_audio(chunk)
    streamed.end_user_audio()
    assert streamed.tokens[1:] == whole
    at_once = assistant.session()
    at_once.add_message({"messages": [{"role": "user", "content": [{"type": "audio",
                                                                       "file": "q.wav"}]}]},
                        {"q.wav": to_wav_bytes(speech)})  # fmt: skip
    # Prefilled piece by piece or at once: the same next-token logits.
    torch.testing.assert_close(
        streamed.generator.prefill(()), at_once.generator.prefill(()), atol=1e-4, rtol=1e-4
    )


def test_discarded_user_audio_leaves_the_session_as_before(assistant: Assistant, speech):
    session = assistant.session()
    session.add_text("hello")
    before = list(session.tokens)
    logits = session.generator.prefill(()).clone()
    session.begin_user_audio()
    session.push_user_audio(speech[:9000])
    assert len(session.tokens) > len(before)
    session.discard_user_audio()  # the client cleared its input buffer
    assert session.tokens == before
    torch.testing.assert_close(session.generator.prefill(()), logits)
    with pytest.raises(RuntimeError, match="no spoken user turn"):
        session.discard_user_audio()
    session.add_user_audio(speech)  # a new turn opens as usual


def test_answer_modalities_are_respected(assistant: Assistant):
    session = assistant.session()
    session.add_text("draw a blue square")
    assert session.answer_start is None
    prompt = len(session.tokens)
    answer = session.answer(modalities=("text",), max_new_tokens=40)
    assert session.answer_start == prompt  # the <|assistant|> token follows the prompt
    assert session.tokens[prompt] == SID(special.ASSISTANT)
    generated = session.tokens[session._prompt_end :]
    assert 0 < answer.tokens <= 40
    banned = {SID(special.AUDIO), SID(special.IMAGE)}
    banned |= {SID(special.voice_token(v)) for v in assistant.voices}
    assert not banned & set(generated)
    assert answer.audio.size == 0 and not answer.images


def test_unfinished_answer_is_closed_and_cancel_marks_interrupt(assistant: Assistant):
    session = assistant.session()
    session.add_text("hello")
    answer = session.answer(voice="aria", modalities=("text", "audio"), max_new_tokens=5)
    assert answer.stop_reason in ("max_new_tokens", "stop_token")
    assert session.tokens[-1] == SID(special.END_OF_TURN)  # closed either way
    session.add_text("again")
    cancel = threading.Event()
    cancel.set()  # barge-in before the first token
    assert list(session.respond(voice="aria", cancel=cancel)) == []
    assert session.stop_reason == "cancelled"
    assert session.tokens[-4:] == [
        SID(special.ASSISTANT), SID(special.voice_token("aria")),
        SID(special.INTERRUPT), SID(special.END_OF_TURN),
    ]  # fmt: skip
    # The session goes on after either.
    session.add_text("bye")
    assert session.answer(modalities=("text",), max_new_tokens=3).stop_reason is not None


def test_interrupt_cuts_at_the_played_audio(assistant: Assistant, template: ChatTemplate):
    session = assistant.session()
    session.add_text("say something")
    codes = torch.randint(0, 1000, (2, 10))
    ids = [
        SID(special.voice_token("dax")),
        SID(special.TEXT),
        *template.text.encode("hi"),
        SID(special.TEXT_END),
        SID(special.AUDIO),
        *template.layout.audio_ids(codes).tolist(),
    ]
    session._answer_start = len(session.tokens)
    session._prompt_end = session._answer_start + 1
    session.generator.tokens.append(SID(special.ASSISTANT))
    events = _scripted(session, ids)  # positions continue after the assistant token
    session.generator.tokens.extend(ids)
    assert sum(isinstance(e, AudioDelta) for e in events) >= 10
    kept = session.interrupt(played_seconds=0.2)  # 5 frames of 40 ms
    assert kept == 5
    tail = session.tokens[-(5 * 2 + 3) :]
    assert tail[-3:] == [SID(special.AUDIO_END), SID(special.INTERRUPT), SID(special.END_OF_TURN)]
    assert all(template.layout.kind_of(t) == "audio" for t in tail[:-3])


def test_bad_requests_name_the_fix(assistant: Assistant):
    session = assistant.session()
    with pytest.raises(ValueError, match="preset voices"):
        list(session.respond(voice="morgan"))
    with pytest.raises(ValueError, match="modalities"):
        list(session.respond(modalities=("smell",)))
    with pytest.raises(ValueError, match="'audio' is not among"):
        list(session.respond(voice="aria", modalities=("text",)))
    session.begin_user_audio()
    with pytest.raises(ValueError, match="NaN"):
        session.push_user_audio(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(RuntimeError, match="end_user_audio"):
        session.add_text("hi")
