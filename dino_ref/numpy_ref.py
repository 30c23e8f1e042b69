"""The DINO loss in NumPy, with explicit loops: a reference that reads like the paper.

    L = 1/(n B) * sum_{i in teacher views} sum_{v != i} sum_b H(P_t[i, b], P_s[v, b])

    P_t[i] = softmax((t[i] - c) / tau_t)      teacher targets: centering, then sharpening
    P_s[v] = softmax(s[v] / tau_s)            student predictions
    c <- m c + (1 - m) mean(t)                the center, a moving average of teacher logits

Everything is float64. This module imports no torch.
"""

import numpy as np

from .common import (check_epoch, check_hyperparameters, check_views, num_pairs,
                     teacher_temperature, view_pairs)

__all__ = ["softmax", "log_softmax", "teacher_targets", "hard_targets", "view_pairs", "num_pairs",
           "teacher_temperature", "batch_center", "update_center", "cross_entropy",
           "entropy", "kl_divergence", "dino_loss", "dino_loss_grad", "DINOLoss"]


def softmax(x, temp):
    """ softmax(x / temp) along the last axis """
    z = np.asarray(x, dtype=np.float64) / temp
    z = z - z.max(axis=-1, keepdims=True)  # shift for stability; softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x, temp):
    """ log softmax(x / temp) along the last axis """
    z = np.asarray(x, dtype=np.float64) / temp
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def teacher_targets(teacher, center, teacher_temp):
    """ P_t = softmax((t - c) / tau_t): centering, then sharpening; (T, B, D)

    tau_t = 0: the limit tau_t -> 0, hard targets (hard_targets)
    """
    logits = np.asarray(teacher, dtype=np.float64) - center
    if teacher_temp == 0:
        return hard_targets(logits)
    return softmax(logits, teacher_temp)


def hard_targets(logits):
    """ lim_{tau -> 0} softmax(logits / tau), row by row: each of the k largest-and-equal entries
    gets 1 / k, the others 0 (one-hot when the maximum is unique); (..., D) """
    logits = np.asarray(logits, dtype=np.float64)
    P = np.zeros_like(logits)
    for index in np.ndindex(logits.shape[:-1]):               # every row (i, b)
        row = logits[index]
        maximisers = [d for d in range(len(row)) if row[d] == row.max()]
        for d in maximisers:
            P[index + (d,)] = 1.0 / len(maximisers)
    return P


def batch_center(teacher):
    """ mean of the raw teacher logits over all T*B rows; (T, B, D) -> (1, 1, D) """
    teacher = np.asarray(teacher, dtype=np.float64)
    T, B, D = teacher.shape
    rows_sum = np.zeros(D)
    for i in range(T):
        for b in range(B):
            rows_sum += teacher[i, b]
    return (rows_sum / (T * B)).reshape(1, 1, D)


def update_center(center, teacher, momentum):
    """ c <- m c + (1 - m) mean(t); where the batch mean is not finite, c keeps its value """
    mean = batch_center(teacher)
    new = momentum * center + (1.0 - momentum) * mean
    return np.where(np.isfinite(mean), new, center)


def cross_entropy(p, log_q):
    """ H(p, q) = -sum_d p_d log q_d, along the last axis """
    return -(p * log_q).sum(axis=-1)


def entropy(p):
    """ h(p) = -sum_d p_d log p_d (0 log 0 = 0), along the last axis """
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def kl_divergence(p, log_q):
    """ KL(p || q) = H(p, q) - h(p), along the last axis """
    return cross_entropy(p, log_q) - entropy(p)


def dino_loss(teacher, student, center, teacher_temp, student_temp):
    """ the loss: mean over the (i, v != i) pairs and the batch of H(P_t[i, b], P_s[v, b]) """
    P_t = teacher_targets(teacher, center, teacher_temp)       # (T, B, D)
    log_P_s = log_softmax(student, student_temp)                # (S, B, D)
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    total = 0.0
    for i, v in view_pairs(T, S):                               # teacher view i, student view v != i
        for b in range(B):
            total += cross_entropy(P_t[i, b], log_P_s[v, b])    # H(P_t[i,b], P_s[v,b])
    return total / (num_pairs(T, S) * B)


def dino_loss_grad(teacher, student, center, teacher_temp, student_temp):
    """ dL/ds[v, b] = 1/(n B tau_s) * sum_{i != v} (P_s[v, b] - P_t[i, b]); (S, B, D)

    Per term: d/dz of -<p, log_softmax(z / tau)> is (softmax(z / tau) * sum(p) - p) / tau,
    and sum(p) = 1 because P_t is a distribution.
    """
    P_t = teacher_targets(teacher, center, teacher_temp)        # (T, B, D)
    P_s = softmax(student, student_temp)                        # (S, B, D)
    T, B, _ = P_t.shape
    S = P_s.shape[0]
    scale = 1.0 / (num_pairs(T, S) * B * student_temp)
    grad = np.zeros_like(P_s)
    for i, v in view_pairs(T, S):
        for b in range(B):
            grad[v, b] += scale * (P_s[v, b] - P_t[i, b])
    return grad


class DINOLoss:
    """ the DINO loss with its moving-average center, as a layer with forward and backward """

    def __init__(self, output_dim=4096, warmup_teacher_temp=0.04, teacher_temp=0.07,
                 warmup_teacher_temp_epochs=30, student_temp=0.1, center_momentum=0.9):
        check_hyperparameters(output_dim, warmup_teacher_temp, teacher_temp,
                              warmup_teacher_temp_epochs, student_temp, center_momentum)
        self.output_dim = output_dim
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center = np.zeros((1, 1, output_dim))
        self._last = None  # inputs of the most recent call, for backward()

    def teacher_temperature(self, epoch=None):
        """ tau_t for this epoch (None: the final teacher_temp) """
        return teacher_temperature(epoch, self.warmup_teacher_temp, self.teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def __call__(self, teacher_out, student_out, epoch=None, update_center=True):
        teacher, student = _as_views(teacher_out), _as_views(student_out)
        check_views(teacher.shape, student.shape, self.output_dim)
        check_epoch(epoch)
        tau_t = self.teacher_temperature(epoch)
        loss = dino_loss(teacher, student, self.center, tau_t, self.student_temp)
        self._last = (teacher, student, self.center, tau_t)  # the center *before* the update
        if update_center:
            self.update_center(teacher)
        return float(loss)

    def update_center(self, teacher_out):
        """ c <- m c + (1 - m) mean(t), over all T*B teacher rows """
        teacher = _as_views(teacher_out)
        if teacher.ndim != 3 or teacher.shape[1] < 1 or teacher.shape[2] != self.output_dim:
            raise ValueError(f"teacher_out must be (n_globals, B >= 1, {self.output_dim}), got {teacher.shape}")
        self.center = update_center(self.center, teacher, self.center_momentum)

    def backward(self):
        """ dL/d student_out of the most recent call; (S, B, D) """
        if self._last is None:
            raise ValueError("backward() needs a call first")
        teacher, student, center, tau_t = self._last
        return dino_loss_grad(teacher, student, center, tau_t, self.student_temp)


def _as_views(x):
    """ a (V, B, D) array, or a list of V arrays (B, D), as one float64 array """
    if isinstance(x, (list, tuple)):
        x = np.stack([np.asarray(view, dtype=np.float64) for view in x])
    return np.asarray(x, dtype=np.float64)
