"""The checkers of notebook 01's exercises (multi-crop layouts other than DINO's) accept every
correct way of writing the answer and reject the typical mistakes with a hint that names them."""
import numpy as np
import pytest
import torch

from dino_ref import numpy_ref
from dino_ref.common import num_pairs, view_pairs
from dino_ref.exercises import (ExerciseFailed, check_factorised_loss, check_pair_count,
                                check_pairs_per_view)
from dino_ref.exercises.pairing import _dino_loss_any_order, _loss_cases, _subset_cases


# --- 1.1: the student sees G of the T global crops, then L local crops ---------------------------

def test_the_reference_count_is_the_librarys_for_the_shared_crops_plus_the_locals():
    for T, G, L in _subset_cases(seed=101):
        n = T * (G + L) - G
        assert n == len(view_pairs(T, G)) + T * L == num_pairs(T, G) + T * L
        if G == T:
            assert n == num_pairs(T, T + L)                   # DINO's layout


@pytest.mark.parametrize("answer", [
    lambda T, G, L: T * (G + L) - G,                                          # closed form
    lambda T, G, L: sum(1 for i in range(T) for v in range(G + L) if v != i or v >= G),  # the grid
    lambda T, G, L: float(T * L + T * G - min(T, G)),                          # locals + globals, float
    lambda T, G, L: np.int64(T * (G + L) - G),
    lambda T, G, L: torch.tensor(T * (G + L) - G),
], ids=["closed-form", "loop", "float", "numpy-int", "torch"])
def test_pair_count_accepts(answer):
    assert check_pair_count(answer)


