"""The float32 loss value against the float64 loss of the same float32 inputs.

Inputs like a DINO head's logits (cosines, here N(0, 0.1^2)) plus a shared offset, at
(T, S, B, D) = (2, 10, 8, 4096). The float64 value is the exact answer for those float32 numbers;
the float32 result itself can be no closer than half a float32 ulp (4.8e-7 near a loss of 8.8).
"""

import pytest
import torch
import torch.nn.functional as F

from dino_ref import DINOLoss

SEEDS = range(5)


def inputs(seed, offset):
    g = torch.Generator().manual_seed(seed)
    teacher = 0.1 * torch.randn(2, 8, 4096, generator=g) + offset       # (T, B, D)
    student = 0.1 * torch.randn(10, 8, 4096, generator=g) + offset      # (S, B, D)
    return teacher, student


def exact(teacher, student):
    """ the float64 loss of the float32 inputs """
    return DINOLoss(4096).double()(teacher.double(), student.double(), epoch=0).item()


def dino_ref_error(teacher, student):
    loss = DINOLoss(4096)(teacher, student.clone().requires_grad_(), epoch=0)  # the training path
    assert loss.dtype == torch.float32
    return abs(loss.item() - exact(teacher, student))


def original_form_error(teacher, student, teacher_temp=0.04, student_temp=0.1):
    """ the original authors' float32 form: a log_softmax per student view inside the pair loop,
    a mean over the batch per pair, the pair means added up """
    P_t = F.softmax(teacher / teacher_temp, dim=-1)
    total, n = 0.0, 0
    for i in range(teacher.shape[0]):
        for v in range(student.shape[0]):
            if v != i:
                total = total + torch.sum(-P_t[i] * F.log_softmax(student[v] / student_temp, -1), -1).mean()
                n += 1
    return abs((total / n).item() - exact(teacher, student))


@pytest.mark.parametrize("offset", [0.0, 1.0, 10.0])
def test_float32_loss_is_within_1e_6_of_the_exact_value(offset):
    errors = [dino_ref_error(*inputs(seed, offset)) for seed in SEEDS]
    assert max(errors) <= 1e-6, errors


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_float32_loss_is_no_worse_than_the_original_form_at_large_offsets(offset):
    """ here the float32 teacher softmax (t / tau_t rounded at |t| ~ 1000) dominates both forms """
    ours = [dino_ref_error(*inputs(seed, offset)) for seed in SEEDS]
    theirs = [original_form_error(*inputs(seed, offset)) for seed in SEEDS]
    assert sum(ours) <= sum(theirs), (ours, theirs)


def test_the_loss_value_does_not_round_below_zero_when_student_equals_targets():
    """ a hard teacher and a student sharply on the same dimension: the loss is ~0, never < 0 """
    teacher = torch.zeros(2, 4, 64)
    teacher[..., 3] = 1.0
    student = 100.0 * teacher.repeat(3, 1, 1)                              # (6, 4, 64)
    loss = DINOLoss(64, teacher_temp=0.0, warmup_teacher_temp=0.0)(teacher, student)
    assert 0.0 <= loss.item() < 1e-6
