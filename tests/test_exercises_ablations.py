"""The checkers of notebook 07's exercises: every correct form passes, typical mistakes fail with
a hint that names them."""

import numpy as np
import pytest
import torch

from dino_ref.exercises import ExerciseFailed, check_hard_targets, check_knn_vote


# --- hard targets ---------------------------------------------------------------------------

def hard_loop(teacher, center):
    z = teacher - center
    P = np.zeros_like(z)
    for i in range(z.shape[0]):
        for b in range(z.shape[1]):
            top = [d for d in range(z.shape[2]) if z[i, b, d] == z[i, b].max()]
            P[i, b, top] = 1.0 / len(top)
    return P


def hard_vectorized(teacher, center):
    z = teacher - center
    is_max = z == z.max(-1, keepdims=True)
    return is_max / is_max.sum(-1, keepdims=True)


def hard_torch(teacher, center):
    z = torch.from_numpy(teacher - center)
    mask = (z == z.amax(-1, keepdim=True)).double()
    return mask / mask.sum(-1, keepdim=True)


def hard_float32(teacher, center):
    z = (teacher - center).astype(np.float32)
    is_max = (z == z.max(-1, keepdims=True)).astype(np.float32)
    return is_max / is_max.sum(-1, keepdims=True)                     # 1/3 rounded to float32


@pytest.mark.parametrize("solution", [hard_loop, hard_vectorized, hard_torch, hard_float32],
                         ids=["loops", "numpy", "torch", "float32"])
def test_hard_targets_accepts_every_correct_form(solution, capsys):
    assert check_hard_targets(solution) is True
    assert "passed" in capsys.readouterr().out


def one_hot_argmax(teacher, center):
    z = teacher - center
    P = np.zeros_like(z)
    np.put_along_axis(P, z.argmax(-1)[..., None], 1.0, axis=-1)
    return P


@pytest.mark.parametrize("wrong, message", [
    (one_hot_argmax, "tie"),
    (lambda t, c: hard_vectorized(t, 0.0 * c), "center was not subtracted"),
    (lambda t, c: np.exp((t - c - (t - c).max(-1, keepdims=True)) / 1e-2)
     / np.exp((t - c - (t - c).max(-1, keepdims=True)) / 1e-2).sum(-1, keepdims=True),
     "small temperature"),
    (lambda t, c: hard_vectorized(t, c)[..., ::-1], "differs"),
], ids=["argmax-ties", "no-center", "small-tau", "reversed"])
def test_hard_targets_rejects_typical_mistakes(wrong, message):
    with pytest.raises(ExerciseFailed, match=message):
        check_hard_targets(wrong)


# --- weighted k-NN vote --------------------------------------------------------------------

def knn_numpy(train_feats, train_labels, test_feats, num_classes, k, T):
    a = train_feats / np.linalg.norm(train_feats, axis=1, keepdims=True)
    b = test_feats / np.linalg.norm(test_feats, axis=1, keepdims=True)
    sim = b @ a.T                                                     # (M, N) cosines
    top = np.argsort(-sim, axis=1)[:, :k]                             # (M, k)
    votes = np.zeros((len(b), num_classes))
    for m in range(len(b)):
        np.add.at(votes[m], train_labels[top[m]], np.exp(sim[m, top[m]] / T))
    return votes.argmax(1)


def knn_torch(train_feats, train_labels, test_feats, num_classes, k, T):
    a = torch.nn.functional.normalize(torch.from_numpy(train_feats), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(test_feats), dim=1)
    s, idx = (b @ a.T).topk(k, dim=1)
    votes = torch.zeros(len(b), num_classes, dtype=s.dtype)
    votes.scatter_add_(1, torch.from_numpy(train_labels)[idx], (s / T).exp())
    return votes.argmax(1)


@pytest.mark.parametrize("solution", [knn_numpy, knn_torch], ids=["numpy", "torch"])
def test_knn_vote_accepts_every_correct_form(solution, capsys):
    assert check_knn_vote(solution) is True
    assert "passed" in capsys.readouterr().out


def majority(train_feats, train_labels, test_feats, num_classes, k, T):
    """ unweighted: one vote per neighbour """
    return knn_numpy(train_feats, train_labels, test_feats, num_classes, k, 1e9)


def raw_dot(train_feats, train_labels, test_feats, num_classes, k, T):
    """ dot products of unnormalised features """
    sim = test_feats @ train_feats.T
    votes = np.zeros((len(test_feats), num_classes))
    for m in range(len(test_feats)):
        top = np.argsort(-sim[m])[:k]
        np.add.at(votes[m], train_labels[top], np.exp(np.clip(sim[m, top] / T, None, 700)))
    return votes.argmax(1)


def one_neighbour(train_feats, train_labels, test_feats, num_classes, k, T):
    return knn_numpy(train_feats, train_labels, test_feats, num_classes, 1, T)


@pytest.mark.parametrize("wrong", [majority, raw_dot, one_neighbour],
                         ids=["unweighted", "not-normalised", "k-1"])
def test_knn_vote_rejects_typical_mistakes(wrong):
    with pytest.raises(ExerciseFailed, match="normalise"):
        check_knn_vote(wrong)
