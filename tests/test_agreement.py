"""Agreement on property-based random cases: the NumPy reference and the torch module (loss,
gradient, center over consecutive calls), the fused and the readable torch forms (loss and
gradient, also in partial chunks)."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from dino_ref import DINOLoss, numpy_ref
from dino_ref.fused import dino_cross_entropy
from dino_ref.readable import dino_cross_entropy_readable, teacher_targets


@st.composite
def dino_cases(draw):
    """ a loss configuration, inputs for several consecutive calls, and their epochs """
    T = draw(st.integers(1, 4))
    S = draw(st.integers(max(T, 2), T + 5))
    B = draw(st.integers(1, 5))
    D = draw(st.integers(1, 12))
    temp = st.floats(0.02, 1.0)
    kwargs = dict(output_dim=D, warmup_teacher_temp=draw(temp), teacher_temp=draw(temp),
                  warmup_teacher_temp_epochs=draw(st.integers(0, 6)), student_temp=draw(temp),
                  center_momentum=draw(st.floats(0.0, 1.0)))
    n_calls = draw(st.integers(1, 3))
    epochs = draw(st.lists(st.none() | st.integers(0, 10) | st.floats(0.0, 10.0),
                           min_size=n_calls, max_size=n_calls))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.1, 5.0))
    rng = np.random.default_rng(seed)
    calls = [(rng.normal(size=(D,)) + scale * rng.normal(size=(T, B, D)),
              scale * rng.normal(size=(S, B, D)), e) for e in epochs]
    return kwargs, calls


def assert_close(actual, expected, rtol, atol, what):
    """ |actual - expected| <= atol + rtol * max|expected| """
    actual, expected = np.asarray(actual), np.asarray(expected)
    err = np.abs(actual - expected).max()
    bound = atol + rtol * np.abs(expected).max()
    assert err <= bound, f"{what}: |error| {err:.2e} > {bound:.2e}"


def tolerances(student, student_temp):
    """ (loss atol, grad atol): the loss is a difference of terms of size |s| / tau_s and each
    gradient entry is at most 1 / (B tau_s), so float64 rounding is relative to those """
    B = student.shape[1]
    return 1e-14 * max(1.0, np.abs(student).max() / student_temp), 1e-14 / (B * student_temp)


@given(dino_cases())
def test_numpy_and_torch_agree(case):
    kwargs, calls = case
    ref, mod = numpy_ref.DINOLoss(**kwargs), DINOLoss(**kwargs).double()
    for k, (teacher, student, epoch) in enumerate(calls):
        assert ref.teacher_temperature(epoch) == mod.teacher_temperature(epoch)
        loss_ref = ref(teacher, student, epoch=epoch)
        s = torch.tensor(student, requires_grad=True)
        loss = mod(torch.tensor(teacher), s, epoch=epoch)
        loss.backward()
        atol_loss, atol_grad = tolerances(student, kwargs["student_temp"])
        assert_close(loss.item(), loss_ref, 1e-10, atol_loss, f"loss, call {k}")
        assert_close(s.grad.numpy(), ref.backward(), 1e-10, atol_grad, f"grad, call {k}")  # analytic, both
        assert_close(mod.center.numpy(), ref.center, 1e-12, 1e-14, f"center, call {k}")


@given(dino_cases())
def test_fused_and_readable_torch_paths_agree(case):
    kwargs, calls = case
    teacher, student, epoch = calls[0]
    P_t = teacher_targets(torch.tensor(teacher), torch.zeros(1, 1, kwargs["output_dim"], dtype=torch.float64),
                          kwargs["teacher_temp"])
    s1 = torch.tensor(student, requires_grad=True)
    s2 = torch.tensor(student, requires_grad=True)
    fused = dino_cross_entropy(P_t, s1, kwargs["student_temp"])
    readable = dino_cross_entropy_readable(P_t, s2, kwargs["student_temp"])
    fused.backward()
    readable.backward()
    atol_loss, atol_grad = tolerances(student, kwargs["student_temp"])
    assert_close(fused.item(), readable.item(), 1e-10, atol_loss, "loss")
    assert_close(s1.grad.numpy(), s2.grad.numpy(), 1e-10, atol_grad, "grad (analytic vs autograd)")
    grad_ref = numpy_ref.dino_loss_grad(teacher, student, np.zeros((1, 1, kwargs["output_dim"])),
                                        kwargs["teacher_temp"], kwargs["student_temp"])
    assert_close(s2.grad.numpy(), grad_ref, 1e-10, atol_grad, "grad (NumPy by hand vs autograd)")


@pytest.mark.parametrize("budget", [1, 7, 64, 2 ** 10])
def test_fused_partial_chunks_agree_with_readable(budget, monkeypatch):
    """ small chunk budgets: partial row chunks, partial view groups, own views split across groups """
    from dino_ref import fused
    monkeypatch.setattr(fused, "CPU_CHUNK_ELEMENTS", budget)
    gen = torch.Generator().manual_seed(budget)
    for T in range(1, 5):
        for S in sorted({max(T, 2), T + 1, T + 4}):  # S == T included, one pair at least
            for B in (1, 3, 5):
                for D in (1, 3, 16):
                    P_t = torch.softmax(torch.randn(T, B, D, dtype=torch.float64, generator=gen) / 0.3, -1)
                    s = 3 * torch.randn(S, B, D, dtype=torch.float64, generator=gen)
                    if (S + B) % 2:  # half the cases: same values, strided over the batch axis
                        s = s.transpose(0, 1).contiguous().transpose(0, 1)
                    s1, s2 = s.detach().requires_grad_(), s.clone().requires_grad_()  # s1 keeps the strides
                    fused_loss = dino_cross_entropy(P_t, s1, 0.1)
                    readable = dino_cross_entropy_readable(P_t, s2, 0.1)
                    fused_loss.backward()
                    readable.backward()
                    atol_loss, atol_grad = tolerances(s.numpy(), 0.1)
                    what = f"T={T} S={S} B={B} D={D}"
                    assert_close(fused_loss.item(), readable.item(), 1e-10, atol_loss, "loss, " + what)
                    assert_close(s1.grad.numpy(), s2.grad.numpy(), 1e-10, atol_grad, "grad, " + what)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_agrees_where_most_exponentials_are_subnormal(dtype):
    """ logits so spread that exp(z) of most entries falls below the smallest normal number: the
    fused pass raises those z to log(tiny) + 1 (a subnormal costs x86 CPUs many times the time);
    loss and gradient still agree with the readable form computed in float64 """
    gen = torch.Generator().manual_seed(0)
    T, S, B, D = 2, 5, 3, 4096
    tiny = torch.finfo(dtype).tiny
    spread = -2 * np.log(tiny) * 0.1                                 # z = (s - max s)/0.1 reaches ~ -4 log(1/tiny)
    s = (spread * torch.randn(S, B, D, generator=gen, dtype=torch.float64))
    P_t = torch.softmax(torch.randn(T, B, D, generator=gen, dtype=torch.float64), -1)
    z = (s - s.amax(-1, keepdim=True)) / 0.1
    assert (z < np.log(tiny)).double().mean() > 0.3                   # the case exercises the floor
    s1 = s.to(dtype).requires_grad_()
    s2 = s.to(dtype).double().requires_grad_()
    fused_loss = dino_cross_entropy(P_t.to(dtype), s1, 0.1)
    readable = dino_cross_entropy_readable(P_t, s2, 0.1)
    fused_loss.backward()
    readable.backward()
    eps = torch.finfo(dtype).eps
    # the loss is a difference of terms of size |z| ~ spread / 0.1: rounding relative to those
    assert_close(fused_loss.item(), readable.item(), 0, 8 * eps * float(z.abs().max()), "loss")
    assert_close(s1.grad.double().numpy(), s2.grad.numpy(), 0, 8 * eps / (B * 0.1), "grad")
