"""The special tokens: one frozen, ordered registry shared by the model, chat template and server.

Every special token is written ``<|name|>``; its *index* in ``SPECIAL_TOKENS`` is its id in the
text tokenizer (specials take ids ``0 .. NUM_SPECIAL - 1``), so the order is part of every trained
tokenizer and checkpoint. **Never reorder, rename or remove a token**: to add one, rename the
first unused ``<|reserved_N|>`` slot, which shifts no other id.

Sequence control

* ``<|pad|>`` — padding in batches; never attended to, never predicted.
* ``<|bos|>`` — begins every token stream.
* ``<|eos|>`` — ends a stream: generation stops here.

Roles (a turn is ``<|role|> … <|end_of_turn|>``)

* ``<|system|>``, ``<|user|>``, ``<|assistant|>`` — open a turn of that speaker.
* ``<|end_of_turn|>`` — closes the turn; for the assistant, it hands the floor back to the user.

Modalities (each span of non-text tokens sits between its open and close marker)

* ``<|text|>`` / ``<|/text|>`` — optional around plain text; used where text chunks interleave
  with audio chunks in a spoken answer (text leads: ``<|text|> t t <|/text|> <|audio|> a a
  <|/audio|> <|text|> …``).
* ``<|audio|>`` / ``<|/audio|>`` — audio codec tokens.
* ``<|image|>`` / ``<|/image|>`` — image VQ tokens (input, or output to be decoded to pixels).
* ``<|video|>`` / ``<|/video|>`` — a video: frames as image spans interleaved in time with its
  audio track, each piece led by a time marker.

Output voices

* ``<|voice:NAME|>`` — one per *preset* voice (``PRESET_VOICE_NAMES``, in the order of
  ``omniflex.common.voices``, which must never change), placed before the assistant's audio to
  choose the voice it speaks in. Only preset voices have a token: the model has no way to ask for
  any other voice (the first mitigation against unauthorised voice generation).

Turn-taking

* ``<|interrupt|>`` — the user barged in: the assistant's current answer stops here, unfinished.
* ``<|silence|>`` — nothing to say at this step of a live stream (keeps the stream going while the
  model listens or the user is quiet).

Time markers (video interleaving)

* ``<|t:S|>`` — "what follows happens at S seconds into the clip", on a grid of
  ``TIME_STEP_SECONDS`` (0.5 s) from 0.0 to ``TIME_CAP_SECONDS`` (60.0 s) inclusive: 121 tokens.
  Clips longer than the cap must be cut into pieces by the caller. ``time_token`` rounds down to
  the grid and ``token_time`` reads a marker back.

Continuous input (models with input encoders; ``ModelConfig.input_encoders``)

* ``<|mel|>`` — one position of user speech: 40 ms of log-mel frames enter the network here
  through the speech encoder (``omniflex.model.encoders``), added to this token's embedding.
* ``<|patch|>`` — one 8x8-pixel patch of a user picture or video frame, entering through the
  image encoder. Both stand inside ``<|audio|>`` / ``<|image|>`` spans of user turns and are
  never predicted.

Reserved

* ``<|reserved_0|>`` … ``<|reserved_29|>`` — unused slots for tokens added later.
"""

from __future__ import annotations

import math

from omniflex.common.voices import PRESET_VOICE_NAMES, check_preset_voice

__all__ = [
    "ASSISTANT",
    "AUDIO",
    "AUDIO_END",
    "BOS",
    "END_OF_TURN",
    "EOS",
    "IMAGE",
    "IMAGE_END",
    "INTERRUPT",
    "MEL",
    "NUM_RESERVED",
    "NUM_SPECIAL",
    "PAD",
    "PATCH",
    "PRESET_VOICE_NAMES",
    "SILENCE",
    "SPECIAL_TOKENS",
    "SYSTEM",
    "TEXT",
    "TEXT_END",
    "TIME_CAP_SECONDS",
    "TIME_STEP_SECONDS",
    "TIME_TOKENS",
    "USER",
    "VIDEO",
    "VIDEO_END",
    "is_special",
    "special_index",
    "special_name",
    "special_token",
    "time_token",
    "token_time",
    "voice_token",
]

