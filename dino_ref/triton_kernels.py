"""The DINO loss call as four Triton kernels: the `backend="triton"` path of `dino_ref.DINOLoss`.

Same loss, same gradient, same center update as `loss.py` + `fused.py`; written for a GPU, where
the eager form is launch-bound (measured on an H200: ~10 µs per kernel, 100+ kernels per call; benchmarks/README.md). Here one
call costs 3 Triton launches forward (+ one torch sum of the partial losses when S·B is large)
and 1 backward, whatever S, B and D are. Shapes: teacher t (T, B, D), student s (S, B, D),
center c (D,); n = T·S − min(T, S) pairs; n_v = T − 1 for v < T, else T.

Identities (the same as `fused.py`, with every dot product taken on max-shifted logits):

1. teacher targets  P_t[i, b] = exp(z − M) / L,  z = (t[i, b] − c) / τ_t,  M = max_d z,
   L = Σ_d exp(z − M); per row only (M, L) is kept: P_t is recomputed from t where it is needed,
   so nothing of size (T, B, D) is allocated;
2. the pair sum factorises: student view v meets the weight  W[v] = Q − P_t[v]  (the P_t[v] only
   for v < T), Q = Σ_i P_t[i], and Σ_d W[v, b, d] = n_v;
3. per (v, b), with m = max_d s[v, b] and τ = τ_s,
       Σ_{i≠v} H(P_t[i, b], softmax(s[v, b] / τ)) = n_v · log Σ_d exp((s − m) / τ) − ⟨W, s − m⟩ / τ
   (shift-invariant: no large term cancels when all logits share an offset);
4. a row split into D blocks k with their own max m_k merges by log-sum-exp rescaling:
       m = max_k m_k,   Σ exp((s − m)/τ) = Σ_k e_k · exp((m_k − m)/τ),
       ⟨W, s − m⟩ = Σ_k ⟨W, s − m_k⟩_k + (m_k − m) · Σ_k W       (Σ_k: over block k);
   the same rescaling merges the teacher's per-block (M, L);
5. dL/ds[v, b] = (n_v · softmax(s[v, b] / τ) − W[v, b]) / (n · B · τ);
6. center: c ← m·c + (1 − m)·(Σ_rows t) / (T·B), kept as it was where the batch mean is not finite.

Kernels, in launch order:
  _teacher_kernel        grid (D blocks, row groups): per teacher row and D block its (M, L)
                         partials (1., 4.), and per row group the column sums of t (6.);
  _student_stats_kernel  grid (B·D blocks): P_t and Q of its block from t (1., 2.), then for each
                         student view v the block's max, sum-exp, ⟨W, s − m⟩ and Σ W (3., 4.);
  _finalize_kernel       grid (row tiles + D blocks): merges the blocks of each row (4.) into its
                         loss (3.), one partial sum per program (added by one torch sum when there
                         are several); copies the old center for backward and updates it (6.);
  _student_grad_kernel   backward, grid (B·D blocks): P_t and Q once, then dL/ds (5.) for each
                         view v, times the incoming gradient.

Why the gradient is written in backward, from saved per-row statistics (m and the sum-exp, (S, B)),
and not in the forward: written in the forward, the gradient must still be multiplied by the
incoming dL in backward, one more read and write of an (S, B, D) tensor, ~1 extra copy of s; in
backward the kernel reads dL from device memory (no host sync) and writes dL·dL/ds once. Two
sweeps over s (statistics, then gradient) are needed either way because softmax needs the whole
row's sum before any element of the gradient, and the row is spread over programs. Forward alone
(under no_grad) then costs one sweep. The price: backward needs the center from *before* the call
(copied by _finalize_kernel, D values) and the teacher tensor (saved, not copied: modifying it in
place before backward makes autograd raise, as for any saved tensor).

Dtypes: s and t are read in their own dtype (float32, bfloat16, float16, float64) and computed in
float32 registers (float64 for float64 inputs); the gradient is written in the student's dtype.
No float32 copy of the student is made; the scratch is O(S·B·D/block + T·B·D/1024 + 16·D) values
(`plan`; 1-4 % of a bfloat16 gradient at D = 65536). No host synchronisation and static shapes:
a call can be captured in a CUDA graph.
`DINOLoss(backend="auto")` sends float64 to the eager path (float64 is the reference precision,
not a speed path, and the kernels' float64 build has not run on a GPU yet); `backend="triton"`
runs float64 too (the golden cases hold to 1e-10 under the interpreter).

Blocking: a row of D = 65536 walked by one program leaves 132 SMs underused when S·B is small
(measured on an H200: 3–15× a copy), so each student program takes one D block of one batch row b, for
about TARGET_PROGRAMS programs. It computes the teacher part of its block once (T exponentials per
element of t, Q, P_t in registers) and then walks the S student views: one exponential per
student element, instead of 1 + T when every (v, b) program rebuilds P_t, and t is read once per
sweep. Per view and block: one max and one three-way sum (a single reduction).
"""

