"""The decoding grammar: which token may follow which in what the model writes.

One state machine, ``TokenGrammar``, owns the rules that constrained decoding
(``omniflex.model.generate.ModalityConstraint``), the assistant's session (what the answer is
writing now, how to close it when it stops early) and the serving fixtures build on:

* ``text`` — text ids and the special tokens an answer may write (markers that open a span,
  preset voices, ``<|end_of_turn|>``, ``<|eos|>``, ``<|interrupt|>``);
* ``spoken`` — inside ``<|text|> … <|/text|>``, the transcript chunk of a spoken answer
  (text leads the audio that speaks it): text ids, then ``<|/text|>``;
* ``audio`` — after ``<|audio|>``: codec codes in codebook order (codebook
  ``k = count % codebooks``), ``<|/audio|>`` only at a frame boundary;
* ``image`` — after ``<|image|>``: exactly ``grid * grid`` image codes, then ``<|/image|>``.

Never predicted, in any state (``NEVER_PREDICTED``): padding, the stream start, role tokens
(the turn is given), video and time markers and the ``<|mel|>``/``<|patch|>`` placeholders
(the user's input only), and unused slots; ``<|/audio|>`` and ``<|/image|>`` only close their
own spans.

The grammar reads any stream without raising: a token that breaks it (in a prompt, say) ends
the span it is in. ``closing()`` says how to finish a stream cut anywhere into one that
``ChatTemplate.decode(..., strict=True)`` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import torch

from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import special

__all__ = ["NEVER_PREDICTED", "OUTPUTS", "Closing", "GrammarState", "TokenGrammar"]

GrammarState = Literal["text", "spoken", "audio", "image"]

#: What an answer may contain (``TokenGrammar(outputs=...)``).
OUTPUTS: tuple[str, ...] = ("text", "audio", "image")

#: Special tokens the model never writes, in any state: padding and stream start, the role
#: tokens (a turn is given), video and its time markers (input only), the continuous-input
#: placeholders (the user's, never ours) and unused slots.
NEVER_PREDICTED: tuple[str, ...] = (
    special.PAD,
    special.BOS,
    special.SYSTEM,
    special.USER,
    special.ASSISTANT,
    special.VIDEO,
    special.VIDEO_END,
    special.MEL,
    special.PATCH,
    *special.TIME_TOKENS,
    *(token for token in special.SPECIAL_TOKENS if token.startswith("<|reserved_")),
)

_SPAN: dict[GrammarState, tuple[str, str]] = {  # state -> its span's opening and closing markers
    "spoken": (special.TEXT, special.TEXT_END),
    "audio": (special.AUDIO, special.AUDIO_END),
    "image": (special.IMAGE, special.IMAGE_END),
}


class Closing(NamedTuple):
    """How to finish the open span: drop the last ``drop`` ids (a partial audio frame, or an
    image that is not whole: no decoder reads them), then append ``ids``."""

    drop: int
    ids: tuple[int, ...]


class TokenGrammar:
    """The state machine of the module docstring over ``layout``.

    Args:
        layout: the model vocabulary.
        image_grid: side of an image's code grid (an image span holds ``grid²`` codes).
        outputs: what the answer may contain, among ``OUTPUTS``: without ``"audio"`` it never
            opens an audio span nor picks a voice; without ``"image"`` never an image span;
            without ``"text"`` and ``"audio"`` never a ``<|text|>`` span.
    """

    def __init__(
        self, layout: VocabLayout, image_grid: int = 16, *, outputs: Sequence[str] = OUTPUTS
    ) -> None:
        if image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {image_grid}")
        bad = set(outputs) - set(OUTPUTS)
        if bad or not outputs:
            raise ValueError(f"outputs must be among {', '.join(OUTPUTS)}; got {outputs!r}")
        self.layout, self.image_tokens = layout, image_grid * image_grid
        self.outputs = tuple(outputs)
        sid = special.special_index
        self._opens: dict[int, GrammarState] = {sid(o): s for s, (o, _) in _SPAN.items()}
        text = layout.allowed("text")
        # outside their spans, the closing markers would close a span that is not open;
        # <|silence|> belongs to live streams, never to an answer's text
        banned = [*NEVER_PREDICTED, special.AUDIO_END, special.IMAGE_END, special.TEXT_END]
        banned.append(special.SILENCE)
        if "audio" not in outputs:
            banned += [special.AUDIO, *map(special.voice_token, special.PRESET_VOICE_NAMES)]
        if "image" not in outputs:
            banned.append(special.IMAGE)
        if "text" not in outputs and "audio" not in outputs:
            banned.append(special.TEXT)
        text[[sid(token) for token in banned]] = False
        self._text_mask = text  # (V,)
        K = layout.audio_codebooks
        self._codes = [layout.allowed("audio", k) for k in range(K)]  # codebook k's codes
        self._audio_masks = [*self._codes]
        self._audio_masks[0] = layout.allowed("audio", 0, special.AUDIO_END)
        self._image_mask = layout.allowed("image")
        self._nothing = torch.zeros(layout.size, dtype=torch.bool)
        self._image_end_mask = self._nothing.clone()
        self._image_end_mask[sid(special.IMAGE_END)] = True
        self._plain_text = self._nothing.clone()
        self._plain_text[special.NUM_SPECIAL : layout.text_size] = True
        self._spoken_mask = self._plain_text.clone()  # a transcript chunk, then its close
        self._spoken_mask[sid(special.TEXT_END)] = True
        self.reset()

    def reset(self) -> None:
        """Back to the start of a turn: plain text, no span open."""
        self.state: GrammarState = "text"
        self.count = 0  # ids inside the open span (markers excluded)

    # ------------------------------------------------------------------ reading
    def feed(self, token_id: int) -> None:
        """Advance by one token (one that breaks the grammar ends the span it is in)."""
        layout = self.layout
        kind = layout.kind_of(token_id) if 0 <= token_id < layout.size else None
        if self.state == "audio":
            inside = kind == "audio"
        elif self.state == "image":
            inside = kind == "image" and self.count < self.image_tokens
        elif self.state == "spoken":
            inside = special.NUM_SPECIAL <= token_id < layout.text_size
        else:
            inside = False
        if inside:
            self.count += 1
        else:  # an opening marker, a closing one, text, or anything that leaves the span
            self.state, self.count = self._opens.get(token_id, "text"), 0

    def read(self, ids: Iterable[int]) -> TokenGrammar:
        """Feed every id of ``ids``, in order; returns the grammar."""
        for token_id in ids:
            self.feed(int(token_id))
        return self

    # ------------------------------------------------------------------ what may follow
    def allowed(self) -> torch.Tensor:
        """Bool mask (V,) of the ids the next token may take (do not modify it)."""
        if self.state == "audio":
            return self._audio_masks[self.count % self.layout.audio_codebooks]
        if self.state == "image":
            return self._image_mask if self.count < self.image_tokens else self._image_end_mask
        if self.state == "spoken":
            return self._spoken_mask
        return self._text_mask

    def body(self) -> torch.Tensor:
        """Bool mask (V,) of the ids that go on with the open span's content, its markers
        excluded: the next codebook's codes, image codes while the image is not whole, plain
        text ids in ``text`` and ``spoken``."""
        if self.state == "audio":
            return self._codes[self.count % self.layout.audio_codebooks]
        if self.state == "image":
            return self._image_mask if self.count < self.image_tokens else self._nothing
        return self._plain_text

    @property
    def open_span(self) -> str | None:
        """The opening marker of the span the stream is in (``<|text|>``, ``<|audio|>``,
        ``<|image|>``), or None in plain text."""
        return _SPAN[self.state][0] if self.state in _SPAN else None

    def closing(self) -> Closing:
        """How to close the open span so that the stream reads back whole: a transcript chunk
        is closed as it is, an audio span after its last whole frame, an image only when it
        holds all its codes (else it is dropped with its marker)."""
        if self.state not in _SPAN:
            return Closing(0, ())
        close = (special.special_index(_SPAN[self.state][1]),)
        if self.state == "audio":
            return Closing(self.count % self.layout.audio_codebooks, close)
        if self.state == "image" and self.count < self.image_tokens:
            return Closing(self.count + 1, ())
        return Closing(0, close)
