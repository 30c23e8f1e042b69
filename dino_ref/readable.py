"""The DINO loss written plainly in torch, for autograd: the targets and the cross-entropy.

`fused.py` computes the same cross-entropy with a hand-written backward (the fast path), and
falls back to this form where its buffers cannot be used (functorch transforms, forward-mode AD);
`loss.DINOLoss` puts the two together. Shapes: T teacher views, S student views, B rows, D dims.
"""

import torch
import torch.nn.functional as F

from .common import num_pairs

__all__ = ["teacher_targets", "hard_targets", "dino_cross_entropy_readable"]


def teacher_targets(teacher, center, teacher_temp):
    """ P_t = softmax((t - c) / tau_t), no gradient; (T, B, D)

    tau_t = 0 gives the limit tau_t -> 0, hard targets: each row's mass shared equally among the
    dimensions where t - c is largest (one-hot when the maximum is unique); no division by zero
    """
    with torch.no_grad():
        logits = teacher.detach() - center                          # (T, B, D)  centering: a new tensor
        if teacher_temp == 0:
            return hard_targets(logits)
        return F.softmax(logits.div_(teacher_temp), dim=-1)         # sharpening, in place


def hard_targets(logits):
    """ lim_{tau -> 0} softmax(logits / tau): 1 / (number of maximisers) on each row's maximisers """
    is_max = (logits == logits.amax(dim=-1, keepdim=True)).to(logits.dtype)   # (T, B, D)
    return is_max / is_max.sum(dim=-1, keepdim=True)


def dino_cross_entropy_readable(P_t, student, student_temp):
    """ the loss written plainly, differentiated by autograd: the fused form (fused.py) computes the
    same value with a hand-written backward """
    T, B, _ = P_t.shape
    S = student.shape[0]
    k = min(T, S)
    log_P_s = F.log_softmax(student / student_temp, dim=-1)          # (S, B, D)
    Q = P_t.sum(0)                                                   # (B, D) sum_i P_t[i]
    # sum_i sum_{v != i} H(P_t[i], P_s[v]) = sum_v H(Q, P_s[v]) - sum_{v < T} H(P_t[v], P_s[v])
    all_pairs = -(Q * log_P_s).sum(-1)                               # (S, B)
    own_view = -(P_t[:k] * log_P_s[:k]).sum(-1)                      # (k, B)
    return (all_pairs.sum() - own_view.sum()) / (num_pairs(T, S) * B)
