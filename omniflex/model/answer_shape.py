"""``AnswerShape``: spoken answers of a fixed *shape*, for benchmarks and protocol tests of a
model that may not speak on its own.

A barely trained model tends to end its turn at once, so no audio ever streams and nothing about
speech latency can be measured. With ``Assistant(..., answer_shape=AnswerShape(...))`` (or
``assistant.with_answer_shape(...)``) every answer that may contain audio follows the corpus's
spoken-answer layout (``omniflex.model.chat``): ``chunks`` times ``<text>`` + ``text_tokens`` text
ids + ``</text>`` + ``<audio>`` + ``frames`` codec frames + ``</audio>``, then the end of the turn.
The markers are forced; inside each span the decoding grammar (``omniflex.model.grammar``) says
what may come and the real model picks which id wins, so timings are those of a real answer of
that shape. Answers without audio are not touched. It decides what is said, not the model: never
serve users with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from omniflex.model.generate import ConstraintFn, ModalityConstraint
from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers import special

__all__ = ["AnswerShape"]

#: A slot of the plan that the model fills with the open span's content (``TokenGrammar.body``).
BODY = -1


@dataclass(frozen=True)
class AnswerShape:
    """The fixed layout of a spoken answer: ``chunks`` × (``text_tokens`` text ids, then
    ``frames`` codec frames), then the end of the turn."""

    chunks: int = 4
    text_tokens: int = 4
    frames: int = 16

    def __post_init__(self) -> None:
        if min(self.chunks, self.text_tokens, self.frames) < 1:
            raise ValueError(f"chunks, text_tokens and frames must be >= 1, got {self}")

    def plan(self, layout: VocabLayout) -> list[int]:
        """The answer's token ids after its prompt, ``BODY`` where the model chooses."""
        sid = special.special_index
        plan: list[int] = []
        for _ in range(self.chunks):
            plan += [sid(special.TEXT), *[BODY] * self.text_tokens, sid(special.TEXT_END)]
            plan += [sid(special.AUDIO), *[BODY] * (self.frames * layout.audio_codebooks)]
            plan.append(sid(special.AUDIO_END))
        plan.append(sid(special.END_OF_TURN))
        return plan

    def constrain(self, base: ModalityConstraint, start: int, layout: VocabLayout) -> ConstraintFn:
        """``base`` (the answer's grammar) with this shape forced from sequence position
        ``start`` (the answer's first token after its prompt) on."""
        plan, grammar = self.plan(layout), base.grammar
        forced: dict[int, torch.Tensor] = {}

        def constraint(tokens: Sequence[int]) -> torch.Tensor:
            mask = base(tokens)  # keeps the grammar's state in step
            i = len(tokens) - start
            if not 0 <= i < len(plan):
                return mask
            want = plan[i]
            if want == BODY:  # the next text id, or the next codebook's code
                return mask & grammar.body()
            if want not in forced:
                forced[want] = torch.zeros(layout.size, dtype=torch.bool)
                forced[want][want] = True
            return forced[want]

        return constraint
