"""What to watch during training (paper Sec. 5.3, Fig. 7): the loss splits as
H(P_t, P_s) = h(P_t) + KL(P_t || P_s); the batch entropy h(P_bar_t) tells the two collapses apart.

    teacher_entropy  h(P_t): ~0 when every row is one-hot, log K when every row is uniform
    batch_entropy    h(P_bar_t), the entropy of the batch-mean target: ~0 when every row puts its
                     mass on the same dimension (centering missing), ~log K when rows spread
    kl_divergence    KL(P_t || P_s) = loss - h(P_t): ~0 in both collapses
"""

import torch

from .batch_stats import global_batch_mean

__all__ = ["teacher_entropy", "batch_entropy", "kl_divergence"]


def teacher_entropy(P_t):
    """ h(P_t): mean over all T*B rows of -sum_d p_d log p_d; then loss = h(P_t) + KL(P_t || P_s)

    (every teacher view meets the same number, S - 1, of student views, so the plain row mean is
    the pair-weighted one)
    """
    with torch.no_grad():
        return -torch.special.xlogy(P_t, P_t).sum(-1).mean()


def batch_entropy(P_t):
    """ h(P_bar_t): entropy of the teacher distribution averaged over all rows (of all ranks)

    ~0 when every image puts its mass on the same dimension, ~log K when the batch spreads
    over all dimensions (both for uniform rows and for sharp rows on different dimensions)
    """
    with torch.no_grad():
        P_bar = global_batch_mean(P_t).flatten()                      # (K,)
        return -torch.special.xlogy(P_bar, P_bar).sum()


def kl_divergence(loss, P_t):
    """ KL(P_t || P_s) = H(P_t, P_s) - h(P_t): what the loss holds beyond the targets' entropy """
    return loss.detach() - teacher_entropy(P_t)
