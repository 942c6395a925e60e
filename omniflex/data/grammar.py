"""Sentences from a small generative grammar over the corpus lexicon (``omniflex.data.lexicon``).

Speech tasks (ASR, TTS, spoken turns, video narration, ``imitate``) draw their sentences here, so
the corpus holds thousands of distinct sentences instead of a fixed list, and the evaluation can
ask about sentences the model never saw, made of words it knows:

* ``sample_sentence(rng, split)`` draws a sentence of ``split``. A sentence's split is a pure
  function of its text (``split_of``: a CRC-32 of the words), so no test sentence can occur in
  training, whichever task or seed produced it.
* ``covering_sentences()`` is a fixed list of training sentences in which every surface form of
  the lexicon occurs at least once; the corpus puts them first in its speech tasks, so every word
  that a held-out sentence uses has been heard and read in training.

Sentences are lower case without final punctuation (the form a transcript is compared in);
``written`` gives the written form ("The old teacher found a cup." / "Did you see it?").

The grammar is a dozen clause patterns (statements, requests, questions) over determiners,
adjectives, nouns of five kinds, verbs in three forms, places and adverbs; agreement (a/an,
singular/plural, tense) is kept, meaning only loosely: "the quiet baker painted two green boxes
near the station".
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from omniflex.data import lexicon as lx
from omniflex.data.templates import Split

__all__ = [
    "FUNCTION_WORDS",
    "Split",
    "covering_sentences",
    "grammar_words",
    "sample_sentence",
    "sentence",
    "split_of",
    "written",
]

_COUNTS = ("two", "three", "four", "five")
_PRONOUNS_PLURAL = ("we", "they", "you", "i")  # take the base form of a verb
_PRONOUNS_SINGULAR = ("he", "she")  # take the third person
_PREPOSITIONS = ("in", "near", "behind", "at", "beside")
_SING_DETS = ("the", "a", "my", "your", "our", "this", "that", "their")
_PLUR_DETS = ("the", "my", "your", "our", "these", "those", "some", "their", *_COUNTS)
_QUESTION_STARTS = ("did", "can", "could", "will")
FUNCTION_WORDS = frozenset({
    *_COUNTS, *_PRONOUNS_PLURAL, *_PRONOUNS_SINGULAR, *_PREPOSITIONS, *_SING_DETS, *_PLUR_DETS,
    "an", "and", "please", "there", "is", "are", "was", "were", "will", "did", "can", "could",
    "think", "hope",
})  # fmt: skip

# (category, word list, form index) -> the surface forms a slot may take
_NOUN_LISTS = {
    "person": lx.PEOPLE,
    "animal": lx.ANIMALS,
    "thing": lx.THINGS,
    "food": lx.FOODS,
    "place": lx.PLACES,
}


def _article(word: str) -> str:
    # "an" before a vowel sound; the few written-vowel words that start with a "y" sound take "a"
    if word.startswith(("uni", "use", "usu", "eu", "one", "uk")):
        return "a"
    if word.startswith(("hour", "honest", "honour", "heir")):
        return "an"
    return "an" if word[0] in "aeiou" else "a"


class _Chooser:
    """Picks words for slots: uniformly at random, or, while covering, the next unused form of
    the slot's category first."""

    def __init__(self, rng: np.random.Generator, pending: dict[str, list[str]] | None = None):
        self.rng = rng
        self.pending = pending
        self.taken: list[tuple[str, str]] = []

    def choice(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def word(self, category: str) -> str:
        if self.left(category):
            w = self.pending[category].pop()  # type: ignore[index]
            self.taken.append((category, w))
            return w
        return self.choice(_forms()[category])

    # While covering, each choice below leans to what still has unused forms; otherwise it is
    # the plain random choice (the same draws, so covering never changes ordinary sentences).
    def left(self, category: str) -> bool:
        return self.pending is not None and bool(self.pending.get(category))

    def include(self, category: str, p: float) -> bool:
        """Whether an optional slot of ``category`` is filled."""
        return self.left(category) or self.chance(p)

    def kind(self, options: Sequence[str]) -> str:
        live = [k for k in options if self.left(f"{k}_singular") or self.left(f"{k}_plural")]
        return self.choice(live or options)

    def number(self, kind: str, p: float = 0.35) -> bool:
        """Plural or not."""
        singular, plural = self.left(f"{kind}_singular"), self.left(f"{kind}_plural")
        return plural if singular != plural else self.chance(p)

    def form(self, options: Sequence[str], prefix: str) -> str:
        live = [f for f in options if self.left(f"{prefix}_{f}")]
        return self.choice(live or options)

    # ---- phrases
    def noun_phrase(self, kind: str, plural: bool | None = None, adjective: float = 0.5) -> str:
        if plural is None:
            plural = self.number(kind)
        noun = self.word(f"{kind}_{'plural' if plural else 'singular'}")
        words = [self.word("adjective")] if self.include("adjective", adjective) else []
        words.append(noun)
        det = self.choice(_PLUR_DETS if plural else _SING_DETS)
        if det == "a":
            det = _article(words[0])
        return " ".join([det, *words])

    def place(self) -> str:
        adj = f"{self.word('adjective')} " if self.include("adjective", 0.2) else ""
        return f"{self.choice(_PREPOSITIONS)} the {adj}{self.word('place_singular')}"

    def object(self) -> str:
        return self.noun_phrase(self.kind(("thing", "thing", "thing", "food", "animal")))

    def subject(self, plural: bool | None = None) -> str:
        return self.noun_phrase(self.kind(("person", "person", "animal")), plural, 0.3)

    def adverb(self, p: float = 0.4) -> str:
        return f" {self.word('adverb')}" if self.include("adverb", p) else ""


def _past_statement(c: _Chooser) -> str:
    subj = c.subject() if c.chance(0.7) else c.choice(_PRONOUNS_PLURAL + _PRONOUNS_SINGULAR)
    tail = f" {c.place()}" if c.include("place_singular", 0.3) else c.adverb()
    return f"{subj} {c.word('tverb_past')} {c.object()}{tail}"


def _future_statement(c: _Chooser) -> str:
    subj = c.subject() if c.chance(0.6) else c.choice(_PRONOUNS_PLURAL + _PRONOUNS_SINGULAR)
    tail = f" {c.place()}" if c.chance(0.4) else c.adverb()
    return f"{subj} will {c.word('tverb_base')} {c.object()}{tail}"


def _present_statement(c: _Chooser) -> str:
    if c.chance(0.5):
        subj, verb = c.subject(plural=False), c.word("tverb_third")
    else:
        subj, verb = c.subject(plural=True), c.word("tverb_base")
    tail = f" {c.place()}" if c.chance(0.5) else ""
    return f"{subj} {verb} {c.object()}{tail}"


def _intransitive(c: _Chooser) -> str:
    form = c.form(("past", "past", "third", "base"), "iverb")
    if form == "third":
        subj = c.subject(plural=False)
    elif form == "base":
        subj = f"{c.subject(plural=True)} will"
    else:
        subj = c.subject()
    tail = f" {c.place()}" if c.chance(0.6) else c.adverb(0.8)
    return f"{subj} {c.word(f'iverb_{form}')}{tail}"


def _request(c: _Chooser) -> str:
    start = c.choice(("please ", "can you ", "could you "))
    tail = f" {c.place()}" if c.chance(0.3) else c.adverb(0.3)
    return f"{start}{c.word('tverb_base')} {c.object()}{tail}"


def _question(c: _Chooser) -> str:
    tail = c.adverb(0.5)
    if c.chance(0.5):
        return f"did {c.subject()} {c.word('tverb_base')} {c.object()}{tail}"
    return f"will {c.subject()} {c.word('iverb_base')}{tail or ' ' + c.place()}"


def _there_is(c: _Chooser) -> str:
    kind = c.kind(("thing", "thing", "food", "animal", "person"))
    plural = c.number(kind, 0.4)
    phrase = c.noun_phrase(kind, plural, 0.6)
    if phrase.split()[0] in ("the", "my", "your", "our", "this", "that", "these", "those", "their"):
        phrase = " ".join(phrase.split()[1:])
        phrase = f"{_article(phrase)} {phrase}" if not plural else f"some {phrase}"
    verb = c.choice(("are", "were")) if plural else c.choice(("is", "was"))
    return f"there {verb} {phrase} {c.place()}"


def _description(c: _Chooser) -> str:
    kind = c.kind(("thing", "thing", "food", "place", "animal"))
    plural = c.number(kind)
    phrase = c.noun_phrase(kind, plural, 0.0)
    verb = c.choice(("are", "were")) if plural else c.choice(("is", "was"))
    adjectives = c.word("adjective")
    if c.include("adjective", 0.3):
        adjectives += f" and {c.word('adjective')}"
    return f"{phrase} {verb} {adjectives}{c.adverb(0.2)}"


def _pair(c: _Chooser) -> str:
    first = c.subject(plural=False)
    second = c.subject(plural=False)
    tail = f" {c.place()}" if c.chance(0.5) else c.adverb(0.6)
    return f"{first} and {second} {c.word('iverb_past')}{tail}"


def _belief(c: _Chooser) -> str:
    who = c.choice(("i think", "we think", "they think", "i hope"))
    return f"{who} {_past_statement(c) if c.chance(0.5) else _intransitive(c)}"


_PATTERNS: tuple[Callable[[_Chooser], str], ...] = (
    _past_statement,
    _past_statement,
    _future_statement,
    _present_statement,
    _intransitive,
    _intransitive,
    _request,
    _question,
    _there_is,
    _description,
    _pair,
    _belief,
)


# category -> a pattern whose slots include it (nouns: ``_past_statement``, with two of them)
_FEATURING: dict[str, Callable[[_Chooser], str]] = {
    "tverb_past": _past_statement,
    "tverb_base": _request,
    "tverb_third": _present_statement,
    "iverb_past": _pair,
    "iverb_third": _intransitive,
    "iverb_base": _intransitive,
    "place_plural": _description,
    "adjective": _description,
    "adverb": _pair,
    "place_singular": _there_is,
}


@functools.cache
def _forms() -> dict[str, tuple[str, ...]]:
    forms: dict[str, tuple[str, ...]] = {}
    for kind, nouns in _NOUN_LISTS.items():
        forms[f"{kind}_singular"] = tuple(s for s, _ in nouns)
        forms[f"{kind}_plural"] = tuple(p for _, p in nouns)
    for name, verbs in (("tverb", lx.TRANSITIVE_VERBS), ("iverb", lx.INTRANSITIVE_VERBS)):
        for i, form in enumerate(("base", "third", "past")):
            forms[f"{name}_{form}"] = tuple(v[i] for v in verbs)
    forms["adjective"] = tuple(lx.ADJECTIVES)
    forms["adverb"] = tuple(lx.ADVERBS)
    return forms


def grammar_words() -> frozenset[str]:
    """Every word a grammar sentence can contain."""
    return frozenset(w for seq in _forms().values() for w in seq) | FUNCTION_WORDS


def split_of(text: str) -> Split:
    """The split a sentence belongs to, from its words alone: 10% test, 5% validation."""
    bucket = zlib.crc32(" ".join(text.lower().split()).encode()) % 20
    return "test" if bucket < 2 else "val" if bucket == 2 else "train"


def sentence(rng: np.random.Generator) -> str:
    """One sentence of any split."""
    c = _Chooser(rng)
    return _PATTERNS[int(rng.integers(len(_PATTERNS)))](c)


def sample_sentence(rng: np.random.Generator, split: Split) -> str:
    """A sentence of ``split`` (drawn until one falls in it; a test draw takes ~10 tries)."""
    while True:
        text = sentence(rng)
        if split_of(text) == split:
            return text


@functools.cache
def covering_sentences(seed: int = 0) -> tuple[str, ...]:
    """Training sentences that, together, use every surface form of the lexicon."""
    rng = np.random.default_rng([seed, 0xC0FE])
    pending = {k: list(rng.permutation(v)) for k, v in _forms().items()}
    out: list[str] = []
    while any(pending.values()):
        c = _Chooser(rng, pending)
        # the pattern that features the category with the most unused forms
        most = max(pending, key=lambda k: len(pending[k]))
        text = _FEATURING.get(most, _past_statement)(c)
        if split_of(text) != "train" or text in out:
            for category, word in c.taken:  # give the words back; draw again
                pending[category].append(word)
            continue
        out.append(text)
    return tuple(out)


def written(text: str) -> str:
    """The written form: a capital first letter and a full stop, or a question mark."""
    text = re.sub(r"\bi\b", "I", " ".join(text.split()))
    end = "?" if text.split()[0] in _QUESTION_STARTS else "."
    return f"{text[0].upper()}{text[1:]}{end}"
