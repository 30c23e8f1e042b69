"""Checkers for the exercises of notebook 01 (multi-crop pairing): the pair count n, the pairs per
student view n_v, and the loss as a factorised sum over Q = sum_i P_t[i]."""

import numpy as np

from .. import numpy_ref
from ._core import check_function

__all__ = ["check_pair_count", "check_pairs_per_view", "check_factorised_loss"]

# view counts every checker tries first: one view each, S = T, S < T (the pair rule still holds),
# one teacher view, DINO's 2 + 6 and 2 + 8 crops
EDGE_VIEWS = [(1, 1), (1, 2), (2, 2), (3, 2), (4, 1), (1, 5), (2, 8), (2, 10)]


def _view_counts(seed, n_random=12):
    """ EDGE_VIEWS, then n_random random (T, S) with 1 <= T <= 5, 1 <= S <= 14 """
    rng = np.random.default_rng(seed)
    return EDGE_VIEWS + [(int(rng.integers(1, 6)), int(rng.integers(1, 15))) for _ in range(n_random)]


def pair_count_reference(T, S):
    """ n: the number of (teacher view i, student view v != i) terms, counted from the list """
    return len(numpy_ref.view_pairs(T, S))


def pairs_per_view_reference(T, S):
    """ n_v for v = 0 ... S-1: how many teacher views i != v meet student view v; (S,) """
    n_v = np.zeros(S, dtype=int)
    for _, v in numpy_ref.view_pairs(T, S):
        n_v[v] += 1
    return n_v


def check_pair_count(pair_count):
    """ pair_count(T, S) -> n, the number of (i, v) with 0 <= i < T, 0 <= v < S, v != i """
    return check_function(
        "check_pair_count", pair_count, pair_count_reference, _view_counts(seed=101),
        hint="n counts the cells of the T x S grid minus the same-crop cells (i, i); there are "
             "min(T, S) of those, not T, when the student has fewer views than the teacher "
             "(e.g. T = 3, S = 2 gives 4).")


def check_pairs_per_view(pairs_per_view):
    """ pairs_per_view(T, S) -> array (S,) of n_v; the entries sum to n """
    return check_function(
        "check_pairs_per_view", pairs_per_view, pairs_per_view_reference, _view_counts(seed=102),
        hint="student view v < T is also teacher view v, which it is not paired with: n_v = T - 1 "
             "for those views and n_v = T for the local views v >= T (return one number per "
             "student view, S in all).")


def _loss_cases(seed, n_random=10):
    """ (teacher, student, center, tau_t, tau_s) with S >= T and at least one pair """
    rng = np.random.default_rng(seed)
    shapes = [(1, 2, 1, 3), (2, 2, 3, 5), (2, 8, 4, 16), (3, 3, 2, 4), (1, 6, 2, 7)]
    shapes += [(T, T + int(rng.integers(1 if T == 1 else 0, 6)), int(rng.integers(1, 5)),
                int(rng.integers(2, 12))) for T in rng.integers(1, 4, size=n_random)]
    cases = []
    for T, S, B, K in shapes:
        teacher = rng.normal(scale=2.0, size=(T, B, K))
        student = rng.normal(scale=2.0, size=(S, B, K))
        center = rng.normal(scale=0.5, size=(1, 1, K))
        cases.append((teacher, student, center, float(rng.uniform(0.04, 0.1)), 0.1))
    return cases


def check_factorised_loss(factorised_loss):
    """ factorised_loss(P_t, log_P_s) -> L, P_t (T, B, K) and log P_s (S, B, K), compared with
    numpy_ref.dino_loss on the logits they come from """
    def from_logits(teacher, student, center, teacher_temp, student_temp):
        P_t = numpy_ref.teacher_targets(teacher, center, teacher_temp)          # (T, B, K)
        log_P_s = numpy_ref.log_softmax(student, student_temp)                 # (S, B, K)
        return factorised_loss(P_t, log_P_s)

    return check_function(
        "check_factorised_loss", from_logits, numpy_ref.dino_loss, _loss_cases(seed=103),
        hint="sum_v sum_b H(Q[b], P_s[v, b]) with Q = sum_i P_t[i] counts every cell of the grid; "
             "subtract the min(T, S) same-crop cells H(P_t[v], P_s[v]) and divide by n * B with "
             "n = T*S - min(T, S) (not by T*S*B). The inputs shown are the logits (teacher, "
             "student, center, tau_t, tau_s) from which P_t and log P_s were made.")