PAD = "<|pad|>"
BOS = "<|bos|>"
EOS = "<|eos|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end_of_turn|>"
TEXT, TEXT_END = "<|text|>", "<|/text|>"
AUDIO, AUDIO_END = "<|audio|>", "<|/audio|>"
IMAGE, IMAGE_END = "<|image|>", "<|/image|>"
VIDEO, VIDEO_END = "<|video|>", "<|/video|>"
INTERRUPT = "<|interrupt|>"
SILENCE = "<|silence|>"
MEL, PATCH = "<|mel|>", "<|patch|>"  # input placeholders (slots 0 and 1 of the reserved block)

TIME_STEP_SECONDS = 0.5
TIME_CAP_SECONDS = 60.0
_TIME_STEPS = round(TIME_CAP_SECONDS / TIME_STEP_SECONDS)  # 120 steps: 121 markers
# Frame times computed as i / fps may land a hair under a grid point (1.4999999999999998);
# they still belong to that point.
_TIME_EPS = 1e-9

NUM_RESERVED = 30

TIME_TOKENS: tuple[str, ...] = tuple(
    f"<|t:{k * TIME_STEP_SECONDS:.1f}|>" for k in range(_TIME_STEPS + 1)
)

SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    BOS,
    EOS,
    SYSTEM,
    USER,
    ASSISTANT,
    END_OF_TURN,
    TEXT,
    TEXT_END,
    AUDIO,
    AUDIO_END,
    IMAGE,
    IMAGE_END,
    VIDEO,
    VIDEO_END,
    *(f"<|voice:{name}|>" for name in PRESET_VOICE_NAMES),
    INTERRUPT,
    SILENCE,
    *TIME_TOKENS,
    MEL,
    PATCH,
    *(f"<|reserved_{i}|>" for i in range(NUM_RESERVED)),
)
NUM_SPECIAL = len(SPECIAL_TOKENS)

_INDEX = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
if len(_INDEX) != NUM_SPECIAL:  # a duplicate would give two ids one meaning
    raise RuntimeError("SPECIAL_TOKENS holds a duplicate")


def special_token(name: str) -> str:
    """``"user"`` or ``"<|user|>"`` -> ``"<|user|>"``; raises ``ValueError`` for an unknown one."""
    token = name if name.startswith("<|") else f"<|{name}|>"
    if token not in _INDEX:
        raise ValueError(
            f"unknown special token {name!r}; known: {', '.join(SPECIAL_TOKENS[:21])}, "
            f"the time markers <|t:0.0|>…<|t:{TIME_CAP_SECONDS:.1f}|> and <|reserved_N|>"
        )
    return token


def special_index(name: str) -> int:
    """Id of a special token, by name (``"user"``) or string (``"<|user|>"``)."""
    return _INDEX[special_token(name)]


def special_name(index: int) -> str:
    """The token string of special id ``index``; raises ``IndexError`` outside the registry."""
    if not 0 <= index < NUM_SPECIAL:
        raise IndexError(f"special id {index} is outside [0, {NUM_SPECIAL})")
    return SPECIAL_TOKENS[index]


def is_special(token: str) -> bool:
    """Whether ``token`` is exactly one registered special token string."""
    return token in _INDEX


def voice_token(voice: str) -> str:
    """``"aria"`` -> ``"<|voice:aria|>"``; only preset voices have one (``ValueError`` else)."""
    return f"<|voice:{check_preset_voice(voice)}|>"


def time_token(seconds: float) -> str:
    """The time marker at or just before ``seconds`` (rounded down to the 0.5 s grid).

    Raises ``ValueError`` for negative, non-finite or beyond-``TIME_CAP_SECONDS`` times: cut
    longer clips into pieces of at most the cap.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"time marker seconds must be finite and >= 0, got {seconds}")
    if seconds > TIME_CAP_SECONDS + _TIME_EPS:
        raise ValueError(
            f"time {seconds} s is beyond the {TIME_CAP_SECONDS:.0f} s cap of the time markers; "
            "cut the clip into pieces of at most the cap"
        )
    step = min(math.floor(seconds / TIME_STEP_SECONDS + _TIME_EPS), _TIME_STEPS)
    return TIME_TOKENS[step]


def token_time(token: str) -> float:
    """Seconds of a time marker (``"<|t:1.5|>"`` -> ``1.5``); ``ValueError`` for other tokens."""
    if token not in _INDEX or not token.startswith("<|t:"):
        raise ValueError(f"{token!r} is not a time marker (<|t:0.0|> … <|t:60.0|>)")
    return float(token[4:-2])
