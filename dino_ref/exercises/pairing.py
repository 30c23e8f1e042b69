"""Checkers for the exercises of notebook 01 (multi-crop pairing), each for a multi-crop layout
other than the one the notebook shows: the pair count n when the student sees only some of the
teacher's crops, the pairs per student view n_v and the factorised loss when the student's views
come in any order.

A layout is described by `crop_of` (S,): crop_of[v] = i when student view v is teacher view i's
crop, -1 when it is a local crop. DINO's layout is crop_of = [0, 1, ..., T - 1, -1, ..., -1].
"""

import numpy as np

from .. import numpy_ref
from ._core import check_function

__all__ = ["check_pair_count", "check_pairs_per_view", "check_factorised_loss"]


def _pairs(T, crop_of):
    """ the (i, v) with 0 <= i < T and student view v not showing teacher crop i, counted from
    the definition (a loop over the T x S grid) """
    return [(i, v) for i in range(T) for v in range(len(crop_of)) if crop_of[v] != i]


def _subset_layout(T, G, L):
    """ crop_of for a student that sees the teacher's crops 0 ... G-1, in order, then L locals """
    return np.array(list(range(G)) + [-1] * L, dtype=int)


# --- 1.1: the pair count when the student sees only G of the T global crops --------------------

def _subset_cases(seed, n_random=14):
    """ (T, G, L): G = T (DINO's), G = 0 (locals only), G < T with and without locals, then random """
    rng = np.random.default_rng(seed)
    cases = [(1, 1, 0), (1, 0, 3), (2, 2, 0), (2, 2, 6), (2, 1, 6), (3, 0, 4), (4, 2, 1), (4, 4, 0),
             (2, 0, 0), (3, 1, 0), (2, 1, 8), (5, 3, 10)]
    for _ in range(n_random):
        T = int(rng.integers(1, 6))
        cases.append((T, int(rng.integers(0, T + 1)), int(rng.integers(0, 11))))
    return cases


def check_pair_count(pair_count):
    """ pair_count(T, G, L) -> n: the teacher sees T global crops, the student the first G of them
    (0 <= G <= T, in the same order) and L local crops; n counts the (teacher view i, student view
    v) with v not showing crop i. Compared with a count over the T x (G + L) grid (and with
    len(view_pairs(T, G)) + T * L, tested beside this checker) """
    def reference(T, G, L):
        return len(_pairs(T, _subset_layout(T, G, L)))

    mistakes = [
        (lambda T, G, L: T * (G + L) - min(T, G + L),
         "your answer is DINO's count T*S - min(T, S) with S = G + L; that formula assumes the "
         "student sees all T global crops first. Here only the G shared crops have a same-crop cell "
         "(a local crop is never one of the teacher's crops): n = T (G + L) - G."),
        (lambda T, G, L: T * (G + L) - T,
         "you removed T same-crop cells; only the G global crops that the student sees are shared "
         "with the teacher, one cell each."),
        (lambda T, G, L: T * (G + L),
         "no cell was removed: the student's view of teacher crop i (one for each of the G shared "
         "crops) is not a pair."),
        (lambda T, G, L: (T - 1) * (G + L),
         "every student view lost a partner; a local crop is compared with all T teacher views, "
         "only the G shared global crops lose one (their own)."),
    ]
    return check_function(
        "check_pair_count", pair_count, reference, _subset_cases(seed=101), rtol=0, atol=0,
        against="a count over the grid", mistakes=mistakes,
        hint="n counts the cells of the T x (G + L) grid whose student view shows another crop than "
             "the teacher view: only the G shared global crops have a same-crop cell.")


# --- 1.2 and 1.3: the student's views in any order ----------------------------------------------

def _layout(rng, T, S, subset=False):
    """ a random crop_of of length S: the teacher crops 0 ... T-1 (or, if subset, some of them)
    at random positions, -1 elsewhere """
    shared = rng.permutation(T)[:int(rng.integers(0, min(T, S) + 1))] if subset else rng.permutation(T)
    crop_of = np.full(S, -1, dtype=int)
    crop_of[rng.permutation(S)[:len(shared)]] = shared
    return crop_of


