"""The 60 %-mass threshold exercise: correct answers written several ways pass, each typical
mistake fails with the hint that names it."""

import numpy as np
import pytest
import torch

from dino_ref.exercises import ExerciseFailed, check_mass_threshold, check_patch_jaccard
from dino_ref.exercises.attention import _cases, _jaccard_mistakes, _mistakes


def loops(attention, mass):
    """ one row at a time, as the paper's sentence reads """
    a = np.asarray(attention, dtype=float)
    flat = a.reshape(-1, a.shape[-1])
    keep = np.zeros(flat.shape, dtype=bool)
    for r, row in enumerate(flat):
        row = row / row.sum()
        total = 0.0
        for p in sorted(range(len(row)), key=lambda i: -row[i]):
            if total >= mass:
                break
            keep[r, p] = True
            total += row[p]
    return keep.reshape(a.shape)


def torch_version(attention, mass):
    a = torch.as_tensor(attention)
    a = a / a.sum(-1, keepdim=True)
    values, order = a.sort(-1, descending=True)
    keep = values.cumsum(-1) - values < mass
    return torch.zeros_like(keep).scatter(-1, order, keep)


def numpy_int(attention, mass):
    """ 0/1 integers, a rank per patch instead of a scatter """
    a = attention / attention.sum(-1, keepdims=True)
    order = np.argsort(-a, axis=-1)
    rank = np.argsort(order, axis=-1)                    # each patch's place in the sorted row
    s = np.take_along_axis(a, order, -1)
    n_keep = (np.cumsum(s, -1) - s < mass).sum(-1, keepdims=True)
    return (rank < n_keep).astype(int)


def float32(attention, mass):
    return torch_version(torch.as_tensor(attention, dtype=torch.float32), mass)


@pytest.mark.parametrize("answer", [loops, torch_version, numpy_int, float32])
def test_correct_answers_pass(answer, capsys):
    assert check_mass_threshold(answer) is True
    assert "passed" in capsys.readouterr().out


MISTAKES = ([(check_mass_threshold, m) for m in _mistakes()]
            + [(check_patch_jaccard, m) for m in _jaccard_mistakes()])


@pytest.mark.parametrize("check, mistake", MISTAKES, ids=lambda x: getattr(x, "__name__", ""))
def test_each_mistake_is_named(check, mistake):
    wrong, hint = mistake
    with pytest.raises(ExerciseFailed) as failure:
        check(wrong)
    assert hint in str(failure.value)


def test_each_mistake_differs_from_the_reference_on_some_case():
    from dino_ref.exercises.attention import _reference
    cases = _cases(np.random.default_rng(1001))
    for wrong, hint in _mistakes():
        assert any(not np.array_equal(wrong(a, m), _reference(a, m)) for a, m in cases), hint


def test_shape_and_type_mistakes_are_named():
    with pytest.raises(ExerciseFailed, match="same shape"):
        check_mass_threshold(lambda a, m: loops(a, m).reshape(-1))
    with pytest.raises(ExerciseFailed, match="flags"):
        check_mass_threshold(lambda a, m: a / a.sum(-1, keepdims=True))
    with pytest.raises(ExerciseFailed, match="not implemented"):
        def todo(a, m):
            raise NotImplementedError
        check_mass_threshold(todo)


def jaccard_loops(masks, kept, p):
    """ one image and one patch at a time """
    n, h, w = masks.shape
    out = []
    for i in range(n):
        obj = [masks[i, r * p:(r + 1) * p, c * p:(c + 1) * p].sum() * 2 >= p * p
               for r in range(h // p) for c in range(w // p)]
        inter = sum(bool(a) and b for a, b in zip(kept[i], obj))
        union = sum(bool(a) or b for a, b in zip(kept[i], obj))
        out.append(inter / union if union else 1.0)
    return out


def jaccard_torch(masks, kept, p):
    frac = torch.nn.functional.avg_pool2d(torch.as_tensor(masks).float().unsqueeze(1), p).flatten(1)
    a, b = torch.as_tensor(kept), frac >= 0.5
    union = (a | b).sum(-1)
    return torch.where(union > 0, (a & b).sum(-1) / union.clamp(min=1), torch.ones(len(a)))


@pytest.mark.parametrize("answer", [jaccard_loops, jaccard_torch])
def test_patch_jaccard_correct_answers_pass(answer):
    assert check_patch_jaccard(answer) is True
