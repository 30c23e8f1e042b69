"""The checkers of notebook 04's exercises (the floor of the loss, the gradient with respect to the
teacher's logits) accept every correct way of writing the answer and reject the typical mistakes
with a hint that names them."""

import numpy as np
import pytest
import torch

from dino_ref import numpy_ref
from dino_ref.exercises import ExerciseFailed, check_loss_floor, check_teacher_grad
from dino_ref.exercises.loss import _cases, _best_student


# --- 4.1: the floor of the loss ----------------------------------------------------------------

def floor_loop(t, c, tau_t, S):
    P_t = numpy_ref.teacher_targets(t, c, tau_t)
    T, B, _ = P_t.shape
    total = 0.0
    for v in range(S):
        partners = [i for i in range(T) if i != v]
        if partners:                                           # T = 1: view 0 has none
            mixture = sum(P_t[i] for i in partners) / len(partners)
            total += len(partners) * numpy_ref.entropy(mixture).sum()
    return total / ((T * S - min(T, S)) * B)


def floor_vectorised(t, c, tau_t, S):
    """ Q - P_t[v] for the global views; 0 log 0 = 0 covers the rows where it rounds to 0 """
    P_t = numpy_ref.softmax(t - c, tau_t)
    T, B, _ = P_t.shape
    n_v = np.array([T - 1] * min(T, S) + [T] * (S - min(T, S)))
    Q = P_t.sum(0)
    Q_v = np.concatenate([Q - P_t[:min(T, S)], np.broadcast_to(Q, (S - min(T, S),) + Q.shape)])
    m = Q_v / np.maximum(n_v, 1)[:, None, None]
    h = -(m * np.log(np.where(m > 0, m, 1.0))).sum(-1)        # (S, B)
    return (n_v[:, None] * h).sum() / (n_v.sum() * B)


def floor_torch_float32(t, c, tau_t, S):
    P_t = torch.softmax((torch.tensor(t, dtype=torch.float32) - torch.tensor(c, dtype=torch.float32)) / tau_t, -1)
    T, B, _ = P_t.shape
    total = torch.zeros(())
    for v in range(S):
        others = [i for i in range(T) if i != v]
        if others:
            m = P_t[others].mean(0)
            total = total + len(others) * torch.special.entr(m).sum()
    return total / ((T * S - min(T, S)) * B)


def floor_by_evaluating_the_best_student(t, c, tau_t, S):
    """ the loss at P_s[v] = Q_v / n_v, through the library's loss (tau_s = 1: s = log P_s) """
    return numpy_ref.dino_loss(t, _best_student(t, c, tau_t, S), c, tau_t, 1.0)


@pytest.mark.parametrize("answer", [floor_loop, floor_vectorised, floor_torch_float32,
                                    floor_by_evaluating_the_best_student])
def test_loss_floor_accepts(answer):
    with np.errstate(divide="ignore", invalid="ignore"):
        assert check_loss_floor(answer)


def test_the_floor_is_a_minimum_and_lies_above_the_teacher_entropy():
    rng = np.random.default_rng(0)
    for t, s, c, tau_t, _ in _cases(401):
        S = s.shape[0]
        best = _best_student(t, c, tau_t, S)
        L0 = numpy_ref.dino_loss(t, best, c, tau_t, 1.0)
        assert np.isclose(L0, floor_loop(t, c, tau_t, S), rtol=1e-12)
        for _ in range(10):
            assert numpy_ref.dino_loss(t, best + 0.1 * rng.normal(size=best.shape), c, tau_t, 1.0) >= L0 - 1e-12
        assert L0 >= numpy_ref.entropy(numpy_ref.teacher_targets(t, c, tau_t)).mean() - 1e-12


def mean_teacher_entropy(t, c, tau_t, S):
    return numpy_ref.entropy(numpy_ref.teacher_targets(t, c, tau_t)).mean()


def own_crop_in_the_mixture(t, c, tau_t, S):
    P_t = numpy_ref.teacher_targets(t, c, tau_t)
    T, B, _ = P_t.shape
    return S * T * numpy_ref.entropy(P_t.mean(0)).sum() / ((T * S - min(T, S)) * B)


def divided_by_T_S(t, c, tau_t, S):
    T = t.shape[0]
    return floor_loop(t, c, tau_t, S) * (T * S - min(T, S)) / (T * S)


def mean_over_views(t, c, tau_t, S):
    P_t = numpy_ref.teacher_targets(t, c, tau_t)
    T, B, _ = P_t.shape
    terms = [numpy_ref.entropy(P_t[[i for i in range(T) if i != v]].mean(0)).sum()
             for v in range(S) if T > 1 or v > 0]
    return sum(terms) / (len(terms) * B)


