"""Cosine schedule with warm-up: exact values at the landmarks, validation of inputs."""

import itertools
import math

import pytest

from omniflex.train import CosineSchedule


def test_warmup_rises_linearly_from_the_first_step():
    s = CosineSchedule(lr=1.0, min_lr=0.1, warmup=4, steps=20)
    assert [s.lr_at(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_peak_midpoint_and_floor():
    s = CosineSchedule(lr=1.0, min_lr=0.1, warmup=10, steps=110)
    assert s.lr_at(10) == 1.0
    assert math.isclose(s.lr_at(60), 0.55)  # halfway down: min + (lr - min) / 2
    assert s.lr_at(110) == pytest.approx(0.1)
    assert s.lr_at(500) == pytest.approx(0.1)  # past the end it stays at the floor
    values = [s.lr_at(i) for i in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_no_warmup_starts_at_peak():
    s = CosineSchedule(lr=3e-3, min_lr=0.0, warmup=0, steps=10)
    assert s.lr_at(0) == 3e-3


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"lr": 0.0}, "lr"),
        ({"min_lr": 2.0}, "min_lr"),
        ({"warmup": 11}, "warmup"),
        ({"steps": 0}, "steps"),
    ],
)
def test_invalid_schedules_name_the_field(kwargs, field):
    args = {"lr": 1.0, "min_lr": 0.1, "warmup": 1, "steps": 10, **kwargs}
    with pytest.raises(ValueError, match=field):
        CosineSchedule(**args)
