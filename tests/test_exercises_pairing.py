"""The checkers of notebook 01's exercises accept the reference solutions and reject the typical
wrong answers (own view not excluded, T excluded instead of min(T, S), dividing by T*S)."""
import numpy as np
import pytest

from dino_ref.exercises import (ExerciseFailed, check_factorised_loss, check_pair_count,
                                check_pairs_per_view)


def pair_count(T, S):
    return T * S - min(T, S)


def pairs_per_view(T, S):
    return np.array([T - 1 if v < T else T for v in range(S)])


def factorised_loss(P_t, log_P_s):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    k = min(T, S)
    Q = P_t.sum(axis=0)                                       # (B, K)
    all_cells = -(Q * log_P_s).sum()
    same_crop = -(P_t[:k] * log_P_s[:k]).sum()
    return (all_cells - same_crop) / ((T * S - k) * B)


def test_solutions_pass(capsys):
    assert check_pair_count(pair_count)
    assert check_pairs_per_view(pairs_per_view)
    assert check_factorised_loss(factorised_loss)
    out = capsys.readouterr().out
    assert out.count("passed") == 3


def test_a_loop_over_the_pairs_passes_too():
    def by_loop(P_t, log_P_s):
        T, B, _ = P_t.shape
        S = log_P_s.shape[0]
        terms = [-(P_t[i] * log_P_s[v]).sum() for i in range(T) for v in range(S) if v != i]
        return sum(terms) / (len(terms) * B)
    assert check_factorised_loss(by_loop)


@pytest.mark.parametrize("wrong", [
    lambda T, S: T * S,                   # the own view not excluded
    lambda T, S: T * (S - 1),             # right only when S >= T
    lambda T, S: (T - 1) * S,
])
def test_pair_count_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_pair_count(wrong)


@pytest.mark.parametrize("wrong", [
    lambda T, S: np.full(S, T),                               # the own view not excluded
    lambda T, S: np.full(S, T - 1),                           # every view loses one
    lambda T, S: np.array([T - 1 if v < T else T for v in range(T)]),  # one entry per teacher view
    lambda T, S: np.array([S - 1 if v < T else S for v in range(S)]),  # T and S swapped
])
def test_pairs_per_view_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_pairs_per_view(wrong)


def divided_by_T_S(P_t, log_P_s):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    return factorised_loss(P_t, log_P_s) * (T * S - min(T, S)) / (T * S)


def own_view_kept(P_t, log_P_s):
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    return -(P_t.sum(axis=0) * log_P_s).sum() / ((T * S - min(T, S)) * B)


def own_view_of_every_teacher_view(P_t, log_P_s):
    # subtracts T diagonal cells; differs from the reference only if S < T, which the loss refuses,
    # so this one is right on every case the checker uses
    T, B, _ = P_t.shape
    S = log_P_s.shape[0]
    same = -(P_t * log_P_s[:T]).sum()
    return (-(P_t.sum(axis=0) * log_P_s).sum() - same) / ((T * S - T) * B)


@pytest.mark.parametrize("wrong", [divided_by_T_S, own_view_kept])
def test_factorised_loss_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_factorised_loss(wrong)


def test_factorised_loss_accepts_the_S_ge_T_form():
    assert check_factorised_loss(own_view_of_every_teacher_view)


def test_not_implemented_is_reported():
    def stub(T, S):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_pair_count(stub)