def _counts_cases(seed, n_random=12):
    """ (T, crop_of): DINO's layout, locals first, globals swapped, a subset of the globals, locals
    only, fewer student views than teacher views, then random layouts """
    rng = np.random.default_rng(seed)
    cases = [(2, np.array([0, 1, -1, -1, -1, -1])), (2, np.array([-1, -1, -1, -1, 0, 1])),
             (2, np.array([1, 0])), (3, np.array([2, -1, 0, -1, 1])), (1, np.array([-1, 0, -1])),
             (2, np.array([-1, 1, -1])), (3, np.array([-1, -1])), (4, np.array([3, 1])),
             (1, np.array([0]))]
    for _ in range(n_random):
        T, S = int(rng.integers(1, 6)), int(rng.integers(1, 12))
        cases.append((T, _layout(rng, T, S, subset=True)))
    return cases


def check_pairs_per_view(pairs_per_view):
    """ pairs_per_view(T, crop_of) -> (S,) n_v: for each student view v, the number of teacher views
    i whose crop it does not show; crop_of[v] = i if view v is teacher view i's crop, -1 for a local
    crop, in any order. Compared with a count over the grid """
    def reference(T, crop_of):
        n_v = np.zeros(len(crop_of), dtype=int)
        for _, v in _pairs(T, crop_of):
            n_v[v] += 1
        return n_v

    def positional(T, crop_of):
        return np.array([T - 1 if v < T else T for v in range(len(crop_of))])

    mistakes = [
        (positional,
         "your n_v is T - 1 for the first T views and T for the others: DINO's layout, where the "
         "global crops come first. Here it is crop_of[v] that says which view shows a teacher crop."),
        (lambda T, crop_of: np.where(crop_of < T, T - 1, T),
         "every view lost a partner: crop_of[v] = -1 (a local crop) passes a test such as "
         "crop_of[v] < T; a view shows a teacher crop when crop_of[v] >= 0."),
        (lambda T, crop_of: np.full(len(crop_of), T),
         "no view lost a partner: a view that shows teacher crop crop_of[v] >= 0 is not compared "
         "with that teacher view."),
        (lambda T, crop_of: positional(T, crop_of)[:T],
         "return one number per student view (len(crop_of) of them), not one per teacher view."),
    ]
    return check_function(
        "check_pairs_per_view", pairs_per_view, reference, _counts_cases(seed=102), rtol=0,
        atol=0, against="a count over the grid", mistakes=mistakes,
        hint="n_v = T - 1 for a view that shows one of the teacher's crops (crop_of[v] >= 0), T for "
             "a local crop (crop_of[v] = -1), wherever the view sits; one number per student view.")


def _loss_cases(seed, n_random=10):
    """ (teacher, student, center, tau_t, tau_s, crop_of): the student logits in the order of
    crop_of, which holds each of the T teacher crops once (S >= T, at least one pair) """
    rng = np.random.default_rng(seed)
    layouts = [(2, [1, 0]), (2, [-1, -1, -1, -1, -1, -1, 0, 1]), (2, [0, -1, -1, 1, -1, -1]),
               (1, [-1, 0, -1]), (3, [2, -1, 0, 1, -1]), (2, [0, 1, -1, -1, -1, -1, -1, -1]),
               (3, [1, 2, 0]), (1, [0, -1])]
    layouts = [(T, np.array(c)) for T, c in layouts]
    for T in rng.integers(1, 4, size=n_random):
        T = int(T)
        S = T + int(rng.integers(1 if T == 1 else 0, 6))
        layouts.append((T, _layout(rng, T, S)))
    cases = []
    for T, crop_of in layouts:
        S, B, K = len(crop_of), int(rng.integers(1, 5)), int(rng.integers(2, 12))
        cases.append((rng.normal(scale=2.0, size=(T, B, K)), rng.normal(scale=2.0, size=(S, B, K)),
                      rng.normal(scale=0.5, size=(1, 1, K)), float(rng.uniform(0.04, 0.1)), 0.1,
                      crop_of))
    return cases


def _in_dino_order(crop_of):
    """ the student view indices in DINO's order: the views of crops 0 ... T-1, then the locals """
    shared = sorted((i, v) for v, i in enumerate(crop_of) if i >= 0)
    return [v for _, v in shared] + [v for v, i in enumerate(crop_of) if i < 0]


