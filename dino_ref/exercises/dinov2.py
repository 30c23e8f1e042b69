"""Checkers for the exercises of notebook 08 (from DINO to DINOv2), see dino_ref.exercises.

check_sinkhorn_iteration: one Sinkhorn-Knopp iteration, rows to 1/K then columns to 1/N.
check_koleo_nearest_neighbour: the nearest OTHER row of L2-normalised features.
check_ibot_patch_loss: the iBOT loss on masked patches, each image weighted equally.
Each compares with `dino_ref.numpy_dinov2` and names a typical mistake when it recognises one
(`check_function`'s mistakes).
"""

import numpy as np

from .. import numpy_dinov2
from ..numpy_ref import log_softmax
from ._core import check_function

__all__ = ["check_sinkhorn_iteration", "check_koleo_nearest_neighbour", "check_ibot_patch_loss"]


# --- one Sinkhorn-Knopp iteration -------------------------------------------------------------------

def _sinkhorn_step(Q):
    """ the reference: one iteration of the library's loops on a positive Q (K, N)

    numpy_dinov2.sinkhorn_knopp(t, tau_t=1, n_iterations=1) starts from Q = exp(t)^T and returns
    N Q^T after one iteration; with t = log(Q)^T it starts from this Q
    """
    N = Q.shape[1]
    return numpy_dinov2.sinkhorn_knopp(np.log(Q).T, 1.0, n_iterations=1).T / N


def _scale_twice(Q, first_axis, first_total, second_total):
    """ sums over first_axis scaled to first_total, then sums over the other axis to second_total
    (the iteration is _scale_twice(Q, 1, 1/K, 1/N)); for the mistakes """
    P = Q / Q.sum(axis=first_axis, keepdims=True) * first_total
    return P / P.sum(axis=1 - first_axis, keepdims=True) * second_total


def _sinkhorn_cases(rng):
    cases = []
    for K, N, spread in [(4, 6, 1.0), (8, 3, 3.0), (3, 10, 0.5), (5, 5, 2.0), (1, 4, 1.0), (6, 1, 1.0)]:
        cases.append((np.exp(spread * rng.normal(size=(K, N))),))    # positive, entries of varied size
    return cases


def check_sinkhorn_iteration(fn):
    """ fn(Q (K, N) positive) -> Q after one iteration: each prototype row scaled to total 1/K,
    then each sample column scaled to total 1/N; (K, N) """
    rng = np.random.default_rng(801)
    cases = _sinkhorn_cases(rng)
    mistakes = {                                                     # hint: the wrong answer it names
        "the columns were scaled first: a Sinkhorn iteration scales the prototype ROWS (sum over "
        "the samples, axis 1) to 1/K, then the sample COLUMNS (axis 0) to 1/N":
            lambda Q: _scale_twice(Q, 0, 1 / Q.shape[1], 1 / Q.shape[0]),
        "the two axes were swapped: Q is (K, N), prototypes on axis 0 and samples on axis 1; the "
        "row step sums over axis 1":
            lambda Q: _scale_twice(Q, 0, 1 / Q.shape[0], 1 / Q.shape[1]),
        "the columns sum to 1, not 1/N: divide each column by its sum AND by N (the N samples "
        "share the total mass 1; P_t = N Q^T comes only at the end)":
            lambda Q: Q.shape[1] * _sinkhorn_step(Q),
        "only the rows were normalised: after the row step, scale every column to 1/N":
            lambda Q: Q / Q.sum(axis=1, keepdims=True) / Q.shape[0],
    }
    return check_function(
        "sinkhorn_iteration", fn, _sinkhorn_step, cases, rtol=1e-9, atol=1e-15,
        mistakes=[(wrong, hint) for hint, wrong in mistakes.items()],
        against="one iteration of dino_ref.numpy_dinov2.sinkhorn_knopp",
        hint="rows first: Q / Q.sum(axis=1, keepdims=True) / K, then columns: "
             "Q / Q.sum(axis=0, keepdims=True) / N")


# --- the KoLeo nearest neighbour --------------------------------------------------------------------

def _nn_reference(x):
    return numpy_dinov2.nearest_neighbours(numpy_dinov2.l2_normalize(x))


def _nn_cases(rng):
    """ features with varied norms (raw dot products then pick other rows than cosines do) and no
    near ties """
    cases = []
    for n, D in [(5, 3), (12, 8), (2, 4), (20, 2), (7, 16)]:
        while True:
            x = rng.normal(size=(n, D)) * rng.uniform(0.1, 10.0, size=(n, 1))
            u = numpy_dinov2.l2_normalize(x)
            dots = u @ u.T - 3 * np.eye(n)
            top2 = np.sort(dots, axis=1)[:, -2:] if n > 2 else None
            if top2 is None or np.all(top2[:, 1] - top2[:, 0] > 1e-6):
                cases.append((x,))
                break
    return cases


