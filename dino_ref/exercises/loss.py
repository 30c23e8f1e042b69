"""Checkers for the exercises of notebook 04 (the loss and its gradient), see dino_ref.exercises.

Both ask for something the notebook derives the tools for but does not compute: the smallest loss
a student can reach for given teacher logits (compared with `numpy_ref.dino_loss` at the student
that reaches it), and the gradient of the loss with respect to the teacher's logits, which the
stop-gradient throws away (compared with torch autograd through the library's readable loss).
The cases include T = 1 (student view 0 then has no partner), S = T, several teacher views and
K = 1, where the usual mistakes show.
"""

import numpy as np
import torch

from .. import numpy_ref
from ..common import num_pairs
from ..readable import dino_cross_entropy_readable
from ._core import check_function

__all__ = ["check_loss_floor", "check_teacher_grad"]

SHAPES = [(2, 6, 3, 8), (1, 4, 2, 5), (2, 2, 4, 6), (3, 5, 2, 7), (4, 4, 1, 3), (1, 2, 3, 1)]  # (T, S, B, K)


def _cases(seed):
    """ (teacher, student, center, tau_t, tau_s) for every shape in SHAPES """
    rng = np.random.default_rng(seed)
    cases = []
    for T, S, B, K in SHAPES:
        cases.append((rng.normal(size=(T, B, K)), rng.normal(size=(S, B, K)), 0.3 * rng.normal(size=K),
                      float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.1, 0.2))))
    return cases


def _partners(P_t, S):
    """ n_v (S,) and Q_v (S, B, K) = sum over the teacher views i != v of P_t[i] """
    T = P_t.shape[0]
    n_v = np.array([T - 1 if v < T else T for v in range(S)])
    # summed over the partners, not Q - P_t[v]: that difference can round to 0 where P_t[v]
    # dwarfs the others, and log(0) would make the best student's loss infinite
    Q_v = np.stack([P_t[[i for i in range(T) if i != v]].sum(axis=0) for v in range(S)])
    return n_v, Q_v


# --- 4.1: the floor of the loss ---------------------------------------------------------------

def _best_student(teacher, center, teacher_temp, S):
    """ student logits (S, B, K) at which the loss is smallest for student_temp = 1: log(Q_v / n_v),
    the mixture of view v's targets (zeros for a view without partners, whose value does not
    matter) """
    P_t = numpy_ref.teacher_targets(teacher, center, teacher_temp)
    n_v, Q_v = _partners(P_t, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_v[:, None, None] > 0, np.log(Q_v / np.maximum(n_v, 1)[:, None, None]), 0.0)


def _floor_reference(teacher, center, teacher_temp, S):
    """ numpy_ref.dino_loss at the best student """
    return numpy_ref.dino_loss(teacher, _best_student(teacher, center, teacher_temp, S), center,
                               teacher_temp, 1.0)


def _floor_cases(seed):
    return [(t, c, tau_t, s.shape[0]) for t, s, c, tau_t, _ in _cases(seed)]


def _entropy_rows(P):
    """ h of every row of P (..., K), 0 log 0 = 0 """
    return -(P * np.log(np.where(P > 0, P, 1.0))).sum(axis=-1)


def _floor_with(teacher, center, teacher_temp, S, targets, divisor):
    """ a floor made of sum_v w_v sum_b h(mixture_v[b]) / (divisor B): for the typical mistakes """
    P_t = numpy_ref.teacher_targets(teacher, center, teacher_temp)
    T, B, _ = P_t.shape
    weights, mixtures = targets(P_t, S)
    total = sum(w * _entropy_rows(m).sum() for w, m in zip(weights, mixtures) if w > 0)
    return total / (divisor(T, S, weights) * B)


def _pair_mixtures(P_t, S):
    n_v, Q_v = _partners(P_t, S)
    return n_v, [Q / max(n, 1) for Q, n in zip(Q_v, n_v)]


def _all_view_mixtures(P_t, S):
    T = P_t.shape[0]
    return [T] * S, [P_t.mean(axis=0)] * S


_FLOOR_MISTAKES = [
    (lambda t, c, tau_t, S: numpy_ref.entropy(numpy_ref.teacher_targets(t, c, tau_t)).mean(),
     "this is the mean teacher entropy h(P_t): it bounds each term H(P_t[i], P_s[v]) on its own, "
     "but one P_s[v] must serve all n_v of its teacher views at once. The sum of those n_v terms is "
     "smallest at the mixture P_s[v] = Q_v / n_v, where it equals n_v h(Q_v / n_v) (section 2's "
     "split, applied to the mixture)."),
    (lambda t, c, tau_t, S: _floor_with(t, c, tau_t, S, _all_view_mixtures,
                                        lambda T, S, w: T * S - min(T, S)),
     "every student view got the mixture of all T teacher views; view v is not paired with its own "
     "crop: its mixture is Q_v / n_v over the n_v views i != v."),
    (lambda t, c, tau_t, S: _floor_with(t, c, tau_t, S, _pair_mixtures, lambda T, S, w: T * S),
     "the mixtures are right, but the sum is divided by T*S*B; there are n = T*S - min(T, S) pairs."),
    (lambda t, c, tau_t, S: _floor_with(t, c, tau_t, S, lambda P, S: (
        [1 if n > 0 else 0 for n in _pair_mixtures(P, S)[0]], _pair_mixtures(P, S)[1]),
        lambda T, S, w: sum(w)),
     "this is the mean over the student views of h(Q_v / n_v); the loss averages over the pairs, "
     "so view v counts n_v times: sum_v n_v h(Q_v / n_v) / (n B)."),
    (lambda t, c, tau_t, S: _floor_reference(t, 0.0 * c, tau_t, S),
     "the center was not subtracted: the teacher targets are P_t = softmax((t - c) / tau_t)."),
]


