"""The checkers of notebook 05's exercises: each accepts the reference solution and rejects the
typical mistakes with ExerciseFailed."""

import math

import numpy as np
import pytest
import torch

from dino_ref.exercises import (ExerciseFailed, check_cosine_logits, check_ema_update,
                                check_momentum_schedule)


# --- EMA update -----------------------------------------------------------------------------

def ema(teacher_params, student_params, lam):
    return [lam * t + (1 - lam) * s for t, s in zip(teacher_params, student_params)]


def test_ema_accepts_the_solution(capsys):
    assert check_ema_update(ema) is True
    assert "passed" in capsys.readouterr().out


def test_ema_accepts_torch_tensors():
    def ema_torch(teacher_params, student_params, lam):
        return [torch.tensor(t).mul(lam).add(torch.tensor(s), alpha=1 - lam)
                for t, s in zip(teacher_params, student_params)]
    assert check_ema_update(ema_torch) is True


def test_ema_accepts_an_in_place_update_that_returns_the_list():
    def ema_in_place(teacher_params, student_params, lam):
        for t, s in zip(teacher_params, student_params):
            t *= lam
            t += (1 - lam) * s
        return teacher_params
    assert check_ema_update(ema_in_place) is True


@pytest.mark.parametrize("wrong", [
    lambda T, S, lam: [lam * s + (1 - lam) * t for t, s in zip(T, S)],   # lam and 1 - lam swapped
    lambda T, S, lam: [lam * t + lam * s for t, s in zip(T, S)],         # lam on both
    lambda T, S, lam: [s.copy() for s in S],                             # teacher = student
    lambda T, S, lam: [lam * t + (1 - lam) * s for t, s in zip(T[:1], S[:1])],  # first array only
    lambda T, S, lam: None,                                              # returns nothing
], ids=["swapped", "lam-on-both", "copy-student", "first-only", "returns-none"])
def test_ema_rejects_typical_mistakes(wrong):
    with pytest.raises(ExerciseFailed):
        check_ema_update(wrong)


def test_ema_names_the_unimplemented_stub():
    def stub(T, S, lam):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_ema_update(stub)


# --- momentum schedule ------------------------------------------------------------------------

def momentum_schedule(lam0, total_steps):
    j = np.arange(total_steps)
    return 1 - (1 - lam0) * (1 + np.cos(np.pi * j / total_steps)) / 2


def test_schedule_accepts_the_solution(capsys):
    assert check_momentum_schedule(momentum_schedule) is True
    assert "passed" in capsys.readouterr().out


def test_schedule_accepts_a_python_loop():
    def loop(lam0, total_steps):
        return [1 - (1 - lam0) * (1 + math.cos(math.pi * j / total_steps)) / 2
                for j in range(total_steps)]
    assert check_momentum_schedule(loop) is True


@pytest.mark.parametrize("wrong", [
    # from 1 down to lam0: the schedule ends at 0.996
    lambda lam0, J: lam0 + (1 - lam0) * (1 + np.cos(np.pi * np.arange(J) / J)) / 2,
    # divides by J - 1: reaches exactly 1 at the last step
    lambda lam0, J: 1 - (1 - lam0) * (1 + np.cos(np.pi * np.arange(J) / max(J - 1, 1))) / 2,
    # a linear ramp instead of a half cosine
    lambda lam0, J: lam0 + (1 - lam0) * np.arange(J) / J,
    # constant momentum
    lambda lam0, J: np.full(J, lam0),
], ids=["ends-at-lam0", "J-minus-1", "linear", "constant"])
def test_schedule_rejects_typical_mistakes(wrong):
    with pytest.raises(ExerciseFailed):
        check_momentum_schedule(wrong)


# --- cosine logits of the head ----------------------------------------------------------------

def cosine_logits(z, V):
    z_hat = z / np.linalg.norm(z, axis=1, keepdims=True)
    V_hat = V / np.linalg.norm(V, axis=1, keepdims=True)
    return z_hat @ V_hat.T


def test_logits_accept_the_solution(capsys):
    assert check_cosine_logits(cosine_logits) is True
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda z, V: z @ (V / np.linalg.norm(V, axis=1, keepdims=True)).T,    # z not L2-normalised
    lambda z, V: (z / np.linalg.norm(z, axis=1, keepdims=True)) @ V.T,    # V not weight-normalised
    lambda z, V: z @ V.T,                                                 # neither
    lambda z, V: (z / np.linalg.norm(z)) @ (V / np.linalg.norm(V)).T,     # whole-matrix norms
    lambda z, V: (V / np.linalg.norm(V, axis=1, keepdims=True))
    @ (z / np.linalg.norm(z, axis=1, keepdims=True)).T,                   # (K, N): transposed
], ids=["z-raw", "V-raw", "neither", "matrix-norm", "transposed"])
def test_logits_reject_typical_mistakes(wrong):
    with pytest.raises(ExerciseFailed):
        check_cosine_logits(wrong)
