"""The corpus lexicon: enough words, all common, plain and in exactly one part of speech."""

import re
from collections import defaultdict

import pytest
from wordfreq import zipf_frequency

from omniflex.data import lexicon as lx

NOUNS = {
    "PEOPLE": lx.PEOPLE,
    "ANIMALS": lx.ANIMALS,
    "THINGS": lx.THINGS,
    "FOODS": lx.FOODS,
    "PLACES": lx.PLACES,
}
VERBS = {"TRANSITIVE_VERBS": lx.TRANSITIVE_VERBS, "INTRANSITIVE_VERBS": lx.INTRANSITIVE_VERBS}
WORDS = {"ADJECTIVES": lx.ADJECTIVES, "ADVERBS": lx.ADVERBS}
MIN_SIZES = {
    "PEOPLE": 90,
    "ANIMALS": 50,
    "THINGS": 330,
    "FOODS": 60,
    "PLACES": 110,
    "ADJECTIVES": 230,
    "TRANSITIVE_VERBS": 170,
    "INTRANSITIVE_VERBS": 70,
    "ADVERBS": 70,
}
MIN_ZIPF = 3.0  # about once in a million words of English
# Nouns whose plural is their singular: a few animals, and the mass nouns among the foods.
INVARIANT_NOUNS = frozenset({
    "bison", "deer", "fish", "goldfish", "jellyfish", "moose", "reindeer", "sheep", "squid",
    "trout",
    "bacon", "beef", "bread", "broccoli", "broth", "butter", "celery", "cheese", "chicken",
    "cinnamon", "cocoa", "cod", "coffee", "corn", "cream", "curry", "custard", "flour", "garlic",
    "ginger", "gravy", "ham", "honey", "jam", "jelly", "juice", "ketchup", "lemonade", "lettuce",
    "meat", "milk", "mustard", "oatmeal", "parsley", "pasta", "popcorn", "pork", "porridge",
    "pudding", "rice", "salmon", "salt", "soda", "soup", "spaghetti", "spinach", "stew", "sugar",
    "sushi", "syrup", "tea", "toast", "tofu", "tuna", "vinegar", "water", "yoghurt",
})  # fmt: skip
PAST_SAME_AS_BASE = frozenset({"burst", "cut", "shut", "split", "spread"})
# The American spellings of words the corpus spells the British way.
AMERICAN = frozenset({
    "airplane", "canceled", "catalog", "center", "color", "colorful", "cozy", "favorite", "gray",
    "harbor", "jewelry", "license", "marvelous", "mom", "neighbor", "neighborhood", "organize",
    "recognize", "recognized", "recognizes", "skillful", "theater", "tire", "traveled",
    "traveler", "yogurt",
})  # fmt: skip


def _lemmas_by_list() -> dict[str, list[str]]:
    out = {name: [s for s, _ in nouns] for name, nouns in NOUNS.items()}
    out |= {name: [forms[0] for forms in verbs] for name, verbs in VERBS.items()}
    return out | {name: list(words) for name, words in WORDS.items()}


def _forms_by_list() -> dict[str, set[str]]:
    out = {name: {w for pair in nouns for w in pair} for name, nouns in NOUNS.items()}
    out |= {name: {w for forms in verbs for w in forms} for name, verbs in VERBS.items()}
    return out | {name: set(words) for name, words in WORDS.items()}


@pytest.mark.parametrize("name", sorted(MIN_SIZES))
def test_each_list_has_its_minimum_size(name):
    size = len(getattr(lx, name))
    need = MIN_SIZES[name]
    assert size >= need, f"{name} has {size} entries; the grammar needs at least {need}"


def test_lemmas_and_all_words_cover_every_list():
    by_list = _lemmas_by_list()
    assert lx.lemmas() == {w for words in by_list.values() for w in words}
    assert lx.all_words() == {w for forms in _forms_by_list().values() for w in forms}
    assert len(lx.lemmas()) >= 1500, f"only {len(lx.lemmas())} distinct lemmas"
    assert len(lx.lemmas()) == sum(len(words) for words in by_list.values())


def test_entries_have_the_documented_shape():
    for name, nouns in NOUNS.items():
        assert all(isinstance(n, tuple) and len(n) == 2 for n in nouns), name
    for name, verbs in VERBS.items():
        assert all(isinstance(v, tuple) and len(v) == 3 for v in verbs), name
    for name, words in WORDS.items():
        assert all(isinstance(w, str) for w in words), name


def test_words_are_plain_lower_case_letters():
    bad = sorted(w for w in lx.all_words() if not re.fullmatch(r"[a-z]+", w))
    assert not bad, f"words espeak-ng and the tokenizer should not see: {bad}"


@pytest.mark.parametrize("name", sorted(MIN_SIZES))
def test_lists_are_sorted_without_duplicates(name):
    words = _lemmas_by_list()[name]
    duplicates = sorted({w for w in words if words.count(w) > 1})
    assert not duplicates, f"{name} lists {duplicates} more than once"
    assert words == sorted(words), f"{name} is not in alphabetical order"


def test_no_word_is_in_two_lists():
    # lemmas first (the rule the grammar relies on), then every form ("saw" of "see" and a saw)
    for lists in (_lemmas_by_list(), _forms_by_list()):
        owners: dict[str, set[str]] = defaultdict(set)
        for name, words in lists.items():
            for w in words:
                owners[w].add(name)
        shared = {w: sorted(names) for w, names in sorted(owners.items()) if len(names) > 1}
        assert not shared, f"words in more than one part of speech: {shared}"


def test_every_form_is_common_english():
    rare = {w: zipf_frequency(w, "en") for w in sorted(lx.all_words())}
    rare = {w: z for w, z in rare.items() if z < MIN_ZIPF}
    assert not rare, f"forms with a wordfreq Zipf frequency under {MIN_ZIPF}: {rare}"


def test_plurals_differ_from_singulars_except_invariant_nouns():
    same = {s for nouns in NOUNS.values() for s, p in nouns if s == p}
    assert same == INVARIANT_NOUNS, (
        f"plural equals singular but not listed as invariant: {sorted(same - INVARIANT_NOUNS)}; "
        f"listed as invariant but with another plural: {sorted(INVARIANT_NOUNS - same)}"
    )


def test_verb_forms_look_like_their_tense():
    verbs = [v for group in VERBS.values() for v in group]
    bad_third = [v for v in verbs if not v[1].endswith("s") or v[1] == v[0]]
    assert not bad_third, f"third person forms that are not base + s/es/ies: {bad_third}"
    bad_past = [v for v in verbs if (v[2] == v[0]) != (v[0] in PAST_SAME_AS_BASE)]
    assert not bad_past, f"past forms equal to the base, or not where expected: {bad_past}"


def test_spelling_is_british():
    assert not sorted(lx.all_words() & AMERICAN)
    assert {"colour", "centre", "favourite", "neighbour", "theatre", "tyre"} <= lx.all_words()
