"""Corpus v2's held-out cases, checked over the text of a whole ``tiny`` corpus (built without
media, which says exactly what the full build says): test sentences, questions and requests never
occur in training; test prompts use only word pieces that training text contains; the speech
tasks' sentences cover the lexicon; safety rows have at least 200 samples per condition."""

import re
from collections import Counter

import pytest

from omniflex.common.voices import INPUT_VOICES, TEST_VOICES
from omniflex.data import lexicon as lx
from omniflex.data.build import iter_conversations, split_count
from omniflex.data.grammar import covering_sentences, split_of
from omniflex.data.tasks import (
    CONDITIONS,
    SAFETY_TASKS,
    SEEN_SENTENCE_POOL,
    number_words,
)

SIZE = "tiny"
# GPT-2's pre-tokenizer (the text BPE's): a word piece carries its leading space and its case,
# so " Type" and "Type" and " type" are three pieces.
_PIECE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+", re.UNICODE)


def pieces(text: str) -> set[str]:
    return set(_PIECE.findall(text))


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[dict]]:
    return {split: list(iter_conversations(SIZE, split)) for split in ("train", "val", "test")}


def token_texts(conv: dict) -> list[str]:
    """Texts that become text tokens: typed parts of both roles and the assistant's speech."""
    out = []
    for m in conv["messages"]:
        for p in m["content"]:
            if p["type"] == "text":
                out.append(p["text"])
            elif p["type"] == "audio" and m["role"] == "assistant":
                out.append(p["transcript"])
    return out


def user_prompts(conv: dict) -> list[str]:
    return [p["text"] for m in conv["messages"] if m["role"] == "user" for p in m["content"]
            if p["type"] == "text"]  # fmt: skip


def spoken(conv: dict, role: str = "user") -> list[str]:
    return [p["transcript"] for m in conv["messages"] if m["role"] == role for p in m["content"]
            if p["type"] == "audio"]  # fmt: skip


def test_test_prompts_hold_no_word_piece_absent_from_training(corpus):
    known = set().union(*(pieces(t) for c in corpus["train"] for t in token_texts(c)))
    for split in ("val", "test"):
        unknown = Counter()
        total = 0
        for conv in corpus[split]:
            for text in user_prompts(conv):
                got = pieces(text)
                total += len(got)
                unknown.update(got - known)
        assert total > 1000
        assert not unknown, f"{split} prompt pieces never in training: {unknown.most_common(10)}"


def test_every_lexicon_word_is_heard_and_read_in_training(corpus):
    heard = {w for c in corpus["train"] if c["task"] == "asr" for t in spoken(c) for w in t.split()}
    read = {w for c in corpus["train"] for t in token_texts(c) for w in re.findall(r"[a-z]+", t)}
    assert lx.all_words() <= heard, sorted(lx.all_words() - heard)[:10]
    assert lx.all_words() <= read, sorted(lx.all_words() - read)[:10]


def test_held_out_sentences_never_occur_in_training(corpus):
    def sentences(convs):
        out = set()
        for c in convs:
            if c.get("sentence_seen") and c["split"] != "train":
                continue  # re-spoken training sentences, checked below
            if c["task"] in ("asr", "speaker_id", "trait_ungrounded", "trait_hedge", "imitate"):
                out.update(t.lower().rstrip(".?") for t in spoken(c)[:1])
            if c["task"] == "tts":
                out.update(t.lower().rstrip(".?") for t in spoken(c, "assistant"))
            for p in c["messages"][0]["content"]:
                if p["type"] == "video":
                    out.add(p["narration"])
        return out

    train = sentences(corpus["train"])
    assert len(train) > 3000  # thousands of distinct training sentences
    for split in ("val", "test"):
        held = sentences(corpus[split])
        assert len(held) > 300
        assert not held & train
        assert all(split_of(s) == split for s in held)
    # ASR test: half re-speak training sentences in held-out voices, half are new
    asr = [c for c in corpus["test"] if c["task"] == "asr"]
    seen = [c for c in asr if c["sentence_seen"]]
    assert 0.4 < len(seen) / len(asr) < 0.6
    asr_train = {spoken(c)[0] for c in corpus["train"] if c["task"] == "asr"}
    assert split_count(SIZE, "asr", "train") >= SEEN_SENTENCE_POOL
    assert all(spoken(c)[0] in asr_train for c in seen)
    assert set(covering_sentences()[:SEEN_SENTENCE_POOL]) <= asr_train