@pytest.mark.parametrize("wrong, named", [
    (lambda T, G, L: T * (G + L) - min(T, G + L), "DINO's count"),
    (lambda T, G, L: T * (G + L) - T, "you removed T same-crop cells"),
    (lambda T, G, L: T * (G + L), "no cell was removed"),
    (lambda T, G, L: (T - 1) * (G + L), "every student view lost a partner"),
], ids=["dino-formula", "minus-T", "nothing-removed", "T-minus-1"])
def test_pair_count_rejects(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_pair_count(wrong)


# --- 1.2: n_v when the student's views come in any order ---------------------------------------

@pytest.mark.parametrize("answer", [
    lambda T, crop_of: np.where(np.asarray(crop_of) >= 0, T - 1, T),
    lambda T, crop_of: [sum(1 for i in range(T) if i != c) for c in crop_of],
    lambda T, crop_of: T - (np.asarray(crop_of) >= 0).astype(np.float32),
    lambda T, crop_of: T - (torch.as_tensor(crop_of) >= 0).long(),
], ids=["where", "loop", "float32", "torch"])
def test_pairs_per_view_accepts(answer):
    assert check_pairs_per_view(answer)


def test_pairs_per_view_reference_is_the_librarys_in_dinos_layout():
    from dino_ref.fused import pair_counts
    for T, S in [(1, 2), (2, 2), (2, 8), (3, 5)]:
        crop_of = np.array(list(range(T)) + [-1] * (S - T))
        expected = pair_counts(T, S, "cpu", torch.float64).numpy()
        assert np.array_equal(np.where(crop_of >= 0, T - 1, T), expected)


@pytest.mark.parametrize("wrong, named", [
    (lambda T, c: np.array([T - 1 if v < T else T for v in range(len(c))]), "DINO's layout"),
    (lambda T, c: np.where(np.asarray(c) < T, T - 1, T), "passes a test such as"),
    (lambda T, c: np.full(len(c), T), "no view lost a partner"),
    (lambda T, c: np.array([T - 1 if v < T else T for v in range(len(c))])[:T], "one number per student view"),
], ids=["positional", "minus-one-below-T", "own-crop-kept", "one-per-teacher-view"])
def test_pairs_per_view_rejects(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_pairs_per_view(wrong)


# --- 1.3: the factorised loss when the student's views come in any order ------------------------

def factorised_loss(P_t, log_P_s, crop_of):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    Q = P_t.sum(axis=0)                                        # (B, K)
    shared = np.flatnonzero(crop_of >= 0)                      # views that show a teacher crop
    same_crop = -(P_t[crop_of[shared]] * log_P_s[shared]).sum()
    return (-(Q * log_P_s).sum() - same_crop) / ((T * S - T) * B)


def by_loop(P_t, log_P_s, crop_of):
    T, B, _ = P_t.shape
    terms = [-(P_t[i] * log_P_s[v]).sum() for i in range(T) for v in range(len(crop_of)) if crop_of[v] != i]
    return sum(terms) / (len(terms) * B)


def in_torch_float32(P_t, log_P_s, crop_of):
    P, lq = torch.tensor(P_t, dtype=torch.float32), torch.tensor(log_P_s, dtype=torch.float32)
    c = torch.as_tensor(crop_of)
    mask = (torch.arange(P.shape[0])[:, None] != c[None, :]).float()   # (T, S) the pairs
    grid = -torch.einsum("ibk,vbk->iv", P, lq)                         # (T, S) sum_b H
    return (grid * mask).sum() / (mask.sum() * P.shape[1])


def by_reordering(P_t, log_P_s, crop_of):
    # put the views back into DINO's order and use DINO's factorised form
    order = [int(np.flatnonzero(crop_of == i)[0]) for i in range(P_t.shape[0])]
    order += [v for v in range(len(crop_of)) if crop_of[v] < 0]
    lq = log_P_s[order]
    T, B, _ = P_t.shape
    S = lq.shape[0]
    return (-(P_t.sum(0) * lq).sum() + (P_t * lq[:T]).sum()) / ((T * S - T) * B)


def factorised_in_torch_float32(P_t, log_P_s, crop_of):
    # the factorised form itself in float32: two sums of ~30 each whose difference can be ~0.01
    P, lq = torch.tensor(P_t, dtype=torch.float32), torch.tensor(log_P_s, dtype=torch.float32)
    c = torch.as_tensor(crop_of)
    T, B, _ = P.shape
    shared = c >= 0
    all_cells = -(P.sum(0) * lq).sum()
    same_crop = -(P[c[shared]] * lq[shared]).sum()
    return (all_cells - same_crop) / ((T * lq.shape[0] - T) * B)


@pytest.mark.parametrize("answer", [factorised_loss, by_loop, in_torch_float32, by_reordering,
                                    factorised_in_torch_float32])
def test_factorised_loss_accepts(answer):
    assert check_factorised_loss(answer)


def test_the_reference_is_the_loss_of_the_layout():
    """ the reordered numpy_ref.dino_loss equals a loop over the layout's own pairs """
    for teacher, student, center, tau_t, tau_s, crop_of in _loss_cases(seed=103):
        P_t = numpy_ref.teacher_targets(teacher, center, tau_t)
        log_P_s = numpy_ref.log_softmax(student, tau_s)
        assert np.isclose(by_loop(P_t, log_P_s, crop_of),
                          _dino_loss_any_order(teacher, student, center, tau_t, tau_s, crop_of), rtol=1e-12)


def positional(P_t, log_P_s, crop_of):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    return (-(P_t.sum(0) * log_P_s).sum() + (P_t * log_P_s[:T]).sum()) / ((T * S - T) * B)


def negative_index(P_t, log_P_s, crop_of):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    return (-(P_t.sum(0) * log_P_s).sum() + (P_t[crop_of] * log_P_s).sum()) / ((T * S - T) * B)


def nothing_subtracted(P_t, log_P_s, crop_of):
    T, B, _ = P_t.shape
    return -(P_t.sum(0) * log_P_s).sum() / ((T * log_P_s.shape[0] - T) * B)


def divided_by_T_S(P_t, log_P_s, crop_of):
    T, S = P_t.shape[0], log_P_s.shape[0]
    return factorised_loss(P_t, log_P_s, crop_of) * (T * S - T) / (T * S)


@pytest.mark.parametrize("wrong, named", [
    (positional, "the same-crop cells of DINO's layout"),
    (negative_index, "valid negative index"),
    (nothing_subtracted, "nothing was subtracted"),
    (divided_by_T_S, "divided by T\\*S\\*B"),
])
def test_factorised_loss_rejects(wrong, named):
    with pytest.raises(ExerciseFailed, match=named):
        check_factorised_loss(wrong)


def test_a_failure_shows_the_layout():
    with pytest.raises(ExerciseFailed, match=r"crop_of = \[1, 0\]"):
        check_factorised_loss(positional)


def test_not_implemented_is_reported():
    def stub(T, G, L):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_pair_count(stub)


@pytest.mark.parametrize("check, wrong", [
    (check_pair_count, lambda T, G, L: T * (G + L) - G + 0.4),
    (check_pairs_per_view, lambda T, crop_of: np.where(np.asarray(crop_of) >= 0, T - 1, T) + 0.4),
], ids=["pair-count", "pairs-per-view"])
def test_a_count_must_be_exact(check, wrong):
    """ counts are compared exactly: a number 0.4 away from the count is not the count """
    with pytest.raises(ExerciseFailed):
        check(wrong)
