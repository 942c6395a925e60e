"""Text tokenizer: byte-level BPE (GPT-2 style) trained with Hugging Face ``tokenizers``.

Id layout, fixed so that every trained tokenizer agrees on the low ids:

* ``0 .. NUM_SPECIAL - 1``: the special tokens of ``omniflex.tokenizers.special``, in registry
  order;
* ``NUM_SPECIAL + b`` for ``b`` in ``0..255``: the byte ``b`` (so any string can be written);
* then one id per learnt merge, in merge order.

User text never yields a special id: ``encode("<|user|>")`` gives the plain text tokens of those
eight characters (the added-token matcher is switched off for encoding), so a typed role marker
cannot forge a turn. Special ids come only from ``special_id``. Byte-level BPE with no normaliser
makes ``decode(encode(s)) == s`` exact for every string that UTF-8 can encode.

On disk: ``tokenizer.json`` (the Hugging Face format, readable by any ``tokenizers`` user) and
``config.json`` (kind, config and training metadata, as for every omniflex tokenizer). The
injection guard is not part of the Hugging Face file format: a plain ``tokenizers`` user of
``tokenizer.json`` must set ``encode_special_tokens = True`` to get the same behaviour.
"""

from __future__ import annotations

import dataclasses
import json
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from omniflex.common.files import write_atomic
from omniflex.tokenizers.base import (
    Tokenizer,
    TokenizerError,
    _config_from_dict,
    _read_config,
    register_tokenizer,
)
from omniflex.tokenizers.special import NUM_SPECIAL, SPECIAL_TOKENS, special_index

