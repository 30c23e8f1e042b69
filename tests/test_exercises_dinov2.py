"""The checkers of notebook 08's exercises: every correct form passes, typical mistakes fail with
a hint that names them."""

import numpy as np
import pytest
import torch

import dino_ref.exercises as exercises
from dino_ref.exercises import (ExerciseFailed, check_ibot_patch_loss, check_koleo_nearest_neighbour,
                                check_sinkhorn_iteration)
from dino_ref.exercises import dinov2 as module


def test_the_module_is_registered_without_clashes():
    others = [name for name in exercises.__all__ if name in module.__all__]
    assert others == module.__all__                                   # each exported once
    for name in module.__all__:
        assert getattr(exercises, name) is getattr(module, name) and getattr(module, name).__doc__
    import dino_ref, dino_ref.dinov2, dino_ref.numpy_dinov2                 # no answer under its name
    for answer in ["sinkhorn_iteration", "koleo_nearest_neighbour", "ibot_patch_loss"]:
        for where in (dino_ref, dino_ref.dinov2, dino_ref.numpy_dinov2, exercises):
            assert not hasattr(where, answer)


# --- one Sinkhorn iteration -------------------------------------------------------------------------

def sk_numpy(Q):
    K, N = Q.shape
    Q = Q / Q.sum(axis=1, keepdims=True) / K
    return Q / Q.sum(axis=0, keepdims=True) / N


def sk_loops(Q):
    K, N = Q.shape
    Q = Q.copy()
    for k in range(K):
        Q[k] /= Q[k].sum() * K
    for b in range(N):
        Q[:, b] /= Q[:, b].sum() * N
    return Q


def sk_rows_to_one(Q):
    """ rows scaled to 1 (not 1/K): the column step makes it the same """
    Q = Q / Q.sum(axis=1, keepdims=True)
    return Q / Q.sum(axis=0, keepdims=True) / Q.shape[1]


def sk_torch(Q):
    Q = torch.from_numpy(Q)
    Q = Q / Q.sum(1, keepdim=True) / Q.shape[0]
    return Q / Q.sum(0, keepdim=True) / Q.shape[1]


def sk_log_domain(Q):
    log_Q = np.log(Q)
    log_Q = log_Q - np.log(np.exp(log_Q).sum(axis=1, keepdims=True)) - np.log(Q.shape[0])
    log_Q = log_Q - np.log(np.exp(log_Q).sum(axis=0, keepdims=True)) - np.log(Q.shape[1])
    return np.exp(log_Q)


@pytest.mark.parametrize("solution", [sk_numpy, sk_loops, sk_rows_to_one, sk_torch, sk_log_domain],
                         ids=["numpy", "loops", "rows-to-1", "torch", "log-domain"])
