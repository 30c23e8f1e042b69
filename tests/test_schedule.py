"""Schedules: the teacher-temperature warmup (both ends included, fractional epochs) and the
trainer's cosine schedule."""
import numpy as np
import pytest

from dino_ref import DINOLoss
from dino_ref.common import teacher_temperature
from dino_ref.train import cosine_schedule


def test_schedule_ramp_both_ends_included():
    temps = [teacher_temperature(e, 0.04, 0.07, 30) for e in range(40)]
    assert temps[0] == 0.04 and temps[29] == pytest.approx(0.07, abs=1e-17) and temps[35] == 0.07
    assert np.allclose(np.diff(temps[:30]), 0.03 / 29)
    assert teacher_temperature(None, 0.04, 0.07, 30) == 0.07


def test_schedule_edge_lengths_and_fractional_epochs():
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04             # W = 1: epoch 0 is the ramp
    assert teacher_temperature(0.5, 0.04, 0.07, 1) == 0.04
    assert teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07             # W = 0: no warmup
    assert teacher_temperature(2.5, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 2.5 / 29)
    assert teacher_temperature(29.5, 0.04, 0.07, 30) == 0.07         # no overshoot past the ramp
    assert isinstance(DINOLoss(8).teacher_temperature(3), float)


def test_cosine_schedule_ends():
    sched = cosine_schedule(1.0, 0.1, 20, warmup_steps=5)
    assert sched[0] == 0.0 and abs(sched[5] - 1.0) < 1e-12
    assert abs(sched[-1] - 0.1) < 0.02 and len(sched) == 20
    assert all(a >= b for a, b in zip(sched[5:], sched[6:]))
