"""The checkers of notebook 02's exercises accept the reference solutions (loops, vectorised,
torch, float32) and reject the typical wrong answers (log of an underflowed softmax, no max shift,
e / W instead of e / (W - 1), no clamp, entropies swapped), naming the mistake where they can."""
import numpy as np
import pytest
import torch

from dino_ref import numpy_ref

from dino_ref.exercises import (ExerciseFailed, check_entropies, check_log_softmax,
                                check_teacher_temperature)


def softmax(x, tau):
    z = np.asarray(x, dtype=float) / tau
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(x, tau):
    z = np.asarray(x, dtype=float) / tau
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


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
    assert check_log_softmax(log_softmax)
    assert check_teacher_temperature(teacher_temperature)
    assert check_entropies(entropies)
    assert capsys.readouterr().out.count("passed") == 3


def log_softmax_loop(x, tau):
    """ one row at a time, one coordinate at a time, as the notebook's softmax loop """
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    for row in np.ndindex(x.shape[:-1]):
        z = [x_d / tau for x_d in x[row]]
        m = max(z)
        log_total = m + np.log(sum(np.exp(z_d - m) for z_d in z))
        out[row] = [z_d - log_total for z_d in z]
    return out


def log_softmax_scipy_style(x, tau):
    """ logsumexp with the max added back after the log """
    z = np.asarray(x) / tau
    m = z.max(axis=-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=-1, keepdims=True)))


@pytest.mark.parametrize("answer", [
    log_softmax,
    log_softmax_loop,
    log_softmax_scipy_style,
    lambda x, tau: torch.log_softmax(torch.as_tensor(x) / tau, dim=-1),
    lambda x, tau: torch.log_softmax(torch.as_tensor(x, dtype=torch.float32) / tau, dim=-1),
    lambda x, tau: log_softmax(np.asarray(x, dtype=np.float32), np.float32(tau)).astype(np.float32),
], ids=["numpy", "loop", "max-added-back", "torch", "torch-float32", "numpy-float32"])
def test_log_softmax_accepts(answer):
    assert check_log_softmax(answer)


def no_max_shift(x, tau):
    z = np.asarray(x, dtype=float) / tau
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("wrong, named", [
    (lambda x, tau: np.log(softmax(x, tau)), "underflows to 0"),
    (lambda x, tau: torch.log(torch.softmax(torch.as_tensor(x) / tau, dim=-1)), "underflows to 0"),
    (no_max_shift, "overflows"),
    (lambda x, tau: log_softmax(x, 1.0), "temperature is missing"),
    (lambda x, tau: log_softmax(np.asarray(x) * tau, 1.0), "multiplied by tau"),
    (softmax, "the probabilities"),
    (lambda x, tau: np.asarray(x) / tau - np.log(np.exp(np.asarray(x) / tau - (np.asarray(x) / tau).max()).sum())
     - (np.asarray(x) / tau).max(), "over the whole array"),
], ids=["log-of-softmax", "torch-log-of-softmax", "no-max-shift", "no-tau", "times-tau", "probabilities",
        "whole-array"])
def test_log_softmax_rejects(wrong, named):
    with np.errstate(all="ignore"), pytest.raises(ExerciseFailed, match=named):
        check_log_softmax(wrong)


def test_log_softmax_agrees_with_the_softmax_where_nothing_underflows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    assert np.allclose(np.exp(log_softmax(x, 0.1)), numpy_ref.softmax(x, 0.1), rtol=1e-12)


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