def test_sinkhorn_iteration_accepts_every_correct_form(solution, capsys):
    assert check_sinkhorn_iteration(solution) is True
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda Q: (lambda P: P / P.sum(1, keepdims=True) / Q.shape[0])(Q / Q.sum(0, keepdims=True) / Q.shape[1]),
     "columns were scaled first"),
    (lambda Q: (lambda P: P / P.sum(1, keepdims=True) / Q.shape[1])(Q / Q.sum(0, keepdims=True) / Q.shape[0]),
     "axes were swapped"),
    (lambda Q: Q.shape[1] * sk_numpy(Q), "columns sum to 1, not 1/N"),
    (lambda Q: Q / Q.sum(axis=1, keepdims=True) / Q.shape[0], "only the rows"),
    (lambda Q: sk_numpy(Q).T.copy().T * 0.5, "differs"),
], ids=["columns-first", "axes-swapped", "columns-to-1", "rows-only", "off-by-half"])
def test_sinkhorn_iteration_rejects_typical_mistakes(wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        check_sinkhorn_iteration(wrong)


# --- the KoLeo nearest neighbour --------------------------------------------------------------------

def nn_numpy(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dots = u @ u.T
    np.fill_diagonal(dots, -np.inf)
    return dots.argmax(axis=1)


def nn_distances(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(u[:, None] - u[None], axis=-1)
    d[np.arange(len(x)), np.arange(len(x))] = np.inf
    return d.argmin(axis=1)


def nn_torch(x):
    u = torch.nn.functional.normalize(torch.from_numpy(x), dim=1)
    dots = u @ u.T
    dots.fill_diagonal_(-2.0)                                         # below any cosine
    return dots.argmax(dim=1)


def nn_loops(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return [max((j for j in range(len(u)) if j != i), key=lambda j: u[i] @ u[j]) for i in range(len(u))]


@pytest.mark.parametrize("solution", [nn_numpy, nn_distances, nn_torch, nn_loops],
                         ids=["numpy", "distances", "torch", "loops"])
def test_koleo_nearest_neighbour_accepts_every_correct_form(solution, capsys):
    assert check_koleo_nearest_neighbour(solution) is True
    assert "passed" in capsys.readouterr().out


def nn_no_self_mask(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return (u @ u.T).argmax(axis=1)


def nn_raw_dots(x):
    dots = x @ x.T
    np.fill_diagonal(dots, -np.inf)
    return dots.argmax(axis=1)


def nn_farthest(x):
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dots = u @ u.T
    np.fill_diagonal(dots, np.inf)
    return dots.argmin(axis=1)


@pytest.mark.parametrize("wrong, message", [
    (nn_no_self_mask, "paired with itself"), (nn_raw_dots, "not L2-normalised"),
    (nn_farthest, "FARTHEST"), (lambda x: (nn_numpy(x) + 1) % len(x), "differs"),
], ids=["no-self-mask", "raw-dots", "farthest", "shifted"])
def test_koleo_nearest_neighbour_rejects_typical_mistakes(wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        check_koleo_nearest_neighbour(wrong)


# --- the iBOT patch loss ----------------------------------------------------------------------------

def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def ibot_numpy(s, t, masks, tau):
    H = -(t * log_softmax(s / tau)).sum(-1)                           # (M,)
    m_b = masks.sum(axis=1)                                           # (B,)
    w = np.repeat(1.0 / np.maximum(m_b, 1), m_b)                      # row-major order of the patches
    return (w * H).sum() / masks.shape[0]


def ibot_loops(s, t, masks, tau):
    total, p = 0.0, 0
    for b in range(masks.shape[0]):
        m_b = masks[b].sum()
        for n in range(masks.shape[1]):
            if masks[b, n]:
                total += -(t[p] * log_softmax(s[p] / tau)).sum() / m_b
                p += 1
    return total / masks.shape[0]


def ibot_torch(s, t, masks, tau):
    H = -(torch.from_numpy(t) * torch.log_softmax(torch.from_numpy(s) / tau, -1)).sum(-1)
    masks = torch.from_numpy(masks)
    w = (1 / masks.sum(1, keepdim=True).clamp(min=1)).expand_as(masks)[masks]
    return (w * H).sum() / masks.shape[0]


@pytest.mark.parametrize("solution", [ibot_numpy, ibot_loops, ibot_torch], ids=["numpy", "loops", "torch"])
def test_ibot_patch_loss_accepts_every_correct_form(solution, capsys):
    assert check_ibot_patch_loss(solution) is True
    assert "passed" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (lambda s, t, masks, tau: -(t * log_softmax(s / tau)).sum(-1).sum() / masks.shape[0], "same weight"),
    (lambda s, t, masks, tau: -(t * log_softmax(s / tau)).sum(-1).mean(), "mean over all masked patches"),
    (lambda s, t, masks, tau: ibot_numpy(s, t, masks, tau) * masks.shape[0] / masks.any(1).sum(),
     "images that have a masked patch"),
    (lambda s, t, masks, tau: ibot_numpy(s, t, masks, 1.0), "temperature is missing"),
    (lambda s, t, masks, tau: 2 * ibot_numpy(s, t, masks, tau), "differs"),
], ids=["unweighted", "patch-mean", "masked-images-only", "no-temperature", "doubled"])
def test_ibot_patch_loss_rejects_typical_mistakes(wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        check_ibot_patch_loss(wrong)


def test_a_stub_is_reported_as_not_implemented():
    def stub(*args):
        raise NotImplementedError
    for check in (check_sinkhorn_iteration, check_koleo_nearest_neighbour, check_ibot_patch_loss):
        with pytest.raises(ExerciseFailed, match="not implemented"):
            check(stub)
