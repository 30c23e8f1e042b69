"""Checkers for the exercises of notebook 05 (one training step), see dino_ref.exercises.

Each compares the learner's function with the library: the momentum schedule with
`dino_ref.train.cosine_schedule`, the head's logits with the head's `WeightNormLinear` on an
L2-normalised input (seeded random cases), and a whole training step with
`dino_ref.train.train_step`, graded one step at a time from the same state; a step with gradient
accumulation over micro-batches against `train_step` on the whole batch, in float64.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..train import Config, build, cosine_schedule, set_schedules, train_step, views
from ..train.models import WeightNormLinear
from ._core import ExerciseFailed, check_function

__all__ = ["check_momentum_schedule", "check_cosine_logits", "check_training_step",
           "check_accumulated_step"]


def check_momentum_schedule(fn):
    """ fn(lam0, total_steps) -> lam_j for j = 0 .. total_steps - 1, an array (total_steps,)

    the cosine schedule from lam0 towards 1: lam_j = 1 - (1 - lam0) (1 + cos(pi j / J)) / 2
    """
    cases = [(0.996, 1), (0.996, 2), (0.996, 3), (0.9, 7), (0.5, 10), (0.996, 930), (0.99, 64)]

    def reference(lam0, total_steps):
        return np.array(cosine_schedule(lam0, 1.0, total_steps))

    return check_function(
        "momentum_schedule", fn, reference, cases, rtol=0.0, atol=1e-12,
        against="dino_ref.train.cosine_schedule",
        hint="lam rises from lam0 at step j = 0 towards 1 (not from 1 down to lam0) along a half "
             "cosine, 1 - (1 - lam0)(1 + cos(pi j / J)) / 2, with J the number of steps (not "
             "J - 1: the last value stays just below 1); return one value per step")


def check_cosine_logits(fn):
    """ fn(z (N, d), V (K, d)) -> (N, K): cosine of the angle between every row of z and of V

    the DINO head's last step: L2-normalise the bottleneck output z, weight-normalise the
    prototypes V (rows of unit length), take the dot products.
    """
    rng = np.random.default_rng(503)
    cases = []
    for N, K, d in [(4, 6, 3), (1, 1, 1), (3, 10, 8), (5, 2, 16), (2, 7, 2)]:
        z = rng.uniform(2.0, 10.0, size=(N, 1)) * rng.normal(size=(N, d))   # norms far from 1
        V = rng.uniform(0.05, 0.5, size=(K, 1)) * rng.normal(size=(K, d))    # many norms
        cases.append((z, V))
    cases.append((np.array([[-2.5]]), np.array([[0.7], [3.0]])))                 # d = 1: -1 and 1

    def reference(z, V):
        K, d = V.shape
        layer = WeightNormLinear(d, K).double()
        with torch.no_grad():
            layer.v.copy_(torch.from_numpy(V))
            return layer(F.normalize(torch.from_numpy(z), dim=-1)).numpy()    # (N, K)

    return check_function(
        "cosine_logits", fn, reference, cases, against="the library's WeightNormLinear",
        hint="normalise BOTH: every row of z to unit L2 norm (the head's L2-normalised bottleneck) "
             "and every row of V (weight normalisation), then z_hat @ V_hat.T; every logit must "
             "then lie in [-1, 1]")


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
