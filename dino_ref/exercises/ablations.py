"""Checkers for the exercises of notebook 07 (the paper's ablations on the toy), see
dino_ref.exercises.

check_hard_targets: the teacher targets at tau_t = 0 (the limit tau_t -> 0), ties shared.
check_knn_vote: the paper's weighted k-NN classifier on cosine similarities.
"""

import numpy as np
import torch

from .. import numpy_ref
from ..train.knn import knn_classify
from ._core import ExerciseFailed, check_function

__all__ = ["check_hard_targets", "check_knn_vote"]


def _hard_target_cases(rng):
    """ (teacher (T, B, K), center (1, 1, K)) pairs: random, with ties, with a center that moves the
    maximum, negative logits """
    cases = [(rng.normal(size=(2, 3, 5)), rng.normal(size=(1, 1, 5))) for _ in range(3)]
    ties = rng.integers(0, 3, size=(2, 4, 6)).astype(float)          # many tied maxima
    cases.append((ties, np.zeros((1, 1, 6))))
    shifted = np.array([[[1.0, 0.9, 0.2]], [[0.1, 0.5, 0.4]]])           # (2, 1, 3)
    cases.append((shifted, np.array([[[0.5, 0.0, 0.0]]])))              # c changes view 0's argmax
    cases.append((-5.0 - rng.random((1, 2, 4)), np.full((1, 1, 4), -3.0)))
    cases.append((np.full((1, 2, 3), 7.0), np.zeros((1, 1, 3))))       # all tied: uniform rows
    return cases


def _mistake(got, teacher, center):
    """ the name of a typical mistake that gives `got`, or None """
    got = np.asarray(got, dtype=float)
    logits = teacher - center
    one_hot = np.zeros_like(logits)
    np.put_along_axis(one_hot, logits.argmax(-1)[..., None], 1.0, axis=-1)
    candidates = {
        "the center was not subtracted: the argmax is taken of t - c, not of t":
            numpy_ref.hard_targets(teacher),
        "a tie was given to one dimension only (argmax picks the first): share the mass "
        "equally among all maximisers": one_hot,
        "a small temperature is not the limit: the targets must be exactly 0 and 1/k, "
        "without exp": numpy_ref.softmax(logits, 1e-2),
    }
    for name, wrong in candidates.items():
        if got.shape == wrong.shape and np.allclose(got, wrong, atol=1e-6):
            return name
    return None


def check_hard_targets(fn):
    """ fn(teacher (T, B, K), center (1, 1, K)) -> P_t (T, B, K), the limit tau_t -> 0 of
    softmax((t - c) / tau_t): on each row 1/k on its k maximisers of t - c, 0 elsewhere """
    rng = np.random.default_rng(701)
    cases = _hard_target_cases(rng)
    hint = ("take the maximum of each row of t - c; every dimension equal to it gets "
            "1 / (number of such dimensions), the others 0; no exp, no division by tau")
    for teacher, center in cases:                                     # name a known mistake first
        try:
            got = fn(teacher.copy(), center.copy())
        except NotImplementedError:
            raise ExerciseFailed("hard_targets: not implemented yet (replace the "
                                 "`raise NotImplementedError` with your code)") from None
        got = got.detach().cpu().numpy() if hasattr(got, "detach") else got
        expected = numpy_ref.teacher_targets(teacher, center, 0.0)
        if np.asarray(got).shape == expected.shape and np.allclose(got, expected, atol=1e-6):
            continue
        mistake = _mistake(got, teacher, center)
        if mistake:
            raise ExerciseFailed(f"hard_targets: teacher {teacher.shape}, center {center.shape}: "
                                 f"{mistake}")
        break
    return check_function("hard_targets", fn, lambda t, c: numpy_ref.teacher_targets(t, c, 0.0),
                          cases, hint=hint, rtol=0.0, atol=1e-6,      # float32 1/3 passes
                          against="dino_ref.numpy_ref.teacher_targets(t, c, 0)")


def _knn_expected(train_feats, train_labels, test_feats, num_classes, k, T):
    """ the library's classifier on L2-normalised float64 features """
    f = lambda x: torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)  # noqa: E731
    return knn_classify(f(train_feats), torch.from_numpy(train_labels), f(test_feats),
                        num_classes, k, T).numpy()


def _knn_cases(rng):
    cases = []
    for N, M, C, n_cls, k, T in [(40, 15, 8, 4, 5, 0.07), (30, 12, 3, 3, 7, 1.0),
                                 (25, 10, 16, 5, 20, 0.07), (12, 6, 2, 2, 3, 0.5)]:
        centers = rng.normal(size=(n_cls, C))
        labels = rng.integers(0, n_cls, size=N)
        scale = rng.uniform(0.2, 5.0, size=(N, 1))                    # norms far from 1
        train = scale * (centers[labels] + 0.9 * rng.normal(size=(N, C)))
        test = rng.uniform(0.2, 5.0, size=(M, 1)) * rng.normal(size=(M, C))
        cases.append((train, labels, test, n_cls, k, T))
    return cases


def check_knn_vote(fn):
    """ fn(train_feats (N, C), train_labels (N,), test_feats (M, C), num_classes, k, temperature)
    -> (M,) predicted labels: cosine similarity (L2-normalised features), the k most similar train
    features vote for their labels with weight exp(sim / temperature), the heaviest class wins """
    rng = np.random.default_rng(702)
    cases = [c for c in _knn_cases(rng) if not _near_tie(c)]        # labels rounding cannot flip
    return check_function(
        "knn_vote", fn, _knn_expected, cases, rtol=0.0, atol=0.0,
        against="dino_ref.train.knn.knn_classify",
        hint="normalise every feature to unit length first (cosine similarity), keep the k "
             "largest similarities per test row, and add exp(sim / temperature) to the vote of "
             "each neighbour's label (not 1 per neighbour, not sim itself); return the argmax per row")


def _near_tie(case):
    """ whether some test row's two heaviest classes are within 1e-6 of each other """
    v = np.sort(_votes(*case), axis=-1)
    return bool(np.any(v[:, -1] - v[:, -2] <= 1e-6 * v[:, -1]))


def _votes(train_feats, train_labels, test_feats, num_classes, k, T):
    """ (M, num_classes) weighted votes, to keep cases without near ties """
    a = train_feats / np.linalg.norm(train_feats, axis=1, keepdims=True)
    b = test_feats / np.linalg.norm(test_feats, axis=1, keepdims=True)
    sim = b @ a.T                                                     # (M, N)
    votes = np.zeros((len(b), num_classes))
    for m in range(len(b)):
        for n in np.argsort(-sim[m])[:k]:
            votes[m, train_labels[n]] += np.exp(sim[m, n] / T)
    return votes
