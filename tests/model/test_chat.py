"""Chat template: round trip per task at the code level, loss masks, speech interleaving, errors."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
import torch

from omniflex.data.tasks import TASKS, Sample, make_sample
from omniflex.media.audio import read_audio, to_wav_bytes
from omniflex.media.image import read_image
from omniflex.model.chat import (
    ChatFormatError,
    ChatTemplate,
    _voiced_frames,
    canonical,
)
from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import load_tokenizer, special
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig

SID = special.special_index


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    # An untrained tiny image tokenizer: the template only needs codes, not good pictures.
    image = ImageTokenizer(ImageTokenizerConfig.from_name("tiny")).eval()
    return ChatTemplate.from_tokenizers(load_tokenizer("text"), image, load_tokenizer("audio"))


def _spoken_vqa() -> Sample:
    """The first test VQA sample whose question is spoken (half of them are)."""
    for i in range(20):
        sample = make_sample("vqa", "test", i)
        if any(p["type"] == "audio" for p in sample.conversation["messages"][0]["content"]):
            return sample
    raise AssertionError("no spoken VQA question in 20 samples")


@pytest.fixture(scope="module")
def samples() -> dict[str, Sample]:
    return {task: make_sample(task, "test", 0) for task in TASKS} | {"vqa": _spoken_vqa()}


def _media_parts(conversation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (message["role"], part)
        for message in conversation["messages"]
        for part in message["content"]
        if part["type"] in ("audio", "image", "video")
    ]


def _names(template: ChatTemplate, ids: list[int]) -> list[str]:
    """Special tokens by name, other ids by kind: a readable picture of a stream."""
    layout = template.layout
    return [
        special.special_name(i) if i < special.NUM_SPECIAL else layout.kind_of(i)[0] for i in ids
    ]


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("task", TASKS)
def test_round_trip_every_task(template: ChatTemplate, samples: dict[str, Sample], task: str):
    sample = samples[task]
    encoded = template.encode(sample.conversation, sample.media)
    assert len(encoded.ids) == len(encoded.loss_mask)
    assert max(encoded.ids) < template.layout.size and min(encoded.ids) >= 0
    decoded = template.decode(encoded.ids, media=False)
    assert not decoded.truncated
    assert canonical(decoded.conversation) == canonical(sample.conversation)

    # Media at the code level: decoded codes equal the tokenizers' codes of the original files.
    originals = _media_parts(sample.conversation)
    back = _media_parts(decoded.conversation)
    assert [p["type"] for _, p in originals] == [p["type"] for _, p in back]
    for (_, part), (_, got) in zip(originals, back, strict=True):
        raw = sample.media[part["file"]]
        codes = decoded.codes[got["file"]]
        if part["type"] == "audio":
            assert torch.equal(codes, template.audio.encode(read_audio(raw))[0])
        elif part["type"] == "image":
            assert torch.equal(codes, template.image.encode(read_image(raw)))
        else:
            video = template.video.encode(raw)
            assert torch.equal(codes.image_codes, video.image_codes)
            assert torch.equal(codes.audio_codes, video.audio_codes)


def test_decoded_media_and_their_codes(template: ChatTemplate, samples: dict[str, Sample]):
    ids = template.encode(samples["vqa"].conversation, samples["vqa"].media).ids
    decoded = template.decode(ids)
    kinds = {name.rsplit("_", 1)[1]: name for name in decoded.codes}
    audio, image = decoded.media[kinds["audio"]], decoded.media[kinds["image"]]
    assert audio.dtype == np.float32 and audio.shape == (
        decoded.codes[kinds["audio"]].shape[1] * 640,
    )
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    # The decoded picture codes back to codes of the same grid; the codec, once more.
    assert template.image.encode(image).shape == (16, 16)
    assert template.audio.encode(audio).shape == (1, 2, audio.shape[0] // 640)


def test_decoded_video_media(template: ChatTemplate, samples: dict[str, Sample]):
    sample = samples["video_qa"]
    decoded = template.decode(template.encode(sample.conversation, sample.media).ids)
    (name,) = decoded.codes
    frames, audio = decoded.media[name]
    assert frames.shape == (decoded.codes[name].image_codes.shape[0], 64, 64, 3)
    assert audio is not None and audio.dtype == np.float32


def test_text_only_layout(template: ChatTemplate, samples: dict[str, Sample]):
    sample = samples["text_chat"]
    encoded = template.encode(sample.conversation, sample.media)
    user, answer = (m["content"][0]["text"] for m in sample.conversation["messages"])
    text = template.text
    assert encoded.ids == [
        SID("bos"),
        SID("user"),
        *text.encode(user),
        SID("end_of_turn"),
        SID("assistant"),
        *text.encode(answer),
        SID("end_of_turn"),
        SID("eos"),
    ]


# ----------------------------------------------------------------------------- loss mask
@pytest.mark.parametrize("task", ["spoken_qa", "vqa", "text_to_image", "tts"])
def test_loss_mask_on_assistant_content_only(
    template: ChatTemplate, samples: dict[str, Sample], task: str
):
    sample = samples[task]
    encoded = template.encode(sample.conversation, sample.media)
    ids, mask = encoded.ids, encoded.loss_mask
    a = ids.index(SID("assistant"))
    assert mask[a] == 0  # the role token is given, not predicted
    assert set(mask[:a]) == {0}  # <|bos|>, the user turn and its <|end_of_turn|>
    assert set(mask[a + 1 :]) == {1}  # content, voice token, <|end_of_turn|>, <|eos|>
    assert ids[-2:] == [SID("end_of_turn"), SID("eos")]
    for span in encoded.spans:
        assert set(mask[span.start : span.stop]) == {int(span.role == "assistant")}


def test_multi_turn_with_system(template: ChatTemplate):
    conversation = {
        "id": "multi",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
            {"role": "user", "content": [{"type": "text", "text": "bye"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Goodbye."}]},
        ],
    }
    encoded = template.encode(conversation)
    roles = [i for i in encoded.ids if i in (SID("system"), SID("user"), SID("assistant"))]
    assert roles == [SID("system"), SID("user"), SID("assistant"), SID("user"), SID("assistant")]
    trained = template.text.decode(
        [i for i, m in zip(encoded.ids, encoded.loss_mask, strict=True) if m]
    )
    assert trained == "Hello.<|end_of_turn|>Goodbye.<|end_of_turn|><|eos|>"
    assert canonical(template.decode(encoded.ids).conversation) == canonical(conversation)


def test_interrupted_turn_is_marked_and_not_trained_on_the_interruption(template: ChatTemplate):
    conversation = {
        "messages": [
            {"role": "user", "content": "count"},
            {"role": "assistant", "content": "one two", "interrupted": True},
        ]
    }
    encoded = template.encode(conversation)
    assert _names(template, encoded.ids)[-3:] == ["<|interrupt|>", "<|end_of_turn|>", "<|eos|>"]
    assert encoded.loss_mask[-3:] == [0, 0, 0]
    decoded = template.decode(encoded.ids).conversation
    assert decoded["messages"][1]["interrupted"] is True
    assert canonical(decoded) == canonical(conversation)


# ----------------------------------------------------------------------------- speech
def _speech_spans(template: ChatTemplate, sample: Sample):
    encoded = template.encode(sample.conversation, sample.media)
    spans = [s for s in encoded.spans if s.role == "assistant"]
    return encoded, spans


@pytest.mark.parametrize("task", ["spoken_qa", "imitate", "tts"])
def test_spoken_answer_interleaves_text_first(
    template: ChatTemplate, samples: dict[str, Sample], task: str
):
    sample = samples[task]
    encoded, spans = _speech_spans(template, sample)
    ids = encoded.ids
    part = sample.conversation["messages"][1]["content"][-1]
    # Right after <|assistant|>: the voice token, then text, audio, text, audio, ...
    a = ids.index(SID("assistant"))
    assert ids[a + 1] == SID(special.voice_token(part["voice"]))
    assert spans[0].start == a + 2
    assert [s.kind for s in spans] == ["text", "audio"] * (len(spans) // 2)
    assert all(x.stop == y.start for x, y in itertools.pairwise(spans))  # nothing in between
    assert spans[-1].stop == len(ids) - 2  # then <|end_of_turn|> <|eos|>

    n = template.text_chunk_tokens
    texts = [ids[s.start + 1 : s.stop - 1] for s in spans[0::2]]
    audios = [ids[s.start + 1 : s.stop - 1] for s in spans[1::2]]
    assert all(ids[s.start] == SID("text") and ids[s.stop - 1] == SID("/text") for s in spans[::2])
    assert all(
        ids[s.start] == SID("audio") and ids[s.stop - 1] == SID("/audio") for s in spans[1::2]
    )
    assert all(len(t) == n for t in texts[:-1]) and 1 <= len(texts[-1]) <= n
    assert list(itertools.chain(*texts)) == template.text.encode(part["transcript"])
    # Audio chunks are whole frames and together are the full codec encode, in order.
    k = template.layout.audio_codebooks
    assert all(len(chunk) % k == 0 for chunk in audios)
    full = template.audio.encode(read_audio(sample.media[part["file"]]))[0]  # (K, F)
    assert torch.equal(
        template.layout.audio_codes(torch.tensor(list(itertools.chain(*audios)))), full
    )
    # The first audio can be decoded after one text chunk: the first audio chunk is not empty.
    assert len(audios[0]) > 0


def test_proportional_split_follows_text_bytes(template: ChatTemplate, samples: dict[str, Sample]):
    sample = samples["imitate"]  # a long answer: many chunks
    encoded, spans = _speech_spans(template, sample)
    ids, k = encoded.ids, template.layout.audio_codebooks
    part = sample.conversation["messages"][1]["content"][-1]
    wave = read_audio(sample.media[part["file"]])
    frames = [(s.stop - s.start - 2) // k for s in spans[1::2]]
    sizes = [len(template.text.decode_bytes(ids[s.start + 1 : s.stop - 1])) for s in spans[0::2]]
    v0, v1 = _voiced_frames(wave, sum(frames), 640)
    assert 0 <= v0 < v1 <= sum(frames)
    ends = np.cumsum(frames)[:-1]
    expected = v0 + (v1 - v0) * np.cumsum(sizes)[:-1] / sum(sizes)
    assert np.abs(ends - expected).max() <= 0.5 + 1e-9  # rounded to whole frames


def test_fixed_audio_chunk_frames(template: ChatTemplate, samples: dict[str, Sample]):
    fixed = ChatTemplate(
        template.layout, template.text, template.image, template.audio, audio_chunk_frames=5
    )
    sample = samples["imitate"]
    encoded, spans = _speech_spans(fixed, sample)
    k = fixed.layout.audio_codebooks
    frames = [(s.stop - s.start - 2) // k for s in spans[1::2]]
    assert frames[:-1] == [5] * (len(frames) - 1) and frames[-1] > 5
    assert canonical(fixed.decode(encoded.ids).conversation) == canonical(sample.conversation)


def test_voiced_frames_skip_silence():
    wave = np.zeros(10 * 640, dtype=np.float32)
    wave[3 * 640 : 7 * 640] = 0.5 * np.sin(np.arange(4 * 640) / 5)
    assert _voiced_frames(wave, 10, 640) == (3, 7)
    assert _voiced_frames(np.zeros(640 * 4, np.float32), 4, 640) == (0, 4)


def test_tts_gains_its_transcript_as_text(template: ChatTemplate, samples: dict[str, Sample]):
    # tts writes only the audio part; the stream leads with its transcript all the same.
    sample = samples["tts"]
    parts = canonical(sample.conversation)["messages"][1]["content"]
    transcript = sample.conversation["messages"][1]["content"][0]["transcript"]
    assert parts == [
        {"type": "text", "text": transcript},
        {"type": "audio", "voice": sample.conversation["messages"][1]["content"][0]["voice"],
         "transcript": transcript},
    ]  # fmt: skip


# ----------------------------------------------------------------------------- prompt
def test_prompt_ends_with_assistant_and_is_a_prefix(
    template: ChatTemplate, samples: dict[str, Sample]
):
    sample = samples["spoken_qa"]
    so_far = {**sample.conversation, "messages": sample.conversation["messages"][:1]}
    ids = template.prompt(so_far, sample.media)
    assert ids[-1] == SID("assistant")
    full = template.encode(sample.conversation, sample.media).ids
    voice = sample.conversation["messages"][1]["content"][1]["voice"]  # the answer's
    voiced = template.prompt(so_far, sample.media, voice=voice)
    assert voiced == [*ids, SID(f"<|voice:{voice}|>")] == full[: len(voiced)]
    # A prompt decodes as an unfinished stream.
    decoded = template.decode(voiced, strict=False, media=False)
    assert decoded.truncated and decoded.conversation["messages"][-1]["role"] == "assistant"
    with pytest.raises(ChatFormatError, match="preset voice"):
        template.prompt(so_far, sample.media, voice="eli")


def test_non_strict_decode_of_a_partial_answer(template: ChatTemplate, samples: dict[str, Sample]):
    sample = samples["imitate"]
    full = template.encode(sample.conversation, sample.media).ids
    cut = full.index(SID("/audio"), full.index(SID("assistant"))) - 3  # inside an audio chunk
    with pytest.raises(ChatFormatError, match="never closed"):
        template.decode(full[:cut])
    decoded = template.decode(full[:cut], strict=False, media=False)
    assert decoded.truncated
    parts = decoded.conversation["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "audio"]
    assert decoded.codes[parts[1]["file"]].shape[0] == 2  # whole frames only


# ----------------------------------------------------------------------------- errors
def _conv(content: list[dict[str, Any]], role: str = "user") -> dict[str, Any]:
    return {"id": "bad_0", "messages": [{"role": role, "content": content}]}


@pytest.mark.parametrize(
    ("conversation", "match"),
    [
        (_conv([{"type": "gif", "file": "a.gif"}]), r"'bad_0', message 0 \(user\), part 0.*gif"),
        (_conv([{"type": "audio", "file": "nope.wav"}]), r"'bad_0'.*part 0.*'nope.wav' is missing"),
        (_conv([{"type": "text"}]), "part 0: text part needs a string"),
        (_conv([{"type": "image"}]), "needs a 'file'"),
        (
            _conv(
                [{"type": "audio", "file": "a.wav", "voice": "eli", "transcript": "x"}], "assistant"
            ),
            r"'bad_0', message 0 \(assistant\), part 0.*'eli'.*aria, bram, cleo, dax",
        ),
        (
            _conv([{"type": "audio", "file": "a.wav", "voice": "aria"}], "assistant"),
            "needs a non-empty 'transcript'",
        ),
        (_conv([{"type": "video", "file": "v.mp4"}], "assistant"), "cannot write video"),
        (_conv([], "robot"), "role 'robot'"),
        ({"id": "x"}, "no 'messages' list"),
    ],
)
def test_errors_name_conversation_and_part(
    template: ChatTemplate, conversation: dict[str, Any], match: str
):
    files = {"a.wav": to_wav_bytes(np.zeros(1600, np.float32))}
    with pytest.raises(ChatFormatError, match=match):
        template.encode(conversation, files)


def test_unreadable_media_names_the_part(template: ChatTemplate):
    with pytest.raises(ChatFormatError, match=r"'bad_0', message 0 \(user\), part 0 'a.png'"):
        template.encode(_conv([{"type": "image", "file": "a.png"}]), {"a.png": b"not a png"})


def test_decode_errors(template: ChatTemplate, samples: dict[str, Sample]):
    ids = template.encode(samples["caption"].conversation, samples["caption"].media).ids
    with pytest.raises(ChatFormatError, match="expected <\\|bos\\|> at position 0"):
        template.decode(ids[1:])
    start = ids.index(SID("image"))
    short = ids[: start + 5] + ids[ids.index(SID("/image")) :]
    with pytest.raises(ChatFormatError, match="holds 4 ids; expected 16x16"):
        template.decode(short)
    with pytest.raises(ChatFormatError, match="inside the image span"):
        template.decode(ids[: start + 1] + [SID("bos")] * 3 + ids[start + 4 :])
    with pytest.raises(ChatFormatError, match="after <\\|eos\\|>"):
        template.decode([*ids, SID("user")])
    with pytest.raises(ChatFormatError, match="role token"):
        template.decode(ids[:-1])


def test_layout_must_match_tokenizers(template: ChatTemplate):
    wrong = VocabLayout(template.layout.text_size + 1, 10, 10, 2)
    with pytest.raises(ValueError, match="does not match the tokenizers"):
        ChatTemplate(wrong, template.text, template.image, template.audio)
    with pytest.raises(ValueError, match="text_chunk_tokens"):
        ChatTemplate.from_tokenizers(
            template.text, template.image, template.audio, text_chunk_tokens=0
        )


def test_encode_does_not_mutate_the_conversation(template: ChatTemplate, samples):
    sample = samples["spoken_qa"]
    before = copy.deepcopy(sample.conversation)
    template.encode(sample.conversation, sample.media)
    canonical(sample.conversation)
    assert sample.conversation == before


def test_decode_rejects_foreign_ids_with_their_position(template: ChatTemplate):
    size = template.layout.size
    bad = [SID("bos"), SID("user"), size + 5, SID("end_of_turn"), SID("eos")]
    with pytest.raises(ChatFormatError, match=f"position 2, got id {size + 5} \\(outside"):
        template.decode(bad)
    book1 = template.layout.range_of("audio", 1).start  # codebook 1 where codebook 0 belongs
    swapped = [SID("bos"), SID("user"), SID("audio"), book1, book1, SID("/audio")]
    with pytest.raises(ChatFormatError, match="audio span from position 3"):
        template.decode([*swapped, SID("end_of_turn"), SID("eos")])
