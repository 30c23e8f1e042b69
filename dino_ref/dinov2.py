"""DINOv2's additions to the DINO loss (Oquab et al. 2023, Sec. 4), as torch functions and modules
with the calls of the authors' dinov2/loss/*.py:

    sinkhorn_knopp(t, tau_t)     teacher targets by Sinkhorn-Knopp, in place of the moving-average center
    KoLeoLoss()(x)               -1/n sum_i log(rho_i + eps), rho_i: distance to the nearest other row
    iBOTPatchLoss(K)             cross-entropy on masked patches, each image weighted equally

Every collective is guarded (the functions run without a process group) and all-reduces sums
and counts, so the results are exact when ranks hold different numbers of rows.
`dino_ref.numpy_dinov2` holds the same computations as NumPy loops.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .batch_stats import compute_dtype, global_batch_mean

__all__ = ["sinkhorn_knopp", "nearest_neighbours", "koleo_loss", "KoLeoLoss",
           "patch_cross_entropy", "mask_weights", "iBOTPatchLoss"]


# --- Sinkhorn-Knopp teacher targets ---------------------------------------------------------------

def sinkhorn_knopp(teacher_output, teacher_temp, n_iterations=3):
    """ Sinkhorn-Knopp targets (no gradient); (..., K) -> (..., K), each row sums to 1

    All rows (T*B of a (T, B, K) input, on all ranks) are the N samples of one batch. With
    Q = exp(t / tau_t)^T (K, N), each iteration scales every prototype row of Q to total 1/K, then
    every sample column to 1/N; the result is N Q^T. Computed in the log domain: finite for any
    finite logits (exp(t / tau_t) itself overflows float32 once t / tau_t > 88).
    """
    if not isinstance(teacher_output, torch.Tensor) or not teacher_output.is_floating_point() \
            or teacher_output.ndim < 2 or teacher_output.shape[-1] < 1 or teacher_output.numel() == 0:
        shape = tuple(teacher_output.shape) if isinstance(teacher_output, torch.Tensor) else type(teacher_output).__name__
        raise ValueError(f"teacher_output must be a floating tensor (..., K) with at least one row "
                         f"and K >= 1, got {shape}")
    _check_sinkhorn_args(teacher_temp, n_iterations)
    t = teacher_output.detach().to(compute_dtype(teacher_output))
    K = t.shape[-1]
    rows = t.reshape(-1, K)                                          # (N_local, K)
    return _sinkhorn_log_domain(rows, float(teacher_temp), n_iterations, rows.shape[0]).reshape(t.shape)


@torch.no_grad()
def _sinkhorn_log_domain(t, teacher_temp, n_iterations, n_local):
    """ the iterations as log scalings; t (N_local, K) -> targets (N_local, K)

    Q = diag(exp(-u)) exp(x) diag(exp(-v)) with x = (t / tau_t)^T: each row step sets the
    prototype scalings u (K, 1), each column step the sample scalings v (1, N). Only u and v are
    updated; Q is formed once at the end, so x is rounded once, not once per step.
    """
    K = t.shape[1]
    N = _all_reduce_sum(torch.tensor(float(n_local), dtype=t.dtype, device=t.device))  # samples, all ranks
    x = (t / teacher_temp).T                                         # (K, N_local)  log Q before scaling
    # a per-prototype shift scales row k of Q, which the first row step undoes exactly; with it
    # x <= 0 and every row has a 0, so u stays small and x - u - v loses fewer bits
    x = x - _all_reduce(x.amax(dim=1, keepdim=True), dist.ReduceOp.MAX)  # (K, N) - (K, 1)
    v = torch.zeros(1, x.shape[1], dtype=x.dtype, device=x.device)   # (1, N_local)
    # (dinov2 first divides Q by its total: a common factor that the first row step removes)
    for _ in range(n_iterations):
        # rows: sum_b Q[k, b] = 1/K for every prototype k, the sum running over all ranks' samples
        u = _global_logsumexp_over_samples(x - v) + math.log(K)     # (K, 1)
        # columns: sum_k Q[k, b] = 1/N for every sample b (all of a column lies on its rank)
        v = torch.logsumexp(x - u, dim=0, keepdim=True) + N.log()    # (1, N_local)
    return (x - u - v + N.log()).exp().T                             # N Q^T: each sample's row sums to 1


def _global_logsumexp_over_samples(log_Q):
    """ log sum_b exp(log Q[k, b]) over the samples of all ranks; (K, N_local) -> (K, 1) """
    m = log_Q.amax(dim=1, keepdim=True)                              # (K, 1) per-prototype max
    m = _all_reduce(m, dist.ReduceOp.MAX)                            # the same shift on every rank
    s = _all_reduce_sum((log_Q - m).exp().sum(dim=1, keepdim=True))  # (K, 1), each term <= 1
    return m + s.log()


def _check_sinkhorn_args(teacher_temp, n_iterations):
    if isinstance(teacher_temp, torch.Tensor) and teacher_temp.ndim == 0:
        teacher_temp = teacher_temp.item()
    if isinstance(teacher_temp, bool) or not isinstance(teacher_temp, (int, float)) \
            or not 0 < teacher_temp < math.inf:
        raise ValueError(f"teacher_temp must be a finite number > 0 for Sinkhorn-Knopp, got {teacher_temp!r}")
    if isinstance(n_iterations, bool) or not isinstance(n_iterations, int) or n_iterations < 1:
        raise ValueError(f"n_iterations must be an integer >= 1, got {n_iterations!r}")


def _distributed():
    return dist.is_available() and dist.is_initialized()


def _all_reduce(x, op):
    """ all-reduce x in place under torch.distributed; x itself without a process group """
    if _distributed():
        dist.all_reduce(x, op=op)
    return x


def _all_reduce_sum(x):
    return _all_reduce(x, dist.ReduceOp.SUM) if _distributed() else x


# --- KoLeo ----------------------------------------------------------------------------------------

@torch.no_grad()
def nearest_neighbours(x):
    """ index of each row's nearest OTHER row, by the largest dot product (for unit rows, the
    smallest distance: ||a - b||^2 = 2 - 2 <a, b>); (n, D) -> (n,), ties to the lowest index """
    dots = x @ x.T                                                   # (n, n)  <x_i, x_j>
    dots.fill_diagonal_(-math.inf)                                   # a row is not its own neighbour
    return dots.argmax(dim=1)                                        # (n,)


def koleo_loss(x, eps=1e-8, distance_eps=1e-8):
    """ KoLeo: -1/n sum_i log(rho_i + eps); x (n, D), n >= 2 -> 0-dim tensor

    x_hat = x / max(||x||, eps) row by row; rho_i = ||x_hat_i - x_hat_nn(i) + distance_eps|| with
    nn(i) the nearest other row (the distance of torch's PairwiseDistance, as dinov2 computes it)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"student_output must be a floating (n, D) tensor, got {shape}")
    if x.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 rows (a nearest other row), got student_output "
                         f"of shape {tuple(x.shape)}")
    x_hat = F.normalize(x.to(compute_dtype(x)), p=2, dim=-1, eps=eps)   # (n, D)
    nn_index = nearest_neighbours(x_hat.detach())                    # (n,)
    rho = (x_hat - x_hat[nn_index] + distance_eps).norm(dim=-1)     # (n,)
    return -torch.log(rho + eps).mean()


