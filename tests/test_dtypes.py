"""Dtypes: the loss in the inputs' dtype (float32 for half inputs), the center in its own dtype
under calls and module casts, state_dicts across dtypes."""
import pytest
import torch

from dino_ref import DINOLoss
from logits import batch


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
    float32_loss = DINOLoss(64)(teacher.float(), student.detach().float(), epoch=0)
    assert loss.item() == pytest.approx(float32_loss.item(), rel=1e-6)  # same numbers as float32 on the cast inputs


def test_double_module_and_state_dict():
    loss_fn = DINOLoss(16).double()
    assert loss_fn.center.dtype == torch.float64 and loss_fn.center.shape == (1, 1, 16)
    assert "center" in loss_fn.state_dict()
    loss_fn(*batch(dtype=torch.float32))                            # float32 input, float64 center
    assert loss_fn.center.dtype == torch.float64


@pytest.mark.parametrize("cast,from_float64", [
    (lambda m: m.half(), torch.float64), (lambda m: m.bfloat16(), torch.float64),
    (lambda m: m.to(torch.float16), torch.float64), (lambda m: m.float(), torch.float32)],
    ids=["half", "bfloat16", "to_float16", "float"])
def test_center_stays_float32_when_the_module_is_cast(cast, from_float64):
    assert cast(DINOLoss(8)).center.dtype == torch.float32
    assert cast(DINOLoss(8).double()).center.dtype == from_float64   # a float64 center stays


def test_double_and_float_set_the_center_dtype_and_state_dict_round_trips():
    loss_fn = DINOLoss(8).double()
    assert loss_fn.center.dtype == torch.float64
    loss_fn.center.fill_(1 / 3)
    half = DINOLoss(8).double().half()
    half.load_state_dict(loss_fn.state_dict(), strict=True)
    assert half.center.dtype == torch.float64 and torch.equal(half.center, loss_fn.center)
    moved = half.to("meta")
    assert moved.center.device.type == "meta" and moved.center.dtype == torch.float64
