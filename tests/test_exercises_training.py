"""The checkers of notebook 05's exercises: each accepts the reference solution and rejects the
typical mistakes with ExerciseFailed."""

import math

import numpy as np
import pytest
import torch

from dino_ref.exercises import (ExerciseFailed, check_cosine_logits, check_momentum_schedule,
                                check_training_step)
from dino_ref.exercises.training import STEP_CONFIG
from dino_ref.train import build, clip_gradients, ema_update, set_schedules, train, train_step, views


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

def make_step(ema="mul_add", ema_first=False, swapped=False, no_ema=False, freeze=True,
              always_freeze=False, freeze_before_clip=False, clip=True, zero_grad=True,
              zero_grad_after_backward=False, loss_twice=False, teacher_sees_locals=False):
    """ the solution of exercise 5.3 written one of several correct ways, or one typical mistake """
    def update_teacher(teacher, student, lam):
        a, b = (1 - lam, lam) if swapped else (lam, 1 - lam)
        t_params, s_params = list(teacher.parameters()), [p.detach() for p in student.parameters()]
        with torch.no_grad():
            if ema == "mul_add":                                     # the original authors' form
                for p_t, p_s in zip(t_params, s_params):
                    p_t.mul_(a).add_(b * p_s)
            elif ema == "add_alpha":
                for p_t, p_s in zip(t_params, s_params):
                    p_t.mul_(a).add_(p_s, alpha=b)
            elif ema == "lerp":                                      # theta_t + (1 - lam)(theta_s - theta_t)
                for p_t, p_s in zip(t_params, s_params):
                    p_t.lerp_(p_s, b)
            elif ema == "foreach_lerp":
                torch._foreach_lerp_(t_params, s_params, b)
            elif ema == "copy_formula":
                for p_t, p_s in zip(t_params, s_params):
                    p_t.copy_(a * p_t + b * p_s)
            elif ema == "state_dict":                                # via the state dicts, float64
                sd_t, sd_s = teacher.state_dict(), student.state_dict()
                for k, p_t in teacher.named_parameters():
                    p_t.copy_((a * sd_t[k].double() + b * sd_s[k].double()).float())
            elif ema == "library":
                ema_update(teacher, student, lam)

    def freeze_last(student, epoch, freeze_last_layer):
        if always_freeze or (freeze and epoch < freeze_last_layer):
            student.head.last_layer.v.grad = None

    def training_step(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam,
                      clip_grad, freeze_last_layer):
        with torch.no_grad():
            t = teacher(globals_, locals_) if teacher_sees_locals else teacher(globals_)
        s = student(globals_, locals_)
        loss = loss_fn(t, s, epoch)
        if loss_twice:
            loss_fn(t, s, epoch)                                     # e.g. "for logging"
        if zero_grad and not zero_grad_after_backward:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if freeze_before_clip:
            freeze_last(student, epoch, freeze_last_layer)
        if clip:
            clip_gradients(student, clip_grad)
        if not freeze_before_clip:
            freeze_last(student, epoch, freeze_last_layer)
        if ema_first and not no_ema:
            update_teacher(teacher, student, lam)
        optimizer.step()
        if zero_grad_after_backward:
            optimizer.zero_grad()
        if not ema_first and not no_ema:
            update_teacher(teacher, student, lam)
        return loss
    return training_step


def test_train_step_is_the_step_that_train_runs():
    """ build + set_schedules + views + train_step, step by step, end where train() ends """
    before = torch.get_num_threads()
    try:
        metrics = train(STEP_CONFIG, progress=False)
        run = build(STEP_CONFIG)
        losses = []
        for j in range(STEP_CONFIG.steps):
            set_schedules(run, j)
            globals_, locals_ = views(run, j)
            loss, _ = train_step(run.student, run.teacher, run.loss_fn, run.optimizer, globals_,
                                 locals_, j / run.steps_per_epoch, run.momentum_at[j],
                                 STEP_CONFIG.clip_grad, STEP_CONFIG.freeze_last_layer)
            losses.append(loss.item())
    finally:
        torch.set_num_threads(before)
    assert np.allclose(losses, [r["loss"] for r in metrics["history"]], rtol=0, atol=1e-6)
    assert len(losses) == len(metrics["history"]) == STEP_CONFIG.steps


@pytest.mark.parametrize("variant", [
    {"ema": "mul_add"}, {"ema": "add_alpha"}, {"ema": "lerp"}, {"ema": "foreach_lerp"},
    {"ema": "copy_formula"}, {"ema": "state_dict"}, {"ema": "library"},
    {"freeze_before_clip": True}, {"zero_grad_after_backward": False, "zero_grad": True},
], ids=["mul_-add_", "add_-alpha", "lerp_", "foreach-lerp", "copy_-formula", "float64-state-dict",
        "ema_update", "freeze-before-clip", "zero-grad-set-to-none"])
def test_step_accepts_every_correct_form(variant, capsys):
    assert check_training_step(make_step(**variant)) is True
    assert "passed" in capsys.readouterr().out


def test_step_accepts_the_library_step():
    def library_step(*args):
        loss, _ = train_step(*args)
        return loss
    assert check_training_step(library_step) is True


@pytest.mark.parametrize("mistake, message", [
    ({"ema_first": True}, "student from before optimizer.step"),
    ({"swapped": True}, "swapped"),
    ({"no_ema": True}, "did not move"),
    ({"freeze": False}, "last_layer.v.grad = None"),
    ({"always_freeze": True}, "only while epoch < freeze_last_layer"),
    ({"clip": False}, "the student differs"),
    ({"zero_grad": False}, "zero_grad"),
    ({"loss_twice": True}, "the center c differs"),
    ({"teacher_sees_locals": True}, "the loss is"),
], ids=["ema-before-step", "lam-swapped", "no-ema", "no-freeze", "always-frozen", "no-clip",
        "no-zero-grad", "loss-called-twice", "teacher-sees-locals"])
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