@pytest.mark.parametrize("wrong, named", [
    (mean_teacher_entropy, "mean teacher entropy"),
    (own_crop_in_the_mixture, "mixture of all T teacher views"),
    (divided_by_T_S, "divided by T\\*S\\*B"),
    (mean_over_views, "mean over the student views"),
    (lambda t, c, tau_t, S: floor_loop(t, 0.0 * c, tau_t, S), "center was not subtracted"),
])
def test_loss_floor_rejects(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_loss_floor(wrong)


# --- 4.2: dL/dt --------------------------------------------------------------------------------

def teacher_grad_loop(t, s, c, tau_t, tau_s):
    P_t = numpy_ref.softmax(t - c, tau_t)
    log_P_s = numpy_ref.log_softmax(s, tau_s)
    T, B, K = P_t.shape
    S = s.shape[0]
    n = T * S - min(T, S)
    grad = np.zeros_like(P_t)
    for i in range(T):
        for v in range(S):
            if v == i:
                continue
            for b in range(B):
                p, lq = P_t[i, b], log_P_s[v, b]
                jacobian = np.diag(p) - np.outer(p, p)          # dP_t[d] / du[e]
                grad[i, b] += -(jacobian @ lq) / (n * B * tau_t)
    return grad


def teacher_grad_vectorised(t, s, c, tau_t, tau_s):
    P_t = numpy_ref.softmax(t - c, tau_t)
    log_P_s = numpy_ref.log_softmax(s, tau_s)
    T, B, _ = P_t.shape
    S = s.shape[0]
    R = log_P_s.sum(0)[None] - np.pad(log_P_s[:T], ((0, T - min(T, S)), (0, 0), (0, 0)))  # (T, B, K)
    return -P_t * (R - (P_t * R).sum(-1, keepdims=True)) / ((T * S - min(T, S)) * B * tau_t)


def teacher_grad_torch_float32(t, s, c, tau_t, tau_s):
    P_t = torch.softmax(torch.tensor(t - c, dtype=torch.float32) / tau_t, -1)
    log_P_s = torch.log_softmax(torch.tensor(s, dtype=torch.float32) / tau_s, -1)
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    R = torch.stack([log_P_s[[v for v in range(S) if v != i]].sum(0) for i in range(T)])
    return -P_t * (R - (P_t * R).sum(-1, keepdim=True)) / ((T * S - min(T, S)) * B * tau_t)


def teacher_grad_by_finite_differences(t, s, c, tau_t, tau_s):
    grad, eps = np.zeros_like(t), 1e-5
    for j in np.ndindex(t.shape):
        bump = np.zeros_like(t)
        bump[j] = eps
        grad[j] = (numpy_ref.dino_loss(t + bump, s, c, tau_t, tau_s)
                   - numpy_ref.dino_loss(t - bump, s, c, tau_t, tau_s)) / (2 * eps)
    return grad


@pytest.mark.parametrize("answer", [teacher_grad_loop, teacher_grad_vectorised, teacher_grad_torch_float32,
                                    teacher_grad_by_finite_differences])
def test_teacher_grad_accepts(answer):
    assert check_teacher_grad(answer)


def test_every_row_of_the_teacher_gradient_sums_to_zero():
    for args in _cases(402):
        assert np.abs(teacher_grad_loop(*args).sum(-1)).max() < 1e-12


def variant(centered=True, own_view=False, temp=None, sign=1.0, divisor=None):
    def grad(t, s, c, tau_t, tau_s):
        P_t = numpy_ref.softmax(t - c, tau_t)
        log_P_s = numpy_ref.log_softmax(s, tau_s)
        T, B, _ = P_t.shape
        S = s.shape[0]
        R = np.stack([log_P_s.sum(0) - (0 if own_view else log_P_s[i]) for i in range(T)])
        inner = (P_t * R).sum(-1, keepdims=True) if centered else 0.0
        n = divisor(T, S) if divisor else T * S - min(T, S)
        return -sign * P_t * (R - inner) / (n * B * (tau_s if temp == "s" else tau_t))
    return grad


@pytest.mark.parametrize("wrong, named", [
    (variant(centered=False), "Jacobian has two terms"),
    (variant(own_view=True), "not paired with student view i"),
    (variant(temp="s"), "brings 1 / tau_t"),
    (variant(sign=-1.0), "sign is flipped"),
    (variant(divisor=lambda T, S: T * S), "not T\\*S"),
    (lambda t, s, c, tau_t, tau_s: numpy_ref.dino_loss_grad(t, s, c, tau_t, tau_s)[:t.shape[0]],
     "dL/dt\\[i, b\\] = -P_t"),                                 # the student's gradient: general hint
    (lambda t, s, c, tau_t, tau_s: teacher_grad_loop(t, s, 0.0 * c, tau_t, tau_s),
     "center was not subtracted"),
], ids=["no-second-term", "own-view", "tau_s", "sign", "T-times-S", "student-gradient",
        "no-center"])
def test_teacher_grad_rejects(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_teacher_grad(wrong)
