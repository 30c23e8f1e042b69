"""Checkers for the exercises of notebook 05 (one training step), see dino_ref.exercises.

Each compares the learner's function with the library: the weights of the EMA teacher on the
student's past with a run of `ema_update` and `cosine_schedule`, the gradient through the head's
cosine logits with autograd through `WeightNormLinear` on an L2-normalised input (seeded random
cases), and a whole training step with
`dino_ref.train.train_step`, graded one step at a time from the same state; a step with gradient
accumulation over micro-batches against `train_step` on the whole batch, in float64.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..train import Config, build, cosine_schedule, set_schedules, train_step, views
from ..train.models import WeightNormLinear, ema_update
from ._core import ExerciseFailed, check_function

__all__ = ["check_ema_weights", "check_cosine_logits_grad", "check_training_step",
           "check_accumulated_step"]


def _ema_reference(lam0, total_steps):
    """ the weights of a run: a teacher of J + 1 numbers that starts at e_0, a student whose
    parameter after step a is e_(a+1), and J steps of the library's ema_update with the library's
    cosine_schedule; the teacher then holds the weight of each """
    J = total_steps
    teacher, student = torch.nn.Linear(J + 1, 1, bias=False).double(), torch.nn.Linear(J + 1, 1, bias=False).double()
    eye = torch.eye(J + 1, dtype=torch.float64)
    with torch.no_grad():
        teacher.weight.copy_(eye[:1])                                 # theta^(0) = e_0
        for a, lam in enumerate(cosine_schedule(lam0, 1.0, J)):
            student.weight.copy_(eye[a + 1:a + 2])                    # the student after step a
            ema_update(teacher, student, lam)
    return teacher.weight.detach().numpy()[0]                          # (J + 1,)


def _lams(lam0, J):
    return np.array(cosine_schedule(lam0, 1.0, J))


def _weights_with(lams, included):
    """ [prod lam, (1 - lam_a) prod_{k > a} lam_k]; included shifts the product (mistakes) """
    J = len(lams)
    w = [np.prod(lams)] + [(1 - lams[a]) * np.prod(lams[a + included:]) for a in range(J)]
    return np.array(w)


_EMA_MISTAKES = [
    (lambda lam0, J: _weights_with(np.full(J, lam0), 1),
     "these are the weights of a constant lam = lam0, (1 - lam0) lam0^(J - 1 - a); lam_j follows "
     "the cosine schedule of section 2, a different value at every step."),
    (lambda lam0, J: _weights_with(_lams(lam0, J), 0),
     "the product includes lam_a itself: the student after step a enters with 1 - lam_a and is then "
     "multiplied by the lam_k of the later steps k = a + 1 ... J - 1 only."),
    (lambda lam0, J: np.concatenate([_weights_with(_lams(lam0, J), 1)[:1],
                                     _weights_with(_lams(lam0, J), 1)[1:][::-1]]),
     "the weights of the student's parameters are in reverse order: entry a + 1 belongs to the "
     "student after step a (the newest last)."),
    (lambda lam0, J: _weights_with(_lams(lam0, J), 1)[1:],
     "return J + 1 weights: the common start theta^(0) keeps the weight prod_k lam_k (entry 0)."),
]


def check_ema_weights(fn):
    """ fn(lam0, total_steps) -> (total_steps + 1,) the weights of the teacher after J steps on the
    start theta^(0) (entry 0) and on the student after each step a (entry a + 1), with lam_j from
    the cosine schedule; compared with a run of the library's ema_update and cosine_schedule """
    cases = [(0.996, 1), (0.996, 2), (0.996, 3), (0.9, 7), (0.5, 10), (0.0, 4), (0.99, 64),
             (0.996, 930)]

    def tolerance(args, expected):         # float32 products over 930 steps stay near 1e-5
        return np.abs(expected).max()

    return check_function(
        "ema_weights", fn, _ema_reference, cases, rtol=1e-3, atol=1e-5, atol_scale=tolerance,
        against="a run of ema_update with cosine_schedule", mistakes=_EMA_MISTAKES,
        hint="unroll theta_t <- lam_j theta_t + (1 - lam_j) theta_s after every step j: the start "
             "keeps prod_j lam_j, the student after step a gets (1 - lam_a) prod_{k > a} lam_k, "
             "with lam_j = 1 - (1 - lam0)(1 + cos(pi j / J)) / 2; the J + 1 weights sum to 1.")


