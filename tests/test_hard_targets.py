"""teacher_temp = 0: hard targets, the limit tau_t -> 0 of the teacher's softmax, in both versions."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dino_ref import DINOLoss, numpy_ref
from dino_ref.readable import hard_targets, teacher_targets


def test_hard_targets_are_one_hot_at_the_argmax_of_the_centred_logits():
    t = torch.tensor([[[0.3, 0.9, -0.2], [0.5, 0.1, 0.4]]], dtype=torch.float64)   # (1, 2, 3)
    c = torch.tensor([[[0.0, 0.7, 0.0]]], dtype=torch.float64)                      # moves row 0's max
    P = teacher_targets(t, c, 0.0)
    assert P.tolist() == [[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]
    assert np.array_equal(numpy_ref.teacher_targets(t.numpy(), c.numpy(), 0.0), P.numpy())


def test_tied_maximisers_share_the_mass_equally():
    logits = torch.tensor([[2.0, 5.0, 5.0, 1.0, 5.0]], dtype=torch.float64)
    assert torch.equal(hard_targets(logits), torch.tensor([[0, 1 / 3, 1 / 3, 0, 1 / 3]], dtype=torch.float64))
    assert np.array_equal(numpy_ref.hard_targets(logits.numpy()), hard_targets(logits).numpy())


@given(st.integers(0, 10_000), st.sampled_from([1e-3, 1e-4]))
def test_hard_targets_are_the_limit_of_the_softmax(seed, tau):
    """ away from ties, softmax(z / tau) tends to the one-hot of the argmax as tau -> 0 """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(2, 3, 7))
    top2 = np.sort(z, axis=-1)[..., -2:]
    gap = (top2[..., 1] - top2[..., 0]).min()                       # the smallest lead of a maximum
    soft = numpy_ref.teacher_targets(z, 0.0, tau)
    hard = numpy_ref.teacher_targets(z, 0.0, 0.0)
    # off the argmax each entry is at most exp(-gap / tau) times the maximum's
    assert np.abs(soft - hard).max() <= 6 * math.exp(-gap / tau) + 1e-15


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_loss_at_teacher_temp_zero_agrees_with_the_numpy_loops(dtype):
    rng = np.random.default_rng(3)
    T, S, B, D = 2, 5, 3, 11
    teacher = rng.normal(size=(T, B, D))
    student = rng.normal(size=(S, B, D))
    ref = numpy_ref.DINOLoss(D, warmup_teacher_temp=0.0, teacher_temp=0.0)
    mod = DINOLoss(D, warmup_teacher_temp=0.0, teacher_temp=0.0, backend="eager").to(dtype)
    for epoch in (0, 5, None):                                        # the center moves in between
        expected = ref(teacher, student, epoch=epoch)
        s = torch.tensor(student, dtype=dtype, requires_grad=True)
        loss = mod(torch.tensor(teacher, dtype=dtype), s, epoch=epoch)
        loss.backward()
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert abs(loss.item() - expected) <= tol * abs(expected)
        assert np.abs(s.grad.double().numpy() - ref.backward()).max() <= tol
        assert torch.isfinite(loss)


def test_a_warmup_from_zero_starts_hard_and_softens():
    loss_fn = DINOLoss(4, warmup_teacher_temp=0.0, teacher_temp=0.07, warmup_teacher_temp_epochs=3)
    t = torch.tensor([[[1.0, 0.5, 0.0, -1.0]]])
    assert loss_fn.teacher_temperature(0) == 0.0
    assert torch.equal(loss_fn.teacher_targets(t, epoch=0), torch.tensor([[[1.0, 0, 0, 0]]]))
    assert loss_fn.teacher_targets(t, epoch=2)[0, 0, 1] > 0           # tau_t = 0.07: soft


@pytest.mark.parametrize("value", [-0.01, math.inf, math.nan])
def test_negative_and_non_finite_teacher_temperatures_stay_refused(value):
    for cls in (DINOLoss, numpy_ref.DINOLoss):
        with pytest.raises(ValueError, match="teacher_temp"):
            cls(8, teacher_temp=value)


@pytest.mark.triton
def test_the_triton_backend_refuses_hard_targets_and_auto_takes_the_eager_path(monkeypatch):
    pytest.importorskip("triton")
    from dino_ref import triton_kernels
    t, s = torch.randn(2, 2, 8), torch.randn(3, 2, 8)
    with pytest.raises(ValueError, match="teacher_temp > 0"):
        triton_kernels.dino_loss(t, s, torch.zeros(1, 1, 8), 0.0, 0.1)
    ref = numpy_ref.DINOLoss(8, warmup_teacher_temp=0.0, teacher_temp=0.0)
    auto = DINOLoss(8, warmup_teacher_temp=0.0, teacher_temp=0.0, backend="auto")
    assert abs(auto(t, s).item() - ref(t.double().numpy(), s.double().numpy())) < 1e-5
