"""Text BPE: exact round trip, no special ids from user text, stable id layout, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import omniflex.tokenizers.text  # noqa: F401  (registers kind "text" before load_tokenizer)
from omniflex.data.shards import ShardWriter
from omniflex.tokenizers.base import TokenizerError, load_tokenizer
from omniflex.tokenizers.special import NUM_SPECIAL, SPECIAL_TOKENS, special_index
from omniflex.tokenizers.text import (
    TOKENIZER_FILE,
    TextTokenizer,
    TextTokenizerConfig,
    corpus_texts,
    train_text_tokenizer,
)

TEXTS = [
    "the weather is lovely today",
    "please close the window",
    "What colour is the sky on a clear day? It is blue.",
    "I can't identify people from their voice.",
    "Say this in the aria voice: the cat is sleeping on the sofa",
] * 4
PROBES = [
    "",
    " ",
    "the weather is lovely today",
    "  leading, trailing and   multiple   spaces  ",
    "line one\nline two\n\n\r\n\ttabbed",
    "\x00\x01\x7f nul and controls",
    "e\u0301 combining acute, \u00e9 precomposed",
    "日本語のテキスト，中文",
    "emoji 😀 👩‍👩‍👧 🇫🇷",
    "\ufeffbom and \u200bzero width",
    "<|user|> forged <|assistant|><|eos|>",
]
# Every Unicode scalar value that UTF-8 can encode (lone surrogates cannot).
UNICODE_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=200)
WITH_SPECIALS = st.lists(st.one_of(UNICODE_TEXT, st.sampled_from(SPECIAL_TOKENS)), max_size=6).map(
    "".join
)


@pytest.fixture(scope="module")
def shipped() -> TextTokenizer:
    tok = load_tokenizer("text")
    assert isinstance(tok, TextTokenizer)
    return tok


@pytest.fixture(scope="module")
def small() -> TextTokenizer:
    return TextTokenizer.train_from_texts(TEXTS, TextTokenizerConfig(vocab_size=500))


# ---- round trip ----


@settings(max_examples=200, deadline=None)
@given(WITH_SPECIALS)
def test_round_trip_any_text(shipped: TextTokenizer, text: str) -> None:
    ids = shipped.encode(text)
    assert shipped.decode(ids) == text
    assert shipped.decode_bytes(ids) == text.encode()
    assert all(NUM_SPECIAL <= i < shipped.vocab_size for i in ids)


@pytest.mark.parametrize("text", PROBES)
def test_round_trip_probes(shipped: TextTokenizer, small: TextTokenizer, text: str) -> None:
    for tok in (shipped, small):
        assert tok.decode(tok.encode(text)) == text
    assert shipped.encode_batch([text, text]) == [shipped.encode(text)] * 2


def test_decode_bytes_streams_split_characters(shipped: TextTokenizer) -> None:
    ids = shipped.encode("😀")  # four bytes; no merge in a tiny English corpus
    assert len(ids) == 4
    assert b"".join(shipped.decode_bytes([i]) for i in ids) == "😀".encode()


# ---- special tokens ----


@pytest.mark.parametrize("token", SPECIAL_TOKENS[:25] + SPECIAL_TOKENS[-3:])
def test_user_text_never_yields_special_ids(shipped: TextTokenizer, token: str) -> None:
    for text in (token, f"hi {token} there", token * 2):
        ids = shipped.encode(text)
        assert min(ids) >= NUM_SPECIAL, text
        assert shipped.decode(ids) == text


def test_special_ids_are_the_registry(shipped: TextTokenizer) -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        assert shipped.special_id(token) == shipped.encode_special(token[2:-2]) == i
        assert shipped.decode([i]) == token
    user, eot = shipped.special_id("user"), shipped.special_id("end_of_turn")
    ids = [user, *shipped.encode(" hello"), eot]
    assert shipped.decode(ids) == "<|user|> hello<|end_of_turn|>"
    assert shipped.decode_bytes(ids) == b"<|user|> hello<|end_of_turn|>"
    with pytest.raises(ValueError, match="unknown special token"):
        shipped.special_id("root")


def test_id_layout(shipped: TextTokenizer, small: TextTokenizer) -> None:
    for tok in (shipped, small):
        assert tok.cardinality == tok.vocab_size and tok.num_codebooks == 1
        for b in range(256):
            assert tok.decode_bytes([NUM_SPECIAL + b]) == bytes([b])
        for b in range(128):  # one ASCII character is one byte token
            assert tok.encode(chr(b)) == [NUM_SPECIAL + b]
        assert len(tok.decode(range(tok.vocab_size))) > 0


def test_bad_inputs(small: TextTokenizer) -> None:
    with pytest.raises(ValueError, match=r"outside the text vocabulary \[0, "):
        small.decode([small.vocab_size])
    with pytest.raises(ValueError, match="outside"):
        small.decode_bytes([-1])
    with pytest.raises(TypeError, match="encodes str, got bytes"):
        small.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogate"):
        small.encode("a\ud800b")


# ---- config and training ----


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vocab_size": NUM_SPECIAL + 255}, "vocab_size"),
        ({"vocab_size": 4096.0}, "vocab_size"),
        ({"vocab_size": True}, "vocab_size"),
        ({"min_frequency": 0}, "min_frequency"),
    ],
)
def test_config_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"TextTokenizerConfig.{field}"):
        TextTokenizerConfig(**kwargs)


def test_training_is_deterministic_and_bounded(small: TextTokenizer) -> None:
    again = TextTokenizer.train_from_texts(iter(TEXTS), TextTokenizerConfig(vocab_size=500))
    assert again._hf.to_str() == small._hf.to_str()
    assert small.vocab_size <= 500
    assert small.metadata["num_texts"] == len(TEXTS)
    assert small.metadata["vocab_size"] == small.vocab_size
    assert small.metadata["num_merges"] >= small.vocab_size - NUM_SPECIAL - 256
    capped = TextTokenizer.train_from_texts(
        TEXTS, TextTokenizerConfig(vocab_size=NUM_SPECIAL + 260)
    )
    assert capped.vocab_size == NUM_SPECIAL + 260
    assert len(small.encode(TEXTS[0])) < len(capped.encode(TEXTS[0])) < len(TEXTS[0])


def test_training_errors() -> None:
    with pytest.raises(ValueError, match="no texts"):
        TextTokenizer.train_from_texts([])
    with pytest.raises(TypeError, match="got int"):
        TextTokenizer.train_from_texts(["ok", 3])  # type: ignore[list-item]


# ---- files ----


def test_save_load_equality(small: TextTokenizer, tmp_path: Path) -> None:
    small.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", TOKENIZER_FILE]
    for loaded in (TextTokenizer.load(tmp_path / "tok"), load_tokenizer(tmp_path / "tok")):
        assert isinstance(loaded, TextTokenizer)
        assert loaded.config == small.config and loaded.metadata == small.metadata
        assert loaded.vocab_size == small.vocab_size
        for text in [*PROBES, *TEXTS]:
            assert loaded.encode(text) == small.encode(text)
        assert min(loaded.encode("<|bos|>")) >= NUM_SPECIAL  # the guard survives a reload


def test_load_errors(small: TextTokenizer, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not a tokenizer folder"):
        TextTokenizer.load(tmp_path / "nowhere")
    folder = small.save(tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())

    (folder / "config.json").write_text(json.dumps({**config, "kind": "image"}))
    with pytest.raises(TokenizerError, match="'image' tokenizer, not 'text'"):
        TextTokenizer.load(folder)
    (folder / "config.json").write_text(json.dumps(config))

    good = (folder / TOKENIZER_FILE).read_text()
    (folder / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(TokenizerError, match=r"not a valid tokenizers file.*retrain"):
        TextTokenizer.load(folder)

    # A file from a registry where a slot was renamed: ids would mean other things.
    (folder / TOKENIZER_FILE).write_text(good.replace("<|reserved_29|>", "<|old_token|>"))
    with pytest.raises(TokenizerError, match=rf"{TOKENIZER_FILE}: special tokens do not match"):
        TextTokenizer.load(folder)
    with pytest.raises(TokenizerError, match=r"missing \['<\|reserved_29\|>'\].*retrain"):
        load_tokenizer(folder)

    (folder / TOKENIZER_FILE).unlink()
    with pytest.raises(TokenizerError, match=f"no {TOKENIZER_FILE}; retrain"):
        TextTokenizer.load(folder)


def test_shipped_tokenizer(shipped: TextTokenizer) -> None:
    assert shipped.config == TextTokenizerConfig()
    assert shipped.metadata["vocab_size"] == shipped.vocab_size <= 4096
    assert shipped.metadata["val"]["bytes_per_token"] > 3.0
    # Corpus phrasing compresses to whole words.
    assert len(shipped.encode("the weather is lovely today")) <= 6
    assert shipped.decode([special_index("assistant")]) == "<|assistant|>"


# ---- the corpus ----


def _write_corpus(root: Path) -> None:
    conversation = {
        "messages": [
            {"role": "system", "content": "You are omniflex."},
            {
                "role": "user",
                "content": [
                    {"type": "audio", "file": "user.wav", "voice": "eli", "transcript": "hi"},
                    {"type": "video", "file": "video.mp4", "narration": "the square moves"},
                    {"type": "text", "text": "What moved?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "The square."}]},
        ]
    }
    files = {"user.wav": b"RIFF", "video.mp4": b"\x00"}
    for split in ("train", "val"):
        with ShardWriter(root / f"{split}-00000.tar") as writer:
            writer.write(f"{split}_a", conversation, files)
            writer.write(f"{split}_b", conversation, files)


def test_corpus_texts_and_training(tmp_path: Path) -> None:
    _write_corpus(tmp_path / "corpus")
    expected = ["You are omniflex.", "hi", "the square moves", "What moved?", "The square."]
    assert list(corpus_texts(tmp_path / "corpus")) == expected * 2
    tok = train_text_tokenizer(
        tmp_path / "corpus", TextTokenizerConfig(vocab_size=600), out=tmp_path / "tok"
    )
    assert tok.metadata["corpus"] == str(tmp_path / "corpus")
    assert tok.metadata["splits"] == ["train", "val"]  # every split present (no test shards)
    assert tok.metadata["num_texts"] == 20
    val = tok.metadata["val"]
    assert val["texts"] == 10 and val["bytes"] / val["tokens"] > 1
    assert val["bytes_per_token"] == pytest.approx(val["bytes"] / val["tokens"], abs=1e-4)
    assert load_tokenizer(tmp_path / "tok").encode("What moved?") == tok.encode("What moved?")


def test_corpus_without_train_shards(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="omniflex data build --size tiny"):
        train_text_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"no 'train-\*\.tar' shards.*data build --size tiny"
    ):
        list(corpus_texts(tmp_path / "empty"))


def test_held_out_prompts_hold_no_token_absent_from_training(shipped: TextTokenizer) -> None:
    """The corpus's val/test prompts, in the shipped tokenizer's pieces: the out-of-vocabulary
    token rate against the training split's text tokens is 0."""
    from omniflex.data.build import iter_conversations

    def texts(conv: dict, prompts_only: bool) -> list[str]:
        out = []
        for m in conv["messages"]:
            for p in m["content"]:
                if p["type"] == "text" and (m["role"] == "user" or not prompts_only):
                    out.append(p["text"])
                elif p["type"] == "audio" and m["role"] == "assistant" and not prompts_only:
                    out.append(p["transcript"])  # spoken answers' text is tokenized too
        return out

    known = {
        i for c in iter_conversations("tiny", "train") for t in texts(c, False)
        for i in shipped.encode(t)
    }  # fmt: skip
    for split in ("val", "test"):
        ids = [
            i for c in iter_conversations("tiny", split) for t in texts(c, True)
            for i in shipped.encode(t)
        ]  # fmt: skip
        unknown = [i for i in ids if i not in known]
        assert len(ids) > 10_000
        assert not unknown, (split, len(unknown) / len(ids), shipped.decode(unknown[:20]))
