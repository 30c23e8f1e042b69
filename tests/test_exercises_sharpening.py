"""The checkers of notebook 02's exercises accept the reference solutions and reject the typical
wrong answers (no max shift, e / W instead of e / (W - 1), no clamp, entropies swapped)."""
import numpy as np
import pytest

from dino_ref.exercises import (ExerciseFailed, check_entropies, check_softmax,
                                check_teacher_temperature)


def softmax(x, tau):
    z = np.asarray(x, dtype=float) / tau
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def teacher_temperature(e, tau_warm, tau_final, W):
    if e >= W:
        return tau_final
    if W == 1:
        return tau_warm
    return tau_warm + (tau_final - tau_warm) * min(e / (W - 1), 1.0)


def entropies(P_t):
    rows = P_t.reshape(-1, P_t.shape[-1])
    def h(p):
        return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)
    return h(rows).mean(), h(rows.mean(axis=0))


def test_solutions_pass(capsys):
    assert check_softmax(softmax)
    assert check_teacher_temperature(teacher_temperature)
    assert check_entropies(entropies)
    assert capsys.readouterr().out.count("passed") == 3


def test_torch_answers_pass():
    import torch
    assert check_softmax(lambda x, tau: torch.softmax(torch.as_tensor(x) / tau, dim=-1))


def no_max_shift(x, tau):
    e = np.exp(np.asarray(x, dtype=float) / tau)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("wrong", [
    no_max_shift,                                              # overflows at logit 500, tau 0.04
    lambda x, tau: softmax(x, 1.0),                           # temperature forgotten
    lambda x, tau: softmax(x * tau, 1.0),                     # multiplied instead of divided
    lambda x, tau: np.exp(x / tau) / np.exp(x / tau).sum(),   # normalised over the whole array
])
def test_softmax_rejects(wrong):
    with np.errstate(all="ignore"), pytest.raises(ExerciseFailed, match="hint"):
        check_softmax(wrong)


def over_W(e, tau_warm, tau_final, W):                        # e / W: never reaches tau_final
    if e >= W:
        return tau_final
    return tau_warm + (tau_final - tau_warm) * e / W


def no_clamp(e, tau_warm, tau_final, W):                      # overshoots in (W - 1, W)
    if e >= W:
        return tau_final
    if W == 1:
        return tau_warm
    return tau_warm + (tau_final - tau_warm) * e / (W - 1)


def no_W_1_case(e, tau_warm, tau_final, W):                   # ZeroDivisionError at W = 1
    if e >= W:
        return tau_final
    return tau_warm + (tau_final - tau_warm) * min(e / (W - 1), 1.0)


def ramp_to_W(e, tau_warm, tau_final, W):                     # e >= W - 1 taken as the end
    if e >= W - 1:
        return tau_final
    return tau_warm + (tau_final - tau_warm) * e / (W - 1)


@pytest.mark.parametrize("wrong", [over_W, no_clamp, no_W_1_case, ramp_to_W])
def test_teacher_temperature_rejects(wrong):
    with pytest.raises(ExerciseFailed, match="hint"):
        check_teacher_temperature(wrong)


def naive_log(P_t):                                           # 0 log 0 gives nan
    rows = P_t.reshape(-1, P_t.shape[-1])
    return -(rows * np.log(rows)).sum(-1).mean(), -(rows.mean(0) * np.log(rows.mean(0))).sum()


@pytest.mark.parametrize("wrong", [
    lambda P_t: entropies(P_t)[::-1],                         # swapped
    lambda P_t: (entropies(P_t)[0], entropies(P_t)[0]),       # mean row entropy twice
    naive_log,
    lambda P_t: (entropies(P_t)[0] * P_t.shape[0], entropies(P_t)[1]),  # summed over views
])
def test_entropies_rejects(wrong):
    with np.errstate(all="ignore"), pytest.raises(ExerciseFailed, match="hint"):
        check_entropies(wrong)