import numpy as np
import torch
import triton
import triton.language as tl

from .common import num_pairs

# elements of D per student program (MIN_BLOCK..BLOCK, more for D > MAX_BLOCKS·BLOCK) and per
# teacher program
BLOCK = 1024
MIN_BLOCK = 256
MAX_BLOCKS = 1024            # D blocks per row at most (the finalize tile holds them all)
TEACHER_BLOCK = 1024
# aim for about this many (b, D block) student programs: enough to fill 132 SMs several times over
TARGET_PROGRAMS = 4096
TARGET_TEACHER_PROGRAMS = 1024
MAX_ROW_GROUPS = 16          # scratch of the teacher column sums: MAX_ROW_GROUPS · D values
FINAL_ROWS = 128             # rows per finalize program at most ...
FINAL_TILE = 4096            # ... and rows × blocks per finalize program
# warps per program: block / (32 · this) threads' worth, 1 to 8. Measured on an H200 (bench_loss.py
# --tune, benchmarks/README.md): at 4 elements per thread bfloat16 runs 7-8x slower (e.g. 4.5 ms
# instead of 0.57 ms at (2,12,256,65536)); at 8 or 16 both dtypes are within 10 % of the best
ELEMENTS_PER_THREAD = 8


def _acc_type(dtype):
    """ the register (accumulation) type: float64 for float64 inputs, float32 otherwise """
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def _scalar(hi, lo, ACC: tl.constexpr):
    """ a Python float passed as two float32 numbers (Triton passes floats as float32): hi + lo
    carries 48 bits, enough for the float64 path (a float32 1/τ alone costs 1e-8) """
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _teacher_row_stats(stats_ptr, rows, n_rows, n_dblk, row_mask, NDB: tl.constexpr):
    """ merge the per-block (M, L) of teacher rows `rows` (identity 4); -> M, 1/L, each [len(rows)] """
    k = tl.arange(0, NDB)
    idx = rows[:, None] * n_dblk + k[None, :]                           # [TP, NDB]
    mask = row_mask[:, None] & (k[None, :] < n_dblk)
    m = tl.load(stats_ptr + idx, mask=mask, other=float("-inf"))
    l = tl.load(stats_ptr + n_rows * n_dblk + idx, mask=mask, other=0.0)
    M = tl.max(m, 1)                                                    # M = max_k M_k
    M_safe = tl.where(row_mask, M, 0.0)
    L = tl.sum(tl.where(mask, l * tl.exp(m - M_safe[:, None]), 0.0), 1)  # L = Σ_k L_k exp(M_k − M)
    return M_safe, 1.0 / tl.where(row_mask, L, 1.0)


@triton.jit
def _teacher_probs(t_ptr, c, b, B, D, offs, mask, i, i_mask, M, inv_L, inv_tau_t, ACC: tl.constexpr):
    """ P_t[i, b, offs] for every teacher view i (identity 1), from the logits; [TP, BLOCK] """
    rows = (i * B + b).to(tl.int64) * D                                  # [TP] offsets of rows (i, b)
    tile_mask = i_mask[:, None] & mask[None, :]
    t = tl.load(t_ptr + rows[:, None] + offs[None, :], mask=tile_mask, other=0.0).to(ACC)
    z = (t - c[None, :]) * inv_tau_t                                     # (t − c) / τ_t
    return tl.where(tile_mask, tl.exp(z - M[:, None]) * inv_L[:, None], 0.0)


