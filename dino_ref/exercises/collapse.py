"""Checkers for the exercises of notebook 06_collapse (see dino_ref.exercises).

check_batch_entropy: h(P_bar_t), the entropy of the teacher distribution averaged over the batch.
check_collapse_state: name a run's state from h(P_t) and h(P_bar_t).
"""

import numpy as np
import torch

from ..diagnostics import batch_entropy
from ._core import ExerciseFailed, check_function

__all__ = ["check_batch_entropy", "check_collapse_state", "ONE_DIMENSION", "UNIFORM", "HEALTHY"]

ONE_DIMENSION, UNIFORM, HEALTHY = "one dimension", "uniform", "healthy"


def library_batch_entropy(P_t):
    """ dino_ref.diagnostics.batch_entropy of P_t (T, B, K), in float64: what the checker expects """
    return batch_entropy(torch.from_numpy(np.asarray(P_t, dtype=np.float64))).item()


def _random_targets(rng, T, B, K, sharpness):
    logits = sharpness * rng.standard_normal((T, B, K))
    P = np.exp(logits - logits.max(-1, keepdims=True))
    return P / P.sum(-1, keepdims=True)


def check_batch_entropy(fn):
    """ fn(P_t (T, B, K) probabilities) -> float h(P_bar_t); compared with diagnostics.batch_entropy """
    rng = np.random.default_rng(61)
    one_dim = np.zeros((2, 4, 8))
    one_dim[..., 5] = 1.0                                             # h = h_batch = 0; has 0 log 0
    own_dim = np.zeros((2, 4, 8))
    own_dim[:, np.arange(4), np.arange(4)] = 1.0                      # h = 0, h_batch = log 4
    view_dim = np.zeros((2, 3, 6))
    view_dim[0, :, 0], view_dim[1, :, 1] = 1.0, 1.0                   # each view its own dimension
    cases = [(_random_targets(rng, 2, 5, 7, 1.0),), (_random_targets(rng, 1, 3, 10, 3.0),),
             (_random_targets(rng, 2, 6, 16, 0.3),), (one_dim,), (own_dim,), (view_dim,),
             (np.full((2, 3, 5), 0.2),)]
    return check_function(
        "batch_entropy", fn, library_batch_entropy, cases,
        hint="average the rows over the views AND the batch first (P_bar_t has shape (K,)), then "
             "take the entropy once; the mean of the row entropies is h(P_t), not h(P_bar_t); "
             "treat 0 log 0 as 0 (np.log(0) gives -inf and 0 * -inf gives nan)", atol=1e-8,
        against="dino_ref.diagnostics.batch_entropy")


def state_by_thresholds(h, h_batch, log_K):
    """ ONE_DIMENSION if h(P_bar_t) < 0.15 log K, else UNIFORM if h(P_t) > 0.85 log K, else HEALTHY """
    if h_batch < 0.15 * log_K:
        return ONE_DIMENSION
    if h > 0.85 * log_K:
        return UNIFORM
    return HEALTHY


def check_collapse_state(fn):
    """ fn(h, h_batch, log_K) -> one of ONE_DIMENSION, UNIFORM, HEALTHY (the thresholds 0.15 and
    0.85 of log K); compared with notebook 06's rule on fixed and random states """
    rng = np.random.default_rng(62)
    log_K = float(np.log(1024))
    fixed = [(0.01, 0.02), (0.99, 0.999), (0.05, 0.9), (0.5, 0.7), (0.9, 0.95), (0.1, 0.6)]
    rand = [tuple(sorted(rng.uniform(0, 1, 2))) for _ in range(30)]   # h <= h_batch always
    for k, (a, b) in enumerate(fixed + rand):
        h, h_batch = a * log_K, b * log_K
        expected = state_by_thresholds(h, h_batch, log_K)
        try:
            got = fn(h, h_batch, log_K)
        except NotImplementedError:
            raise ExerciseFailed("collapse_state: not implemented yet (replace the "
                                 "`raise NotImplementedError` with your code)") from None
        if got != expected:
            raise ExerciseFailed(
                f"collapse_state: case {k + 1}: h = {a:.3f} log K, h_batch = {b:.3f} log K "
                f"should be {expected!r}, got {got!r}.\n  hint: a low h(P_t) alone is not a "
                "collapse: sharp rows on *different* dimensions have a high batch entropy. "
                "Decide 'one dimension' from h(P_bar_t), 'uniform' from h(P_t).")
    print(f"collapse_state: passed, {len(fixed) + len(rand)} states named as notebook 06's rule names them")
    return True