def check_loss_floor(fn):
    """ fn(teacher (T, B, K), center (K,), tau_t, S) -> the smallest value of L over all student
    logits (S, B, K), a number; compared with numpy_ref.dino_loss at the student that reaches it,
    P_s[v] = Q_v / n_v """
    return check_function(
        "check_loss_floor", fn, _floor_reference, _floor_cases(401), rtol=1e-4, atol=1e-6,
        against="numpy_ref.dino_loss at the best student", mistakes=_FLOOR_MISTAKES,
        hint="student view v meets its n_v teacher views (T - 1 if v < T, else T; none when T = 1 "
             "and v = 0) with one distribution P_s[v]; sum_i H(P_t[i], P_s[v]) = n_v H(Q_v / n_v, "
             "P_s[v]) is smallest at P_s[v] = Q_v / n_v. Add n_v h(Q_v[b] / n_v) over v and b, "
             "divide by n B.")


# --- 4.2: the gradient with respect to the teacher's logits -------------------------------------

def _teacher_grad_reference(teacher, student, center, teacher_temp, student_temp):
    """ dL/dt by torch autograd through softmax((t - c) / tau_t) and the readable loss """
    t = torch.tensor(teacher, requires_grad=True)
    P_t = torch.softmax((t - torch.as_tensor(center)) / teacher_temp, dim=-1)      # (T, B, K)
    dino_cross_entropy_readable(P_t, torch.as_tensor(student), student_temp).backward()
    return t.grad.numpy()


def _teacher_grad_with(teacher, student, center, teacher_temp, student_temp, *, own_view=False,
                       centered=True, temp=None, divisor=None):
    """ -P_t (R_i - <P_t, R_i>) / (n B tau): R_i the sum of log P_s over the partners of view i;
    the keywords make the typical mistakes """
    P_t = numpy_ref.teacher_targets(teacher, center, teacher_temp)
    log_P_s = numpy_ref.log_softmax(student, student_temp)
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    R = np.stack([log_P_s.sum(axis=0) - (0 if own_view or i >= S else log_P_s[i]) for i in range(T)])
    inner = (P_t * R).sum(axis=-1, keepdims=True) if centered else 0.0
    n = divisor(T, S) if divisor else num_pairs(T, S)
    return -P_t * (R - inner) / (n * B * (temp if temp is not None else teacher_temp))


_GRAD_MISTAKES = [
    (lambda *a: _teacher_grad_with(*a, centered=False),
     "the softmax's Jacobian has two terms, dP_t[d]/du[e] = P_t[d] (delta_de - P_t[e]); the second "
     "one is missing: subtract <P_t[i, b], R_i[b]> inside the bracket (every row of dL/dt then sums "
     "to 0, as adding a constant to a row of t changes no P_t)."),
    (lambda *a: _teacher_grad_with(*a, own_view=True),
     "teacher view i is not paired with student view i: R_i sums log P_s[v] over the v != i only."),
    (lambda t, s, c, tau_t, tau_s: _teacher_grad_with(t, s, c, tau_t, tau_s, temp=tau_s),
     "the teacher's logits are divided by tau_t, so the chain rule brings 1 / tau_t (tau_s only "
     "enters through log P_s)."),
    (lambda *a: -_teacher_grad_with(*a),
     "the sign is flipped: L = -(1 / n B) sum P_t log P_s, so dL/du = -P_t (R - <P_t, R>)."),
    (lambda *a: _teacher_grad_with(*a, divisor=lambda T, S: T * S),
     "divide by n B tau_t with n = T*S - min(T, S), not T*S."),
    (lambda t, s, c, tau_t, tau_s: _teacher_grad_with(t, s, 0.0 * c, tau_t, tau_s),
     "the center was not subtracted: P_t = softmax((t - c) / tau_t)."),
]


def check_teacher_grad(fn):
    """ fn(teacher, student, center, tau_t, tau_s) -> dL/dt (T, B, K), the gradient the teacher
    would get without the stop-gradient; compared with torch autograd through
    softmax((t - c) / tau_t) and dino_ref.readable.dino_cross_entropy_readable """
    def tolerance(args, expected):     # float32 rounding: a few 1e-6 of |log P_s| (up to ~100) in R_i
        return max(np.abs(expected).max(), 1e-3)

    return check_function(
        "check_teacher_grad", fn, _teacher_grad_reference, _cases(402), rtol=1e-3, atol=1e-4,
        against="torch autograd through the library's loss", mistakes=_GRAD_MISTAKES,
        atol_scale=tolerance,
        hint="with u = (t[i, b] - c) / tau_t and R_i[b] = sum over v != i of log P_s[v, b]: "
             "dL/dt[i, b] = -P_t[i, b] * (R_i[b] - <P_t[i, b], R_i[b]>) / (n B tau_t), "
             "n = T*S - min(T, S).")
