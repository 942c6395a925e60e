"""One warm-up + cosine schedule for every trainer, bit for bit what each trainer used before.

Each ``_old_*`` below is the formula a trainer carried before ``omniflex.common.schedule`` owned
it, kept verbatim as the reference.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from omniflex.common import cosine_decay, warmup_cosine
from omniflex.eval.flex_repro.runner import _cosine
from omniflex.tokenizers.audio_train import AudioTrainConfig
from omniflex.tokenizers.audio_train import _lr_at as audio_lr_at
from omniflex.tokenizers.image_train import _lr_at as image_lr_at
from omniflex.train.schedule import CosineSchedule

CASES = [(1, 0), (1, 1), (10, 0), (10, 3), (20, 20), (110, 10), (600, 30), (1800, 100)]
LRS = [1.0, 0.1, 3e-3, 1e-3, 7e-4, 2e-4]


def _old_train(step: int, lr: float, min_lr: float, warmup: int, steps: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = steps - warmup
    if decay_steps <= 0:
        return lr
    progress = min((step - warmup) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def _old_audio(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def _old_image(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def _old_scene_judge(step: int, steps: int, lr: float) -> float:
    frac = step / steps
    warm = min(1.0, (step + 1) / 100)
    return lr * warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))


def _old_flex_repro(step: int, total: int, base_lr: float) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return 0.5 * base_lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@pytest.mark.parametrize("lr", LRS)
@pytest.mark.parametrize(("steps", "warmup"), CASES)
def test_trainer_schedule_is_bit_for_bit_unchanged(steps, warmup, lr):
    for min_lr in (0.0, lr * 0.02, lr / 10, lr):
        schedule = CosineSchedule(lr, min_lr, warmup, steps)
        for step in range(steps + 5):  # and past the end: it stays at the floor
            assert schedule.lr_at(step) == _old_train(step, lr, min_lr, warmup, steps)


@pytest.mark.parametrize("lr", LRS)
@pytest.mark.parametrize(("steps", "warmup"), [c for c in CASES if c[1] < c[0]])
def test_tokenizer_schedules_are_bit_for_bit_unchanged(steps, warmup, lr):
    cfg = AudioTrainConfig(steps=steps, warmup_steps=warmup, lr=lr)
    image_warmup = min(200, steps // 10 + 1)
    for step in range(steps):
        assert audio_lr_at(step, cfg) == _old_audio(step, lr, warmup, steps)
        assert image_lr_at(step, steps, lr, image_warmup) == _old_image(
            step, steps, lr, image_warmup
        )


@pytest.mark.parametrize("lr", LRS)
@pytest.mark.parametrize("steps", [1, 50, 100, 3000, 16000])
def test_scene_judge_schedule_is_bit_for_bit_unchanged(steps, lr):
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        new = lr * warm * cosine_decay(step / steps, end=0.01)
        assert new == _old_scene_judge(step, steps, lr)


class _Opt:
    def __init__(self) -> None:
        self.param_groups = [{"lr": None}, {"lr": None}]


@pytest.mark.parametrize(("total", "lr"), [(600, 0.1), (800, 0.05), (500, 3e-3), (37, 0.3)])
def test_flex_repro_schedule_is_unchanged_to_the_last_bits(total, lr):
    # The old formula divided pi * (step - warmup) by the decay steps; the common one multiplies
    # pi by the progress. The arguments differ in their last bit at some steps, so the rates
    # agree to 1e-11 relative in float64 and exactly in float32, the precision the
    # experiments' optimizers apply them in.
    opt = _Opt()
    for step in range(total):
        _cosine(opt, step, total, lr)
        new, old = opt.param_groups[0]["lr"], _old_flex_repro(step, total, lr)
        assert opt.param_groups[1]["lr"] == new
        assert new == pytest.approx(old, rel=1e-11, abs=0)
        assert np.float32(new) == np.float32(old)


def test_the_curve():
    lr, warmup, steps = 2.0, 4, 24
    rates = [warmup_cosine(s, lr=lr, warmup=warmup, steps=steps) for s in range(steps + 3)]
    assert rates[:4] == [0.5, 1.0, 1.5, 2.0]  # step 0 already learns
    assert rates[4] == lr
    assert rates[14] == pytest.approx(lr / 2)  # half way down
    assert rates[steps:] == [0.0, 0.0, 0.0]  # the floor, and it stays there
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))
    floor = [warmup_cosine(s, lr=lr, warmup=0, steps=10, min_ratio=0.1) for s in (10, 99)]
    assert floor == [pytest.approx(0.2)] * 2
    assert warmup_cosine(99, lr=lr, warmup=0, steps=10, min_lr=0.3) == pytest.approx(0.3)


def test_floor_is_given_once():
    with pytest.raises(ValueError, match="min_lr or min_ratio"):
        warmup_cosine(0, lr=1.0, warmup=0, steps=10, min_lr=0.1, min_ratio=0.1)


def test_cosine_decay_ends():
    assert cosine_decay(0.0) == 1.0
    assert cosine_decay(1.0, end=0.25) == pytest.approx(0.25)
    assert cosine_decay(0.5, end=0.0) == pytest.approx(0.5)