def _grad_reference(z, V, G):
    """ dL/dz by torch autograd through F.normalize and the library's WeightNormLinear, for the
    upstream gradient G = dL/ds """
    K, d = V.shape
    layer = WeightNormLinear(d, K).double()
    with torch.no_grad():
        layer.v.copy_(torch.from_numpy(V))
    z_t = torch.tensor(z, requires_grad=True)
    (layer(F.normalize(z_t, dim=-1)) * torch.from_numpy(G)).sum().backward()
    return z_t.grad.numpy()                                            # (N, d)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


_GRAD_MISTAKES = [
    (lambda z, V, G: G @ _unit(V) / np.linalg.norm(z, axis=1, keepdims=True),
     "the projection term is missing: z_hat = z / |z| depends on z through |z| too, "
     "d z_hat / dz = (I - z_hat z_hat^T) / |z|; subtract the part of G W along z_hat."),
    (lambda z, V, G: G @ _unit(V),
     "this is the gradient with respect to z_hat; z is normalised first, so the chain rule brings "
     "(I - z_hat z_hat^T) / |z|."),
    (lambda z, V, G: (G @ V - ((G @ V) * _unit(z)).sum(1, keepdims=True) * _unit(z))
     / np.linalg.norm(z, axis=1, keepdims=True),
     "the prototypes are the normalised rows w_d = v_d / |v_d| (weight normalisation), not v_d."),
    (lambda z, V, G: G @ _unit(V) - ((G @ _unit(V)) * _unit(z)).sum(1, keepdims=True) * _unit(z),
     "the projection is right, but the division by |z| is missing: z_hat = z / |z|."),
]


def check_cosine_logits_grad(fn):
    """ fn(z (N, d), V (K, d), G (N, K)) -> dL/dz (N, d) for the cosine logits s = z_hat W^T of the
    head's last step and an upstream gradient G = dL/ds; compared with torch autograd through
    F.normalize and the library's WeightNormLinear """
    rng = np.random.default_rng(503)
    cases = []
    for N, K, d in [(4, 6, 3), (1, 1, 1), (3, 10, 8), (5, 2, 16), (2, 7, 2), (1, 1, 4)]:
        z = rng.uniform(2.0, 10.0, size=(N, 1)) * rng.normal(size=(N, d))   # norms far from 1
        V = rng.uniform(0.05, 0.5, size=(K, 1)) * rng.normal(size=(K, d))    # many norms
        cases.append((z, V, rng.normal(size=(N, K))))
    cases.append((np.array([[-2.5]]), np.array([[0.7], [3.0]]), np.array([[1.0, -2.0]])))  # d = 1

    def tolerance(args, expected):        # float32: a few 1e-7 relative to the largest entry
        return max(np.abs(expected).max(), 1e-3)

    return check_function(
        "cosine_logits_grad", fn, _grad_reference, cases, rtol=1e-4, atol=1e-5,
        atol_scale=tolerance, against="autograd through the library's WeightNormLinear",
        mistakes=_GRAD_MISTAKES,
        hint="with z_hat = z / |z| and W the rows of V normalised: dL/dz_hat = G W, and "
             "dL/dz = (G W - <G W, z_hat> z_hat) / |z| row by row; the gradient is orthogonal to "
             "z, so growing z changes no logit.")


# A short run that exercises every part of a step: 6 steps of 5 per epoch, so steps 0-4 have the
# last layer frozen and step 5 not (and a new shuffle at step 5); no LR warmup, so every step
# moves the student; a small clip (the original's help suggests 0.3-1.0 for large ViTs), so that
# clipping changes the gradients of most parameters; lambda from 0.9, so that the teacher moves
# visibly (a mistake in the EMA shows up far above the tolerance).
STEP_CONFIG = Config(train_per_class=4, test_per_class=1, batch_size=8, steps=6, warmup_epochs=0,
                     clip_grad=0.3, momentum_teacher=0.9, threads=1)
