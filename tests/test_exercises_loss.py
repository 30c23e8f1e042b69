"""The checkers of notebook 04's exercises accept the solution and reject the typical mistakes."""

import numpy as np
import pytest

from dino_ref.exercises import ExerciseFailed, check_dino_grad, check_dino_loss


def softmax(x, tau):
    z = x / tau
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def loss_with(teacher, student, center, tau_t, tau_s, own_view, divisor):
    """ a pair loss that may keep the own view and divide by a given pair count """
    P_t, log_P_s = softmax(teacher - center, tau_t), np.log(softmax(student, tau_s))
    T, S, B = teacher.shape[0], student.shape[0], teacher.shape[1]
    total = sum(-(P_t[i] * log_P_s[v]).sum() for i in range(T) for v in range(S) if own_view or v != i)
    return total / (divisor(T, S) * B)


def grad_with(teacher, student, center, tau_t, tau_s, own_view, divisor):
    P_t, P_s = softmax(teacher - center, tau_t), softmax(student, tau_s)
    T, S, B = teacher.shape[0], student.shape[0], teacher.shape[1]
    grad = np.zeros_like(P_s)
    for v in range(S):
        partners = [i for i in range(T) if own_view or i != v]
        Q_v = sum((P_t[i] for i in partners), np.zeros_like(P_s[v]))
        grad[v] = (len(partners) * P_s[v] - Q_v) / (divisor(T, S) * B * tau_s)
    return grad


def n_pairs(T, S):
    return T * S - min(T, S)


def test_dino_loss_accepts_the_solution():
    assert check_dino_loss(lambda *a: loss_with(*a, own_view=False, divisor=n_pairs))


@pytest.mark.parametrize("own_view, divisor", [(True, lambda T, S: T * S),     # own view kept
                                               (False, lambda T, S: T * S),    # n = T*S
                                               (True, n_pairs)],
                         ids=["own view kept", "divided by T*S", "own view kept, divided by n"])
def test_dino_loss_rejects_mistakes(own_view, divisor):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_dino_loss(lambda *a: loss_with(*a, own_view=own_view, divisor=divisor))


def test_dino_grad_accepts_the_solution():
    assert check_dino_grad(lambda *a: grad_with(*a, own_view=False, divisor=n_pairs))


@pytest.mark.parametrize("own_view, divisor", [(True, n_pairs), (False, lambda T, S: T * S)],
                         ids=["own view kept (n_v = T, Q_v = Q)", "divided by T*S"])
def test_dino_grad_rejects_mistakes(own_view, divisor):
    with pytest.raises(ExerciseFailed, match="n_v partners"):
        check_dino_grad(lambda *a: grad_with(*a, own_view=own_view, divisor=divisor))