@triton.jit
def _add3(a0, a1, a2, b0, b1, b2):
    """ three sums in one reduction: (Σ exp, ⟨W, s − m⟩, Σ W) """
    return a0 + b0, a1 + b1, a2 + b2


@triton.jit
def _teacher_kernel(t_ptr, c_ptr, stats_ptr, colsum_ptr, n_rows, D, rows_per_group,
                    inv_tau_t_hi, inv_tau_t_lo,
                    COLSUM: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """ per teacher row r = (i, b) and D block j: M = max z, L = Σ exp(z − M) over the block,
    z = (t − c) / τ_t (identity 1); per row group g: Σ_{r in g} t[r] (identity 6) """
    inv_tau_t = _scalar(inv_tau_t_hi, inv_tau_t_lo, ACC)                # 1 / τ_t
    j = tl.program_id(0)
    g = tl.program_id(1)
    n_dblk = tl.num_programs(0)
    offs = j * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = offs < D
    c = tl.load(c_ptr + offs, mask=mask, other=0.0).to(ACC)
    colsum = tl.zeros([BLOCK_D], ACC)
    r0 = g * rows_per_group
    r1 = tl.minimum(r0 + rows_per_group, n_rows)
    t_row = t_ptr + r0.to(tl.int64) * D                                 # 64-bit pointer arithmetic
    for r in range(r0, r1):
        t = tl.load(t_row + offs, mask=mask, other=0.0).to(ACC)
        t_row += D
        colsum += t
        z = tl.where(mask, (t - c) * inv_tau_t, float("-inf"))
        M = tl.max(z, 0)
        L = tl.sum(tl.exp(z - M), 0)
        tl.store(stats_ptr + r * n_dblk + j, M)
        tl.store(stats_ptr + n_rows * n_dblk + r * n_dblk + j, L)
    if COLSUM:
        tl.store(colsum_ptr + g.to(tl.int64) * D + offs, colsum, mask=mask)


@triton.jit
def _teacher_block(t_ptr, c_ptr, tstats_ptr, pid, n_blk, T, B, D, n_dblk, inv_tau_t,
                   TP: tl.constexpr, NDB: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """ the program's batch row b and D block k (offsets, mask), the teacher view indices i, and
    P_t[i, b, block] (identity 1): the teacher part shared by the statistics and gradient kernels """
    k = pid % n_blk
    b = pid // n_blk
    offs = k * BLOCK + tl.arange(0, BLOCK)
    mask = offs < D
    i = tl.arange(0, TP)
    i_mask = i < T
    M_t, inv_L_t = _teacher_row_stats(tstats_ptr, i * B + b, T * B, n_dblk, i_mask, NDB)
    c = tl.load(c_ptr + offs, mask=mask, other=0.0).to(ACC)
    P = _teacher_probs(t_ptr, c, b, B, D, offs, mask, i, i_mask, M_t, inv_L_t, inv_tau_t, ACC)
    return b, k, offs, mask, i, P


@triton.jit
def _student_stats_kernel(s_ptr, t_ptr, c_ptr, tstats_ptr, part_ptr, T, S, B, D, n_dblk, n_blk,
                          inv_tau_t_hi, inv_tau_t_lo, inv_tau_s_hi, inv_tau_s_lo,
                          TP: tl.constexpr, NDB: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """ per (b, D block k), for every view v: m_k = max s, e_k = Σ exp((s − m_k)/τ),
    a_k = ⟨W, s − m_k⟩, w_k = Σ W over the block (identities 3, 4); the teacher part, Q and P_t,
    is computed once per block and serves all S views (identities 1, 2) """
    inv_tau_t = _scalar(inv_tau_t_hi, inv_tau_t_lo, ACC)
    inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)                # 1 / τ
    b, k, offs, mask, i, P = _teacher_block(t_ptr, c_ptr, tstats_ptr, tl.program_id(0), n_blk, T, B, D,
                                         n_dblk, inv_tau_t, TP, NDB, BLOCK, ACC)
    Q = tl.sum(P, 0)                                                     # Q = Σ_i P_t[i]   [BLOCK]
    n_part = S * B * n_blk
    s_ptrs = s_ptr + b.to(tl.int64) * D + offs                           # s[0, b, offs]
    for v in range(S):
        s = tl.load(s_ptrs, mask=mask, other=0.0).to(ACC)
        s_ptrs += B * D
        W = Q - tl.sum(tl.where(i[:, None] == v, P, 0.0), 0)             # Q − P_t[v] (P_t[v]: v < T)
        m = tl.max(tl.where(mask, s, float("-inf")), 0)
        x = tl.where(mask, s - m, 0.0)                                   # s − m, 0 past D
        e, a, w = tl.reduce((tl.where(mask, tl.exp(x * inv_tau_s), 0.0), W * x, W), 0, _add3)
        out = (v * B + b) * n_blk + k
        tl.store(part_ptr + out, m)
        tl.store(part_ptr + n_part + out, e)
        tl.store(part_ptr + 2 * n_part + out, a)
        tl.store(part_ptr + 3 * n_part + out, w)


@triton.jit
def _finalize_kernel(part_ptr, rowstat_ptr, loss_part_ptr, colsum_ptr, c_ptr, c_old_ptr, T, S, B, D,
                     n_blk, n_row_programs, n_groups, inv_tau_s_hi, inv_tau_s_lo, loss_scale_hi,
                     loss_scale_lo, inv_rows_hi, inv_rows_lo, m_hi, m_lo, one_minus_m_hi,
                     one_minus_m_lo, UPDATE: tl.constexpr, SAVE: tl.constexpr, NCH: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                     CACC: tl.constexpr):
    """ the first n_row_programs programs: merge the blocks of ROWS rows each (identity 4), their
    loss (identity 3) and per-row (m, Σ exp) for backward; the others: a block of the center,
    copied for backward and updated (identity 6) """
    pid = tl.program_id(0)
    if pid < n_row_programs:
        inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)
        n_part = S * B * n_blk
        kk = tl.arange(0, NCH)
        rows = pid * ROWS + tl.arange(0, ROWS)                           # row r = v·B + b
        r_mask = rows < S * B
        mask = r_mask[:, None] & (kk[None, :] < n_blk)
        idx = rows[:, None] * n_blk + kk[None, :]
        m = tl.load(part_ptr + idx, mask=mask, other=float("-inf"))
        e = tl.load(part_ptr + n_part + idx, mask=mask, other=0.0)
        a = tl.load(part_ptr + 2 * n_part + idx, mask=mask, other=0.0)
        w = tl.load(part_ptr + 3 * n_part + idx, mask=mask, other=0.0)
        M = tl.where(r_mask, tl.max(m, 1), 0.0)                          # m = max_k m_k
        shift = tl.where(mask, m - M[:, None], 0.0)                      # m_k − m
        e_row = tl.sum(tl.where(mask, e * tl.exp(shift * inv_tau_s), 0.0), 1)
        a_row = tl.sum(a + shift * w, 1)                                 # ⟨W, s − m⟩
        n_v = tl.where(rows // B < T, T - 1, T).to(ACC)
        row_loss = n_v * tl.log(tl.where(r_mask, e_row, 1.0)) - a_row * inv_tau_s
        total = tl.sum(tl.where(r_mask, row_loss, 0.0), 0)
        tl.store(loss_part_ptr + pid, total * _scalar(loss_scale_hi, loss_scale_lo, ACC))  # / (n B)
        tl.store(rowstat_ptr + rows, M, mask=r_mask)
        tl.store(rowstat_ptr + S * B + rows, e_row, mask=r_mask)
    else:
        offs_d = (pid - n_row_programs) * BLOCK_D + tl.arange(0, BLOCK_D)
        d_mask = offs_d < D
        c = tl.load(c_ptr + offs_d, mask=d_mask, other=0.0)
        if SAVE:
            tl.store(c_old_ptr + offs_d, c, mask=d_mask)                     # backward's center
        if UPDATE:
            rows_sum = tl.zeros([BLOCK_D], CACC)
            group_ptr = colsum_ptr
            for _ in range(0, n_groups):
                rows_sum += tl.load(group_ptr + offs_d, mask=d_mask, other=0.0).to(CACC)
                group_ptr += D
            mean = rows_sum * _scalar(inv_rows_hi, inv_rows_lo, CACC)   # mean over T·B rows
            c_acc = c.to(CACC)
            new = _scalar(m_hi, m_lo, CACC) * c_acc + _scalar(one_minus_m_hi, one_minus_m_lo, CACC) * mean
            finite = (mean == mean) & (tl.abs(mean) < float("inf"))
            tl.store(c_ptr + offs_d, tl.where(finite, new, c_acc).to(c_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def _student_grad_kernel(s_ptr, g_ptr, t_ptr, c_ptr, tstats_ptr, rowstat_ptr, gout_ptr,
                         T, S, B, D, n_dblk, n_blk, inv_tau_t_hi, inv_tau_t_lo,
                         inv_tau_s_hi, inv_tau_s_lo, g_scale_hi, g_scale_lo,
                         TP: tl.constexpr, NDB: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """ per (b, D block), for every view v: dL/ds = dL · (n_v exp((s − m)/τ) / Σ exp − W) / (n B τ)
    (identity 5); the teacher part once per block, as in _student_stats_kernel """
    inv_tau_t = _scalar(inv_tau_t_hi, inv_tau_t_lo, ACC)
    inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)
    gs = tl.load(gout_ptr).to(ACC) * _scalar(g_scale_hi, g_scale_lo, ACC)   # dL / (n B τ)
    b, k, offs, mask, i, P = _teacher_block(t_ptr, c_ptr, tstats_ptr, tl.program_id(0), n_blk, T, B, D,
                                         n_dblk, inv_tau_t, TP, NDB, BLOCK, ACC)
    Q = tl.sum(P, 0)
    row = b.to(tl.int64) * D + offs                                      # (0, b, offs)
    for v in range(S):
        m = tl.load(rowstat_ptr + v * B + b)
        e_sum = tl.load(rowstat_ptr + S * B + v * B + b)
        coef = gs * tl.where(v < T, T - 1, T).to(ACC) / e_sum           # dL n_v / (n B τ Σ exp)
        s = tl.load(s_ptr + row, mask=mask, other=0.0).to(ACC)
        W = Q - tl.sum(tl.where(i[:, None] == v, P, 0.0), 0)
        g = coef * tl.exp((s - m) * inv_tau_s) - gs * W
        tl.store(g_ptr + row, g.to(g_ptr.dtype.element_ty), mask=mask)
        row += B * D


# ---- launch plan and host side (shapes only: no tensor value is read on the host) ----------

def _pair(x):
    """ x as float32 hi + float32 lo (see _scalar) """
    hi = float(np.float32(x))
    return hi, float(np.float32(x - hi))


def _pow2(x):
    return max(2, triton.next_power_of_2(x))


def plan(S, B, D, T, block=None, target_programs=None, teacher_block=None,
         target_teacher_programs=None, final_rows=None, num_warps=None):
    """ the launch geometry: a dict of block sizes, grid sizes and warps per program (the
    defaults are reasoned, and the warps measured: `benchmarks/bench_loss.py --device cuda --tune`) """
    if block is None:                   # about target_programs (b, block) programs, in bounds
        block = triton.next_power_of_2(triton.cdiv(B * D, target_programs or TARGET_PROGRAMS))
        block = max(min(max(block, MIN_BLOCK), BLOCK), triton.next_power_of_2(triton.cdiv(D, MAX_BLOCKS)))
    block = min(block, _pow2(D))
    n_blk = triton.cdiv(D, block)
    teacher_block = teacher_block or min(TEACHER_BLOCK, _pow2(D))
    n_dblk = triton.cdiv(D, teacher_block)
    groups = min(T * B, MAX_ROW_GROUPS,
                 max(1, triton.cdiv(target_teacher_programs or TARGET_TEACHER_PROGRAMS, n_dblk)))
    rows_per_group = triton.cdiv(T * B, groups)
    final_rows = final_rows or min(FINAL_ROWS, max(1, FINAL_TILE // _pow2(n_blk)))  # a power of 2
    num_warps = num_warps or min(8, max(1, block // (32 * ELEMENTS_PER_THREAD)))
    return dict(block=block, n_blk=n_blk, teacher_block=teacher_block, n_dblk=n_dblk,
                rows_per_group=rows_per_group, n_groups=triton.cdiv(T * B, rows_per_group),
                final_rows=final_rows, n_row_programs=triton.cdiv(S * B, final_rows),
                num_warps=num_warps)


def _forward(student, teacher, center, tau_t, tau_s, momentum, save, geometry=None):
    """ launches 1-3: the loss (0-dim), and what backward needs; updates `center` (D,) in place
    when momentum is not None """
    T, B, D = teacher.shape
    S = student.shape[0]
    acc_dtype = _compute_dtype(student, teacher)
    ACC = _acc_type(acc_dtype)
    p = plan(S, B, D, T, **(geometry or {}))
    new = lambda *shape: torch.empty(shape, dtype=acc_dtype, device=student.device)  # noqa: E731
    update = momentum is not None
    tstats = new(2, T * B, p["n_dblk"])                                   # teacher (M, L) per block
    colsum = new(p["n_groups"], D) if update else tstats                  # Σ t per row group
    _teacher_kernel[(p["n_dblk"], p["n_groups"])](
        teacher, center, tstats, colsum, T * B, D, p["rows_per_group"], *_pair(1.0 / tau_t),
        COLSUM=update, BLOCK_D=p["teacher_block"], ACC=ACC, num_warps=p["num_warps"])

    part = new(4, S, B, p["n_blk"])                                       # (m_k, e_k, a_k, w_k)
    TP, NDB = _pow2(T), _pow2(p["n_dblk"])
    _student_stats_kernel[(B * p["n_blk"],)](
        student, teacher, center, tstats, part, T, S, B, D, p["n_dblk"], p["n_blk"],
        *_pair(1.0 / tau_t), *_pair(1.0 / tau_s), TP=TP, NDB=NDB, BLOCK=p["block"], ACC=ACC,
        num_warps=p["num_warps"])

    loss_part, rowstat = new(p["n_row_programs"]), new(2, S, B)
    c_old = torch.empty_like(center) if save else center
    CACC = _acc_type(torch.promote_types(center.dtype, acc_dtype))
    n_center = triton.cdiv(D, p["teacher_block"]) if (update or save) else 0
    _finalize_kernel[(p["n_row_programs"] + n_center,)](
        part, rowstat, loss_part, colsum, center, c_old, T, S, B, D, p["n_blk"],
        p["n_row_programs"], p["n_groups"], *_pair(1.0 / tau_s), *_pair(1.0 / (num_pairs(T, S) * B)),
        *_pair(1.0 / (T * B)), *_pair(momentum or 0.0), *_pair(1.0 - (momentum or 0.0)),
        UPDATE=update, SAVE=save, NCH=_pow2(p["n_blk"]), ROWS=p["final_rows"],
        BLOCK_D=p["teacher_block"], ACC=ACC, CACC=CACC, num_warps=p["num_warps"])
    # the loss: one partial sum per finalize program (a fixed order: the same bits every call)
    loss = loss_part[0] if p["n_row_programs"] == 1 else loss_part.sum()
    return loss, (tstats, rowstat, c_old, p)


def _backward(student, teacher, c_old, tstats, rowstat, p, tau_t, tau_s, grad_out):
    """ launch 4: dL/ds in the student's dtype; (S, B, D) """
    T, B, D = teacher.shape
    S = student.shape[0]
    grad = torch.empty_like(student)
    ACC = _acc_type(rowstat.dtype)
    _student_grad_kernel[(B * p["n_blk"],)](
        student, grad, teacher, c_old, tstats, rowstat, grad_out, T, S, B, D, p["n_dblk"],
        p["n_blk"], *_pair(1.0 / tau_t), *_pair(1.0 / tau_s),
        *_pair(1.0 / (num_pairs(T, S) * B * tau_s)),
        TP=_pow2(T), NDB=_pow2(p["n_dblk"]), BLOCK=p["block"], ACC=ACC, num_warps=p["num_warps"])
    return grad


def differentiable_grad(student, teacher, c_old, tau_t, tau_s, grad_out):
    """ identity 5 in torch ops (autograd-tracked in the student and dL): for double backward """
    T, B, D = teacher.shape
    S = student.shape[0]
    acc = _compute_dtype(student, teacher)
    with torch.no_grad():
        P_t = torch.softmax((teacher.to(acc) - c_old.to(acc)) / tau_t, dim=-1)   # (T, B, D)
        W = P_t.sum(0).expand(S, B, D).clone()                                     # Q
        W[:min(T, S)] -= P_t[:min(T, S)]                                           # Q − P_t[v]
        n_v = torch.full((S, 1, 1), float(T), dtype=acc, device=student.device)
        n_v[:min(T, S)] -= 1.0
    P_s = torch.softmax(student.to(acc) / tau_s, dim=-1)                           # (S, B, D)
    grad = (n_v * P_s - W) * (grad_out.to(acc) / (num_pairs(T, S) * B * tau_s))
    return grad.to(student.dtype)


def _compute_dtype(student, teacher):
    """ float64 if an input is float64, else float32 (as `loss.compute_dtype`) """
    return torch.float64 if torch.float64 in (student.dtype, teacher.dtype) else torch.float32


class _TritonDINOLoss(torch.autograd.Function):
    """ the loss call, differentiable in the student only; `state` carries the center and the
    constants (the center is updated in place, outside autograd's view: it is a buffer) """

    @staticmethod
    def forward(ctx, student, teacher, state):
        center, tau_t, tau_s, momentum, geometry = state
        loss, (tstats, rowstat, c_old, p) = _forward(student, teacher, center, tau_t, tau_s,
                                                     momentum, save=True, geometry=geometry)
        ctx.save_for_backward(student, teacher, c_old, tstats, rowstat)
        ctx.constants = (tau_t, tau_s, p)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        student, teacher, c_old, tstats, rowstat = ctx.saved_tensors
        tau_t, tau_s, p = ctx.constants
        if torch.is_grad_enabled():  # create_graph=True: a gradient that is itself differentiable
            return differentiable_grad(student, teacher, c_old, tau_t, tau_s, grad_out), None, None
        grad_out = grad_out.to(rowstat.dtype).contiguous()
        return _backward(student, teacher, c_old, tstats, rowstat, p, tau_t, tau_s, grad_out), None, None


def dino_loss(teacher, student, center, teacher_temp, student_temp, center_momentum=None):
    """ the DINO loss of one call, (T, B, D) teacher and (S, B, D) student on one device;
    `center` (1, 1, D) is read as it is, then updated in place if center_momentum is given.
    Differentiable in the student; the teacher gets no gradient. """
    return dino_loss_with_geometry(teacher, student, center, teacher_temp, student_temp,
                                   center_momentum, geometry=None)


def dino_loss_with_geometry(teacher, student, center, teacher_temp, student_temp,
                            center_momentum=None, *, geometry):
    """ dino_loss with the launch plan's block sizes and program counts overridden (`plan`'s
    keyword arguments): for `benchmarks/bench_loss.py --tune` and the kernel tests only """
    if float(teacher_temp) == 0:
        raise ValueError("the Triton backend needs teacher_temp > 0; hard targets (teacher_temp=0) "
                         'run on the eager path: DINOLoss(..., backend="eager")')
    if not (teacher.device == student.device == center.device):
        raise ValueError(f"teacher_out ({teacher.device}), student_out ({student.device}) and the "
                         f"center ({center.device}) must be on one device: call loss_fn.to(device)")
    teacher = teacher.detach().contiguous()
    student = student.contiguous()
    flat_center = center.view(-1)                                         # (D,), shares storage
    state = (flat_center, float(teacher_temp), float(student_temp),
             None if center_momentum is None else float(center_momentum), geometry)
    if torch.is_grad_enabled() and student.requires_grad:
        return _TritonDINOLoss.apply(student, teacher, state)
    loss, _ = _forward(student, teacher, flat_center, *state[1:4], save=False, geometry=geometry)
    return loss