# Each step is graded from the library's state (teacher forcing), so differences cannot build up
# over steps: any correct way of writing the step lands within float32 rounding of the library's,
# a few 1e-7 relative, and every mistake below moves some tensor by 1e-3 or more.
RTOL, ATOL = 1e-5, 1e-6


def _state(run):
    """ a deep copy of everything a step changes: student, teacher, center, optimizer """
    return copy.deepcopy({"student": run.student.state_dict(), "teacher": run.teacher.state_dict(),
                          "center": run.loss_fn.state_dict(),
                          "optimizer": run.optimizer.state_dict()})


def _load(run, state):
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    run.loss_fn.load_state_dict(state["center"])
    run.optimizer.load_state_dict(state["optimizer"])


def _close(a, b):
    return torch.allclose(a.double(), b.double(), rtol=RTOL, atol=ATOL)


def _differing(got, expected):
    """ names of the tensors of two state dicts that differ, and the largest difference """
    names, worst = [], 0.0
    for k in expected:
        if not _close(got[k], expected[k]):
            names.append(k)
            worst = max(worst, (got[k].double() - expected[k].double()).abs().max().item())
    return names, worst


def _teacher_mistake(teacher, before, student_after, lam, names):
    """ which typical EMA mistake, if any, explains the learner's teacher parameters `names`
    (None: none of them) """
    theta_t0, theta_s0 = before["teacher"], before["student"]
    candidates = {
        "the EMA used the student from before optimizer.step(): update the teacher after the step":
            lambda k: lam * theta_t0[k] + (1 - lam) * theta_s0[k],
        "no EMA: the teacher did not move; update it after every optimizer step":
            lambda k: theta_t0[k],
        "lam and 1 - lam are swapped: theta_t <- lam * theta_t + (1 - lam) * theta_s keeps most "
        "of the teacher":
            lambda k: (1 - lam) * theta_t0[k] + lam * student_after[k],
    }
    matches = [hint for hint, formula in candidates.items()
               if all(_close(teacher[k], formula(k)) for k in names)]
    if len(matches) > 1:             # step 0: teacher = student, so the first two coincide
        return "either " + ", or ".join(matches)
    return matches[0] if matches else None


_HINTS = {
    "loss": "return the value of loss_fn(teacher(globals_), student(globals_, locals_), epoch): the "
            "teacher's output first, the teacher on the 2 global crops only, the student on all crops",
    "the center c": "call loss_fn exactly once per step, on the raw teacher output: each call "
                    "moves the center (c <- m c + (1 - m) mean of the teacher rows)",
    "freeze": "drop the last layer's gradient (student.head.last_layer.v.grad = None) before "
              "optimizer.step(), and only while epoch < freeze_last_layer",
    "the student": "optimizer.zero_grad() before loss.backward() (or gradients add up over steps); "
                   "clip every parameter's gradient to norm <= clip_grad (clip_gradients(student, "
                   "clip_grad)); the last-layer freeze; then optimizer.step(), once",
    "the teacher": "the EMA comes after optimizer.step(), without gradients (torch.no_grad()): "
                   "theta_t <- lam * theta_t + (1 - lam) * theta_s for every parameter",
}


