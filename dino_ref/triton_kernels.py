"""The DINO loss call as four Triton kernels: the `backend="triton"` path of `dino_ref.DINOLoss`.

Same loss, same gradient, same center update as `loss.py` + `fused.py`; written for a GPU, where
the eager form is launch-bound (REFERENCE.md: ~10 µs per kernel, 100+ kernels per call). Here one
call costs 3 launches forward and 1 backward, whatever S, B and D are. Shapes: teacher t (T, B, D),
student s (S, B, D), center c (D,); n = T·S − min(T, S) pairs; n_v = T − 1 for v < T, else T.

Identities (the same as `fused.py`, with every dot product taken on max-shifted logits):

1. teacher targets  P_t[i, b] = exp(z − M) / L,  z = (t[i, b] − c) / τ_t,  M = max_d z,
   L = Σ_d exp(z − M); per row only (M, L) is kept: P_t is recomputed from t where it is needed,
   so nothing of size (T, B, D) is allocated;
2. the pair sum factorises: student view v meets the weight  W[v] = Q − P_t[v]  (the P_t[v] only
   for v < T), Q = Σ_i P_t[i], and Σ_d W[v, b, d] = n_v;
3. per (v, b), with m = max_d s[v, b] and τ = τ_s,
       Σ_{i≠v} H(P_t[i, b], softmax(s[v, b] / τ)) = n_v · log Σ_d exp((s − m) / τ) − ⟨W, s − m⟩ / τ
   (shift-invariant: no large term cancels when all logits share an offset);
4. a row split into chunks k with their own max m_k merges by log-sum-exp rescaling:
       m = max_k m_k,   Σ exp((s − m)/τ) = Σ_k e_k · exp((m_k − m)/τ),
       ⟨W, s − m⟩ = Σ_k ⟨W, s − m_k⟩_k + (m_k − m) · Σ_k W       (Σ_k: over chunk k);
   the same rescaling merges the teacher's per-block (M, L);
5. dL/ds[v, b] = (n_v · softmax(s[v, b] / τ) − W[v, b]) / (n · B · τ);
6. center: c ← m·c + (1 − m)·(Σ_rows t) / (T·B), kept as it was where the batch mean is not finite.

Kernels, in launch order:
  _teacher_kernel        grid (D blocks, row groups): per teacher row and D block its (M, L)
                         partials (1., 4.), and per row group the column sums of t (6.);
  _student_stats_kernel  grid (S·B·chunks): per (v, b, chunk) the online max / sum-exp and
                         ⟨W, s − m⟩, Σ W over the chunk (3., 4.), W built on the fly from t (1., 2.);
  _finalize_kernel       grid (D blocks): program 0 merges the chunks of every row (4.) and sums the
                         loss (3.); every program copies its block of the old center (for backward)
                         and updates it (6.);
  _student_grad_kernel   backward, grid (S·B·chunks): writes dL/ds (5.) times the incoming gradient.

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
No float32 copy of the student is made; the scratch is O(S·B·chunks + T·B·D/1024 + 16·D) values
(`plan`). No host synchronisation and static shapes: a call can be captured in a CUDA graph.
`DINOLoss(backend="auto")` sends float64 to the eager path (float64 is the reference precision,
not a speed path, and the kernels' float64 build has not run on a GPU yet); `backend="triton"`
runs float64 too (the golden cases hold to 1e-10 under the interpreter).

Chunking: a row of D = 65536 walked by one program leaves 132 SMs underused when S·B is small
(REFERENCE.md: 3–15× a copy), so `plan` splits each row into chunks of whole blocks until about
TARGET_PROGRAMS programs exist; within a program the sums are kept per lane and reduced once,
the running max is the only per-block reduction.
Under `torch.autograd.grad(..., create_graph=True)` backward computes identity 5 with
differentiable torch ops instead, so second-order autograd is exact.
"""

import numpy as np
import torch
import triton
import triton.language as tl

from .common import num_pairs

