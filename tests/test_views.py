"""Views: any T >= 1 teacher views and S >= T student views with at least one pair, stacked or
as lists."""
import math

import pytest
import torch

from dino_ref import DINOLoss, numpy_ref
from dino_ref.common import num_pairs, view_pairs
from logits import batch


@pytest.mark.parametrize("T,S", [(1, 2), (1, 7), (2, 2), (3, 3), (3, 8), (4, 4)])
def test_any_number_of_teacher_views(T, S):
    teacher, student = batch(T, S, B=3, D=8, dtype=torch.float64)
    loss = DINOLoss(8).double()(teacher, student, epoch=2)
    ref = numpy_ref.DINOLoss(8)(teacher.numpy(), student.numpy(), epoch=2)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    assert len(view_pairs(T, S)) == num_pairs(T, S) == T * S - min(T, S)


def test_lists_of_views_equal_stacked_tensors():
    teacher, student = torch.randn(2, 4, 8), torch.randn(5, 4, 8)
    a, b = DINOLoss(8), DINOLoss(8)
    assert torch.equal(a(teacher, student, epoch=3), b(list(teacher), tuple(student), epoch=3))
    assert torch.equal(a.center, b.center)
    ref = numpy_ref.DINOLoss(8)
    assert ref([t.numpy() for t in teacher], list(student.numpy())) == pytest.approx(
        DINOLoss(8).double()(teacher.double(), student.double()).item(), rel=1e-10)
