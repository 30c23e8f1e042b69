"""check_accumulated_step (exercise 5.3: a training step in micro-batches) accepts every correct
way of writing the step and names the typical mistakes."""
import numpy as np
import pytest
import torch

from dino_ref.exercises import ExerciseFailed, check_accumulated_step
from dino_ref.train import clip_gradients
from dino_ref.train.models import ema_update


def make_step(split="tensor_split", weights="rows", center="once", zero_grad="once", step="once",
              ema="ema_update", freeze=True, order=1):
    def accumulated_step(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam,
                         clip_grad, freeze_last_layer, n_micro):
        B = globals_.shape[1]
        if split == "tensor_split":
            parts = list(torch.arange(B).tensor_split(n_micro))
        else:                                       # the larger micro-batches last, as slices
            sizes = sorted(len(a) for a in np.array_split(np.arange(B), n_micro))
            ends = np.cumsum(sizes)
            parts = [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]
        parts = parts[::order]
        if zero_grad == "once":
            optimizer.zero_grad(set_to_none=True)
        total, outs = 0.0, []
        for rows in parts:
            if zero_grad == "each":
                optimizer.zero_grad()
            g, loc = globals_[:, rows], locals_[:, rows]
            b_k = g.shape[1]
            with torch.no_grad():
                t = teacher(g)
            outs.append(t)
            L_k = loss_fn(t, student(g, loc), epoch, update_center=(center == "each"))
            if weights == "rows":
                loss = L_k * b_k / B
            elif weights == "sum then divide":
                loss = (L_k * b_k) / B
            else:
                loss = L_k / len(parts)
            loss.backward()
            total += loss.item()
            if step == "each":
                optimizer.step()
                ema_update(teacher, student, lam)
        if center == "once":
            loss_fn.update_center(torch.cat(outs, dim=1))
        elif center == "by hand":
            m = loss_fn.center_momentum
            with torch.no_grad():
                mean = torch.cat(outs, dim=1).mean(dim=(0, 1), keepdim=True)
                loss_fn.center.mul_(m).add_((1 - m) * mean)
        clip_gradients(student, clip_grad)
        if freeze and epoch < freeze_last_layer:
            student.head.last_layer.v.grad = None
        if step == "once":
            optimizer.step()
            with torch.no_grad():
                if ema == "lerp":
                    for p_t, p_s in zip(teacher.parameters(), student.parameters()):
                        p_t.lerp_(p_s, 1 - lam)
                else:
                    ema_update(teacher, student, lam)
        return total
    return accumulated_step


@pytest.mark.parametrize("variant", [
    {},
    {"split": "slices, larger last"},
    {"order": -1},                                              # the micro-batches in reverse order
    {"weights": "sum then divide"},
    {"center": "by hand"},
    {"ema": "lerp"},
], ids=lambda v: ", ".join(f"{k}={w}" for k, w in v.items()) or "tensor_split")
def test_correct_variants_pass(variant, capsys):
    assert check_accumulated_step(make_step(**variant))
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, hint", [
    ({"weights": "mean"}, "B_k / B"),
    ({"center": "each"}, "update the center once per step"),
    ({"center": "never"}, "update the center once per step"),
    ({"zero_grad": "each"}, "zero the gradients once"),
    ({"step": "each"}, "one optimizer.step() and one EMA update"),  # the teacher moved: the center shows it
    ({"freeze": False}, "last layer's gradient"),
])
def test_mistakes_fail_with_their_hint(mistake, hint):
    with pytest.raises(ExerciseFailed, match="accumulated_step: step") as err:
        check_accumulated_step(make_step(**mistake))
    assert hint in str(err.value)
    assert "globals_ (T=2, B=9" in str(err.value)


def test_not_implemented():
    def accumulated_step(*args):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented yet"):
        check_accumulated_step(accumulated_step)
