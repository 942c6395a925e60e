"""The special-token registry: frozen order, lookups, time markers, preset voices."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniflex.common.voices import HELD_OUT_VOICES, INPUT_VOICES, PRESET_VOICES
from omniflex.tokenizers import special
from omniflex.tokenizers.special import (
    NUM_RESERVED,
    NUM_SPECIAL,
    PRESET_VOICE_NAMES,
    SPECIAL_TOKENS,
    TIME_CAP_SECONDS,
    TIME_TOKENS,
    is_special,
    special_index,
    special_name,
    special_token,
    time_token,
    token_time,
    voice_token,
)
from tests.imports import imported_modules

# Ids are baked into every trained tokenizer and checkpoint: a change here shifts them all.
# To add a token, rename the first <|reserved_N|> slot instead (and update these goldens).
GOLDEN_FIRST = [
    "<|pad|>",
    "<|bos|>",
    "<|eos|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end_of_turn|>",
    "<|text|>",
    "<|/text|>",
    "<|audio|>",
    "<|/audio|>",
    "<|image|>",
    "<|/image|>",
    "<|video|>",
    "<|/video|>",
    "<|voice:aria|>",
    "<|voice:bram|>",
    "<|voice:cleo|>",
    "<|voice:dax|>",
    "<|interrupt|>",
    "<|silence|>",
]
GOLDEN_COUNT = 174
GOLDEN_SHA256 = "64eb0ce96989e37d72dde529c4c1f2ef0bf5370664d8474153ca4ae68cd4b45f"


def test_registry_is_frozen_golden() -> None:
    assert list(SPECIAL_TOKENS[: len(GOLDEN_FIRST)]) == GOLDEN_FIRST
    assert NUM_SPECIAL == len(SPECIAL_TOKENS) == GOLDEN_COUNT
    digest = hashlib.sha256("\n".join(SPECIAL_TOKENS).encode()).hexdigest()
    assert digest == GOLDEN_SHA256, "special token order changed: every id after it shifts"
    assert isinstance(SPECIAL_TOKENS, tuple)


def test_registry_is_unique_and_well_formed() -> None:
    assert len(set(SPECIAL_TOKENS)) == NUM_SPECIAL
    for token in SPECIAL_TOKENS:
        assert token.startswith("<|") and token.endswith("|>"), token
        assert token.isascii() and " " not in token, token


def test_blocks_are_contiguous() -> None:
    start = SPECIAL_TOKENS.index("<|t:0.0|>")
    assert SPECIAL_TOKENS[start : start + len(TIME_TOKENS)] == TIME_TOKENS
    assert len(TIME_TOKENS) == 121 and TIME_TOKENS[-1] == "<|t:60.0|>"
    reserved = SPECIAL_TOKENS[-NUM_RESERVED:]
    assert reserved == tuple(f"<|reserved_{i}|>" for i in range(NUM_RESERVED))
    # the input placeholders took the first two reserved slots: no id after them moved
    assert SPECIAL_TOKENS[start + len(TIME_TOKENS) :][:2] == (special.MEL, special.PATCH)
    assert start + len(TIME_TOKENS) + 2 == NUM_SPECIAL - NUM_RESERVED


def test_lookups_round_trip() -> None:
    for i, token in enumerate(SPECIAL_TOKENS):
        name = token[2:-2]
        assert special_index(token) == special_index(name) == i
        assert special_token(name) == token
        assert special_name(i) == token
        assert is_special(token)
    assert special_index("user") == 4
    assert not is_special("<|user|> ") and not is_special("user")


def test_lookup_errors() -> None:
    with pytest.raises(ValueError, match="unknown special token 'usr'"):
        special_index("usr")
    with pytest.raises(ValueError, match="reserved_N"):
        special_token("<|nope|>")
    with pytest.raises(IndexError, match="outside"):
        special_name(NUM_SPECIAL)
    with pytest.raises(IndexError):
        special_name(-1)


@pytest.mark.parametrize(
    ("seconds", "token"),
    [
        (0, "<|t:0.0|>"),
        (0.0, "<|t:0.0|>"),
        (0.49, "<|t:0.0|>"),
        (0.5, "<|t:0.5|>"),
        (1.4999999999999998, "<|t:1.5|>"),  # i / fps a hair under the grid point
        (1.49, "<|t:1.0|>"),
        (59.99, "<|t:59.5|>"),
        (60, "<|t:60.0|>"),
    ],
)
def test_time_token_rounds_down(seconds: float, token: str) -> None:
    assert time_token(seconds) == token


@pytest.mark.parametrize("seconds", [-0.1, -1e-6, 60.01, 61, 1e9, math.nan, math.inf, -math.inf])
def test_time_token_rejects_outside_grid(seconds: float) -> None:
    with pytest.raises(ValueError, match="time"):
        time_token(seconds)


def test_time_token_error_names_the_cap() -> None:
    with pytest.raises(ValueError, match="60 s cap"):
        time_token(TIME_CAP_SECONDS + 0.5)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.0, max_value=TIME_CAP_SECONDS))
def test_time_token_is_floor_to_grid(seconds: float) -> None:
    marked = token_time(time_token(seconds))
    assert marked <= seconds + 1e-9 < marked + 0.5


def test_token_time_inverts_every_marker() -> None:
    for k, token in enumerate(TIME_TOKENS):
        assert token_time(token) == k * 0.5
        assert time_token(k * 0.5) == token
    with pytest.raises(ValueError, match="not a time marker"):
        token_time("<|user|>")


def test_every_preset_voice_has_a_token() -> None:
    assert tuple(v.name for v in PRESET_VOICES) == PRESET_VOICE_NAMES
    for name in PRESET_VOICE_NAMES:
        assert is_special(voice_token(name))


@pytest.mark.parametrize("voice", [v.name for v in INPUT_VOICES + HELD_OUT_VOICES])
def test_only_preset_voices_have_tokens(voice: str) -> None:
    assert not is_special(f"<|voice:{voice}|>")
    with pytest.raises(ValueError, match="not a preset voice"):
        voice_token(voice)


@pytest.mark.parametrize("module", ["special.py", "text.py"])
def test_layer_rule(module: str) -> None:
    # omniflex.tokenizers may import only omniflex.common (the bottom layer), omniflex.media,
    # omniflex.flex and itself.
    for name in imported_modules(Path(special.__file__).with_name(module)):
        if name.startswith("omniflex"):
            assert name.split(".")[1] in ("common", "tokenizers", "media", "flex"), name
