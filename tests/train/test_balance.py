"""LossBalance: each task's and modality's share of the loss, against a direct computation."""

import pytest
import torch
from torch.nn import functional as F

from omniflex.model.vocab import VocabLayout
from omniflex.tokenizers.special import NUM_SPECIAL
from omniflex.train.balance import LossBalance
from omniflex.train.dataset import Batch

LAYOUT = VocabLayout(text_size=NUM_SPECIAL + 20, image_size=10, audio_size=5, audio_codebooks=2)


def _batch(weight: torch.Tensor | None = None) -> tuple[torch.Tensor, Batch]:
    gen = torch.Generator().manual_seed(0)
    B, T = 2, 12
    targets = torch.randint(0, LAYOUT.size, (B, T), generator=gen)
    tasks = torch.tensor([[0] * 6 + [1] * 6, [1] * 8 + [-1] * 4])
    mask = torch.rand(B, T, generator=gen) > 0.3
    logits = torch.randn(B, T, LAYOUT.size, generator=gen)
    return logits, Batch(targets, targets, mask, tasks=tasks, loss_weight=weight)


def test_task_losses_and_shares_match_a_direct_computation():
    logits, batch = _batch(torch.tensor([[2.0] * 12, [1.0] * 12]))
    balance = LossBalance(("asr", "tts"), LAYOUT)
    balance.add(logits, batch)
    got = balance.metrics()
    ce = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    ce = ce.view_as(batch.targets)
    for i, task in enumerate(("asr", "tts")):
        where = batch.loss_mask & (batch.tasks == i)
        assert got[f"task_loss/{task}"] == pytest.approx(float(ce[where].mean()), rel=1e-5)
    shares = [got[f"loss_share/task/{t}"] for t in ("asr", "tts")]
    assert sum(shares) == pytest.approx(1.0)
    w = batch.loss_weights
    asr = float((ce * w)[batch.tasks == 0].sum()) / float((ce * w)[batch.tasks >= 0].sum())
    assert shares[0] == pytest.approx(asr, rel=1e-5)
    kinds = [got[f"loss_share/modality/{k}"] for k in ("special", "text", "image", "audio")]
    assert sum(kinds) == pytest.approx(1.0) and all(k >= 0 for k in kinds)
    audio = batch.targets >= LAYOUT.audio_offset
    want = float((ce * w)[audio].sum() / (ce * w).sum())
    assert got["loss_share/modality/audio"] == pytest.approx(want, rel=1e-5)
    assert balance.metrics() == {}  # it starts over
