"""The center: its moving average, deferred by update_center=False, kept per dimension when a
teacher batch is not finite, not stalled in a half-precision module, resumed from a state_dict."""
import math

import numpy as np
import pytest
import torch

from dino_ref import DINOLoss, numpy_ref
from logits import batch


def test_numpy_reference_defers_the_center_update():
    teacher, student = batch(D=8, dtype=torch.float64)
    ref = numpy_ref.DINOLoss(8)
    ref(teacher.numpy(), student.numpy(), update_center=False)
    assert not ref.center.any()
    ref.update_center(teacher.numpy())
    np.testing.assert_allclose(ref.center[0, 0], 0.1 * teacher.numpy().mean(axis=(0, 1)), rtol=1e-13)


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_moving_average_does_not_stall_in_a_half_precision_module(dtype):
    """ momentum 0.999, teacher of ones: c = 1 - 0.999^5000 = 0.9933 (bfloat16 storage: 0.25) """
    loss_fn = DINOLoss(4, center_momentum=0.999).to(dtype)
    for _ in range(5000):
        loss_fn.update_center(torch.ones(2, 1, 4, dtype=dtype))
    torch.testing.assert_close(loss_fn.center, torch.full((1, 1, 4), 1 - 0.999 ** 5000),
                               rtol=1e-5, atol=0)


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