def test_test_questions_are_not_training_questions(corpus):
    def questions(convs):
        out = set()
        for c in convs:
            if c["task"] in ("text_chat", "spoken_qa"):
                text = (user_prompts(c) + spoken(c))[0]
                out.add(text.lower().rstrip("?"))
        return out

    train = questions(corpus["train"])
    for split in ("val", "test"):
        held = questions(corpus[split])
        assert len(held) >= 30 and not held & train, sorted(held & train)[:5]


def test_arithmetic_answers_are_right_including_follow_ups(corpus):
    value = {number_words(n): n for n in range(100)}
    pattern = re.compile(r"^(.+) (plus|minus) (.+) is (.+)\.$")
    checked = 0
    for conv in corpus["train"] + corpus["test"]:
        for m in conv["messages"]:
            for p in m["content"]:
                match = m["role"] == "assistant" and p["type"] == "text"
                match = match and pattern.match(p["text"].lower())
                if match:
                    x, op, y, z = match.groups()
                    want = value[x] + value[y] if op == "plus" else value[x] - value[y]
                    assert value[z] == want, p["text"]
                    checked += 1
    assert checked > 500


def test_conversations_have_several_turns_that_refer_back(corpus):
    convs = [c for c in corpus["train"] if c["task"] == "conversation"]
    turns = Counter(len(c["messages"]) // 2 for c in convs)
    assert set(turns) == {2, 3, 4}
    follow_ups = sum(
        any(p.startswith(("In the picture", "Back to the picture", "What is that"))
            for p in user_prompts(c))
        for c in convs
    )  # fmt: skip
    assert follow_ups > len(convs) / 4
    assert all(c["messages"][-1]["role"] == "assistant" for c in convs)
    modalities = Counter(
        p["type"] for c in convs for m in c["messages"] for p in m["content"] if m["role"] == "user"
    )
    assert {"text", "audio", "image"} <= set(modalities)


def test_safety_rows_have_200_test_samples_per_condition(corpus):
    counts = Counter(
        (c["task"], c["condition"]) for c in corpus["test"] if c["task"] in SAFETY_TASKS
    )
    for task in SAFETY_TASKS:
        for condition in CONDITIONS:
            assert counts[task, condition] >= 200, (task, condition)
    requests = {
        (user_prompts(c) + spoken(c))[-1]
        for c in corpus["test"] if c["task"] in ("disallowed", "benign")
    }  # fmt: skip
    train = {
        (user_prompts(c) + spoken(c))[-1]
        for c in corpus["train"] if c["task"] in ("disallowed", "benign")
    }  # fmt: skip
    assert len(requests) >= 15 and not requests & train


def test_some_test_voices_use_variants_training_never_uses():
    train_variants = {v.espeak.split("+")[1] for v in INPUT_VOICES}
    unseen = [v for v in TEST_VOICES if v.espeak.split("+")[1] not in train_variants]
    assert len(unseen) >= 3
    assert len(INPUT_VOICES) >= 30


def test_drawing_requests_are_brief_in_training_and_fully_described_when_held_out():
    """Half the training drawings are asked for by colour and kind only ("Draw a red circle."),
    as people ask; held-out requests name size and place, which the scene judge scores."""
    from omniflex.data.tasks import make_sample

    def request(split: str, i: int) -> str:
        sample = make_sample("text_to_image", split, i, media=False)
        content = sample.conversation["messages"][0]["content"]
        return content if isinstance(content, str) else content[0]["text"]

    sizes = ("small", "large")
    train = [request("train", i) for i in range(200)]
    brief = [t for t in train if not any(s in t.split() for s in sizes)]
    assert 60 <= len(brief) <= 140, len(brief)
    assert all(" at the " not in t and " on the " not in t and " in the " not in t for t in brief)
    for split in ("val", "test"):
        assert all(any(s in request(split, i).split() for s in sizes) for i in range(60))