def check_training_step(fn):
    """ fn(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam, clip_grad,
    freeze_last_layer) -> the loss: one DINO training step, after which the student, the teacher
    and the center must be those of `dino_ref.train.train_step`

    Runs 6 steps of a small run (5 with the last layer frozen, then 1 without). Before each step
    the learner's networks, center and optimizer are set to the library's; both take the same
    crops and schedules; then the loss, the center, the student and the teacher are compared
    (rtol 1e-5, atol 1e-6: float32 rounding stays below, every typical mistake far above).
    """
    name = "training_step"
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as the trainer's threads=1; restored below
    try:
        ours, theirs = build(STEP_CONFIG), build(STEP_CONFIG)
        for j in range(STEP_CONFIG.steps):
            epoch, lam = j / ours.steps_per_epoch, ours.momentum_at[j]
            before = _state(ours)
            _load(theirs, before)
            set_schedules(ours, j)
            set_schedules(theirs, j)
            globals_, locals_ = views(ours, j)
            args = (epoch, lam, STEP_CONFIG.clip_grad, STEP_CONFIG.freeze_last_layer)
            loss_ref, _ = train_step(ours.student, ours.teacher, ours.loss_fn, ours.optimizer,
                                     globals_.clone(), locals_.clone(), *args)
            try:
                loss = fn(theirs.student, theirs.teacher, theirs.loss_fn, theirs.optimizer,
                          globals_.clone(), locals_.clone(), *args)
            except NotImplementedError:
                raise ExerciseFailed(f"{name}: not implemented yet (replace the "
                                     "`raise NotImplementedError` with your code)") from None
            loss = float(loss.detach() if hasattr(loss, "detach") else loss)
            frozen = epoch < STEP_CONFIG.freeze_last_layer
            where = (f"{name}: step {j} (epoch {epoch:.1f}, lam {lam:.4f}, last layer "
                     f"{'frozen' if frozen else 'trained'}), from the same state as the library's")
            if not abs(loss - loss_ref.item()) <= ATOL + RTOL * abs(loss_ref.item()):
                raise ExerciseFailed(f"{where}: the loss is {loss:.6f}, expected "
                                     f"{loss_ref.item():.6f}\n  hint: {_HINTS['loss']}")
            expected = {"the center c": ours.loss_fn.state_dict(),
                        "the student": ours.student.state_dict(),
                        "the teacher": ours.teacher.state_dict()}
            got = {"the center c": theirs.loss_fn.state_dict(),
                   "the student": theirs.student.state_dict(),
                   "the teacher": theirs.teacher.state_dict()}
            for what in expected:                     # center, student, then teacher: causes first
                names, worst = _differing(got[what], expected[what])
                if not names:
                    continue
                hint = _HINTS["freeze" if names == ["head.last_layer.v"] else what]
                if what == "the teacher":
                    params = [k for k, _ in theirs.teacher.named_parameters()]  # not BN statistics
                    hint = _teacher_mistake(got[what], before, got["the student"], lam, params) or hint
                raise ExerciseFailed(
                    f"{where}: {what} differs from the library's after the step "
                    f"({len(names)} tensor(s), e.g. {names[0]!r}, max |difference| {worst:.1e})"
                    f"\n  hint: {hint}")
    finally:
        torch.set_num_threads(prev_threads)
    print(f"{name}: passed, {STEP_CONFIG.steps} steps agree with dino_ref.train.train_step (loss, "
          f"center, student and teacher; rtol {RTOL:g}, atol {ATOL:g})")
    return True


# The accumulated step: the same short run without BatchNorm in the head (the backbone's GroupNorm
# works per sample, so a micro-batch's outputs are those rows of the whole batch's outputs), 9 rows
# (splits such as 5 + 4 and 3 + 3 + 3 and 2 + 2 + 2 + 2 + 1), in float64: rounding then stays
# near 1e-16, far below the tolerance, whichever way the rows are split and the sums ordered.
ACCUMULATION_CONFIG = Config(train_per_class=4, test_per_class=1, batch_size=9, steps=6,
                             warmup_epochs=0, clip_grad=0.3, momentum_teacher=0.9, threads=1,
                             head_bn=False)
N_MICRO = [2, 3, 1, 5, 9, 4]          # micro-batches at steps 0 ... 5 (1: the plain step)

_ACCUMULATION_HINTS = {
    "loss": "return the loss of the whole batch: each micro-batch's loss is a mean over its B_k "
            "rows, so the whole batch's is sum_k (B_k / B) * L_k (not the plain mean of the L_k "
            "when the B_k differ)",
    "the center c": "update the center once per step with the teacher outputs of all B rows: "
                    "loss_fn(t_k, s_k, epoch, update_center=False) for each micro-batch, then "
                    "loss_fn.update_center(the teacher outputs concatenated along the batch axis, "
                    "dim=1); and the teacher must not move before that: one optimizer.step() and "
                    "one EMA update, after the last micro-batch",
    "freeze": "drop the last layer's gradient (student.head.last_layer.v.grad = None) after the "
              "last micro-batch, before optimizer.step(), only while epoch < freeze_last_layer",
    "the student": "zero the gradients once, before the first micro-batch; backward() each "
                   "micro-batch's loss times B_k / B (so that the gradients add up to the whole "
                   "batch's); then clip, freeze and optimizer.step() once, after the last one",
    "the teacher": "one EMA update per step, after optimizer.step() (not one per micro-batch)",
}


