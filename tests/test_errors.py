"""Errors: a bad call or argument raises a ValueError that names the problem (in both versions),
with a hint for the usual layout mistakes, and leaves the center untouched."""
import math

import numpy as np
import pytest
import torch

from dino_ref import DINOLoss, numpy_ref
from logits import batch


def test_one_view_each_raises_instead_of_nan():
    teacher, student = batch(1, 1, D=8)
    for loss_fn, args in [(DINOLoss(8), (teacher, student)),
                          (numpy_ref.DINOLoss(8), (teacher.numpy(), student.numpy()))]:
        with pytest.raises(ValueError, match="no .*pair"):
            loss_fn(*args)


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


def test_center_on_another_device_names_the_fix():
    teacher, student = torch.randn(2, 4, 8), torch.randn(6, 4, 8)
    on_meta = DINOLoss(8).to("meta")
    for call in [lambda: on_meta(teacher, student), lambda: on_meta.update_center(teacher),
                 lambda: on_meta.teacher_targets(teacher),
                 lambda: DINOLoss(8)(teacher.to("meta"), student.to("meta"))]:
        with pytest.raises(ValueError, match=r"loss_fn\.to\("):
            call()


def test_list_of_numpy_views_raises_the_libraries_error():
    with pytest.raises(ValueError, match="list of torch.Tensor.*ndarray"):
        DINOLoss(8)([np.zeros((4, 8))] * 2, torch.randn(6, 4, 8))


@pytest.mark.parametrize("version", ["torch", "numpy"])
def test_layout_mistakes_get_a_hint(version):
    loss_fn = DINOLoss(8) if version == "torch" else numpy_ref.DINOLoss(8)
    make = torch.randn if version == "torch" else (lambda *shape: np.random.default_rng(0).normal(size=shape))
    with pytest.raises(ValueError, match="swap"):                       # teacher and student swapped
        loss_fn(make(6, 4, 8), make(2, 4, 8))
    with pytest.raises(ValueError, match=r"transpose\(0, 1\)"):        # both (B, V, D)
        loss_fn(make(4, 2, 8), make(4, 6, 8))
    with pytest.raises(ValueError, match=r"student_out\.transpose\(0, 1\)"):
        loss_fn(make(2, 4, 8), make(4, 6, 8))
