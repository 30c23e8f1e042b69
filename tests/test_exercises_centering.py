"""The checkers of notebook 03's exercises accept the solution and reject the typical mistakes."""

import numpy as np
import pytest

from dino_ref.exercises import (ExerciseFailed, check_entropies, check_teacher_targets,
                                check_update_center)


def softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(P):
    return -(P * np.log(np.where(P > 0, P, 1.0))).sum(axis=-1)


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


def test_entropies_accepts_the_solution():
    def entropies(P):
        return entropy(P).mean(), entropy(P.reshape(-1, P.shape[-1]).mean(axis=0))
    assert check_entropies(entropies)


@pytest.mark.parametrize("wrong", [
    lambda P: (entropy(P.reshape(-1, P.shape[-1]).mean(0)), entropy(P).mean()),   # swapped
    lambda P: (entropy(P).mean() / np.log(2), entropy(P.reshape(-1, P.shape[-1]).mean(0)) / np.log(2)),
    lambda P: (-(P * np.log(P)).sum(-1).mean(), entropy(P.reshape(-1, P.shape[-1]).mean(0))),
], ids=["swapped", "bits", "0 log 0 is nan"])
def test_entropies_rejects_mistakes(wrong):
    with np.errstate(divide="ignore", invalid="ignore"):
        with pytest.raises(ExerciseFailed):
            check_entropies(wrong)


def test_a_stub_is_reported_as_not_implemented():
    def stub(c, t, m):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_update_center(stub)