def check_accumulated_step(fn):
    """ fn(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam, clip_grad,
    freeze_last_layer, n_micro) -> the loss: one DINO step whose batch of B rows goes through the
    networks in n_micro micro-batches (gradient accumulation), after which the loss, the center,
    the student and the teacher must be those of `dino_ref.train.train_step` on the whole batch

    Runs 6 steps of a small run in float64, n_micro from 1 to 9 (uneven splits of B = 9 rows
    included), each from the library's state (teacher forcing); rtol 1e-5, atol 1e-6.
    """
    name = "accumulated_step"
    config = ACCUMULATION_CONFIG
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours, theirs = build(config), build(config)
        for run in (ours, theirs):
            for module in (run.student, run.teacher, run.loss_fn):
                module.double()            # in place: the optimizer keeps the same parameters
        for j in range(config.steps):
            epoch, lam, n_micro = j / ours.steps_per_epoch, ours.momentum_at[j], N_MICRO[j]
            before = _state(ours)
            _load(theirs, before)
            set_schedules(ours, j)
            set_schedules(theirs, j)
            globals_, locals_ = (x.double() for x in views(ours, j))
            args = (epoch, lam, config.clip_grad, config.freeze_last_layer)
            loss_ref, _ = train_step(ours.student, ours.teacher, ours.loss_fn, ours.optimizer,
                                     globals_.clone(), locals_.clone(), *args)
            try:
                loss = fn(theirs.student, theirs.teacher, theirs.loss_fn, theirs.optimizer,
                          globals_.clone(), locals_.clone(), *args, n_micro)
            except NotImplementedError:
                raise ExerciseFailed(f"{name}: not implemented yet (replace the "
                                     "`raise NotImplementedError` with your code)") from None
            loss = float(loss.detach() if hasattr(loss, "detach") else loss)
            frozen = epoch < config.freeze_last_layer
            T, B = globals_.shape[:2]
            where = (f"{name}: step {j} with n_micro = {n_micro} (globals_ (T={T}, B={B}, 3, "
                     f"{globals_.shape[-1]}, {globals_.shape[-1]}), locals_ (S-T={locals_.shape[0]}, "
                     f"B={B}, 3, {locals_.shape[-1]}, {locals_.shape[-1]}), epoch {epoch:.1f}, "
                     f"lam {lam:.4f}, last layer {'frozen' if frozen else 'trained'}), from the "
                     f"library's state")
            for what, module in (("the center c", "loss_fn"), ("loss", None),
                                 ("the student", "student"), ("the teacher", "teacher")):
                if module is None:        # the center first: one update per micro-batch moves both
                    if not abs(loss - loss_ref.item()) <= ATOL + RTOL * abs(loss_ref.item()):
                        raise ExerciseFailed(f"{where}: the loss is {loss:.8f}, expected "
                                             f"{loss_ref.item():.8f} (train_step on the whole "
                                             f"batch)\n  hint: {_ACCUMULATION_HINTS['loss']}")
                    continue
                expected = getattr(ours, module).state_dict()
                names, worst = _differing(getattr(theirs, module).state_dict(), expected)
                if names:
                    key = "freeze" if names == ["head.last_layer.v"] else what
                    raise ExerciseFailed(
                        f"{where}: {what} differs from train_step's on the whole batch "
                        f"({len(names)} tensor(s), e.g. {names[0]!r}, max |difference| "
                        f"{worst:.1e})\n  hint: {_ACCUMULATION_HINTS[key]}")
    finally:
        torch.set_num_threads(prev_threads)
    print(f"{name}: passed, {config.steps} steps with 1 to {max(N_MICRO)} micro-batches agree with "
          f"dino_ref.train.train_step on the whole batch (loss, center, student and teacher; "
          f"float64, rtol {RTOL:g}, atol {ATOL:g})")
    return True
