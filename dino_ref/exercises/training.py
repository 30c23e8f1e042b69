"""Checkers for the exercises of notebook 05 (one training step), see dino_ref.exercises.

Each compares the learner's function with the library: the momentum schedule with
`dino_ref.train.cosine_schedule`, the head's logits with `dino_ref.models.WeightNormLinear` on an
L2-normalised input (seeded random cases), and a whole training step, run for 6 steps beside the
trainer's loop body (which the tests check against `dino_ref.train.train` itself).
"""

import functools
import pathlib
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from ..data import make_splits
from ..loss import DINOLoss
from ..models import WeightNormLinear, ema_update, make_student, make_teacher
from ..multicrop import multicrop
from ..train import Config, clip_gradients, cosine_schedule, train
from ._core import ExerciseFailed, _short, check_function

__all__ = ["check_momentum_schedule", "check_cosine_logits", "check_training_step"]


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
_STEP_CONFIG = Config(train_per_class=4, test_per_class=1, batch_size=8, steps=6, warmup_epochs=0,
                      clip_grad=0.3, momentum_teacher=0.9, threads=1)
_ATOL = 1e-6


@functools.lru_cache(maxsize=1)
def _trainer_run():
    """ the trainer's own run of _STEP_CONFIG: (student, teacher, loss state dicts, losses); the
    tests check that _reference_step in _Run gives the same """
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "steps.pt"
        metrics = train(_STEP_CONFIG, save=str(path), progress=False)
        ckpt = torch.load(path, weights_only=True)
    return (ckpt["student"], ckpt["teacher"], ckpt["dino_loss"],
            [r["loss"] for r in metrics["history"]])


def _reference_step(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam,
                    clip_grad, freeze_last_layer):
    """ one step as the loop of dino_ref.train.train does it (tests/test_exercises_training.py
    checks that a _Run of it equals the trainer's run) """
    with torch.no_grad():
        t = teacher(globals_)                                        # (T, B, K) global crops only
    s = student(globals_, locals_)                                   # (S, B, K) all crops
    loss = loss_fn(t, s, epoch)                                      # then the center moves
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(student, clip_grad)
    if epoch < freeze_last_layer:
        student.head.last_layer.v.grad = None
    optimizer.step()
    ema_update(teacher, student, lam)
    return loss