def _dino_loss_any_order(teacher, student, center, teacher_temp, student_temp, crop_of):
    """ numpy_ref.dino_loss with the student's views put back into DINO's order """
    return numpy_ref.dino_loss(teacher, student[_in_dino_order(crop_of)], center, teacher_temp,
                               student_temp)


def _on_probabilities(fn):
    """ fn(P_t, log_P_s, crop_of) as a function of the logits the checker draws """
    def from_logits(teacher, student, center, teacher_temp, student_temp, crop_of):
        P_t = numpy_ref.teacher_targets(teacher, center, teacher_temp)          # (T, B, K)
        log_P_s = numpy_ref.log_softmax(student, student_temp)                 # (S, B, K)
        return fn(P_t, log_P_s, crop_of)
    return from_logits


def _factorised(P_t, log_P_s, same_crop, divisor=None):
    """ (sum_v H(Q, P_s[v]) - same_crop(P_t, log_P_s)) / (n B): helper for the typical mistakes """
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    n = divisor if divisor is not None else T * S - T
    return (-(P_t.sum(axis=0) * log_P_s).sum() - same_crop(P_t, log_P_s)) / (n * B)


def check_factorised_loss(factorised_loss):
    """ factorised_loss(P_t, log_P_s, crop_of) -> L for P_t (T, B, K), log P_s (S, B, K) whose views
    come in the order crop_of gives (each teacher crop once, S >= T); compared with
    numpy_ref.dino_loss on the same logits with the student's views put back into DINO's order """
    def shared(crop_of):
        return np.flatnonzero(crop_of >= 0)

    mistakes = [
        (lambda P_t, log_P_s, crop_of: _factorised(
            P_t, log_P_s, lambda P, lq: -(P * lq[:len(P)]).sum()),
         "you subtracted the cells (v, v), v < T: the same-crop cells of DINO's layout. Here student "
         "view v shows teacher crop crop_of[v]: subtract H(P_t[crop_of[v]], P_s[v]) for the views "
         "with crop_of[v] >= 0."),
        (lambda P_t, log_P_s, crop_of: _factorised(
            P_t, log_P_s, lambda P, lq: -(P[crop_of] * lq).sum()),
         "P_t[crop_of] also picked P_t[-1], the last teacher view, for every local crop (crop_of[v] "
         "= -1 is a valid negative index in Python): keep only the views with crop_of[v] >= 0."),
        (lambda P_t, log_P_s, crop_of: _factorised(P_t, log_P_s, lambda P, lq: 0.0),
         "nothing was subtracted: sum_v H(Q, P_s[v]) also holds the T same-crop cells "
         "H(P_t[crop_of[v]], P_s[v])."),
        (lambda P_t, log_P_s, crop_of: _factorised(
            P_t, log_P_s, lambda P, lq: -(P[crop_of[shared(crop_of)]] * lq[shared(crop_of)]).sum(),
            divisor=P_t.shape[0] * log_P_s.shape[0]),
         "the same-crop cells are right, but the sum is divided by T*S*B; there are n = T*S - T pairs "
         "(one same-crop cell per teacher crop)."),
    ]
    def tolerance(args, expected):     # the factorised form subtracts two sums of H ~ 30 each:
        teacher, student, center, tau_t, tau_s, crop_of = args     # float32 loses ~1e-7 of them
        P_t = numpy_ref.teacher_targets(teacher, center, tau_t)
        log_P_s = numpy_ref.log_softmax(student, tau_s)
        T, B, _ = P_t.shape
        return -(P_t.sum(axis=0) * log_P_s).sum() / ((T * len(crop_of) - T) * B)

    return check_function(
        "check_factorised_loss", _on_probabilities(factorised_loss), _dino_loss_any_order,
        _loss_cases(seed=103), rtol=1e-5, atol=1e-6, atol_scale=tolerance,
        against="numpy_ref.dino_loss",
        mistakes=[(_on_probabilities(wrong), hint) for wrong, hint in mistakes],
        hint="sum_v sum_b H(Q[b], P_s[v, b]) with Q = sum_i P_t[i] counts every cell of the grid; "
             "subtract the T same-crop cells H(P_t[crop_of[v]], P_s[v]) (views with crop_of[v] >= "
             "0) and divide by n * B with n = T*S - T. The inputs shown are the logits (teacher, "
             "student, center, tau_t, tau_s) from which P_t and log P_s were made, and crop_of.")
