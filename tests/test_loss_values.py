"""Values of the loss: invariant to a shared logit offset (float32 and float64), exactly 0 for
one output dimension, never negative, and the teacher entropy plus the KL divergence."""
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from dino_ref import DINOLoss
from dino_ref.diagnostics import teacher_entropy
from dino_ref.fused import dino_cross_entropy, fused_pass
from dino_ref.readable import dino_cross_entropy_readable, teacher_targets
from logits import targets_and_student


def test_float32_loss_is_shift_invariant():
    """ (T, S, B, D) = (2, 10, 8, 4096): error against float64 on the same float32 inputs """
    gen = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 8, 4096, generator=gen), torch.randn(10, 8, 4096, generator=gen)
    P_t = teacher_targets(teacher, torch.zeros(1, 1, 4096), 0.04)
    for offset in [0.0, 10.0, 100.0, 1000.0]:
        s = student + offset
        truth = dino_cross_entropy_readable(P_t.double(), s.double(), 0.1)
        for loss in [fused_pass(s, P_t, 0.1), fused_pass(s, P_t, 0.1, torch.empty_like(s))]:
            assert abs(loss.item() - truth.item()) < 2e-5, (offset, loss.item(), truth.item())


def test_float64_loss_is_shift_invariant():
    P_t, student = targets_and_student(T=2, S=6, B=4, D=64)
    base = dino_cross_entropy(P_t, student, 0.1)
    for offset in [10.0, 1e3, 1e4]:                                    # (s + offset rounds: 1e-12 at 1e4)
        torch.testing.assert_close(dino_cross_entropy(P_t, student + offset, 0.1), base,
                                   rtol=1e-12, atol=0)


@given(seed=st.integers(0, 2 ** 31), scale=st.sampled_from([1.0, 100.0, 1e4]),
       offset=st.sampled_from([0.0, 1e3, -1e5]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_one_output_dimension_gives_exactly_zero(seed, scale, offset, dtype):
    gen = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(2, 3, 1, generator=gen) + offset
    student = scale * torch.randn(5, 3, 1, generator=gen) + offset
    loss_fn = DINOLoss(1).to(dtype)
    assert loss_fn(teacher.to(dtype), student.to(dtype)).item() == 0.0


@given(seed=st.integers(0, 2 ** 31), T=st.integers(1, 3), extra=st.integers(0, 3),
       D=st.sampled_from([1, 2, 7]), scale=st.sampled_from([0.01, 1.0, 30.0, 1e3]),
       offset=st.sampled_from([0.0, 1e3]))
def test_loss_is_never_negative(seed, T, extra, D, scale, offset):
    """ peaked teacher and student on the same dimension: the loss is ~0 and must not dip below """
    S = max(T + extra, 2)
    gen = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(T, 2, D, generator=gen) + offset
    student = torch.cat([teacher, scale * torch.randn(S - T, 2, D, generator=gen) + offset])
    for dtype in [torch.float32, torch.float64]:
        s = student.to(dtype).requires_grad_(True)
        assert DINOLoss(D).to(dtype)(teacher.to(dtype), s).item() >= 0.0


def test_loss_is_entropy_plus_kl():
    torch.manual_seed(0)
    T, S, B, K = 2, 6, 5, 30
    loss_fn = DINOLoss(K, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    loss_fn.center.normal_(std=0.1)
    t, s = 0.3 * torch.randn(T, B, K), torch.randn(S, B, K)          # cosine-sized teacher logits
    P_t = loss_fn.teacher_targets(t, epoch=1.5)
    loss = loss_fn(t, s, epoch=1.5)
    log_P_s = F.log_softmax(s / 0.1, dim=-1)
    kl = torch.stack([(torch.special.xlogy(P_t[i], P_t[i]) - P_t[i] * log_P_s[v]).sum(-1).mean()
                      for i in range(T) for v in range(S) if v != i]).mean()
    assert torch.allclose(loss, teacher_entropy(P_t) + kl, atol=1e-5)