class _Run:
    """ the trainer's setup (same seeds, same order) and its loop over the steps of _STEP_CONFIG:
    the schedules, the batch and the crops; `step(fn, j)` runs fn for the step's work """

    def __init__(self):
        cfg = self.cfg = _STEP_CONFIG
        torch.manual_seed(cfg.seed)                                  # the student's initialisation
        (self.images, _), _ = make_splits(cfg.train_per_class, cfg.test_per_class,
                                          cfg.global_size, cfg.seed)
        self.steps_per_epoch = len(self.images) // cfg.batch_size
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)       # batch order and crops
        self.student = make_student(cfg.out_dim, cfg.widths, cfg.hidden_dim, cfg.bottleneck_dim,
                                    cfg.head_bn)
        self.teacher = make_teacher(self.student)
        self.loss_fn = DINOLoss(cfg.out_dim, cfg.warmup_teacher_temp, cfg.teacher_temp,
                                cfg.warmup_teacher_temp_epochs, cfg.student_temp,
                                cfg.center_momentum)
        decay = [p for p in self.student.parameters() if p.ndim > 1]
        no_decay = [p for p in self.student.parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=0.0)
        self.lr_at = cosine_schedule(cfg.lr, cfg.min_lr, cfg.steps, 0)
        self.wd_at = cosine_schedule(cfg.weight_decay, cfg.weight_decay_end, cfg.steps)
        self.momentum_at = cosine_schedule(cfg.momentum_teacher, 1.0, cfg.steps)

    def step(self, fn, j):
        cfg, i = self.cfg, j % self.steps_per_epoch
        if i == 0:
            self.order = torch.randperm(len(self.images), generator=self.gen)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at[j]
        self.optimizer.param_groups[0]["weight_decay"] = self.wd_at[j]
        batch = self.images[self.order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
        globals_, locals_ = multicrop(batch, self.gen, cfg.local_crops, cfg.global_size,
                                      cfg.local_size, cfg.global_scale, cfg.local_scale)
        loss = fn(self.student, self.teacher, self.loss_fn, self.optimizer, globals_, locals_,
                  j / self.steps_per_epoch, self.momentum_at[j], cfg.clip_grad,
                  cfg.freeze_last_layer)
        return float(loss.detach() if hasattr(loss, "detach") else loss)

    def states(self):
        return {"the center c": self.loss_fn.state_dict(), "the student": self.student.state_dict(),
                "the teacher": self.teacher.state_dict()}


def _differing(ours, theirs):
    """ names of the entries of two state dicts that differ by more than _ATOL, and the largest
    difference """
    names, worst = [], 0.0
    for k in theirs:
        diff = (ours[k].double() - theirs[k].double()).abs().max().item()
        if not diff <= _ATOL:
            names.append(k)
            worst = max(worst, diff) if diff == diff else float("nan")
    return names, worst


_HINTS = {
    "loss": "return loss_fn(teacher(globals_), student(globals_, locals_), epoch): the teacher "
            "output first, the teacher on the T global crops only, the student on all crops",
    "the center c": "call loss_fn exactly once per step, on the raw teacher output: each call "
                    "moves the center (c <- m c + (1 - m) mean of the teacher rows)",
    "freeze": "drop the last layer's gradient (student.head.last_layer.v.grad = None) after "
              "clipping and before optimizer.step(), and only while epoch < freeze_last_layer",
    "the student": "optimizer.zero_grad() before loss.backward(); then clip every parameter's "
                   "gradient to norm <= clip_grad (clip_gradients(student, clip_grad)); then the "
                   "last-layer freeze; then optimizer.step()",
    "the teacher": "the EMA comes after optimizer.step(), without gradients (torch.no_grad()): "
                   "theta_t <- lam * theta_t + (1 - lam) * theta_s for every parameter, lam on "
                   "the teacher's own value",
}


def check_training_step(fn):
    """ fn(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam, clip_grad,
    freeze_last_layer) -> the loss: one DINO training step, after which the student, the teacher
    and the center must be those of `dino_ref.train.train`

    Runs 6 steps from the trainer's seed and setup (5 with the last layer frozen, then 1 without);
    the checker sets the schedules and draws the crops, fn does the rest of each step. After every
    step it compares the loss, the center, the student and the teacher with those of the reference
    step run beside it (the trainer's loop body; the tests check it against `train` itself).
    """
    name = "training_step"
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # as the trainer's threads=1; restored below
    try:
        ours, theirs = _Run(), _Run()
        for j in range(_STEP_CONFIG.steps):
            loss_ref = ours.step(_reference_step, j)
            try:
                loss = theirs.step(fn, j)
            except NotImplementedError:
                raise ExerciseFailed(f"{name}: not implemented yet (replace the "
                                     "`raise NotImplementedError` with your code)") from None
            frozen = j / ours.steps_per_epoch < _STEP_CONFIG.freeze_last_layer
            where = f"{name}: step {j} (epoch {j / ours.steps_per_epoch:.1f}, last layer " \
                    f"{'frozen' if frozen else 'trained'})"
            if not abs(loss - loss_ref) <= _ATOL:
                raise ExerciseFailed(f"{where}: the loss is {loss:.6f}, the reference's "
                                     f"{loss_ref:.6f}\n  hint: {_HINTS['loss']}")
            for what, theirs_state in theirs.states().items():
                names, worst = _differing(theirs_state, ours.states()[what])
                if names:
                    key = "freeze" if names == ["head.last_layer.v"] else what
                    raise ExerciseFailed(
                        f"{where}: {what} differs from the reference's after the step "
                        f"({len(names)} tensor(s), e.g. {names[0]!r}, max |difference| "
                        f"{worst:.1e})\n  hint: {_HINTS[key]}")
    finally:
        torch.set_num_threads(prev_threads)
    print(f"{name}: passed, {_STEP_CONFIG.steps} steps agree with the trainer's step (loss, center, "
          f"student and teacher, to {_ATOL:g})")
    return True