__all__ = [
    "TOKENIZER_FILE",
    "TextTokenizer",
    "TextTokenizerConfig",
    "corpus_texts",
    "train_text_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"
NUM_BYTES = 256
_RETRAIN = "retrain it with `omniflex tokenizer train text --out {directory}`"


@dataclass(frozen=True)
class TextTokenizerConfig:
    """How to train the BPE.

    ``vocab_size`` is the most ids in all (specials + 256 bytes + merges); a small corpus may
    stop short of it, and ``TextTokenizer.vocab_size`` is the real count. ``min_frequency`` is the
    fewest occurrences a pair needs to become a merge.
    """

    vocab_size: int = 4096
    min_frequency: int = 2

    def __post_init__(self) -> None:
        minimum = NUM_SPECIAL + NUM_BYTES
        if not _is_int(self.vocab_size) or self.vocab_size < minimum:
            raise ValueError(
                f"TextTokenizerConfig.vocab_size must be an integer >= {minimum} "
                f"({NUM_SPECIAL} special + {NUM_BYTES} byte tokens), got {self.vocab_size!r}"
            )
        if not _is_int(self.min_frequency) or self.min_frequency < 1:
            raise ValueError(
                f"TextTokenizerConfig.min_frequency must be an integer >= 1, "
                f"got {self.min_frequency!r}"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _byte_chars() -> tuple[str, ...]:
    """GPT-2's byte -> printable character table, the alphabet of the ByteLevel pre-tokenizer."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(NUM_BYTES):
        if b not in chars:
            chars[b] = chr(NUM_BYTES + extra)
            extra += 1
    return tuple(chars[b] for b in range(NUM_BYTES))


BYTE_CHARS = _byte_chars()
_CHAR_BYTE = {c: b for b, c in enumerate(BYTE_CHARS)}


def _build_hf(merges: Sequence[tuple[str, str]]) -> HFTokenizer:
    """A Hugging Face tokenizer with omniflex's id layout, from merges in rank order."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({c: NUM_SPECIAL + b for b, c in enumerate(BYTE_CHARS)})
    for left, right in merges:
        merged = left + right
        if merged in SPECIAL_TOKENS:  # cannot happen: the pre-tokenizer splits "<|" from letters
            raise TokenizerError(f"merge {left!r} + {right!r} would spell a special token")
        vocab.setdefault(merged, len(vocab))  # two merges may spell one token: one id
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return hf


def _check_layout(hf: HFTokenizer, source: str, retrain: str) -> None:
    """Raise ``TokenizerError`` unless ``hf`` has the registry's specials and bytes at their ids."""
    added = {i: t.content for i, t in hf.get_added_tokens_decoder().items() if t.special}
    expected = dict(enumerate(SPECIAL_TOKENS))
    if added != expected:
        missing = [t for t in SPECIAL_TOKENS if t not in added.values()]
        extra = sorted(set(added.values()) - set(SPECIAL_TOKENS))
        moved = [t for i, t in expected.items() if added.get(i) not in (None, t)]
        raise TokenizerError(
            f"{source}: special tokens do not match omniflex.tokenizers.special "
            f"(missing {missing[:5]}, unknown {extra[:5]}, at other ids {moved[:5]}); {retrain}"
        )
    for b, c in enumerate(BYTE_CHARS):
        if hf.token_to_id(c) != NUM_SPECIAL + b:
            raise TokenizerError(
                f"{source}: byte {b} is not at id {NUM_SPECIAL + b} as the layout requires; "
                f"{retrain}"
            )
    if not isinstance(hf.pre_tokenizer, pre_tokenizers.ByteLevel) or not isinstance(
        hf.decoder, decoders.ByteLevel
    ):
        raise TokenizerError(f"{source}: not a byte-level BPE tokenizer; {retrain}")


@register_tokenizer("text")
class TextTokenizer(Tokenizer):
    """``str`` <-> ``list[int]`` byte-level BPE with the special tokens at ids ``0..S-1``."""

    def __init__(
        self,
        hf: HFTokenizer,
        config: TextTokenizerConfig | None = None,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        _check_layout(hf, "TextTokenizer", "build it with TextTokenizer.train_from_texts")
        self.config = config or TextTokenizerConfig()
        self.metadata = dict(metadata or {})
        self._hf = hf
        # The injection guard: user text is matched against no added token, special or not.
        self._hf.encode_special_tokens = True
        self._size = hf.get_vocab_size(with_added_tokens=True)
        id_bytes: list[bytes] = [b""] * self._size
        for token, i in hf.get_vocab(with_added_tokens=True).items():
            id_bytes[i] = token.encode() if i < NUM_SPECIAL else bytes(_CHAR_BYTE[c] for c in token)
        self._id_bytes = tuple(id_bytes)

    # ---- the Tokenizer interface ----

    @property
    def cardinality(self) -> int:
        """Ids in all: specials, bytes and merges."""
        return self._size

    def encode(self, media: str) -> list[int]:
        """Text -> ids; never a special id, whatever the text says."""
        return self._hf.encode(_checked_text(media), add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` over many texts at once (in parallel inside ``tokenizers``)."""
        checked = [_checked_text(t) for t in texts]
        return [e.ids for e in self._hf.encode_batch(checked, add_special_tokens=False)]

    def decode(self, codes: Iterable[int]) -> str:
        """Ids -> text; special ids give their ``<|name|>`` string. Raises on unknown ids."""
        return self._hf.decode(self._checked_ids(codes), skip_special_tokens=False)

    def decode_bytes(self, codes: Iterable[int]) -> bytes:
        """Ids -> UTF-8 bytes, for streaming: a chunk may end inside a multi-byte character."""
        return b"".join(self._id_bytes[i] for i in self._checked_ids(codes))

    def _checked_ids(self, codes: Iterable[int]) -> list[int]:
        # tokenizers skips unknown ids silently; an id from another range is a bug upstream.
        ids = [int(i) for i in codes]
        bad = [i for i in ids if not 0 <= i < self._size]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the text vocabulary [0, {self._size})")
        return ids

    def special_id(self, name: str) -> int:
        """Id of a special token by name (``"user"``) or string (``"<|user|>"``)."""
        return special_index(name)

    encode_special = special_id

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    # ---- training and measures ----

    @classmethod
    def train_from_texts(
        cls, texts: Iterable[str], config: TextTokenizerConfig | None = None
    ) -> TextTokenizer:
        """Learn the merges from ``texts`` (any iterable of strings; read once)."""
        config = config or TextTokenizerConfig()
        count = 0

        def counted() -> Iterator[str]:
            nonlocal count
            for text in texts:
                yield _checked_text(text)
                count += 1

        learner = HFTokenizer(models.BPE())
        learner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size - NUM_SPECIAL,  # the learner's vocab: bytes + merges
            min_frequency=config.min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        start = time.perf_counter()
        learner.train_from_iterator(counted(), trainer)
        seconds = time.perf_counter() - start
        if count == 0:
            raise ValueError("TextTokenizer.train_from_texts got no texts to learn from")
        raw = json.loads(learner.to_str())["model"]["merges"]
        # tokenizers >= 0.20 writes merges as pairs; older files wrote "left right" strings.
        merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]
        tok = cls(_build_hf(merges), config)
        tok.metadata = {
            "num_texts": count,
            "train_seconds": round(seconds, 3),
            "num_merges": len(merges),
            "vocab_size": tok.vocab_size,
            "tokenizers_version": tokenizers.__version__,
        }
        return tok

    def compression(self, texts: Iterable[str]) -> dict[str, float]:
        """UTF-8 bytes per token over ``texts`` (higher is better), with the raw counts."""
        batch = list(texts)
        n_bytes = sum(len(t.encode()) for t in batch)
        n_tokens = sum(len(ids) for ids in self.encode_batch(batch))
        return {
            "texts": len(batch),
            "bytes": n_bytes,
            "tokens": n_tokens,
            "bytes_per_token": round(n_bytes / n_tokens, 4) if n_tokens else 0.0,
        }

    # ---- files ----

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``config.json`` into ``directory``; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        text = self._hf.to_str() + "\n"  # compact: half the bytes of pretty JSON
        write_atomic(directory / TOKENIZER_FILE, text.encode())
        self._write_config(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """Read a folder written by ``save``, checking its specials against the registry."""
        directory = Path(directory)
        retrain = _RETRAIN.format(directory=directory)
        config_json = _read_config(directory, cls.kind)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise TokenizerError(f"tokenizer folder {directory} has no {TOKENIZER_FILE}; {retrain}")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on bad files
            raise TokenizerError(
                f"{path} is not a valid tokenizers file ({err}); {retrain}"
            ) from None
        _check_layout(hf, str(path), retrain)
        config = _config_from_dict(TextTokenizerConfig, config_json.get("config", {}), directory)
        return cls(hf, config, metadata=config_json.get("metadata", {}))


def _checked_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text tokenizer encodes str, got {type(text).__name__}")
    try:
        text.encode()
    except UnicodeEncodeError as err:
        raise ValueError(
            f"text is not valid Unicode at position {err.start} ({text[err.start]!r}, a lone "
            "surrogate); it has no UTF-8 bytes to tokenize"
        ) from None
    return text


# ---- the corpus ----

_TEXT_KEYS = ("text", "transcript", "narration")  # what is written, said, or said in a video


def _conversation_texts(conversation: dict[str, Any]) -> Iterator[str]:
    for message in conversation.get("messages", []):
        content = message.get("content", [])
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for part in content:
            if not isinstance(part, dict):
                continue
            for key in _TEXT_KEYS:
                value = part.get(key)
                if isinstance(value, str) and value:
                    yield value


def _split_shards(corpus_dir: Path, split: str) -> list[Path]:
    build = f"`omniflex data build --size tiny --out {corpus_dir}`"
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {corpus_dir} does not exist; build it with {build}")
    shards = sorted(corpus_dir.glob(f"{split}-*.tar"))
    if not shards:
        raise FileNotFoundError(
            f"no '{split}-*.tar' shards in {corpus_dir}; build them with {build}"
        )
    return shards


def corpus_texts(corpus_dir: str | Path, split: str = "train") -> Iterator[str]:
    """Every text of a split's conversations, in shard order: text parts, audio transcripts,
    video narrations, system prompts. Reads only the ``.json`` members (no media bytes)."""
    for shard in _split_shards(Path(corpus_dir), split):
        try:
            with tarfile.open(shard, "r") as tar:
                for member in tar:
                    if not (member.isfile() and member.name.endswith(".json")):
                        continue
                    handle = tar.extractfile(member)
                    if handle is None:
                        continue
                    try:
                        conversation = json.loads(handle.read())
                    except json.JSONDecodeError as err:
                        raise ValueError(
                            f"{member.name} in shard {shard} is not valid JSON ({err.msg})"
                        ) from None
                    yield from _conversation_texts(conversation)
        except (tarfile.TarError, EOFError) as err:
            raise ValueError(f"shard {shard} is corrupt or truncated: {err}") from None


def train_text_tokenizer(
    corpus_dir: str | Path,
    config: TextTokenizerConfig | None = None,
    *,
    out: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> TextTokenizer:
    """Train on the text of a corpus's ``splits`` (all of them by default: every template,
    sentence and answer; the corpus guarantees that held-out prompts use only word pieces its
    training text holds, so no held-out prompt meets a merge its training never showed),
    measure bytes/token on ``val`` and ``train``, save to ``out``."""
    corpus_dir = Path(corpus_dir)
    _split_shards(corpus_dir, "train")  # fail before training, with the build hint
    present = [s for s in splits if any(corpus_dir.glob(f"{s}-*.tar"))]
    texts = (t for split in present for t in corpus_texts(corpus_dir, split))
    tok = TextTokenizer.train_from_texts(texts, config)
    tok.metadata["corpus"] = str(corpus_dir)
    tok.metadata["splits"] = present
    if any(corpus_dir.glob("val-*.tar")):
        tok.metadata["val"] = tok.compression(corpus_texts(corpus_dir, "val"))
    tok.metadata["train"] = tok.compression(corpus_texts(corpus_dir, "train"))
    if out is not None:
        tok.save(out)
    return tok
