"""The DINO cross-entropy with a hand-written backward: the fast path of `dino_ref.DINOLoss`.

Given teacher targets P_t (T, B, D) (no gradient) and student logits s (S, B, D):

    L = 1/(n B) sum_i sum_{v != i} sum_b H(P_t[i, b], softmax(s[v, b] / tau))

Two identities make it linear in S and let it skip log_softmax entirely:

1. the pair sum factorises: sum_i sum_{v != i} = (sum_i)(sum_v) - (the i = v terms), so student
   view v meets the teacher weight  Q_v = Q - P_t[v]  (the P_t[v] only for v < T), with
   Q = sum_i P_t[i], and  n_v = sum_d Q_v[b, d]  (T - 1 for v < T, else T) teacher views;
2. H(p, softmax(s / tau)) = sum(p) lse(z) - <p, z>  for  z = (s - max_d s) / tau  (softmax is
   shift-invariant, and the shift by the row max keeps both terms >= 0: nothing cancels, even
   when all logits share a large offset), so per (v, b):
       loss[v, b] = n_v log sum_d exp(z[v, b]) - <Q_v[b], z[v, b]>.

The gradient is  dL/ds[v, b] = (n_v softmax(s[v, b] / tau) - Q_v[b]) / (n B tau).
`fused_pass` computes the loss and, when the student needs a gradient, this gradient (at
dL = 1) in the same walk over s, while exp(z) is still in the cache; backward only scales it in
place by the incoming gradient. A second backward through the same graph (retain_graph,
gradcheck) reruns the very same pass, so it gives the same bits. A backward that builds a graph
(create_graph=True: Hessians, gradient penalties) computes the same formula with autograd
operations instead, so the gradient is itself differentiable; under functorch transforms
(torch.func.grad, vmap, jvp) and forward-mode AD the readable autograd form is used.

Why it is fast (numbers: `benchmarks/README.md`): at out_dim 65536 the cost of the usual forms is
extra passes over S x B x D tensors and fresh allocations of them (page faults), not arithmetic.
Here the forward reads s from memory once and writes the gradient once, the backward is one
in-place scale: s is walked in chunks (`chunk_shape`: a few rows of one view, or at small D several
whole views, so the per-op overhead is paid per chunk, not per view) that stay in the CPU cache
while the small passes (max, shift, dot, exp, sum, gradient) run over them. Nothing large is
allocated but the (S, B, D) gradient (scratch: three chunk-sized buffers), and there is one exp
per element in all. On an accelerator the chunks are many whole views (few kernel launches).
`readable.dino_cross_entropy_readable` is the same loss written plainly, for autograd.
"""

import math

import torch

from .readable import dino_cross_entropy_readable

# elements per chunk: 2^21 on CPU (8 MiB float32; chunk and scratch stay in a 32 MiB last-level
# cache; 2^18..2^21 run within ~5 % on a quiet machine, but every op is a fork/join of the
# intra-op threads, and when other processes share the cores each join can wait a scheduler
# tick, so fewer, larger chunks are the safer choice); 2^24 elsewhere (few large kernels: on a
# GPU a launch costs more than its arithmetic; the scratch stays bounded all the same)
CPU_CHUNK_ELEMENTS = 2 ** 21
DEVICE_CHUNK_ELEMENTS = 2 ** 24


def pair_counts(T, S, device, dtype):
    """ n_v: how many teacher views are paired with student view v; (S,) """
    n_v = torch.full((S,), float(T), device=device, dtype=dtype)
    n_v[:min(T, S)] -= 1.0  # student view v < T skips its own teacher view
    return n_v


