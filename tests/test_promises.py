"""One test (or more) for each promise where dino_ref does better than the peers."""
import math

import numpy as np
import pytest
import torch

from dino_ref import DINOLoss, numpy_ref
from dino_ref.common import num_pairs, teacher_temperature, view_pairs


def batch(T=2, S=6, B=4, D=16, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(D, generator=gen) + 0.5 * torch.randn(T, B, D, generator=gen)
    return teacher.to(dtype), torch.randn(S, B, D, generator=gen).to(dtype)


# 1. stop-gradient ------------------------------------------------------------------------
def test_teacher_never_receives_gradient():
    teacher, student = batch()
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    DINOLoss(16)(teacher, student).backward()
    assert teacher.grad is None and student.grad is not None


def test_shared_weights_get_only_the_student_path_gradient():
    """ teacher and student from one parameter (dinov2#407): only the student branch counts """
    w = torch.randn(16, 16, requires_grad=True)
    x_t, x_s = torch.randn(2, 4, 16), torch.randn(6, 4, 16)
    DINOLoss(16)(x_t @ w, x_s @ w).backward()
    w_ref = w.detach().clone().requires_grad_(True)
    DINOLoss(16)((x_t @ w_ref).detach(), x_s @ w_ref).backward()
    torch.testing.assert_close(w.grad, w_ref.grad, rtol=0, atol=0)


# 2. any T >= 1 and S >= T with at least one pair ------------------------------------------
@pytest.mark.parametrize("T,S", [(1, 2), (1, 7), (2, 2), (3, 3), (3, 8), (4, 4)])
def test_any_number_of_teacher_views(T, S):
    teacher, student = batch(T, S, B=3, D=8, dtype=torch.float64)
    loss = DINOLoss(8).double()(teacher, student, epoch=2)
    ref = numpy_ref.DINOLoss(8)(teacher.numpy(), student.numpy(), epoch=2)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    assert len(view_pairs(T, S)) == num_pairs(T, S) == T * S - min(T, S)


def test_one_view_each_raises_instead_of_nan():
    teacher, student = batch(1, 1, D=8)
    for loss_fn, args in [(DINOLoss(8), (teacher, student)),
                          (numpy_ref.DINOLoss(8), (teacher.numpy(), student.numpy()))]:
        with pytest.raises(ValueError, match="no .*pair"):
            loss_fn(*args)


# 4. gradient accumulation ----------------------------------------------------------------
def test_deferred_center_update_equals_one_default_call():
    teacher, student = batch(2, 6, B=12, D=16, dtype=torch.float64)
    full = DINOLoss(16).double()
    full_loss = full(teacher, student, epoch=1)

    accum = DINOLoss(16).double()
    micro = [(0, 5), (5, 8), (8, 12)]  # uneven micro-batches
    losses = []
    for a, b in micro:
        losses.append(accum(teacher[:, a:b], student[:, a:b], epoch=1, update_center=False) * (b - a))
        assert torch.equal(accum.center, torch.zeros_like(accum.center))  # untouched
    accum.update_center(torch.cat([teacher[:, a:b] for a, b in micro], dim=1))
    torch.testing.assert_close(accum.center, full.center, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(sum(losses) / 12, full_loss, rtol=1e-13, atol=0)


def test_numpy_reference_defers_the_center_too():
    teacher, student = batch(D=8, dtype=torch.float64)
    ref = numpy_ref.DINOLoss(8)
    ref(teacher.numpy(), student.numpy(), update_center=False)
    assert not ref.center.any()
    ref.update_center(teacher.numpy())
    np.testing.assert_allclose(ref.center[0, 0], 0.1 * teacher.numpy().mean(axis=(0, 1)), rtol=1e-13)


# 5. a non-finite teacher batch never poisons the center -----------------------------------
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_teacher_batch_keeps_the_center_per_dimension(bad):
    teacher, student = batch(D=8, dtype=torch.float64)
    loss_fn, ref = DINOLoss(8).double(), numpy_ref.DINOLoss(8)
    loss_fn(teacher, student)
    ref(teacher.numpy(), student.numpy())
    before = loss_fn.center.clone()
    poisoned = teacher.clone()
    poisoned[1, 2, 3] = bad                                        # one overflowed logit, dim 3
    loss_fn(poisoned, student)
    with np.errstate(invalid="ignore"):                            # that call's loss is NaN, as it should be
        ref(poisoned.numpy(), student.numpy())
    assert torch.isfinite(loss_fn.center).all()
    assert loss_fn.center[0, 0, 3] == before[0, 0, 3]              # kept
    expected = 0.9 * before + 0.1 * poisoned.mean(dim=(0, 1))
    keep = torch.arange(8) != 3
    torch.testing.assert_close(loss_fn.center[..., keep], expected[..., keep])  # others updated
    np.testing.assert_allclose(ref.center, loss_fn.center.numpy(), rtol=1e-14)
    # and the next finite batch gives a finite loss again
    assert torch.isfinite(loss_fn(teacher, student))


# 6. dtypes -----------------------------------------------------------------------------
def test_float32_call_after_float64_call():
    loss_fn = DINOLoss(16)
    t64, s64 = batch(dtype=torch.float64)
    assert loss_fn(t64, s64).dtype == torch.float64
    assert loss_fn.center.dtype == torch.float32                   # the center keeps its dtype
    t32, s32 = batch(seed=1)
    assert loss_fn(t32, s32).dtype == torch.float32
    assert loss_fn.center.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_stay_finite(dtype):
    teacher, student = batch(D=64)
    teacher, student = (100 * teacher).to(dtype), (100 * student).to(dtype).requires_grad_(True)
    loss_fn = DINOLoss(64)
    loss = loss_fn(teacher, student, epoch=0)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert student.grad.dtype == dtype and torch.isfinite(student.grad).all()
    assert loss_fn.center.dtype == torch.float32 and torch.isfinite(loss_fn.center).all()
    ref = DINOLoss(64)(teacher.float(), student.detach().float(), epoch=0)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)  # same numbers as float32 on the cast inputs


def test_double_module_and_state_dict():
    loss_fn = DINOLoss(16).double()
    assert loss_fn.center.dtype == torch.float64 and loss_fn.center.shape == (1, 1, 16)
    assert "center" in loss_fn.state_dict()
    loss_fn(*batch(dtype=torch.float32))                            # float32 input, float64 center
    assert loss_fn.center.dtype == torch.float64


def test_state_dict_round_trip_resumes_the_exact_trajectory():
    inputs = [batch(seed=k) for k in range(6)]
    run = DINOLoss(16, warmup_teacher_temp_epochs=4)
    losses = [run(t, s, epoch=k) for k, (t, s) in enumerate(inputs)]

    first = DINOLoss(16, warmup_teacher_temp_epochs=4)
    for k, (t, s) in enumerate(inputs[:3]):
        first(t, s, epoch=k)
    resumed = DINOLoss(16, warmup_teacher_temp_epochs=4)
    resumed.load_state_dict(first.state_dict())
    for k, (t, s) in enumerate(inputs[3:], start=3):
        assert torch.equal(resumed(t, s, epoch=k), losses[k])
    assert torch.equal(resumed.center, run.center)


# the teacher-temperature schedule ------------------------------------------------------
def test_schedule_ramp_both_ends_included():
    temps = [teacher_temperature(e, 0.04, 0.07, 30) for e in range(40)]
    assert temps[0] == 0.04 and temps[29] == pytest.approx(0.07, abs=1e-17) and temps[35] == 0.07
    assert np.allclose(np.diff(temps[:30]), 0.03 / 29)
    assert teacher_temperature(None, 0.04, 0.07, 30) == 0.07


def test_schedule_edge_lengths_and_fractional_epochs():
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04             # W = 1: epoch 0 is the ramp
    assert teacher_temperature(0.5, 0.04, 0.07, 1) == 0.04
    assert teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert teacher_temperature(0, 0.04, 0.07, 0) == 0.07             # W = 0: no warmup
    assert teacher_temperature(2.5, 0.04, 0.07, 30) == pytest.approx(0.04 + 0.03 * 2.5 / 29)
    assert teacher_temperature(29.5, 0.04, 0.07, 30) == 0.07         # no overshoot past the ramp
    assert isinstance(DINOLoss(8).teacher_temperature(3), float)


# 7. bad input raises a clear ValueError, in both versions ------------------------------
BAD_CALLS = [
    (r"teacher \(2, 4, 16\) and student \(6, 4\)", (2, 4, 16), (6, 4), {}),
    (r"disagree in batch size", (2, 4, 16), (6, 5, 16), {}),
    (r"disagree in batch size or feature", (2, 4, 16), (6, 4, 15), {}),
    (r"D = 12 .* output_dim = 16", (2, 4, 12), (6, 4, 12), {}),
    (r"fewer views", (3, 4, 16), (2, 4, 16), {}),
    (r"epoch must be", (2, 4, 16), (6, 4, 16), {"epoch": -1}),
    (r"epoch must be", (2, 4, 16), (6, 4, 16), {"epoch": math.nan}),
    (r"one view and one batch row", (2, 0, 16), (6, 0, 16), {}),
]


@pytest.mark.parametrize("match,t_shape,s_shape,kw", BAD_CALLS)
def test_bad_calls_raise_value_error(match, t_shape, s_shape, kw):
    for loss_fn, make in [(DINOLoss(16), torch.zeros), (numpy_ref.DINOLoss(16), np.zeros)]:
        with pytest.raises(ValueError, match=match):
            loss_fn(make(t_shape), make(s_shape), **kw)


def test_bad_calls_leave_the_center_untouched():
    loss_fn = DINOLoss(16)
    loss_fn(*batch())
    before = loss_fn.center.clone()
    with pytest.raises(ValueError):
        loss_fn(torch.randn(2, 4, 16), torch.randn(6, 5, 16))
    with pytest.raises(ValueError):
        loss_fn(torch.randn(2, 4, 16), torch.randn(6, 4, 16), epoch=-0.5)
    assert torch.equal(loss_fn.center, before)


def test_non_floating_inputs_raise():
    with pytest.raises(ValueError, match="floating dtype.*int64"):
        DINOLoss(4)(torch.zeros(2, 3, 4, dtype=torch.long), torch.zeros(4, 3, 4))


BAD_ARGS = [
    ({"output_dim": 0}, "output_dim"), ({"output_dim": 2.5}, "output_dim"),
    ({"teacher_temp": -0.1}, "teacher_temp"), ({"teacher_temp": math.nan}, "teacher_temp"),
    ({"warmup_teacher_temp": -0.1}, "warmup_teacher_temp"), ({"student_temp": 0.0}, "student_temp"),
    ({"student_temp": math.inf}, "student_temp"), ({"center_momentum": 1.5}, "center_momentum"),
    ({"center_momentum": -0.1}, "center_momentum"), ({"warmup_teacher_temp_epochs": -1}, "warmup_teacher_temp_epochs"),
]


@pytest.mark.parametrize("kwargs,name", BAD_ARGS)
def test_bad_constructor_arguments_raise(kwargs, name):
    for cls in (DINOLoss, numpy_ref.DINOLoss):
        with pytest.raises(ValueError, match=name):
            cls(**kwargs)


def test_numpy_ref_imports_no_torch():
    import subprocess
    import sys
    code = "import sys; from dino_ref import numpy_ref; numpy_ref.DINOLoss(4); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_forward_and_backward_read_no_tensor_values_on_the_host():
    """ on the meta device tensors have no values: any .item(), bool() or host sync would raise """
    loss_fn = DINOLoss(8).to("meta")
    teacher = torch.empty(2, 3, 8, device="meta")
    student = torch.empty(5, 3, 8, device="meta", requires_grad=True)
    loss = loss_fn(teacher, student, epoch=1.5)
    loss.backward()
    assert loss.device.type == "meta" and student.grad.shape == (5, 3, 8)
    assert loss_fn.center.device.type == "meta"
