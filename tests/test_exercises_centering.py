"""The checkers of notebook 03's exercises accept the solution and reject the typical mistakes."""

import numpy as np
import pytest

from dino_ref.exercises import (ExerciseFailed, check_center_after_steps, check_teacher_targets,
                                check_update_center)


def softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_update_center_accepts_the_solution():
    assert check_update_center(lambda c, t, m: m * c + (1 - m) * t.mean(axis=(0, 1)))


@pytest.mark.parametrize("wrong", [
    lambda c, t, m: (1 - m) * c + m * t.mean(axis=(0, 1)),          # momentum on the wrong side
    lambda c, t, m: m * c + (1 - m) * t[0].mean(axis=0),             # the first view only
    lambda c, t, m: m * c + (1 - m) * t.mean(axis=1),                # a center per view
], ids=["swapped momentum", "view 0 only", "per-view mean"])
def test_update_center_rejects_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_update_center(wrong)


def test_teacher_targets_accepts_the_solution():
    assert check_teacher_targets(lambda t, c, tau: softmax((t - c) / tau))


@pytest.mark.parametrize("wrong", [
    lambda t, c, tau: softmax(t / tau - c),                           # centering after sharpening
    lambda t, c, tau: softmax(t / tau) - c,                           # ... after the softmax
    lambda t, c, tau: softmax(t - c),                                 # no sharpening
], ids=["center after sharpening", "center after softmax", "no temperature"])
def test_teacher_targets_rejects_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="centering comes BEFORE sharpening"):
        check_teacher_targets(wrong)


def test_teacher_targets_rejects_an_overflowing_softmax():
    def unstable(t, c, tau):
        e = np.exp((t - c) / tau)                                     # no max shift: inf / inf
        return e / e.sum(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(ExerciseFailed, match="case 5 of 5"):
            check_teacher_targets(unstable)


def test_center_after_steps_accepts_the_solution():
    assert check_center_after_steps(lambda c0, t_bar, m, k: m ** k * c0 + (1 - m ** k) * t_bar)


@pytest.mark.parametrize("wrong", [
    lambda c0, t_bar, m, k: (1 - m) ** k * c0 + (1 - (1 - m) ** k) * t_bar,     # momentum swapped
    lambda c0, t_bar, m, k: m * c0 + (1 - m) * t_bar,                           # one step only
    lambda c0, t_bar, m, k: max(0.0, 1 - m * k) * c0 + min(1.0, m * k) * t_bar,  # linear in k
], ids=["swapped momentum", "one step", "linear"])
def test_center_after_steps_rejects_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_center_after_steps(wrong)


def test_a_stub_is_reported_as_not_implemented():
    def stub(c, t, m):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_update_center(stub)
