"""Pretokenize: a mini corpus through the chat template into the trainer's token cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omniflex.data.shards import ShardWriter
from omniflex.data.tasks import Sample, make_sample
from omniflex.data.templates import TEMPLATES, template_ids
from omniflex.model.chat import ChatFormatError, ChatTemplate
from omniflex.model.pretokenize import pretokenize_corpus, speech_as_asr
from omniflex.tokenizers import load_tokenizer
from omniflex.tokenizers.image import ImageTokenizer, ImageTokenizerConfig
from omniflex.train.dataset import TokenDataset


@pytest.fixture(scope="module")
def template() -> ChatTemplate:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    image = ImageTokenizer(ImageTokenizerConfig.from_name("tiny")).eval()
    return ChatTemplate.from_tokenizers(load_tokenizer("text"), image, load_tokenizer("audio"))


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [make_sample("spoken_qa", "train", 0), make_sample("text_to_image", "train", 0)]


def _write(corpus: Path, split: str, samples: list[Sample]) -> None:
    for i, sample in enumerate(samples):  # one sample per shard: two shards
        with ShardWriter(corpus / f"{split}-{i:05d}.tar") as writer:
            writer.write(sample.key, sample.conversation, sample.media)


def test_mini_corpus_to_token_cache(tmp_path: Path, template: ChatTemplate, samples: list[Sample]):
    corpus, out = tmp_path / "corpus", tmp_path / "tokens"
    _write(corpus, "train", samples)
    _write(corpus, "val", samples[:1])
    result = pretokenize_corpus(corpus, out, template, splits=("train", "val"), progress=False)

    expected = [template.encode(s.conversation, s.media) for s in samples]
    ids = np.load(out / "train" / "ids.npy")
    mask = np.load(out / "train" / "loss_mask.npy")
    offsets = np.load(out / "train" / "offsets.npy")
    assert offsets.tolist() == [0, len(expected[0]), len(expected[0]) + len(expected[1])]
    assert ids.tolist() == expected[0].ids + expected[1].ids
    assert mask.tolist() == expected[0].loss_mask + expected[1].loss_mask

    meta = json.loads((out / "train.json").read_text())
    assert meta == result["train"]
    assert meta["documents"] == 2 and meta["tokens"] == len(ids)
    assert meta["keys"] == [s.key for s in samples]
    assert [meta["tasks"][t] for t in meta["doc_tasks"]] == ["spoken_qa", "text_to_image"]
    assert meta["by_task"]["text_to_image"]["max"] == len(expected[1])
    assert sum(meta["tokens_by_kind"].values()) == len(ids)
    # the task balance: loss-bearing tokens by task and kind, summing to the loss mask
    by_task = meta["loss_tokens_by_task"]
    assert sum(n for kinds in by_task.values() for n in kinds.values()) == int(mask.sum())
    assert by_task["text_to_image"]["image"] > 0 and by_task["spoken_qa"]["audio"] > 0
    assert by_task["text_to_image"]["audio"] == 0
    assert meta["tokens_by_kind"]["image"] == 256  # one 16x16 image
    assert meta["template"] == template.config()
    assert result["val"]["documents"] == 1

    # The trainer reads it as it is.
    dataset = TokenDataset(out / "train", seq_len=64, shuffle=False)
    assert dataset.num_documents == 2 and dataset.num_tokens == len(ids)


def test_workers_give_the_same_cache(tmp_path: Path, template: ChatTemplate, samples: list[Sample]):
    corpus = tmp_path / "corpus"
    _write(corpus, "train", samples)
    one = pretokenize_corpus(corpus, tmp_path / "a", template, ("train",), progress=False)
    two = pretokenize_corpus(corpus, tmp_path / "b", template, ("train",), 2, progress=False)
    for name in ("ids.npy", "loss_mask.npy", "offsets.npy"):
        assert np.array_equal(
            np.load(tmp_path / "a/train" / name), np.load(tmp_path / "b/train" / name)
        )
    assert one["train"]["keys"] == two["train"]["keys"]


def test_limit(tmp_path: Path, template: ChatTemplate, samples: list[Sample]):
    corpus = tmp_path / "corpus"
    _write(corpus, "train", samples)
    result = pretokenize_corpus(
        corpus, tmp_path / "t", template, ("train",), progress=False, limit=1
    )
    assert result["train"]["documents"] == 1 and result["train"]["limit"] == 1


def test_errors(tmp_path: Path, template: ChatTemplate, samples: list[Sample]):
    corpus = tmp_path / "corpus"
    _write(corpus, "train", samples)
    with pytest.raises(FileNotFoundError, match=r"no 'test-\*\.tar' shards"):
        pretokenize_corpus(corpus, tmp_path / "t", template, ("test",), progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretokenize_corpus(tmp_path / "nowhere", tmp_path / "t", template, progress=False)
    bad = {"id": "bad_0", "messages": [{"role": "user", "content": [{"type": "gif"}]}]}
    with ShardWriter(corpus / "broken-00000.tar") as writer:
        writer.write("bad_0", bad, {})
    with pytest.raises(ChatFormatError, match=r"broken-00000.tar, sample bad_0: .*'gif'"):
        pretokenize_corpus(corpus, tmp_path / "t", template, ("broken",), progress=False)


def test_video_documents_fit_the_shipped_context_with_room_to_answer():
    """Corpus v2's clips last as long as their narration; encoded as the shipped model reads
    them, a whole video question and its answer fit the context with room to spare."""
    from omniflex.model.pretrained import read_info

    info = read_info("tiny")
    context = info.model_config.max_seq_len
    template = ChatTemplate.from_shipped(**info.template)
    for i in range(4):
        sample = make_sample("video_qa", "test", i)
        n = len(template.encode(sample.conversation, sample.media))
        assert n <= context - 64, (sample.key, n)


def test_spoken_answers_become_asr_documents_in_train_only(tmp_path: Path, template: ChatTemplate):
    spoken = [make_sample("tts", "train", 0), make_sample("spoken_qa", "train", 1)]
    corpus, out = tmp_path / "corpus", tmp_path / "tokens"
    _write(corpus, "train", spoken)
    _write(corpus, "val", spoken)
    metas = pretokenize_corpus(corpus, out, template, progress=False, splits=("train", "val"),
                               speech_as_asr=True)  # fmt: skip
    train, val = metas["train"], metas["val"]
    assert train["documents"] == 4 and val["documents"] == 2  # validation is never augmented
    assert train["speech_as_asr"] and not val["speech_as_asr"]
    assert train["tasks"] == ["speech_asr", "spoken_qa", "tts"]
    extra = [c for s in spoken for c in speech_as_asr(s.conversation)]
    for conversation, sample in zip(extra, spoken, strict=True):
        audio, instruction = conversation["messages"][0]["content"]
        assert audio["file"] in sample.media  # the answer's own audio, heard as input
        assert instruction["text"] in [TEMPLATES["asr"][i] for i in template_ids("asr", "train")]
        said = next(p for m in sample.conversation["messages"] if m["role"] == "assistant"
                    for p in m["content"] if p["type"] == "audio")  # fmt: skip
        assert conversation["messages"][1]["content"][0]["text"] == said["transcript"]
        encoded = template.encode(conversation, sample.media)
        assert sum(encoded.loss_mask) > 0  # the transcript is what the model learns to write
