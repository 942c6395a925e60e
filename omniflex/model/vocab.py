"""One vocabulary for every modality, laid out as ranges.

    [0, text)                                 text tokenizer ids: special tokens first
                                              (``special.SPECIAL_TOKENS``), then bytes, merges
    [image_offset, image_offset + image)      image VQ codes
    [audio_offset + k * audio, ... + audio)   audio codes of codebook k, k = 0 .. codebooks - 1

Audio frames are flattened frame-major: ``f0k0 f0k1 f1k0 f1k1 …`` so that a frame's codebooks
sit together and a decoder can turn every ``codebooks`` tokens into 40 ms of sound.
``VocabLayout.from_tokenizers`` builds the layout from the shipped tokenizers; ``allowed`` gives
the id range a decoding state may choose from (constrained decoding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from omniflex.tokenizers import special
from omniflex.tokenizers.video import VocabSlots

__all__ = ["Kind", "VocabLayout"]

Kind = Literal["text", "image", "audio"]


@dataclass(frozen=True)
class VocabLayout:
    text_size: int
    image_size: int
    audio_size: int  # codes per audio codebook
    audio_codebooks: int

    def __post_init__(self) -> None:
        for name in ("text_size", "image_size", "audio_size", "audio_codebooks"):
            if getattr(self, name) < 1:
                raise ValueError(f"VocabLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_size < special.NUM_SPECIAL:
            raise ValueError(
                f"VocabLayout.text_size ({self.text_size}) must hold the "
                f"{special.NUM_SPECIAL} special tokens"
            )

    @classmethod
    def from_tokenizers(cls, text: Any, image: Any, audio: Any) -> VocabLayout:
        return cls(text.vocab_size, image.cardinality, audio.cardinality, audio.num_codebooks)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> VocabLayout:
        return cls(**d)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    # ------------------------------------------------------------------ ranges
    @property
    def image_offset(self) -> int:
        return self.text_size

    @property
    def audio_offset(self) -> int:
        return self.text_size + self.image_size

    @property
    def size(self) -> int:
        """Total ids (the model's embedding rows)."""
        return self.audio_offset + self.audio_size * self.audio_codebooks

    def range_of(self, kind: Kind, codebook: int = 0) -> range:
        if kind == "text":
            return range(0, self.text_size)
        if kind == "image":
            return range(self.image_offset, self.image_offset + self.image_size)
        if kind == "audio":
            if not 0 <= codebook < self.audio_codebooks:
                raise ValueError(f"audio codebook must be in [0, {self.audio_codebooks})")
            start = self.audio_offset + codebook * self.audio_size
            return range(start, start + self.audio_size)
        raise ValueError(f"unknown token kind {kind!r}; expected text, image or audio")

    def kind_of(self, token_id: int) -> Kind:
        if 0 <= token_id < self.text_size:
            return "text"
        if token_id < self.audio_offset:
            return "image"
        if token_id < self.size:
            return "audio"
        raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.size})")

    def special_id(self, token: str) -> int:
        return special.special_index(token)

    # ------------------------------------------------------------------ codes <-> ids
    def image_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """``(g, g)`` image codes -> ``(g * g,)`` ids, row-major."""
        return codes.reshape(-1).long() + self.image_offset

    def image_codes(self, ids: torch.Tensor, grid: int) -> torch.Tensor:
        codes = ids.long() - self.image_offset
        if codes.numel() != grid * grid or codes.min() < 0 or codes.max() >= self.image_size:
            raise ValueError(f"expected {grid * grid} image ids in {self.range_of('image')}")
        return codes.reshape(grid, grid)

    def audio_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """``(K, F)`` audio codes -> ``(F * K,)`` ids, frame-major."""
        k = codes.shape[0]
        if k != self.audio_codebooks:
            raise ValueError(f"expected {self.audio_codebooks} codebooks, got {k}")
        book = torch.arange(k).unsqueeze(1) * self.audio_size
        return (codes.long() + book + self.audio_offset).T.reshape(-1)

    def audio_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """``(F * K,)`` ids -> ``(K, F)`` codes; a trailing partial frame is dropped."""
        k = self.audio_codebooks
        n = ids.numel() // k * k
        flat = ids[:n].long().reshape(-1, k) - self.audio_offset  # (F, K)
        codes = (flat - torch.arange(k) * self.audio_size).T
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.audio_size):
            raise ValueError("audio ids out of their codebook ranges (frame-major order expected)")
        return codes.contiguous()

    def allowed(self, kind: Kind, codebook: int = 0, *extra: str) -> torch.Tensor:
        """Boolean mask ``(size,)`` of the ids a decoding state may emit: a range, plus the
        special tokens named in ``extra`` (e.g. the span's close marker)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        r = self.range_of(kind, codebook)
        mask[r.start : r.stop] = True
        for token in extra:
            mask[self.special_id(token)] = True
        return mask

    def slots(self) -> VocabSlots:
        """The ``VocabSlots`` the video tokenizer flattens with."""
        return VocabSlots(
            special_id=self.special_id,
            image_offset=self.image_offset,
            image_cardinality=self.image_size,
            audio_offset=self.audio_offset,
            audio_cardinality=self.audio_size,
            audio_codebooks=self.audio_codebooks,
        )
