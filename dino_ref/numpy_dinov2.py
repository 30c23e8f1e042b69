"""DINOv2's additions to the loss in NumPy, with explicit loops: a reference that reads like the
equations (Oquab et al. 2023, Sec. 4; the authors' dinov2/loss/*.py).

    Sinkhorn-Knopp   Q = exp(t / tau_t)^T (K x N); repeat: rows to 1/K, columns to 1/N; P_t = N Q^T
    KoLeo            L = -1/n sum_i log(rho_i + eps),  rho_i = || x_i - x_nn(i) ||,  x L2-normalised
    iBOT             L = 1/B sum_b 1/m_b sum_{n masked in b} H(P_t[b, n], P_s[b, n])

Everything is float64. This module imports no torch.
"""

import numpy as np

from .numpy_ref import cross_entropy, log_softmax, softmax

__all__ = ["sinkhorn_knopp", "l2_normalize", "nearest_neighbours", "koleo_loss", "mask_weights",
           "softmax_center_teacher", "ibot_loss_masked", "ibot_loss_dense",
           "ibot_center_update"]


def sinkhorn_knopp(teacher, teacher_temp, n_iterations=3):
    """ Sinkhorn-Knopp targets; (..., K) -> (..., K), every row (sample) sums to 1 """
    teacher = np.asarray(teacher, dtype=np.float64)
    t = teacher.reshape(-1, teacher.shape[-1])                  # (N, K): all rows are samples
    N, K = t.shape
    Q = np.zeros((K, N))
    for k in range(K):
        for b in range(N):
            # Q[k, b] = exp(t[b, k] / tau_t), shifted by the largest logit of prototype k:
            # a factor per row of Q, which the first row normalisation removes
            Q[k, b] = np.exp((t[b, k] - t[:, k].max()) / teacher_temp)
    for _ in range(n_iterations):
        for k in range(K):                                      # sum_b Q[k, b] = 1/K
            Q[k, :] = Q[k, :] / Q[k, :].sum() / K
        for b in range(N):                                      # sum_k Q[k, b] = 1/N
            Q[:, b] = Q[:, b] / Q[:, b].sum() / N
    return (N * Q).T.reshape(teacher.shape)                     # P_t[b] = N Q[:, b]


def l2_normalize(x, eps=1e-8):
    """ x_i / max(||x_i||, eps), row by row """
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    for i in range(len(x)):
        out[i] = x[i] / max(np.sqrt((x[i] ** 2).sum()), eps)
    return out


def nearest_neighbours(x):
    """ nn(i) = argmax_{j != i} <x_i, x_j> (the nearest other row, for unit rows); ties: lowest j """
    n = len(x)
    nn = np.zeros(n, dtype=int)
    for i in range(n):
        best = -np.inf
        for j in range(n):
            if j != i and x[i] @ x[j] > best:
                best, nn[i] = x[i] @ x[j], j
    return nn


def koleo_loss(x, eps=1e-8, distance_eps=1e-8):
    """ -1/n sum_i log(rho_i + eps); rho_i = || x_i - x_nn(i) + distance_eps || (dinov2's distance:
    torch's PairwiseDistance adds its eps to every coordinate difference) """
    x = l2_normalize(x, eps)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"KoLeo needs an (n, D) array with n >= 2 rows, got shape {x.shape}")
    nn = nearest_neighbours(x)
    total = 0.0
    for i in range(len(x)):
        rho = np.sqrt(((x[i] - x[nn[i]] + distance_eps) ** 2).sum())   # rho_i
        total += np.log(rho + eps)
    return -total / len(x)


def mask_weights(masks):
    """ the weight 1 / m_b of every masked patch, in row-major order of the True entries; (M,) """
    weights = []
    for b in range(masks.shape[0]):
        m_b = masks[b].sum()                                    # masked patches of image b
        for n in range(masks.shape[1]):
            if masks[b, n]:
                weights.append(1.0 / m_b)
    return np.array(weights)


def ibot_loss_masked(student, teacher_targets, masks, student_temp, masks_weight=None):
    """ iBOT on the M masked patches: s (M, K), P_t (M, K), masks (B, N) bool -> float

    L = 1/B sum_patches w * H(P_t, P_s), w = 1 / m_b (m_b: masked patches of the patch's image)
    """
    weights = mask_weights(masks) if masks_weight is None else np.asarray(masks_weight, dtype=np.float64)
    log_P_s = log_softmax(student, student_temp)                # (M, K)
    total = 0.0
    for p in range(len(weights)):
        total += weights[p] * cross_entropy(np.asarray(teacher_targets[p], dtype=np.float64), log_P_s[p])
    return total / masks.shape[0]


def ibot_loss_dense(student, teacher_targets, masks, student_temp):
    """ iBOT on all patches with a mask: s (B, N, K), P_t (B, N, K), masks (B, N) -> float """
    log_P_s = log_softmax(student, student_temp)                # (B, N, K)
    B, N = masks.shape
    total = 0.0
    for b in range(B):
        image = 0.0
        for n in range(N):
            if masks[b, n]:
                image += cross_entropy(np.asarray(teacher_targets[b, n], dtype=np.float64), log_P_s[b, n])
        total += image / max(masks[b].sum(), 1)                 # mean over the masked patches of b
    return total / B


def ibot_center_update(center, teacher_patches, momentum):
    """ c <- m c + (1 - m) mean of all patch rows; t (..., K); a non-finite mean leaves c as it was """
    rows = np.asarray(teacher_patches, dtype=np.float64).reshape(-1, np.shape(center)[-1])
    mean = np.zeros(rows.shape[1])
    for row in rows:
        mean += row / len(rows)
    new = momentum * center + (1.0 - momentum) * mean
    return np.where(np.isfinite(mean), new, center)


def softmax_center_teacher(teacher, center, teacher_temp):
    """ P_t = softmax((t - c) / tau_t) """
    return softmax(np.asarray(teacher, dtype=np.float64) - center, teacher_temp)