def check_koleo_nearest_neighbour(fn):
    """ fn(x (n, D)) -> (n,) integer indices: for each row, the nearest OTHER row after
    L2-normalising the rows (the largest cosine, equivalently the smallest distance) """
    rng = np.random.default_rng(802)
    cases = _nn_cases(rng)
    mistakes = {                                                     # hint: the wrong answer it names
        "a row was paired with itself: mask the diagonal (its own similarity is the largest) "
        "before taking the argmax":
            lambda x: np.arange(len(x)),
        "the rows were not L2-normalised: the raw dot product favours long vectors; normalise "
        "each row to length 1 first":
            lambda x: np.argmax(x @ x.T - np.diag(np.full(len(x), np.inf)), axis=1),
        "that is the FARTHEST row: the nearest one has the largest cosine (smallest distance)":
            lambda x: (lambda u: np.argmin(u @ u.T + np.diag(np.full(len(x), np.inf)), axis=1))(
                numpy_dinov2.l2_normalize(x)),
    }
    return check_function(
        "koleo_nearest_neighbour", fn, _nn_reference, cases, rtol=0, atol=0,
        mistakes=[(wrong, hint) for hint, wrong in mistakes.items()],
        against="dino_ref.numpy_dinov2.nearest_neighbours",
        hint="normalise the rows, take the (n, n) cosine matrix, set its diagonal to -inf, and "
             "argmax each row")


# --- the iBOT patch loss ----------------------------------------------------------------------------

def _ibot_cases(rng):
    cases = []
    for counts, N, K in [([1, 4, 0], 5, 6), ([2, 2], 4, 3), ([1], 3, 5), ([0, 6, 1, 3], 6, 4),
                         ([5, 1], 8, 7)]:
        masks = np.zeros((len(counts), N), dtype=bool)
        for b, c in enumerate(counts):
            masks[b, rng.permutation(N)[:c]] = True
        M = int(masks.sum())
        student = rng.normal(size=(M, K))
        teacher = np.exp(3 * rng.normal(size=(M, K)))
        teacher /= teacher.sum(axis=1, keepdims=True)
        cases.append((student, teacher, masks, float(rng.uniform(0.05, 0.2))))
    return cases


def check_ibot_patch_loss(fn):
    """ fn(student (M, K), teacher_targets (M, K), masks (B, N) bool, student_temp) -> the loss
    L = 1/B sum_b 1/m_b sum_{n masked in b} H(P_t, softmax(s / tau_s)); the M rows follow the
    True entries of masks in row-major order """
    rng = np.random.default_rng(803)
    cases = _ibot_cases(rng)

    def per_patch(s, t, tau):
        return -(t * log_softmax(s, tau)).sum(axis=-1)               # (M,) H per patch

    mistakes = {                                                     # hint: the wrong answer it names
        "every patch got the same weight: weight each patch by 1 / m_b, the number of masked "
        "patches of ITS image, so that every image counts once":
            lambda s, t, masks, tau: per_patch(s, t, tau).sum() / masks.shape[0],
        "that is the mean over all masked patches: iBOT weights each patch by 1 / m_b of its image "
        "and divides by B, the number of images":
            lambda s, t, masks, tau: per_patch(s, t, tau).mean(),
        "divided by the images that have a masked patch: the sum is divided by B, every image of "
        "the batch (dinov2 divides by student_masks_flat.shape[0])":
            lambda s, t, masks, tau: numpy_dinov2.ibot_loss_masked(s, t, masks, tau) * masks.shape[0]
            / max(int(masks.any(axis=1).sum()), 1),
        "the student temperature is missing: P_s = softmax(s / tau_s)":
            lambda s, t, masks, tau: numpy_dinov2.ibot_loss_masked(s, t, masks, 1.0),
    }
    return check_function(
        "ibot_patch_loss", fn, numpy_dinov2.ibot_loss_masked, cases,
        mistakes=[(wrong, hint) for hint, wrong in mistakes.items()],
        against="dino_ref.numpy_dinov2.ibot_loss_masked",
        hint="per patch H = -sum_k P_t log softmax(s / tau_s); weight it by 1 / (masked patches of "
             "its image); sum, and divide by B = masks.shape[0]")
