"""The collapse notebook's checkers accept the reference and reject typical mistakes."""

import numpy as np
import pytest
import torch

from dino_ref.exercises import (ExerciseFailed, check_batch_entropy, check_collapse_state,
                                collapse)
from dino_ref.diagnostics import batch_entropy


def test_the_expected_batch_entropy_is_the_librarys():
    P = torch.softmax(torch.randn(2, 6, 9, dtype=torch.float64), -1)
    assert abs(collapse.library_batch_entropy(P.numpy()) - batch_entropy(P).item()) < 1e-12


def test_batch_entropy_checker_accepts_a_solution():
    def solution(P):
        P_bar = P.reshape(-1, P.shape[-1]).mean(0)
        return -np.sum(P_bar * np.log(np.where(P_bar > 0, P_bar, 1.0)))
    assert check_batch_entropy(solution)


@pytest.mark.parametrize("wrong", [
    lambda P: -np.sum(P * np.log(np.where(P > 0, P, 1.0)), -1).mean(),         # h(P_t) instead
    lambda P: np.mean([collapse.library_batch_entropy(P[i:i + 1]) for i in range(len(P))]),  # per view
    lambda P: -np.sum(P.mean((0, 1)) * np.log(P.mean((0, 1)))),                # 0 log 0 -> nan
])
def test_batch_entropy_checker_rejects_typical_mistakes(wrong):
    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(ExerciseFailed):
        check_batch_entropy(wrong)


def test_collapse_state_checker():
    assert check_collapse_state(collapse.state_by_thresholds)

    def h_only(h, h_batch, log_K):                                    # ignores the batch entropy
        return "one dimension" if h < 0.15 * log_K else "uniform" if h > 0.85 * log_K else "healthy"
    with pytest.raises(ExerciseFailed, match="different"):
        check_collapse_state(h_only)

    def not_done(h, h_batch, log_K):
        raise NotImplementedError
    with pytest.raises(ExerciseFailed, match="not implemented"):
        check_collapse_state(not_done)
