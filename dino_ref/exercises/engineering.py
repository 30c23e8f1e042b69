"""Checkers for the exercises of notebook 09 (engineering appendix), see dino_ref.exercises.

Uneven batches: micro-batches of gradient accumulation, shards of data-parallel ranks. Each checker
rebuilds the whole batch's loss and gradient (or center) from the pieces with the learner's
weights and compares them with `dino_ref.numpy_ref` on the whole batch.
"""

import numpy as np

from .. import numpy_ref
from ._core import check_function

__all__ = ["check_micro_batch_weights", "check_ddp_loss_scale", "check_pooled_mean"]

T, S, K, TAU_T, TAU_S = 2, 4, 6, 0.05, 0.1


def _whole_batch(sizes, salt):
    """ teacher (T, B, K), student (S, B, K), center (1, 1, K) for one step of B = sum(sizes)
    rows, the same for the same sizes and salt """
    B = sum(sizes)
    rng = np.random.default_rng(B * salt + len(sizes))
    return rng.normal(size=(T, B, K)), rng.normal(size=(S, B, K)), 0.3 * rng.normal(size=(1, 1, K))


def _one_process(salt):
    """ the reference: loss and gradient of one pass over the whole batch, flattened """
    def whole(*sizes):
        return _flat(*_loss_and_grad(*_whole_batch(sizes, salt)))
    return whole


def _pieces(sizes):
    """ row slices of consecutive pieces with the given numbers of rows """
    ends = np.cumsum(sizes)
    return [slice(int(end - size), int(end)) for size, end in zip(sizes, ends)]


def _loss_and_grad(teacher, student, center):
    """ the mean loss of one piece and its gradient w.r.t. the piece's student logits """
    return (numpy_ref.dino_loss(teacher, student, center, TAU_T, TAU_S),
            numpy_ref.dino_loss_grad(teacher, student, center, TAU_T, TAU_S))


def _flat(loss, grad):
    return np.concatenate([[loss], grad.ravel()])


SPLITS = [(5, 3), (6, 1, 1), (4, 4), (1, 7), (3,), (2, 2, 2, 1)]


def check_micro_batch_weights(fn):
    """ fn(sizes) -> one weight per micro-batch, so that sum_k w_k * (mean loss of micro-batch k)
    has the loss and gradient of one pass over the whole batch (sizes: a tuple of row counts) """

    def accumulate(weights_of, *sizes):
        teacher, student, center = _whole_batch(sizes, salt=31)
        weights = np.asarray(weights_of(tuple(sizes)), dtype=float).ravel()
        if weights.shape != (len(sizes),):
            return np.full(1, np.nan)                              # a wrong shape fails the comparison
        loss, grad = 0.0, np.zeros_like(student)
        for w, rows in zip(weights, _pieces(sizes)):               # one micro-batch after the other
            l_k, g_k = _loss_and_grad(teacher[:, rows], student[:, rows], center)
            loss += w * l_k                                         # loss.backward() accumulates
            grad[:, rows] += w * g_k
        return _flat(loss, grad)

    return check_function(
        "micro_batch_weights (loss and gradient accumulated vs one pass on the whole batch)",
        lambda *sizes: accumulate(fn, *sizes), _one_process(salt=31), SPLITS,
        hint="each micro-batch loss is a mean over its own B_k rows; weight it by B_k / B "
             "(B = sum of the sizes), not by 1 / (number of micro-batches): that is exact only "
             "when all micro-batches have the same size")


def check_ddp_loss_scale(fn):
    """ fn(b_local, world, B) -> the factor for a rank's mean loss so that DDP's gradient average
    equals one process on the whole batch """

    def ddp(*sizes):
        teacher, student, center = _whole_batch(sizes, salt=17)
        world, B = len(sizes), sum(sizes)
        loss, grad = 0.0, np.zeros_like(student)
        for b_local, rows in zip(sizes, _pieces(sizes)):           # rank r holds these rows
            scale = float(np.asarray(fn(b_local, world, B)))
            l_r, g_r = _loss_and_grad(teacher[:, rows], student[:, rows], center)
            loss += scale * l_r / world                            # all-reduce average of the losses
            grad[:, rows] += scale * g_r / world                   # DDP averages gradients over ranks
        return _flat(loss, grad)

    return check_function(
        "ddp_loss_scale (rank gradients averaged by DDP vs one process on the whole batch)",
        ddp, _one_process(salt=17), SPLITS,
        hint="DDP divides the summed gradients by the world size, and each rank's loss is a mean "
             "over its own b_local rows: scale it by b_local * world / B so that every row gets "
             "the weight 1/B it has on one process (a factor 1 is exact only for equal shards)")


def check_pooled_mean(fn):
    """ fn(shards) -> (K,) mean of the teacher logits over all rows of all shards, from each
    shard's (T, b_r, K) array (what the all-reduce of row sums and row counts computes) """
    rng = np.random.default_rng(703)
    cases = []
    for sizes in [(28, 4), (5, 3), (1, 1, 6), (4, 4), (9,)]:
        bias = 3.0 * rng.normal(size=K)
        cases.append(tuple(bias + rng.normal(size=(T, b, K)) for b in sizes))

    def reference(*shards):
        return numpy_ref.batch_center(np.concatenate(shards, axis=1))[0, 0]

    return check_function(
        "pooled_mean", lambda *shards: fn(list(shards)), reference, cases,
        hint="add up the row sums of all shards and divide by the total number of rows (T times "
             "the sum of the b_r); the mean of per-shard means weights a small shard's rows too much")
