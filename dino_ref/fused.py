"""The DINO cross-entropy with a hand-written backward: the fast path of `dino_ref.DINOLoss`.

Given teacher targets P_t (T, B, D) (no gradient) and student logits s (S, B, D):

    L = 1/(n B) sum_i sum_{v != i} sum_b H(P_t[i, b], softmax(s[v, b] / tau))

Two identities make it linear in S and let it skip log_softmax entirely:

1. the pair sum factorises: sum_i sum_{v != i} = (sum_i)(sum_v) - (the i = v terms), so student
   view v meets the teacher weight  W[v] = Q - P_t[v]  (the P_t[v] only for v < T), with
   Q = sum_i P_t[i], and  c_v = sum_d W[v, b, d]  (T - 1 for v < T, else T) teacher views;
2. H(p, softmax(z)) = sum(p) * lse(z) - <p, z>, so per (v, b):
       loss[v, b] = c_v * lse(s[v, b] / tau) - <W[v, b], s[v, b]> / tau.

The gradient is  dL/ds[v, b] = (c_v softmax(s[v, b] / tau) - W[v, b]) / (n B tau), recomputed in
backward from the saved lse (S, B): nothing of size S x B x D is kept between the passes.

Why it is fast (numbers: `benchmarks/README.md`): at out_dim 65536 the cost of the usual forms is
extra passes over S x B x D tensors and fresh allocations of them (page faults), not arithmetic.
Here each direction reads the student tensor from memory once: the rows are walked in chunks of a
few rows (`rows_per_chunk`) that stay in the CPU cache while the small passes (dot, max, exp,
sum) run over them. The forward allocates nothing large (two chunk-sized scratch buffers), the
backward only its (S, B, D) output, filled in place. What remains is one exp per element in each
direction. On an accelerator the chunks are whole views (few kernel launches).
`dino_cross_entropy_reference` in loss.py is the same loss written plainly, for autograd.
"""

import torch

# elements per chunk: 2^20 on CPU (4 MiB float32: the rows of s, the Q rows and the scratch stay
# in the last-level cache; 2^17..2^21 all run within ~10 %, measured in benchmarks/); 2^24
# elsewhere (few large kernels, each launch costs more than its arithmetic; scratch bounded)
CPU_CHUNK_ELEMENTS = 2 ** 20
DEVICE_CHUNK_ELEMENTS = 2 ** 24


def pair_counts(T, S, device, dtype):
    """ c_v: how many teacher views are paired with student view v; (S,) """
    c = torch.full((S,), float(T), device=device, dtype=dtype)
    c[:min(T, S)] -= 1.0  # student view v < T skips its own teacher view
    return c


def rows_per_chunk(B, D, device):
    """ how many batch rows of one view each chunk holds: 1 <= r <= B """
    budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    return max(1, min(B, budget // D))


class DINOCrossEntropy(torch.autograd.Function):
    """ mean over pairs and batch of H(P_t[i, b], P_s[v, b]), differentiable in the student """

    @staticmethod
    def forward(ctx, student, P_t, student_temp):
        T, B, D = P_t.shape
        S = student.shape[0]
        k = min(T, S)
        inv_tau = 1.0 / student_temp
        r = rows_per_chunk(B, D, student.device)
        new = student.new_empty
        n_chunks = -(-B // r)
        row_max, sum_exp = new((S, B)), new((S, B))   # (S, B)  m = max_d s,  sum_d exp((s - m) / tau)
        dot_Q, dot_own = new((S, n_chunks)), new((k, n_chunks))  # sum_b <Q, s[v]>, <P_t[v], s[v]>
        q, z = new((r, D)), new((r, D))               # (r, D) scratch: rows of Q, rows being summed
        for j, b0 in enumerate(range(0, B, r)):
            b1 = min(b0 + r, B)
            Qc = torch.sum(P_t[:, b0:b1], 0, out=q[:b1 - b0])          # (r, D)  Q = sum_i P_t[i]
            zc = z[:b1 - b0]
            for v in range(S):
                x = student[v, b0:b1]                                  # (r, D)  s[v, b]
                x_flat = x.reshape(-1)                                 # a view when s is contiguous
                torch.dot(x_flat, Qc.view(-1), out=dot_Q[v, j])        # sum_b <Q[b], s[v, b]>
                if v < k:                                              # sum_b <P_t[v, b], s[v, b]>
                    torch.dot(x_flat, P_t[v, b0:b1].reshape(-1), out=dot_own[v, j])
                m = torch.amax(x, -1, out=row_max[v, b0:b1])           # (r,)  m = max_d s
                torch.add(m[:, None] * -inv_tau, x, alpha=inv_tau, out=zc)  # (s - m) / tau
                torch.sum(zc.exp_(), -1, out=sum_exp[v, b0:b1])        # sum_d exp((s - m) / tau)
        lse = row_max * inv_tau + sum_exp.log_()                       # (S, B)  lse(s / tau)
        c = pair_counts(T, S, student.device, student.dtype)           # (S,)
        # sum_v sum_b c_v lse[v, b] - <W[v, b], s[v, b]> / tau,  with W[v] = Q - P_t[v] (v < T)
        total = (c[:, None] * lse).sum() - (dot_Q.sum() - dot_own.sum()) * inv_tau
        ctx.save_for_backward(student, P_t, lse)
        ctx.student_temp = student_temp
        return total / ((T * S - k) * B)

    @staticmethod
    def backward(ctx, grad_out):
        student, P_t, lse = ctx.saved_tensors
        inv_tau = 1.0 / ctx.student_temp
        T, B, D = P_t.shape
        S = student.shape[0]
        k = min(T, S)
        r = rows_per_chunk(B, D, student.device)
        scale = grad_out * (inv_tau / ((T * S - k) * B))               # 0-dim, no host sync
        c_scale = pair_counts(T, S, student.device, student.dtype) * scale  # (S,)  c_v scale
        neg_lse = -lse                                                 # (S, B)
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)  # (S, B, D)
        neg_Q, neg_W = student.new_empty((r, D)), student.new_empty((r, D))  # scratch rows
        for b0 in range(0, B, r):
            b1 = min(b0 + r, B)
            nQ = torch.sum(P_t[:, b0:b1], 0, out=neg_Q[:b1 - b0]).mul_(-scale)  # (r, D)  -scale Q
            for v in range(S):
                g = grad[v, b0:b1]                                     # (r, D), filled in place
                torch.add(neg_lse[v, b0:b1, None], student[v, b0:b1], alpha=inv_tau, out=g)
                g.exp_()                                               # P_s = exp(s / tau - lse)
                nW = nQ
                if v < k:  # W = Q - P_t[v]: the own teacher view is not a pair
                    nW = torch.addcmul(nQ, P_t[v, b0:b1], scale, out=neg_W[:b1 - b0])
                torch.addcmul(nW, g, c_scale[v], out=g)                # scale (c_v P_s - W)
        return grad, None, None


def dino_cross_entropy(P_t, student, student_temp):
    """ the fused loss; P_t (T, B, D) is treated as a constant, student (S, B, D) """
    return DINOCrossEntropy.apply(student, P_t.detach(), float(student_temp))
