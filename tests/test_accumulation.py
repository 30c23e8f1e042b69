"""Gradient accumulation: micro-batches with a deferred center update, each loss weighted by
b_micro / B, give the loss, gradient and center of the whole batch."""
import pytest
import torch

from dino_ref import DINOLoss
from logits import batch


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


def accumulated_grads(model, x, splits, weight):
    """ one optimizer step over micro-batches of `splits` rows, each loss times weight(b, B) """
    model.zero_grad()
    loss_fn, teacher_outs, b0 = DINOLoss(16).double(), [], 0
    for b in splits:
        t = model(x[:2, b0:b0 + b]).detach()
        loss = loss_fn(t, model(x[:, b0:b0 + b]), epoch=1, update_center=False)
        (loss * weight(b, sum(splits))).backward()
        teacher_outs.append(t)
        b0 += b
    loss_fn.update_center(torch.cat(teacher_outs, dim=1))             # list inputs: concatenate
    return [p.grad.clone() for p in model.parameters()], loss_fn.center


@pytest.mark.parametrize("splits", [(5, 3), (6, 1, 1)])
def test_accumulation_over_uneven_micro_batches_equals_the_whole_batch(splits):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, sum(splits), 4, generator=gen).double()        # 2 global + 4 local crops
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 16).double()

    model.zero_grad()
    whole = DINOLoss(16).double()
    whole(model(x[:2]).detach(), model(x), epoch=1).backward()
    expected = [p.grad.clone() for p in model.parameters()]

    grads, center = accumulated_grads(model, x, splits, lambda b, B: b / B)   # each loss times b / B
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(center, whole.center, rtol=1e-12, atol=1e-15)
    # the naive recipe, 1 / n_micro, is exact only for equal micro-batches: > 5 % off here
    naive, _ = accumulated_grads(model, x, splits, lambda b, B: 1 / len(splits))
    assert (naive[0] - expected[0]).norm() > 0.05 * expected[0].norm()
