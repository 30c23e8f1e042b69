"""The checkers of notebook 05's exercises: each accepts the reference solution and rejects the
typical mistakes with ExerciseFailed."""

import math

import numpy as np
import pytest
import torch

from dino_ref.exercises import (ExerciseFailed, check_cosine_logits, check_momentum_schedule,
                                check_training_step)
from dino_ref.exercises.training import _STEP_CONFIG, _reference_step, _Run, _trainer_run
from dino_ref.train import clip_gradients


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


# --- one training step ------------------------------------------------------------------------

def make_step(ema_first=False, swapped=False, freeze=True, always_freeze=False, clip=True,
              zero_grad=True, loss_twice=False, teacher_sees_locals=False):
    """ the solution of exercise 5.3, or one typical mistake in it """
    def training_step(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam,
                      clip_grad, freeze_last_layer):
        with torch.no_grad():
            t = teacher(globals_, locals_) if teacher_sees_locals else teacher(globals_)
        s = student(globals_, locals_)
        loss = loss_fn(t, s, epoch)
        if loss_twice:
            loss_fn(t, s, epoch)                                     # e.g. "for logging"
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            clip_gradients(student, clip_grad)
        if always_freeze or (freeze and epoch < freeze_last_layer):
            student.head.last_layer.v.grad = None

        def ema():
            with torch.no_grad():
                for p_t, p_s in zip(teacher.parameters(), student.parameters()):
                    a, b = (1 - lam, lam) if swapped else (lam, 1 - lam)
                    p_t.mul_(a).add_(p_s, alpha=b)
        if ema_first:
            ema()
        optimizer.step()
        if not ema_first:
            ema()
        return loss
    return training_step


def test_the_checkers_reference_step_is_the_trainers_step():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        student, teacher, center, losses = _trainer_run()              # dino_ref.train.train
        run = _Run()
        ours = [run.step(_reference_step, j) for j in range(_STEP_CONFIG.steps)]
    finally:
        torch.set_num_threads(before)
    assert len(losses) == _STEP_CONFIG.steps and np.allclose(ours, losses, rtol=0, atol=1e-9)
    for mine, trainers in zip(run.states().values(), (center, student, teacher)):
        assert mine.keys() == trainers.keys()
        for k in trainers:
            assert torch.allclose(mine[k].double(), trainers[k].double(), rtol=0, atol=1e-9), k


def test_step_accepts_the_solution_and_the_reference(capsys):
    assert check_training_step(make_step()) is True
    assert "passed" in capsys.readouterr().out
    assert check_training_step(_reference_step) is True             # the trainer's loop body


@pytest.mark.parametrize("mistake, message", [
    ({"ema_first": True}, "the teacher differs"),
    ({"swapped": True}, "the teacher differs"),
    ({"freeze": False}, "last_layer.v.grad = None"),
    ({"always_freeze": True}, "only while epoch < freeze_last_layer"),
    ({"clip": False}, "the student differs"),
    ({"zero_grad": False}, "the student differs"),
    ({"loss_twice": True}, "the center c differs"),
    ({"teacher_sees_locals": True}, "the loss is"),
], ids=["ema-before-step", "lam-swapped", "no-freeze", "always-frozen", "no-clip", "no-zero-grad",
        "loss-called-twice", "teacher-sees-locals"])
def test_step_rejects_typical_mistakes(mistake, message):
    with pytest.raises(ExerciseFailed, match=message):
        check_training_step(make_step(**mistake))


def test_step_names_the_unimplemented_stub():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_training_step(stub)


def test_step_checker_restores_the_thread_count():
    before = torch.get_num_threads()
    check_training_step(make_step())
    assert torch.get_num_threads() == before
