"""The shipped default model: loads by name and answers each modality in the right form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniflex.data.tasks import make_sample
from omniflex.model.assistant import Assistant

GREEDY_LIMIT = 320


@pytest.fixture(scope="module")
def assistant() -> Assistant:
    torch.set_num_threads(1)
    return Assistant.from_pretrained("tiny")


def _prompt(task: str, index: int = 0) -> tuple[dict, dict]:
    """A held-out test conversation of ``task`` without its answer, and its files."""
    sample = make_sample(task, "test", index)
    conversation = dict(sample.conversation)
    conversation["messages"] = [m for m in conversation["messages"] if m["role"] != "assistant"]
    return conversation, sample.media


def test_loads_by_name_as_trained(assistant: Assistant):
    assert assistant.name == "tiny"
    assert assistant.model.config.precision == "flex16+5"
    assert assistant.info["training"]["steps"] > 0


def test_text_question_gets_a_text_answer(assistant: Assistant):
    answer = assistant.answer(*_prompt("text_chat"), modalities=("text",), max_new_tokens=60)
    assert answer.stop_reason == "stop_token"
    assert answer.text.strip() and answer.audio.size == 0 and not answer.images


def test_image_question_gets_a_text_answer(assistant: Assistant):
    answer = assistant.answer(*_prompt("caption"), modalities=("text",), max_new_tokens=60)
    assert answer.stop_reason == "stop_token" and answer.text.strip()


def test_speech_in_gets_text_out(assistant: Assistant):
    answer = assistant.answer(*_prompt("asr"), modalities=("text",), max_new_tokens=60)
    assert answer.stop_reason == "stop_token" and answer.text.strip()


def test_spoken_answer_is_speech_with_its_transcript(assistant: Assistant):
    # A fixed request in a training wording (the form of the answer is under test, not how
    # well the model reads a held-out one; the eval measures that).
    text = "Say this in the cleo voice: The cat is sleeping on the sofa."
    conversation, files = {"messages": [{"role": "user", "content": text}]}, {}
    answer = assistant.answer(
        conversation, files, voice="cleo", modalities=("text", "audio"),
        max_new_tokens=GREEDY_LIMIT,
    )  # fmt: skip
    assert answer.transcript.strip()
    assert answer.audio.dtype == np.float32 and answer.audio.size >= 0.5 * answer.sample_rate
    assert np.isfinite(answer.audio).all() and np.abs(answer.audio).max() <= 1.5
    assert answer.voice == "cleo"
    # Text leads: the first audio was out before the answer was finished.
    assert answer.first_audio_seconds is not None and answer.first_audio_seconds < answer.seconds


def test_text_to_image_draws_an_image(assistant: Assistant):
    conversation, files = _prompt("text_to_image")
    answer = assistant.answer(conversation, files, modalities=("image",), max_new_tokens=300)
    assert len(answer.images) == 1
    assert answer.images[0].shape == (64, 64, 3) and answer.images[0].dtype == np.uint8


# ----------------------------------------------------------------------------- content
# Fixed prompts, chosen before the model was trained: the answers must be right, not only
# well formed. Greedy decoding, so each is deterministic.
def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def test_answers_a_typed_sum(assistant: Assistant):
    conversation = {"messages": [{"role": "user", "content": "What is three plus four?"}]}
    answer = assistant.answer(conversation, {}, modalities=("text",), max_new_tokens=40)
    assert "seven" in _words(answer.text), answer.text


# The shipped model does not yet understand speech (eval: ASR WER 0.79, spoken QA 0.03); these
# two stay here, strict, so that the model that does will turn them into passes.
@pytest.mark.xfail(strict=True, reason="speech input not yet learned: ASR WER 0.79 on the eval")
def test_transcribes_a_held_out_voice(assistant: Assistant):
    from omniflex.eval.capabilities import word_error_rate

    sample = make_sample("asr", "test", 0)  # a test voice the model never heard
    reference = sample.conversation["messages"][-1]["content"][0]["text"]
    answer = assistant.answer(*_prompt("asr"), modalities=("text",), max_new_tokens=60)
    assert word_error_rate([reference], [answer.text]) <= 0.25, (reference, answer.text)


@pytest.mark.xfail(strict=True, reason="speech input not yet learned: spoken QA 0.03 on the eval")
def test_answers_a_spoken_question(assistant: Assistant):
    sample = make_sample("spoken_qa", "test", 0)
    reference = sample.conversation["messages"][-1]["content"][0]["text"]
    answer = assistant.answer(*_prompt("spoken_qa"), modalities=("text",), max_new_tokens=60)
    assert _words(answer.text)[-3:] == _words(reference)[-3:], (reference, answer.text)


def test_describes_a_picture_it_was_not_drawn_by_the_corpus(assistant: Assistant):
    from io import BytesIO

    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (96, 96), (70, 70, 80))  # plain, another size
    ImageDraw.Draw(picture).ellipse((24, 24, 72, 72), fill=(220, 30, 30))
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    conversation = {
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "file": "circle.png"},
                {"type": "text", "text": "Tell me what is in the image."},
            ]},
        ]
    }  # fmt: skip
    answer = assistant.answer(
        conversation, {"circle.png": buffer.getvalue()}, modalities=("text",), max_new_tokens=40
    )
    words = _words(answer.text)
    assert "red" in words and "circle" in words, answer.text
