"""Code and checkpoints from elsewhere: what nidl.losses.DINOLoss accepts (zero-dim tensor
hyperparameters, numpy and tensor epochs, its teacher_temp_schedule) and a facebookresearch/dino
center of shape (1, D)."""
import numpy as np
import pytest
import torch

from dino_ref import DINOLoss, numpy_ref


def test_zero_dim_tensor_hyperparameters_and_epochs_as_nidl_accepts():
    as_t = torch.tensor
    loss_fn = DINOLoss(16, warmup_teacher_temp=as_t(0.04), teacher_temp=as_t(0.07),
                       warmup_teacher_temp_epochs=5, student_temp=as_t(0.1), center_momentum=as_t(0.9))
    assert all(isinstance(getattr(loss_fn, name), float) for name in
               ["warmup_teacher_temp", "teacher_temp", "student_temp", "center_momentum"])
    teacher, student = torch.randn(2, 4, 16), torch.randn(6, 4, 16)
    for epoch in [torch.tensor(3), np.int64(3), np.float64(3.0), torch.tensor(3.0)]:
        assert loss_fn.teacher_temperature(epoch) == loss_fn.teacher_temperature(3)
        loss = loss_fn(teacher, student, epoch=epoch, update_center=False)
        assert torch.equal(loss, loss_fn(teacher, student, epoch=3, update_center=False))
        assert numpy_ref.DINOLoss(16).teacher_temperature(epoch) == numpy_ref.DINOLoss(16).teacher_temperature(3)


@pytest.mark.parametrize("W", [0, 1, 30])
def test_teacher_temp_schedule_is_built_as_nidl_builds_it(W):
    loss_fn = DINOLoss(8, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=W)
    expected = torch.linspace(0.04, 0.07, W)                           # nidl: linspace(warm, final, W)
    assert loss_fn.teacher_temp_schedule.shape == (W,)
    torch.testing.assert_close(loss_fn.teacher_temp_schedule, expected, rtol=0, atol=0)
    for e in range(W):                                                 # the same ramp, in float64
        assert loss_fn.teacher_temperature(e) == pytest.approx(expected[e].item(), abs=1e-7)


def test_a_center_saved_as_1_by_D_loads_with_strict_true():
    center = torch.randn(1, 32)                                        # the original's (1, D) buffer
    loss_fn = DINOLoss(32)
    loss_fn.load_state_dict({"center": center}, strict=True)
    assert loss_fn.center.shape == (1, 1, 32) and torch.equal(loss_fn.center[0], center)
    with pytest.raises(RuntimeError, match="size mismatch"):
        DINOLoss(16).load_state_dict({"center": center}, strict=True)
