"""Where the loss comes from: each task's and each modality's share of the training loss.

Cheap-to-count outputs (speech codes, image codes) can drown the understanding tasks: in the
first ``tiny`` model, audio and image outputs were 78% of the loss-bearing tokens and ASR 2.7%.
A recipe sets ``task_weights`` to rebalance (``omniflex.train.dataset``); ``LossBalance`` shows
the result while training. On a logging step it takes the step's logits and batch and reports,
over the targets that carry loss:

* ``task_loss/<task>``: the task's mean cross-entropy (unweighted: comparable across recipes);
* ``loss_share/task/<task>``: the task's part of the weighted loss (sums to 1 over tasks);
* ``token_share/task/<task>``: the task's part of the loss weight (tokens times weights);
* ``loss_share/modality/<kind>``: the same by the kind of the target (text, audio, image,
  special), from the vocabulary layout.

Figures are this rank's part of the step's batch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.nn import functional as F

from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers.special import NUM_SPECIAL
from omniflex.train.dataset import Batch

__all__ = ["KINDS", "LossBalance"]

KINDS = ("special", "text", "image", "audio")


class LossBalance:
    """Accumulates per-task and per-modality loss over the batches of one logging step."""

    def __init__(self, tasks: tuple[str, ...], layout: VocabLayout | None = None) -> None:
        self.tasks, self.layout = tasks, layout
        self._sums: dict[str, float] = defaultdict(float)

    def add(self, logits: torch.Tensor, batch: Batch) -> None:
        """Count one (micro-)batch: ``logits`` (B, T, V) of its inputs."""
        with torch.no_grad():
            targets = batch.targets
            ce = F.cross_entropy(
                logits.detach().float().flatten(0, 1), targets.flatten(), reduction="none"
            ).view_as(targets)  # (B, T)
            keep = batch.loss_mask.to(ce.dtype)
            weight = batch.loss_weights.to(ce.dtype)
            if batch.tasks is not None:
                for i, task in enumerate(self.tasks):
                    where = (batch.tasks == i).to(ce.dtype)
                    self._sums[f"ce/{task}"] += float((ce * keep * where).sum())
                    self._sums[f"n/{task}"] += float((keep * where).sum())
                    self._sums[f"wce/{task}"] += float((ce * weight * where).sum())
                    self._sums[f"w/{task}"] += float((weight * where).sum())
            if self.layout is not None:
                for kind, where in zip(KINDS, _kind_masks(targets, self.layout), strict=True):
                    self._sums[f"kind/{kind}"] += float((ce * weight * where).sum())

    def metrics(self) -> dict[str, float]:
        """The figures since the last call, then starts over."""
        s, out = self._sums, {}
        total = sum(s[f"wce/{t}"] for t in self.tasks)
        weights = sum(s[f"w/{t}"] for t in self.tasks)
        for t in self.tasks:
            if s[f"n/{t}"]:
                out[f"task_loss/{t}"] = s[f"ce/{t}"] / s[f"n/{t}"]
            if total:
                out[f"loss_share/task/{t}"] = s[f"wce/{t}"] / total
            if weights:
                out[f"token_share/task/{t}"] = s[f"w/{t}"] / weights
        kinds = sum(s[f"kind/{k}"] for k in KINDS)
        if kinds:
            out.update({f"loss_share/modality/{k}": s[f"kind/{k}"] / kinds for k in KINDS})
        self._sums = defaultdict(float)
        return out

    @classmethod
    def from_sidecar(cls, tasks: tuple[str, ...], sidecar: dict[str, Any]) -> LossBalance:
        """From a token cache's sidecar (its template's vocabulary layout, if recorded)."""
        layout = sidecar.get("template", {}).get("layout")
        return cls(tasks, VocabLayout.from_dict(layout) if layout else None)


def _kind_masks(ids: torch.Tensor, layout: VocabLayout) -> list[torch.Tensor]:
    """Float masks of ``ids`` that are special, text, image and audio ids, in ``KINDS`` order."""
    special = ids < NUM_SPECIAL
    text = (ids >= NUM_SPECIAL) & (ids < layout.image_offset)
    image = (ids >= layout.image_offset) & (ids < layout.audio_offset)
    audio = ids >= layout.audio_offset
    return [m.float() for m in (special, text, image, audio)]
