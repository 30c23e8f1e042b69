"""Checkers for the exercises of notebook 04 (the loss and its gradient), see dino_ref.exercises.

Each compares the learner's function with `dino_ref.numpy_ref` on seeded random cases, including
T = 1, S = T and several teacher views, where the usual mistakes (the own view kept, dividing by
T*S) show.
"""

import numpy as np

from .. import numpy_ref
from ._core import check_function

__all__ = ["check_dino_loss", "check_dino_grad"]

SHAPES = [(2, 6, 3, 8), (1, 4, 2, 5), (2, 2, 4, 6), (3, 5, 2, 7), (4, 4, 1, 3), (1, 2, 3, 1)]  # (T, S, B, K)


def _cases(seed):
    """ (teacher, student, center, tau_t, tau_s) for every shape in SHAPES """
    rng = np.random.default_rng(seed)
    cases = []
    for T, S, B, K in SHAPES:
        cases.append((rng.normal(size=(T, B, K)), rng.normal(size=(S, B, K)), 0.3 * rng.normal(size=K),
                      float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.1, 0.2))))
    return cases


def check_dino_loss(fn):
    """ fn(teacher (T, B, K), student (S, B, K), center (K,), tau_t, tau_s) -> L, a number """
    return check_function(
        "check_dino_loss", fn, numpy_ref.dino_loss, _cases(401),
        hint="sum H(P_t[i, b], P_s[v, b]) over the pairs with v != i only (skip the student's view "
             "of the teacher's own crop) and divide by n*B with n = T*S - min(T, S), not by T*S*B")


def check_dino_grad(fn):
    """ fn(teacher, student, center, tau_t, tau_s) -> dL/ds (S, B, K) = (n_v P_s - Q_v) / (n B tau_s) """
    return check_function(
        "check_dino_grad", fn, numpy_ref.dino_loss_grad, _cases(402),
        hint="student view v has n_v partners (T - 1 if v < T, else T) and is pulled towards "
             "Q_v = sum over i != v of P_t[i]; divide by n*B*tau_s with n = T*S - min(T, S)")
