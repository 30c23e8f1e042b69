"""Checkers for the exercises of notebook 03 (centering), see dino_ref.exercises.

Each compares the learner's function with `dino_ref.numpy_ref` on seeded random cases.
"""

import numpy as np

from .. import numpy_ref
from ._core import check_function

__all__ = ["check_update_center", "check_teacher_targets", "check_center_after_steps"]


def check_update_center(fn):
    """ fn(center (K,), teacher (T, B, K), m) -> the new center (K,): m c + (1 - m) mean of the T*B rows """
    rng = np.random.default_rng(301)
    cases = []
    for T, B, K in [(1, 1, 3), (2, 4, 8), (3, 5, 6), (2, 1, 16), (4, 7, 5), (2, 6, 1)]:
        teacher = 3.0 * rng.normal(size=K) + rng.normal(size=(T, B, K))      # (T, B, K) with a bias
        cases.append((rng.normal(size=K), teacher, float(rng.uniform(0.5, 0.99))))

    def reference(center, teacher, m):
        K = center.shape[0]
        return numpy_ref.update_center(center.reshape(1, 1, K), teacher, m)[0, 0]

    return check_function(
        "check_update_center", fn, reference, cases,
        hint="c <- m*c + (1 - m)*mean: the momentum m multiplies the OLD center, and the mean runs "
             "over all T*B rows (both the view axis 0 and the batch axis 1), giving a (K,) vector")


def check_teacher_targets(fn):
    """ fn(teacher (T, B, K), center (K,), tau_t) -> P_t (T, B, K) = softmax((t - c) / tau_t) """
    rng = np.random.default_rng(302)
    cases = []
    for T, B, K, scale in [(2, 3, 8, 1.0), (1, 4, 5, 1.0), (3, 2, 16, 2.0), (2, 1, 1, 1.0),
                           (2, 5, 6, 40.0)]:                     # last: logits / tau_t up to ~1e3
        teacher = scale * rng.normal(size=(T, B, K))
        center = scale * rng.normal(size=K)
        cases.append((teacher, center, float(rng.uniform(0.04, 0.1))))
    return check_function(
        "check_teacher_targets", fn, numpy_ref.teacher_targets, cases,
        hint="centering comes BEFORE sharpening: softmax((t - c) / tau_t) over the last axis, not "
             "softmax(t / tau_t - c); subtract each row's max before exp, or large logits overflow")


def check_center_after_steps(fn):
    """ fn(c0 (K,), t_bar (K,), m, k) -> the center after k updates with the same batch mean t_bar

    closed form of k moving-average steps: c_k = m^k c_0 + (1 - m^k) t_bar
    """
    rng = np.random.default_rng(303)
    cases = [(rng.normal(size=K), rng.normal(size=K), m, k)
             for K, m, k in [(4, 0.9, 1), (3, 0.9, 10), (5, 0.5, 3), (2, 0.99, 100), (6, 0.0, 4),
                             (3, 1.0, 7), (1, 0.7, 0)]]

    def reference(c0, t_bar, m, k):
        K = c0.shape[0]
        c = c0.reshape(1, 1, K)
        for _ in range(k):                                   # k calls of the reference update
            c = numpy_ref.update_center(c, t_bar.reshape(1, 1, K), m)
        return c[0, 0]

    return check_function(
        "check_center_after_steps", fn, reference, cases,
        hint="each step keeps the fraction m of the old center, so after k steps c_0 keeps m**k "
             "(not (1 - m)**k, not m*k) and the batch mean gets the rest, 1 - m**k; k = 0 "
             "returns c_0 unchanged")