def chunk_shape(S, B, D, device):
    """ (views, rows) per chunk: rows of one view while a view exceeds the budget (1 <= r <= B),
    else whole views, as many as fit (1 <= nv <= S) """
    budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    r = max(1, min(B, budget // D))
    return (max(1, min(S, budget // (B * D))) if r == B else 1), r


def fused_pass(student, P_t, student_temp, grad=None):
    """ the loss, one walk over s in chunks; fills grad (S, B, D) with dL/ds at dL = 1 if given """
    T, B, D = P_t.shape
    S = student.shape[0]
    k = min(T, S)
    n = T * S - k                                                      # number of (i, v) pairs
    inv_tau = 1.0 / student_temp
    g_scale = inv_tau / (n * B)                                        # 1 / (n B tau)
    n_v = pair_counts(T, S, student.device, student.dtype)            # (S,)  n_v
    exp_floor = math.log(torch.finfo(student.dtype).tiny) + 1.0        # exp(z) stays a normal number
    cpu = student.device.type == "cpu"
    n_v_g = n_v * g_scale                                              # (S,)  n_v / (n B tau)
    nv, r = chunk_shape(S, B, D, student.device)
    new = student.new_empty
    row_max, sum_exp = new((S, B)), new((S, B))       # (S, B)  max_d s,  sum_d exp(z)
    dot_Qv = new((S, B))                               # (S, B)  <Q_v[b], z[v, b]>
    q, neg_q, q_v, z = new((r, D)), new((r, D)), new((r, D)), new(nv * r * D)  # scratch
    prod = new(nv * r * D) if grad is None else None   # scratch for Q_v z (else the gradient's chunk)
    for b0 in range(0, B, r):
        b1 = min(b0 + r, B)
        Qc = torch.sum(P_t[:, b0:b1], 0, out=q[:b1 - b0])              # (r, D)  Q = sum_i P_t[i]
        if grad is not None:
            nQc = torch.mul(Qc, -g_scale, out=neg_q[:b1 - b0])         # (r, D)  -Q / (n B tau)
        for v0 in range(0, S, nv):                                     # r < B: one view at a time
            v1 = min(v0 + nv, S)
            ko = max(0, min(k, v1) - v0)                               # views v < T in v0:v1
            x = student[v0:v1, b0:b1]                                  # (nv, r, D)  s[v, b]
            mx = torch.amax(x, -1, out=row_max[v0:v1, b0:b1])          # (nv, r)  max_d s
            zc = z[:x.numel()].view(x.shape)                           # (nv, r, D)
            torch.sub(x, mx[..., None], out=zc).mul_(inv_tau)          # z = (s - max) / tau <= 0 (max: 0)
            # <Q_v[b], z[v, b]> row by row: the products, then torch.sum's blocked (cascade) sum over
            # D; one BLAS dot over many rows accumulates ~1e-5 relative error (same-sign terms).
            # The products go where the gradient of this chunk will be written next.
            p = prod[:x.numel()].view(x.shape) if grad is None else grad[v0:v1, b0:b1]
            torch.mul(zc[ko:], Qc, out=p[ko:])                         # (nv - ko, r, D)  Q z
            for v in range(v0, v0 + ko):                               # Q_v = Q - P_t[v]: own view out
                Qv = torch.sub(Qc, P_t[v, b0:b1], out=q_v[:b1 - b0])   # (r, D)
                torch.mul(zc[v - v0], Qv, out=p[v - v0])               # (r, D)  Q_v z
            torch.sum(p, -1, out=dot_Qv[v0:v1, b0:b1])                 # (nv, r)  <Q_v, z>
            # exp(z) below the smallest normal number (tiny) is a subnormal, which x86 CPUs compute
            # many times slower (the whole pass 3-4x slower at logits of spread ~100); raising z to
            # log(tiny) + 1 first (e * tiny, clear of rounding into the subnormals) changes
            # sum_exp >= 1 by at most e * tiny * D. CPU only: GPUs compute subnormals at full speed
            if cpu:
                zc.clamp_(min=exp_floor)
            se = torch.sum(zc.exp_(), -1, out=sum_exp[v0:v1, b0:b1])   # (nv, r)  sum_d exp(z) >= 1
            if grad is not None:
                g = grad[v0:v1, b0:b1]                                 # (nv, r, D), written once
                # (n_v P_s - Q) / (n B tau),  P_s = exp(z) / sum_exp
                torch.addcmul(nQc, zc, (n_v_g[v0:v1, None] / se)[..., None], out=g)
                if ko:                                                 # Q_v = Q - P_t[v]: + P_t[v]
                    g[:ko].add_(P_t[v0:v0 + ko, b0:b1], alpha=g_scale)
    return _mean(n_v, sum_exp, dot_Qv, n * B)


def _mean(n_v, sum_exp, dot_Qv, count):
    """ (1 / count) sum_v sum_b n_v log(sum_exp[v, b]) - <Q_v[b], z[v, b]>,  Q_v = Q - P_t[v] (v < T)

    Both terms are >= 0 (sum_exp >= 1, z <= 0), so nothing cancels, but each is a sum of S B
    terms of the size of the loss: added up in float32 their rounding (~1e-7 of the sum) reaches
    the loss itself. These are 2 S B scalars, not S B D: they are added in float64 (cost nil) and
    the result rounded once to the student's dtype. The difference can round a hair below zero
    when the loss is ~0, and a cross-entropy is never negative.
    """
    wide = torch.promote_types(sum_exp.dtype, torch.float64)
    log_se = sum_exp.to(wide).log_()                                  # (S, B)  lse(z)
    total = (n_v.to(wide)[:, None] * log_se).sum() - dot_Qv.to(wide).sum()
    return (total.clamp_(min=0.0) / count).to(sum_exp.dtype)


def dino_cross_entropy_grad(P_t, student, student_temp):
    """ dL/ds = (n_v softmax(s / tau) - Q_v) / (n B tau) with autograd operations, so that it is
    itself differentiable (double backward); (S, B, D) """
    T, B, D = P_t.shape
    S = student.shape[0]
    k = min(T, S)
    n_v = pair_counts(T, S, student.device, student.dtype)            # (S,)
    Q = P_t.sum(0, keepdim=True)                                       # (1, B, D)
    Q_v = torch.cat([Q - P_t[:k], Q.expand(S - k, B, D)])              # (S, B, D)  sum_{i != v} P_t[i]
    P_s = torch.softmax(student / student_temp, dim=-1)                # (S, B, D)
    return (n_v[:, None, None] * P_s - Q_v) / ((T * S - k) * B * student_temp)


class DINOCrossEntropy(torch.autograd.Function):
    """ mean over pairs and batch of H(P_t[i, b], P_s[v, b]), differentiable in the student """

    @staticmethod
    def forward(ctx, student, P_t, student_temp):
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)  # (S, B, D)
        loss = fused_pass(student, P_t, student_temp, grad)
        ctx.save_for_backward(student, P_t)
        ctx.student_temp, ctx.grad = student_temp, grad  # dL/ds at dL = 1, used up by backward
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled():  # create_graph=True: a gradient that autograd can differentiate
            student, P_t = ctx.saved_tensors
            return grad_out * dino_cross_entropy_grad(P_t, student, ctx.student_temp), None, None
        if grad is None:  # a second backward through this graph: the same pass again
            student, P_t = ctx.saved_tensors
            grad = torch.empty(student.shape, dtype=student.dtype, device=student.device)
            fused_pass(student, P_t, ctx.student_temp, grad)
        return grad.mul_(grad_out), None, None                        # chain rule, in place


def needs_autograd_form(student):
    """ True under a functorch transform (torch.func.grad, vmap, jvp, ...) or when the student is a
    forward-mode dual tensor: the fused pass writes into buffers (out=), which neither supports """
    if torch._C._are_functorch_transforms_active():  # the check torch.autograd.Function.apply makes
        return True
    return torch.autograd.forward_ad.unpack_dual(student).tangent is not None


def dino_cross_entropy(P_t, student, student_temp):
    """ the fused loss; P_t (T, B, D) is treated as a constant, student (S, B, D) """
    P_t, student_temp = P_t.detach(), float(student_temp)
    if needs_autograd_form(student):
        return dino_cross_entropy_readable(P_t, student, student_temp)
    if torch.is_grad_enabled() and student.requires_grad:
        return DINOCrossEntropy.apply(student, P_t, student_temp)
    return fused_pass(student, P_t, student_temp)                     # no gradient: loss only