class KoLeoLoss(nn.Module):
    """ the KoLeo regulariser (Sablayrolles et al. 2019; DINOv2 Sec. 4); call: loss(x, eps=1e-8)

    x (n, D) with n >= 2: rows are L2-normalised, each is paired with its nearest other row.
    distance_eps: added to every coordinate difference inside the norm (dinov2's
    nn.PairwiseDistance(2, eps=1e-8)), so duplicate rows give a large finite penalty.
    """

    def __init__(self, distance_eps=1e-8):
        super().__init__()
        self.distance_eps = float(distance_eps)

    def extra_repr(self):
        return f"distance_eps={self.distance_eps}"

    def forward(self, student_output, eps=1e-8):
        return koleo_loss(student_output, eps=eps, distance_eps=self.distance_eps)


# --- iBOT masked-patch loss -----------------------------------------------------------------------

def patch_cross_entropy(teacher_targets, student_logits, student_temp):
    """ H(P_t, P_s) = -sum_k P_t[k] log softmax(s / tau_s)[k] per patch; (..., K) -> (...) """
    return -(teacher_targets * F.log_softmax(student_logits / student_temp, dim=-1)).sum(dim=-1)


class iBOTPatchLoss(nn.Module):
    """ iBOT's masked-image-modelling loss on patch tokens, with DINOv2's methods

    forward_masked(s (M, K), t (M, K), masks (B, N) bool) -> 0-dim: the M masked patches in the
    order of masks' True entries (row-major); t holds teacher targets (softmax_center_teacher or
    sinkhorn_knopp_teacher). Each patch of image b weighs 1 / m_b (m_b: its masked patches), so every
    image with a masked patch counts once; the sum is divided by B, all images of the batch:
        L = 1/B sum_b 1/m_b sum_{n masked in b} H(P_t[b, n], P_s[b, n]).
    The center (1, 1, K) is updated like DINOLoss's: sums and counts of all ranks, kept in
    float32/float64 under .half(), left as it was where a batch mean is not finite.
    """

    def __init__(self, patch_out_dim, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        if isinstance(patch_out_dim, bool) or not isinstance(patch_out_dim, int) or patch_out_dim < 1:
            raise ValueError(f"patch_out_dim must be an integer >= 1, got {patch_out_dim!r}")
        if not 0 < student_temp < math.inf:
            raise ValueError(f"student_temp must be a finite number > 0, got {student_temp!r}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum!r}")
        self.patch_out_dim = patch_out_dim
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, 1, patch_out_dim))   # c, (1, 1, K)

    def extra_repr(self):
        return (f"patch_out_dim={self.patch_out_dim}, student_temp={self.student_temp}, "
                f"center_momentum={self.center_momentum}")

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_patch_tokens, teacher_temp):
        """ P_t = softmax((t - c) / tau_t) with the current center; (..., K) -> (..., K) """
        t = self._check_tokens(teacher_patch_tokens, "teacher_patch_tokens")
        dtype = compute_dtype(t)
        return F.softmax((t.detach().to(dtype) - self.center.to(dtype)) / teacher_temp, dim=-1)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(self, teacher_output, teacher_temp, n_masked_patches_tensor, n_iterations=3):
        """ Sinkhorn-Knopp targets of the masked patches; (M, K) -> (M, K)

        n_masked_patches_tensor: this rank's M (an int or a 1-element tensor, as dinov2 passes it;
        not modified); the number of samples is its sum over the ranks.
        """
        t = self._check_tokens(teacher_output, "teacher_output")
        if t.ndim != 2:
            raise ValueError(f"teacher_output must be (n_masked_patches, {self.patch_out_dim}), got {tuple(t.shape)}")
        n = n_masked_patches_tensor
        n = int(n.reshape(-1)[0]) if isinstance(n, torch.Tensor) and n.numel() == 1 else n
        if isinstance(n, bool) or not isinstance(n, int) or n != t.shape[0] or n < 1:
            raise ValueError(f"n_masked_patches_tensor ({n_masked_patches_tensor!r}) must equal the number "
                             f"of rows of teacher_output {tuple(t.shape)} (at least 1)")
        _check_sinkhorn_args(teacher_temp, n_iterations)
        return _sinkhorn_log_domain(t.detach().to(compute_dtype(t)), float(teacher_temp), n_iterations, n)

    def forward(self, student_patch_tokens, teacher_patch_tokens, student_masks_flat):
        """ s (B, N, K), t (B, N, K) targets, masks (B, N) bool -> 0-dim: the same L on dense tokens """
        s = self._check_tokens(student_patch_tokens, "student_patch_tokens")
        t = self._check_tokens(teacher_patch_tokens, "teacher_patch_tokens")
        masks = _check_masks(student_masks_flat)
        if s.ndim != 3 or s.shape != t.shape or s.shape[:2] != masks.shape:
            raise ValueError(f"student_patch_tokens {tuple(s.shape)} and teacher_patch_tokens {tuple(t.shape)} "
                             f"must both be (B, N, {self.patch_out_dim}) with masks (B, N), got masks "
                             f"{tuple(masks.shape)}")
        dtype = compute_dtype(s, t)
        H = patch_cross_entropy(t.to(dtype), s.to(dtype), self.student_temp)     # (B, N)
        m_b = masks.sum(dim=-1).clamp(min=1).to(dtype)                            # (B,) masked per image
        return ((H * masks).sum(dim=-1) / m_b).mean()

    def forward_masked(self, student_patch_tokens_masked, teacher_patch_tokens_masked, student_masks_flat,
                       n_masked_patches=None, masks_weight=None):
        """ s (M', K), t (M', K) targets, masks (B, N) bool -> 0-dim L

        n_masked_patches: use only the first M rows of s and t (the rest is padding);
        masks_weight (M,): each patch's weight, 1 / m_b of its image when None.
        """
        s = self._check_tokens(student_patch_tokens_masked, "student_patch_tokens_masked")
        t = self._check_tokens(teacher_patch_tokens_masked, "teacher_patch_tokens_masked")
        masks = _check_masks(student_masks_flat)
        if s.ndim != 2 or s.shape != t.shape:
            raise ValueError(f"student_patch_tokens_masked {tuple(s.shape)} and teacher_patch_tokens_masked "
                             f"{tuple(t.shape)} must both be (n_masked_patches, {self.patch_out_dim})")
        M = s.shape[0] if n_masked_patches is None else n_masked_patches
        if isinstance(M, bool) or not isinstance(M, int) or not 0 <= M <= s.shape[0]:
            raise ValueError(f"n_masked_patches must be an integer in [0, {s.shape[0]}] (the rows given), "
                             f"got {n_masked_patches!r}")
        dtype = compute_dtype(s, t)
        if masks_weight is None:
            masks_weight = mask_weights(masks, dtype)                             # (sum of masks,)
        if masks_weight.shape != (M,):
            raise ValueError(f"{M} masked patches but {tuple(masks_weight.shape)} weights: masks_weight "
                             f"(or the True entries of student_masks_flat {tuple(masks.shape)}) must "
                             f"give one weight per patch")
        H = patch_cross_entropy(t[:M].to(dtype), s[:M].to(dtype), self.student_temp)   # (M,)
        return (H * masks_weight.to(dtype)).sum() / masks.shape[0]

    @torch.no_grad()
    def update_center(self, teacher_patch_tokens):
        """ c <- m c + (1 - m) mean(t) over all rows (patches) of all ranks; t (..., K) """
        t = self._check_tokens(teacher_patch_tokens, "teacher_patch_tokens")
        if t.numel() == 0:
            raise ValueError(f"teacher_patch_tokens {tuple(t.shape)} has no rows")
        if self.center.device != t.device:
            raise ValueError(f"the center is on {self.center.device} but teacher_patch_tokens on "
                             f"{t.device}: call loss_fn.to(\"{t.device}\") once, as for a model")
        dtype = compute_dtype(t, self.center)
        mean = global_batch_mean(t.detach().to(dtype).reshape(1, -1, self.patch_out_dim))   # (1, 1, K)
        m = self.center_momentum
        new = m * self.center.to(dtype) + (1.0 - m) * mean
        # a non-finite batch mean leaves c as it was, per dimension (no host synchronisation)
        self.center.copy_(torch.where(torch.isfinite(mean), new, self.center.to(dtype)))

    def _apply(self, fn, recurse=True):
        """ .to(), .half(), ...: the center moves with the module but keeps float32/float64 """
        center = self.center
        super()._apply(fn, recurse)
        if self.center.dtype not in (torch.float32, torch.float64):
            self.center = center.to(self.center.device)
        return self

    def _check_tokens(self, x, name):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating torch.Tensor, got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.ndim < 2 or x.shape[-1] != self.patch_out_dim:
            raise ValueError(f"{name} must be (..., {self.patch_out_dim}), got {tuple(x.shape)}")
        return x


def mask_weights(masks, dtype=torch.float32):
    """ 1 / m_b for every masked patch, in the order of masks' True entries; (B, N) -> (M,) """
    m_b = masks.sum(dim=-1, keepdim=True).clamp(min=1).to(dtype)    # (B, 1) masked patches per image
    return (1.0 / m_b).expand_as(masks)[masks]                       # (M,)


def _check_masks(masks):
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.ndim != 2:
        what = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"student_masks_flat must be a bool (B, N) tensor (True: masked), got {what}")
    return masks
