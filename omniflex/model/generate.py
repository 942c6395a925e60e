"""Streaming generation: prefill, step, and a cancellable token stream.

``Generator`` owns one sequence's KV cache. ``prefill(ids)`` appends tokens (a whole prompt, or
audio tokens as they arrive: incremental prefill), ``step()`` samples one token, and
``stream(...)`` yields ``TokenEvent``s — the id and its modality — as they are produced, and
returns as soon as a ``threading.Event`` is set (barge-in). Turning ids into text, sound or
pixels is the chat layer's job (``omniflex.model.chat``), not this file's.

A sampled token is *pending*: it is fed to the model at the next ``step``/``prefill``, so the
stream hands each token out before spending a forward on it, and the last token of an answer
costs no forward at all.

``ModalityConstraint`` decodes by the grammar of ``omniflex.model.grammar`` (the one owner of
which token may follow which): after ``<|audio|>`` only audio ids in codebook order and
``<|/audio|>`` only at frame boundaries; after ``<|image|>`` exactly ``grid * grid`` image ids,
then ``<|/image|>``; elsewhere text ids and the special tokens an answer may write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from omniflex.model.compiled import CompiledForward
from omniflex.model.decode_batcher import DecodeBatcher
from omniflex.model.encoders import InputFeatures
from omniflex.model.grammar import OUTPUTS, TokenGrammar
from omniflex.model.kv_cache import CacheStorage, KVCache
from omniflex.model.sampling import SamplingConfig, make_generator, sample_next
from omniflex.model.transformer import OmniModel
from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import special

__all__ = [
    "ConstraintFn",
    "ContextFullError",
    "Generator",
    "Modality",
    "ModalityConstraint",
    "StopReason",
    "TokenEvent",
]

Modality = Literal["special", "text", "image", "audio"]
StopReason = Literal["stop_token", "max_new_tokens", "cancelled", "max_seq_len"]


class ContextFullError(ValueError):
    """The sequence no longer fits the KV cache (the model's context)."""


#: ``fn(tokens so far) -> bool mask (V,)`` of the ids the next token may take (None: any).
ConstraintFn = Callable[[Sequence[int]], torch.Tensor | None]


@dataclass(frozen=True)
class TokenEvent:
    """One generated token."""

    token_id: int
    modality: Modality  # "special" for control tokens (ids below special.NUM_SPECIAL)
    codebook: int | None = None  # audio only: which codebook the code belongs to
    position: int = 0  # index of the token in the whole sequence


class ModalityConstraint:
    """The default decoding grammar (``omniflex.model.grammar.TokenGrammar``) as a
    ``ConstraintFn``: called with the whole token sequence, it returns the grammar's mask for
    the next token.

    It remembers how far it has read, so each call costs only the new tokens. A sequence that
    is shorter, or whose token at the last read position differs, is read again from the start
    (call ``reset()`` after other rewrites). ``outputs`` limits what an answer may contain
    (``TokenGrammar``).
    """

    def __init__(
        self, layout: VocabLayout, image_grid: int = 16, *, outputs: Sequence[str] = OUTPUTS
    ) -> None:
        self.grammar = TokenGrammar(layout, image_grid, outputs=outputs)
        self.reset()

    def reset(self) -> None:
        """Forget the tokens read so far."""
        self.grammar.reset()
        self._seen = 0
        self._last = -1

    def __call__(self, tokens: Sequence[int]) -> torch.Tensor:
        seen = self._seen
        if len(tokens) < seen or (seen and int(tokens[seen - 1]) != self._last):
            self.reset()  # not a continuation of what was read: read it all again
        self.grammar.read(tokens[self._seen :])
        self._seen = len(tokens)
        self._last = int(tokens[-1]) if tokens else -1
        return self.grammar.allowed()


class Generator:
    """Decoding with a KV cache over one sequence (batch 1).

    Args:
        model: an ``OmniModel`` (any precision); put in eval mode here.
        layout: its vocabulary layout (for the default constraint and token modalities).
        cache_storage: ``"float32"`` or ``"flex16"`` KV cache.
        image_grid: side of an image's code grid (tokens per image = grid²).
        max_len: cache capacity (default the model's ``max_seq_len``).
        fast: a ``CompiledForward`` of ``model`` (share one between generators): prefill chunks
            and decode steps run through its compiled graph once at least two positions are
            cached (before that — the first chunk of a sequence — eagerly: sizes 0 and 1 would
            each cost a compilation of their own).
        lock: taken around each forward (chunk or step), for generators sharing one model.
        batcher: a ``DecodeBatcher``: one-token steps (from two cached positions on) run through
            it, in one forward with the steps of other generators (it takes ``lock`` itself).
    """

    def __init__(
        self,
        model: OmniModel,
        layout: VocabLayout,
        *,
        cache_storage: CacheStorage = "float32",
        image_grid: int = 16,
        max_len: int | None = None,
        fast: CompiledForward | None = None,
        lock: threading.RLock | None = None,
        batcher: DecodeBatcher | None = None,
    ) -> None:
        if fast is not None and fast.model is not model:
            raise ValueError("the CompiledForward was built for another model")
        if layout.size != model.config.vocab_size:
            raise ValueError(
                f"layout has {layout.size} ids but the model's vocabulary has "
                f"{model.config.vocab_size}; pass the VocabLayout the model was built with"
            )
        self.model = model.eval()
        self.layout = layout
        self.image_grid = image_grid
        self.cache: KVCache = model.new_cache(1, storage=cache_storage, max_len=max_len)
        self.tokens: list[int] = []  # the whole sequence: fed and pending
        self.logits: torch.Tensor | None = None  # (V,) next-token logits once all are fed
        self.stop_reason: StopReason | None = None
        self.default_constraint = ModalityConstraint(layout, image_grid)
        self.fast = fast
        self.lock = lock if lock is not None else threading.RLock()
        self.batcher = batcher
        if batcher is not None and batcher.fast.model is not model:
            raise ValueError("the DecodeBatcher was built for another model")
        self._device = next(model.buffers()).device
        # input-feature rows of <|mel|>/<|patch|> placeholders, by position in ``tokens``
        self._rows: dict[int, tuple[torch.Tensor, int]] = {}
        self._mel_id = special.special_index(special.MEL)
        self._patch_id = special.special_index(special.PATCH)
        encoders = getattr(model, "encoders", None)  # rows of a clip the speech encoder reads
        self._mel_history = encoders.speech.history if encoders is not None else 0

    # ------------------------------------------------------------------ state
    @property
    def position(self) -> int:
        """Tokens in the sequence (cached plus pending)."""
        return len(self.tokens)

    @property
    def pending(self) -> list[int]:
        """Tokens appended but not yet run through the model."""
        return self.tokens[self.cache.length :]

    def reset(self) -> None:
        """Start a new, empty sequence."""
        self.truncate(0)

    def truncate(self, n: int) -> None:
        """Roll the sequence back to its first ``n`` tokens (e.g. where the user barged in)."""
        if not 0 <= n <= len(self.tokens):
            raise ValueError(f"cannot truncate to {n}: the sequence has {len(self.tokens)} tokens")
        self.cache.truncate(min(n, self.cache.length))
        del self.tokens[n:]
        self._rows = {p: row for p, row in self._rows.items() if p < n}
        self.logits = None
        self.default_constraint.reset()

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def prefill(
        self,
        ids: Iterable[int] | torch.Tensor,
        *,
        features: InputFeatures | None = None,
        chunk_size: int = 512,
    ) -> torch.Tensor:
        """Append ``ids`` (and any pending tokens), run them through the model in chunks of at
        most ``chunk_size``, and return the next-token logits (V,). ``features`` holds the rows
        of the ``<|mel|>``/``<|patch|>`` placeholders among ``ids``, in order (models with
        input encoders; ``EncodedConversation.features()``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        new = [int(t) for t in ids]
        bad = [t for t in new if not 0 <= t < self.layout.size]
        if bad:
            raise ValueError(
                f"token ids {bad[:5]} are outside the vocabulary [0, {self.layout.size})"
            )
        self._keep_rows(new, features)
        self.tokens.extend(new)
        todo = self.pending
        if not todo:
            if self.logits is not None:
                return self.logits
            if not self.tokens:
                raise ValueError("nothing to prefill: the sequence is empty")
            # After truncate() the last token's logits are gone: run that token again.
            self.cache.truncate(len(self.tokens) - 1)
            todo = self.pending
        if len(self.tokens) > self.cache.max_len:
            raise ContextFullError(
                f"sequence of {len(self.tokens)} tokens exceeds the cache capacity "
                f"{self.cache.max_len}; truncate() or start a new sequence"
            )
        for start in range(0, len(todo), chunk_size):
            at = self.cache.length
            chunk = torch.tensor([todo[start : start + chunk_size]], device=self._device)
            rows = self._chunk_features(at, chunk.shape[1])
            if rows is None and self.batcher is not None and chunk.shape[1] == 1 and at >= 2:
                logits = self.batcher.step(int(chunk[0, 0]), self.cache)[None, None]
                continue
            with self.lock:
                if rows is not None:
                    logits = self.model(chunk, cache=self.cache, features=rows, last_only=True)
                    logits = logits.logits
                elif self.fast is not None and self.cache.length >= 2:
                    logits = self.fast(chunk, self.cache)
                else:
                    logits = self.model(chunk, cache=self.cache, last_only=True).logits
        self.logits = logits[0, -1]
        return self.logits

    def _keep_rows(self, new: list[int], features: InputFeatures | None) -> None:
        """Remember the feature row of each placeholder among ``new`` by its position."""
        mel = [i for i, t in enumerate(new) if t == self._mel_id]
        patch = [i for i, t in enumerate(new) if t == self._patch_id]
        have = (0, 0) if features is None else (len(features.mel), len(features.patches))
        if (len(mel), len(patch)) != have:
            raise ValueError(
                f"{len(mel)} <|mel|> and {len(patch)} <|patch|> placeholders need as many "
                f"feature rows, got {have[0]} and {have[1]}; pass the template's features()"
            )
        if features is None:
            return
        base = len(self.tokens)
        for i, row in zip(mel, features.mel, strict=True):
            self._rows[base + i] = (row, -1)
        for i, row, place in zip(patch, features.patches, features.place.tolist(), strict=True):
            self._rows[base + i] = (row, int(place))

    def _chunk_features(self, start: int, n: int) -> InputFeatures | None:
        """The rows of the placeholders at positions ``[start, start + n)``, or None; when the
        chunk continues a clip, its earlier rows the speech encoder reads as context."""
        at = [p for p in range(start, start + n) if p in self._rows]
        if not at:
            return None
        mel = [self._rows[p][0] for p in at if self._rows[p][1] < 0]
        patch = [self._rows[p] for p in at if self._rows[p][1] >= 0]
        history = []
        if start in self._rows and self._rows[start][1] < 0:
            p = start - 1
            while len(history) < self._mel_history and p in self._rows and self._rows[p][1] < 0:
                history.append(self._rows[p][0])
                p -= 1
        empty = InputFeatures.empty()
        return InputFeatures(
            torch.stack(mel).float() if mel else empty.mel,
            torch.stack([r for r, _ in patch]) if patch else empty.patches,
            torch.tensor([k for _, k in patch], dtype=torch.long) if patch else empty.place,
            torch.stack(history[::-1]).float() if history else None,
        ).to(self._device)

    def step(
        self,
        sampling: SamplingConfig | None = None,
        *,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> int:
        """Sample the next token (never outside ``mask``), append it as pending, return it."""
        sampling = sampling or SamplingConfig()
        logits = self.prefill(())
        token = sample_next(
            logits, sampling, previous=self.tokens, mask=mask, generator=generator
        )  # fmt: skip
        self.tokens.append(token)
        self.logits = None
        return token

    def event(self, token_id: int, position: int) -> TokenEvent:
        """The ``TokenEvent`` of ``token_id`` (its modality and audio codebook)."""
        if token_id < special.NUM_SPECIAL:
            return TokenEvent(token_id, "special", None, position)
        kind = self.layout.kind_of(token_id)
        codebook = None
        if kind == "audio":
            codebook = (token_id - self.layout.audio_offset) // self.layout.audio_size
        return TokenEvent(token_id, kind, codebook, position)

    def stream(
        self,
        prompt_ids: Iterable[int] | torch.Tensor,
        *,
        max_new_tokens: int,
        sampling: SamplingConfig | None = None,
        stop_tokens: Iterable[int] = (),
        constraint_fn: ConstraintFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenEvent]:
        """Append ``prompt_ids`` and yield generated tokens one by one.

        Stops after a token in ``stop_tokens`` (which is yielded), after ``max_new_tokens``,
        when the cache is full, or — checked before every forward and before every yield — as
        soon as ``cancel`` is set; ``self.stop_reason`` says which. ``constraint_fn`` maps the
        sequence so far to the allowed-id mask; default ``ModalityConstraint``.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        sampling = sampling or SamplingConfig()
        stops = {int(t) for t in stop_tokens}
        constraint = constraint_fn or self.default_constraint
        generator = make_generator(sampling.seed, self._device)
        self.stop_reason = None

        def cancelled() -> bool:
            return cancel is not None and cancel.is_set()

        if cancelled():
            self.stop_reason = "cancelled"
            return
        self.prefill(prompt_ids)
        for _ in range(max_new_tokens):
            if cancelled():
                self.stop_reason = "cancelled"
                return
            if self.position >= self.cache.max_len:
                self.stop_reason = "max_seq_len"
                return
            mask = constraint(self.tokens)
            token = self.step(sampling, mask=mask, generator=generator)
            if cancelled():  # the forward took a while: drop the token, hand out nothing
                del self.tokens[-1]  # still pending: the cache never saw it
                self.stop_reason = "cancelled"
                return
            yield self.event(token, self.position - 1)
            if token in stops:
                self.stop_reason = "stop_token"
                return
        self.stop_reason = "max_new_tokens"