# elements of D per loop step of the student kernels and per program of the teacher kernel
BLOCK = 1024
TEACHER_BLOCK = 1024
# aim for about this many student programs: enough to fill 132 SMs several times over, so rows
# are split into chunks when S·B is small (a single program walking a 65536-wide row is latency-bound)
TARGET_PROGRAMS = 8192
TARGET_TEACHER_PROGRAMS = 1024
MAX_ROW_GROUPS = 16          # scratch of the teacher column sums: MAX_ROW_GROUPS · D values
FINAL_ROWS = 128             # rows merged per step by program 0 of _finalize_kernel


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
def _teacher_weight(t_ptr, c, v, b, B, D, offs, mask, i, i_mask, M, inv_L, inv_tau_t, ACC: tl.constexpr):
    """ W[v, b, offs] = Q − P_t[v] (identities 1, 2), from the teacher logits; [BLOCK] """
    rows = (i * B + b).to(tl.int64) * D                                  # [TP] offsets of rows (i, b)
    tile_mask = i_mask[:, None] & mask[None, :]
    t = tl.load(t_ptr + rows[:, None] + offs[None, :], mask=tile_mask, other=0.0).to(ACC)
    z = (t - c[None, :]) * inv_tau_t                                     # (t − c) / τ_t
    p = tl.where(tile_mask, tl.exp(z - M[:, None]) * inv_L[:, None], 0.0)  # P_t[i, b]  [TP, BLOCK]
    Q = tl.sum(p, 0)                                                     # Q = Σ_i P_t[i]
    P_own = tl.sum(tl.where(i[:, None] == v, p, 0.0), 0)                 # P_t[v] (0 for v ≥ T)
    return Q - P_own


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
def _student_stats_kernel(s_ptr, t_ptr, c_ptr, tstats_ptr, part_ptr, T, S, B, D, n_dblk, n_chunks,
                          chunk, inv_tau_t_hi, inv_tau_t_lo, inv_tau_s_hi, inv_tau_s_lo,
                          TP: tl.constexpr, NDB: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """ per (v, b, chunk k): m_k = max s, e_k = Σ exp((s − m_k)/τ), a_k = ⟨W, s − m_k⟩, w_k = Σ W,
    walking the chunk in blocks with an online max (identities 3, 4) """
    inv_tau_t = _scalar(inv_tau_t_hi, inv_tau_t_lo, ACC)
    inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)                # 1 / τ
    pid = tl.program_id(0)
    v = pid % S                       # the view varies fastest: programs of one (b, chunk)
    k = (pid // S) % n_chunks         # run together and share the teacher block in L2
    b = pid // (S * n_chunks)
    i = tl.arange(0, TP)
    i_mask = i < T
    M_t, inv_L_t = _teacher_row_stats(tstats_ptr, i * B + b, T * B, n_dblk, i_mask, NDB)
    s_row = s_ptr + (v * B + b).to(tl.int64) * D
    # per lane: Σ exp((s − m)/τ), ⟨W, s − m⟩ and Σ W, all relative to the running scalar max m;
    # summed over lanes once at the end (one cross-thread reduction per block: the max)
    m_run = tl.full([], float("-inf"), ACC)
    e_vec = tl.zeros([BLOCK], ACC)
    a_vec = tl.zeros([BLOCK], ACC)
    w_vec = tl.zeros([BLOCK], ACC)
    d0 = k * chunk
    for d in range(d0, d0 + chunk, BLOCK):
        offs = d + tl.arange(0, BLOCK)
        mask = offs < D
        s = tl.load(s_row + offs, mask=mask, other=0.0).to(ACC)
        c = tl.load(c_ptr + offs, mask=mask, other=0.0).to(ACC)
        W = _teacher_weight(t_ptr, c, v, b, B, D, offs, mask, i, i_mask, M_t, inv_L_t, inv_tau_t, ACC)
        m_new = tl.maximum(m_run, tl.max(tl.where(mask, s, float("-inf")), 0))
        shift = tl.where(m_run == float("-inf"), 0.0, m_run - m_new)     # m_old − m_new ≤ 0
        x = tl.where(mask, s - m_new, 0.0)                               # s − m, 0 past D
        e_vec = e_vec * tl.exp(shift * inv_tau_s) + tl.where(mask, tl.exp(x * inv_tau_s), 0.0)
        a_vec = a_vec + shift * w_vec + W * x                            # ⟨W, s − m⟩ rebased
        w_vec = w_vec + W
        m_run = m_new
    out = ((v * B + b) * n_chunks + k).to(tl.int64)
    n_part = S * B * n_chunks
    tl.store(part_ptr + out, m_run)
    tl.store(part_ptr + n_part + out, tl.sum(e_vec, 0))
    tl.store(part_ptr + 2 * n_part + out, tl.sum(a_vec, 0))
    tl.store(part_ptr + 3 * n_part + out, tl.sum(w_vec, 0))


@triton.jit
def _finalize_kernel(part_ptr, rowstat_ptr, loss_ptr, colsum_ptr, c_ptr, c_old_ptr, T, S, B, D,
                     n_chunks, n_groups, inv_tau_s_hi, inv_tau_s_lo, loss_scale_hi, loss_scale_lo,
                     inv_rows_hi, inv_rows_lo, m_hi, m_lo, one_minus_m_hi, one_minus_m_lo,
                     UPDATE: tl.constexpr, SAVE: tl.constexpr, NCH: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                     CACC: tl.constexpr):
    """ program 0: merge the chunks of each row (identity 4), the loss (identity 3) and the
    per-row (m, Σ exp) for backward; every program: its block of the center (identity 6) """
    inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)
    loss_scale = _scalar(loss_scale_hi, loss_scale_lo, ACC)             # 1 / (n B)
    pid = tl.program_id(0)
    if pid == 0:
        n_part = S * B * n_chunks
        kk = tl.arange(0, NCH)
        total = tl.zeros([], ACC)
        for r0 in range(0, S * B, ROWS):
            rows = r0 + tl.arange(0, ROWS)                               # row r = v·B + b
            r_mask = rows < S * B
            mask = r_mask[:, None] & (kk[None, :] < n_chunks)
            idx = rows[:, None] * n_chunks + kk[None, :]
            m = tl.load(part_ptr + idx, mask=mask, other=float("-inf"))
            e = tl.load(part_ptr + n_part + idx, mask=mask, other=0.0)
            a = tl.load(part_ptr + 2 * n_part + idx, mask=mask, other=0.0)
            w = tl.load(part_ptr + 3 * n_part + idx, mask=mask, other=0.0)
            M = tl.where(r_mask, tl.max(m, 1), 0.0)                      # m = max_k m_k
            shift = tl.where(mask, m - M[:, None], 0.0)                  # m_k − m
            e_row = tl.sum(tl.where(mask, e * tl.exp(shift * inv_tau_s), 0.0), 1)
            a_row = tl.sum(a + shift * w, 1)                             # ⟨W, s − m⟩
            n_v = tl.where(rows // B < T, T - 1, T).to(ACC)
            row_loss = n_v * tl.log(tl.where(r_mask, e_row, 1.0)) - a_row * inv_tau_s
            total += tl.sum(tl.where(r_mask, row_loss, 0.0), 0)
            tl.store(rowstat_ptr + rows, M, mask=r_mask)
            tl.store(rowstat_ptr + S * B + rows, e_row, mask=r_mask)
        tl.store(loss_ptr, total * loss_scale)                           # / (n B)
    if SAVE or UPDATE:
        offs = pid * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = offs < D
        c = tl.load(c_ptr + offs, mask=mask, other=0.0)
        if SAVE:
            tl.store(c_old_ptr + offs, c, mask=mask)                     # backward's center
        if UPDATE:
            rows_sum = tl.zeros([BLOCK_D], CACC)
            group_ptr = colsum_ptr
            for _ in range(0, n_groups):
                rows_sum += tl.load(group_ptr + offs, mask=mask, other=0.0).to(CACC)
                group_ptr += D
            mean = rows_sum * _scalar(inv_rows_hi, inv_rows_lo, CACC)   # mean over T·B rows
            c_acc = c.to(CACC)
            new = _scalar(m_hi, m_lo, CACC) * c_acc + _scalar(one_minus_m_hi, one_minus_m_lo, CACC) * mean
            finite = (mean == mean) & (tl.abs(mean) < float("inf"))
            tl.store(c_ptr + offs, tl.where(finite, new, c_acc).to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _student_grad_kernel(s_ptr, g_ptr, t_ptr, c_ptr, tstats_ptr, rowstat_ptr, gout_ptr,
                         T, S, B, D, n_dblk, n_chunks, chunk, inv_tau_t_hi, inv_tau_t_lo,
                         inv_tau_s_hi, inv_tau_s_lo, g_scale_hi, g_scale_lo,
                         TP: tl.constexpr, NDB: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """ per (v, b, chunk): dL/ds = dL · (n_v exp((s − m)/τ) / Σ exp − W) / (n B τ) (identity 5) """
    inv_tau_t = _scalar(inv_tau_t_hi, inv_tau_t_lo, ACC)
    inv_tau_s = _scalar(inv_tau_s_hi, inv_tau_s_lo, ACC)
    g_scale = _scalar(g_scale_hi, g_scale_lo, ACC)                      # 1 / (n B τ)
    pid = tl.program_id(0)
    v = pid % S
    k = (pid // S) % n_chunks
    b = pid // (S * n_chunks)
    i = tl.arange(0, TP)
    i_mask = i < T
    M_t, inv_L_t = _teacher_row_stats(tstats_ptr, i * B + b, T * B, n_dblk, i_mask, NDB)
    m = tl.load(rowstat_ptr + v * B + b)
    e_sum = tl.load(rowstat_ptr + S * B + v * B + b)
    gs = tl.load(gout_ptr).to(ACC) * g_scale                            # dL / (n B τ)
    n_v = tl.where(v < T, T - 1, T).to(ACC)
    coef = gs * n_v / e_sum                                              # dL n_v / (n B τ Σ exp)
    row = (v * B + b).to(tl.int64) * D
    d0 = k * chunk
    for d in range(d0, d0 + chunk, BLOCK):
        offs = d + tl.arange(0, BLOCK)
        mask = offs < D
        s = tl.load(s_ptr + row + offs, mask=mask, other=0.0).to(ACC)
        c = tl.load(c_ptr + offs, mask=mask, other=0.0).to(ACC)
        W = _teacher_weight(t_ptr, c, v, b, B, D, offs, mask, i, i_mask, M_t, inv_L_t, inv_tau_t, ACC)
        g = coef * tl.exp((s - m) * inv_tau_s) - gs * W
        tl.store(g_ptr + row + offs, g.to(g_ptr.dtype.element_ty), mask=mask)


# ---- launch plan and host side (shapes only: no tensor value is read on the host) ----------

def _pair(x):
    """ x as float32 hi + float32 lo (see _scalar) """
    hi = float(np.float32(x))
    return hi, float(np.float32(x - hi))


def _pow2(x):
    return max(2, triton.next_power_of_2(x))


def plan(S, B, D, T, block=None, target_programs=None, teacher_block=None,
         target_teacher_programs=None, num_warps=4):
    """ the launch geometry: a dict of block sizes, chunk length, grid sizes and warps per program
    (the defaults are reasoned, not measured: `benchmarks/bench_loss.py --device cuda --tune`) """
    block = block or min(BLOCK, _pow2(D))
    n_blocks = triton.cdiv(D, block)
    chunks = min(n_blocks, max(1, triton.cdiv(target_programs or TARGET_PROGRAMS, S * B)))
    chunk = triton.cdiv(n_blocks, chunks) * block                       # a whole number of blocks
    teacher_block = teacher_block or min(TEACHER_BLOCK, _pow2(D))
    n_dblk = triton.cdiv(D, teacher_block)
    groups = min(T * B, MAX_ROW_GROUPS,
                 max(1, triton.cdiv(target_teacher_programs or TARGET_TEACHER_PROGRAMS, n_dblk)))
    rows_per_group = triton.cdiv(T * B, groups)
    return dict(block=block, chunk=chunk, n_chunks=triton.cdiv(D, chunk),
                teacher_block=teacher_block, n_dblk=n_dblk, rows_per_group=rows_per_group,
                n_groups=triton.cdiv(T * B, rows_per_group), num_warps=num_warps)


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

    part = new(4, S, B, p["n_chunks"])                                    # (m_k, e_k, a_k, w_k)
    TP, NDB = _pow2(T), _pow2(p["n_dblk"])
    _student_stats_kernel[(S * B * p["n_chunks"],)](
        student, teacher, center, tstats, part, T, S, B, D, p["n_dblk"], p["n_chunks"], p["chunk"],
        *_pair(1.0 / tau_t), *_pair(1.0 / tau_s), TP=TP, NDB=NDB, BLOCK=p["block"], ACC=ACC,
        num_warps=p["num_warps"])

    loss, rowstat = new(), new(2, S, B)
    c_old = torch.empty_like(center) if save else center
    CACC = _acc_type(torch.promote_types(center.dtype, acc_dtype))
    grid = triton.cdiv(D, p["teacher_block"]) if (update or save) else 1
    _finalize_kernel[(grid,)](
        part, rowstat, loss, colsum, center, c_old, T, S, B, D, p["n_chunks"], p["n_groups"],
        *_pair(1.0 / tau_s), *_pair(1.0 / (num_pairs(T, S) * B)), *_pair(1.0 / (T * B)),
        *_pair(momentum or 0.0), *_pair(1.0 - (momentum or 0.0)),
        UPDATE=update, SAVE=save, NCH=_pow2(p["n_chunks"]), ROWS=FINAL_ROWS,
        BLOCK_D=p["teacher_block"], ACC=ACC, CACC=CACC, num_warps=p["num_warps"])
    return loss, (tstats, rowstat, c_old, p)


def _backward(student, teacher, c_old, tstats, rowstat, p, tau_t, tau_s, grad_out):
    """ launch 4: dL/ds in the student's dtype; (S, B, D) """
    T, B, D = teacher.shape
    S = student.shape[0]
    grad = torch.empty_like(student)
    ACC = _acc_type(rowstat.dtype)
    _student_grad_kernel[(S * B * p["n_chunks"],)](
        student, grad, teacher, c_old, tstats, rowstat, grad_out, T, S, B, D, p["n_dblk"],
        p["n_chunks"], p["chunk"], *_pair(1.0 / tau_t), *_pair(1.0 / tau_s),
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


def dino_loss(teacher, student, center, teacher_temp, student_temp, center_momentum=None,
              geometry=None):
    """ the DINO loss of one call, (T, B, D) teacher and (S, B, D) student on one device;
    `center` (1, 1, D) is read as it is, then updated in place if center_momentum is given.
    Differentiable in the student; the teacher gets no gradient. geometry: `plan` overrides. """
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
