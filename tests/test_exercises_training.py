"""The checkers of notebook 05's exercises: each accepts the reference solution and rejects the
typical mistakes with ExerciseFailed."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dino_ref.exercises import (ExerciseFailed, check_cosine_logits_grad, check_ema_weights,
                                check_training_step)
from dino_ref.exercises.training import STEP_CONFIG
from dino_ref.train import build, clip_gradients, ema_update, set_schedules, train, train_step, views


# --- the EMA teacher's weights on the student's past ---------------------------------------------

def schedule(lam0, J):
    return 1 - (1 - lam0) * (1 + np.cos(np.pi * np.arange(J) / J)) / 2


def ema_weights(lam0, total_steps):
    lam = schedule(lam0, total_steps)
    later = np.append(np.cumprod(lam[::-1])[::-1][1:], 1.0)          # prod_{k > a} lam_k
    return np.concatenate([[np.prod(lam)], (1 - lam) * later])


def ema_weights_loop(lam0, total_steps):
    w = [1.0]                                                         # theta_t = theta^(0)
    for a in range(total_steps):
        lam = 1 - (1 - lam0) * (1 + math.cos(math.pi * a / total_steps)) / 2
        w = [lam * x for x in w] + [1 - lam]                          # EMA with the student e_(a+1)
    return w


def ema_weights_torch_float32(lam0, total_steps):
    j = torch.arange(total_steps, dtype=torch.float32)
    lam = 1 - (1 - lam0) * (1 + torch.cos(torch.pi * j / total_steps)) / 2
    later = torch.cat([torch.flip(torch.cumprod(torch.flip(lam, [0]), 0), [0])[1:], torch.ones(1)])
    return torch.cat([lam.prod()[None], (1 - lam) * later])


def ema_weights_by_running_the_library(lam0, total_steps):
    """ ema_update on a one-number teacher per entry, with the library's schedule """
    from dino_ref.train import cosine_schedule
    teacher = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(float(k == 0), dtype=torch.float64))
                                      for k in range(total_steps + 1)])
    student = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
                                      for _ in range(total_steps + 1)])
    with torch.no_grad():
        for a, lam in enumerate(cosine_schedule(lam0, 1.0, total_steps)):
            for k, p in enumerate(student):
                p.fill_(float(k == a + 1))
            ema_update(teacher, student, lam)
    return [p.item() for p in teacher]


@pytest.mark.parametrize("answer", [ema_weights, ema_weights_loop, ema_weights_torch_float32,
                                    ema_weights_by_running_the_library],
                         ids=["cumprod", "loop", "torch-float32", "ema_update"])
def test_ema_weights_accept(answer, capsys):
    assert check_ema_weights(answer) is True
    assert "passed" in capsys.readouterr().out


def test_the_weights_sum_to_one_and_give_the_horizon():
    for lam0, J in [(0.996, 930), (0.9, 7), (0.5, 10)]:
        w = ema_weights(lam0, J)
        assert abs(w.sum() - 1) < 1e-12 and (w >= 0).all()
    w = ema_weights(0.996, 930)                     # the default run: the start keeps a share
    assert 0.1 < w[0] < 0.2


@pytest.mark.parametrize("wrong, named", [
    (lambda lam0, J: np.concatenate([[lam0 ** J], (1 - lam0) * lam0 ** (J - 1 - np.arange(J))]),
     "constant lam = lam0"),
    (lambda lam0, J: np.concatenate([[np.prod(schedule(lam0, J))],
                                     (1 - schedule(lam0, J)) * np.cumprod(schedule(lam0, J)[::-1])[::-1]]),
     "includes lam_a itself"),
    (lambda lam0, J: np.concatenate([ema_weights(lam0, J)[:1], ema_weights(lam0, J)[1:][::-1]]),
     "reverse order"),
    (lambda lam0, J: ema_weights(lam0, J)[1:], "return J \\+ 1 weights"),
    (lambda lam0, J: schedule(lam0, J), "unroll"),                  # the schedule itself: the general hint
], ids=["constant-lam", "off-by-one", "reversed", "no-start", "the-schedule"])
def test_ema_weights_reject_typical_mistakes(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_ema_weights(wrong)


# --- the gradient through the head's cosine logits ----------------------------------------------

def cosine_logits_grad(z, V, G):
    norm = np.linalg.norm(z, axis=1, keepdims=True)                   # (N, 1)
    z_hat, W = z / norm, V / np.linalg.norm(V, axis=1, keepdims=True)
    g = G @ W                                                         # (N, d) dL/dz_hat
    return (g - (g * z_hat).sum(1, keepdims=True) * z_hat) / norm


def cosine_logits_grad_loop(z, V, G):
    N, d = z.shape
    out = np.zeros((N, d))
    for b in range(N):
        r = np.linalg.norm(z[b])
        z_hat = z[b] / r
        jacobian = (np.eye(d) - np.outer(z_hat, z_hat)) / r          # d z_hat / dz
        for k in range(V.shape[0]):
            out[b] += G[b, k] * jacobian @ (V[k] / np.linalg.norm(V[k]))
    return out


def cosine_logits_grad_torch_float32(z, V, G):
    z, V, G = (torch.tensor(x, dtype=torch.float32) for x in (z, V, G))
    norm = z.norm(dim=1, keepdim=True)
    z_hat = z / norm
    g = G @ F.normalize(V, dim=1)
    return (g - (g * z_hat).sum(1, keepdim=True) * z_hat) / norm


def cosine_logits_grad_by_autograd(z, V, G):
    z_t = torch.tensor(z, requires_grad=True)
    s = F.normalize(z_t, dim=1) @ F.normalize(torch.tensor(V), dim=1).T
    (s * torch.tensor(G)).sum().backward()
    return z_t.grad


@pytest.mark.parametrize("answer", [cosine_logits_grad, cosine_logits_grad_loop,
                                    cosine_logits_grad_torch_float32, cosine_logits_grad_by_autograd],
                         ids=["vectorised", "loop", "torch-float32", "autograd"])
def test_logits_grad_accepts(answer, capsys):
    assert check_cosine_logits_grad(answer) is True
    assert "passed" in capsys.readouterr().out


def test_the_gradient_is_orthogonal_to_z():
    rng = np.random.default_rng(0)
    z, V, G = rng.normal(size=(4, 5)), rng.normal(size=(3, 5)), rng.normal(size=(4, 3))
    assert np.abs((cosine_logits_grad(z, V, G) * z).sum(1)).max() < 1e-12


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("wrong, named", [
    (lambda z, V, G: G @ _unit(V) / np.linalg.norm(z, axis=1, keepdims=True), "projection term is missing"),
    (lambda z, V, G: G @ _unit(V), "gradient with respect to z_hat"),
    (lambda z, V, G: (G @ V - ((G @ V) * _unit(z)).sum(1, keepdims=True) * _unit(z))
     / np.linalg.norm(z, axis=1, keepdims=True), "normalised rows"),
    (lambda z, V, G: cosine_logits_grad(z, V, G) * np.linalg.norm(z, axis=1, keepdims=True), "division by \\|z\\|"),
    (lambda z, V, G: cosine_logits_grad(z, V, G).T, "orthogonal to"),   # (d, N): the general hint
], ids=["no-projection", "wrt-z_hat", "V-raw", "no-division", "wrong-shape"])
def test_logits_grad_rejects_typical_mistakes(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_cosine_logits_grad(wrong)


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
