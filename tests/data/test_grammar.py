"""The sentence grammar: agreement, splits fixed by the text, and a cover of the lexicon."""

import itertools
import re
from collections import Counter

import numpy as np
import pytest

from omniflex.data import lexicon as lx
from omniflex.data.grammar import (
    covering_sentences,
    grammar_words,
    sample_sentence,
    sentence,
    split_of,
    written,
)


def test_sentences_are_plain_words_of_the_grammar():
    rng = np.random.default_rng(0)
    words = grammar_words()
    for _ in range(2000):
        text = sentence(rng)
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", text), text
        assert set(text.split()) <= words, text
        assert 3 <= len(text.split()) <= 14, text


def test_articles_and_numbers_agree():
    rng = np.random.default_rng(1)
    vowels = 0
    for _ in range(3000):
        words = sentence(rng).split()
        for det, noun in itertools.pairwise(words):
            if det == "an":
                vowels += 1
                assert noun[0] in "aeiouh", " ".join(words)
            if det == "a":
                assert noun[0] not in "aeio" or noun.startswith(("one", "eu")), " ".join(words)
    assert vowels > 0
    singular = {s for s, p in lx.THINGS + lx.FOODS + lx.ANIMALS + lx.PEOPLE if s != p}
    for _ in range(2000):
        words = sentence(rng).split()
        for count, noun in itertools.pairwise(words):
            if count in ("two", "three", "four", "five"):
                assert noun not in singular, " ".join(words)


def test_split_is_a_function_of_the_text_and_sampling_respects_it():
    rng = np.random.default_rng(2)
    splits = Counter(split_of(sentence(rng)) for _ in range(4000))
    assert 0.07 < splits["test"] / 4000 < 0.13 and 0.03 < splits["val"] / 4000 < 0.07
    assert split_of("the old dog slept") == split_of("  The old  dog slept ")
    for split in ("train", "val", "test"):
        for _ in range(50):
            assert split_of(sample_sentence(rng, split)) == split


def test_thousands_of_distinct_sentences():
    rng = np.random.default_rng(3)
    drawn = [sample_sentence(rng, "train") for _ in range(5000)]
    assert len(set(drawn)) > 4800


def test_covering_sentences_use_every_surface_form_and_are_training_sentences():
    cover = covering_sentences()
    used = Counter(w for s in cover for w in s.split())
    forms = lx.all_words()
    assert forms <= set(used), sorted(forms - set(used))[:20]
    assert all(split_of(s) == "train" for s in cover)
    assert len(set(cover)) == len(cover)
    assert len(lx.lemmas()) >= 1500


@pytest.mark.parametrize(
    ("text", "out"),
    [
        ("the old dog slept", "The old dog slept."),
        ("did you find my key", "Did you find my key?"),
        ("i think i found it", "I think I found it."),
    ],
)
def test_written_form(text, out):
    assert written(text) == out
