"""The diagnostics: teacher entropy and batch entropy tell the two collapses from a healthy batch."""
import math

import torch

from dino_ref.diagnostics import batch_entropy, teacher_entropy


def test_batch_entropy_tells_the_collapses_from_a_healthy_batch():
    T, B, K = 2, 8, 16
    one_dim = torch.zeros(T, B, K)
    one_dim[..., 3] = 1.0                                             # every row the same one-hot
    spread = torch.zeros(T, B, K)
    spread[:, torch.arange(B), torch.arange(B)] = 1.0                 # each image its own dimension
    uniform = torch.full((T, B, K), 1.0 / K)
    for P, h, h_batch in [(one_dim, 0.0, 0.0), (spread, 0.0, math.log(B)),
                          (uniform, math.log(K), math.log(K))]:
        assert abs(teacher_entropy(P).item() - h) < 1e-6
        assert abs(batch_entropy(P).item() - h_batch) < 1e-6
    P = torch.softmax(torch.randn(T, B, K), -1)
    assert batch_entropy(P) >= teacher_entropy(P)                     # entropy is concave
