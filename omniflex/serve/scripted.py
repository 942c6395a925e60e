"""``ScriptedSpeech``: sessions whose spoken answers have a fixed *shape*, for benchmarks and
protocol tests of a model that does not speak yet.

A placeholder model (barely trained) tends to end its turn at once, so no audio ever streams and
nothing about speech latency can be measured. ``ScriptedSpeech`` constrains decoding to the
corpus's spoken-answer layout (``omniflex.model.chat``): ``chunks`` times ``<text>`` +
``text_tokens`` text ids + ``</text>`` + ``<audio>`` + ``frames`` codec frames + ``</audio>``,
then the end of the turn. The markers are forced; inside each span the decoding grammar
(``omniflex.model.grammar``) says what may come, and every token is still computed by the real
model (which ids win inside each slot is the model's choice), so timings are those of a real
answer of that shape. Answers without audio are not touched. Never use it to serve users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from omniflex.model.assistant import Assistant, Session
from omniflex.tokenizers import special

__all__ = ["ScriptedSpeech"]


#: A slot of the plan that the model fills with the open span's content (``TokenGrammar.body``).
_BODY = -1


class _ScriptedSession(Session):
    def __init__(self, assistant: Assistant, plan: list[int]) -> None:
        super().__init__(assistant)
        self._plan = plan

    def _constraint(self, modalities: Sequence[str]) -> Any:
        base = super()._constraint(modalities)
        if "audio" not in modalities:
            return base
        plan, start, grammar = self._plan, self._prompt_end, base.grammar
        forced: dict[int, torch.Tensor] = {}

        def constraint(tokens: Sequence[int]) -> torch.Tensor:
            mask = base(tokens)  # keeps the grammar's state in step
            i = len(tokens) - start
            if not 0 <= i < len(plan):
                return mask
            want = plan[i]
            if want == _BODY:  # the next text id, or the next codebook's code
                return mask & grammar.body()
            if want not in forced:
                forced[want] = torch.zeros(self.assistant.layout.size, dtype=torch.bool)
                forced[want][want] = True
            return forced[want]

        return constraint


class ScriptedSpeech(Assistant):
    """An ``Assistant`` over the same model whose spoken answers follow a fixed layout."""

    def __init__(
        self, base: Assistant, *, chunks: int = 4, text_tokens: int = 4, frames: int = 16
    ) -> None:
        super().__init__(base.model, base.template, cache_storage=base.cache_storage,
                         info=base.info)  # fmt: skip
        self.lock = base.lock  # one lock for every view of the model
        self.fast = base.fast  # and one compiled forward
        sid = self._sid
        k = self.layout.audio_codebooks
        plan: list[int] = []
        for _ in range(chunks):
            plan += [sid[special.TEXT], *[_BODY] * text_tokens, sid[special.TEXT_END]]
            plan += [sid[special.AUDIO], *[_BODY] * (frames * k), sid[special.AUDIO_END]]
        plan.append(sid[special.END_OF_TURN])
        self.plan = plan

    def session(self) -> Session:
        return _ScriptedSession(self, self.plan)
