"""Checkers for the exercises of notebook 05 (one training step), see dino_ref.exercises.

Each compares the learner's function with the library on seeded random cases: the EMA update with
`dino_ref.models.ema_update`, the momentum schedule with `dino_ref.train.cosine_schedule`, the
head's logits with `dino_ref.models.WeightNormLinear` on an L2-normalised input.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ..models import WeightNormLinear, ema_update
from ..train import cosine_schedule
from ._core import ExerciseFailed, _short, check_function

__all__ = ["check_ema_update", "check_momentum_schedule", "check_cosine_logits"]


def _ema_reference(teacher_params, student_params, lam):
    """ the library's ema_update on float64 copies; a list of NumPy arrays """
    teacher = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(t)) for t in teacher_params])
    student = torch.nn.ParameterList([torch.nn.Parameter(torch.tensor(s)) for s in student_params])
    ema_update(teacher, student, lam)
    return [p.detach().numpy() for p in teacher]


def check_ema_update(fn):
    """ fn(teacher_params, student_params, lam) -> the new teacher parameters, a list of arrays

    theta_t <- lam theta_t + (1 - lam) theta_s for every array; lists of arrays of mixed shapes.
    """
    rng = np.random.default_rng(501)
    cases = []
    for shapes, lam in [([(3,), (2, 4)], 0.996), ([(5,)], 0.9), ([(2, 3, 2), (1,), (4,)], 0.3),
                        ([(2, 2)], 0.0), ([(3,)], 1.0), ([(6, 1), (2,)], 0.75)]:
        teacher = [rng.normal(size=s) for s in shapes]
        student = [t + rng.normal(size=t.shape) for t in teacher]          # the student has moved
        cases.append((teacher, student, lam))
    hint = ("the teacher keeps the fraction lam of ITSELF: lam * theta_t + (1 - lam) * theta_s, "
            "one array per parameter, in the same order (lam = 0 makes the teacher a copy of the "
            "student, lam = 1 leaves it unchanged)")
    for k, (teacher, student, lam) in enumerate(cases):
        expected = _ema_reference(teacher, student, lam)
        try:
            got = fn([t.copy() for t in teacher], [s.copy() for s in student], lam)
        except NotImplementedError:
            raise ExerciseFailed("ema_update: not implemented yet (replace the "
                                 "`raise NotImplementedError` with your code)") from None
        if not isinstance(got, (list, tuple)) or len(got) != len(expected):
            raise ExerciseFailed(
                f"ema_update: case {k + 1} of {len(cases)}: expected a list of {len(expected)} "
                f"arrays, got {type(got).__name__}" + (f" of length {len(got)}" if
                                                       isinstance(got, (list, tuple)) else "") +
                "\n  hint: return the new teacher parameters as a list, one array per parameter")
        for j, (g, e) in enumerate(zip(got, expected)):
            g = np.asarray(g.detach().numpy() if hasattr(g, "detach") else g, dtype=float)
            if g.shape != e.shape or not np.allclose(g, e, rtol=1e-6, atol=1e-9):
                raise ExerciseFailed(
                    f"ema_update: case {k + 1} of {len(cases)}, parameter {j} differs from the "
                    f"reference.\n  inputs:   {len(teacher)} arrays of shapes "
                    f"{[t.shape for t in teacher]}, lam = {lam}\n"
                    f"  expected: {_short(e)}\n  got:      {_short(g)}\n  hint: {hint}")
    print(f"ema_update: passed, {len(cases)} random cases agree with dino_ref.models.ema_update")
    return True


def check_momentum_schedule(fn):
    """ fn(lam0, total_steps) -> lam_j for j = 0 .. total_steps - 1, an array (total_steps,)

    the cosine schedule from lam0 towards 1: lam_j = 1 - (1 - lam0) (1 + cos(pi j / J)) / 2
    """
    cases = [(0.996, 1), (0.996, 2), (0.996, 3), (0.9, 7), (0.5, 10), (0.996, 930), (0.99, 64)]

    def reference(lam0, total_steps):
        return np.array(cosine_schedule(lam0, 1.0, total_steps))

    return check_function(
        "momentum_schedule", fn, reference, cases, rtol=0.0, atol=1e-12,
        against="dino_ref.train.cosine_schedule",
        hint="lam rises from lam0 at step j = 0 towards 1 (not from 1 down to lam0) along a half "
             "cosine, 1 - (1 - lam0)(1 + cos(pi j / J)) / 2, with J the number of steps (not "
             "J - 1: the last value stays just below 1); return one value per step")


def check_cosine_logits(fn):
    """ fn(z (N, d), V (K, d)) -> (N, K): cosine of the angle between every row of z and of V

    the DINO head's last step: L2-normalise the bottleneck output z, weight-normalise the
    prototypes V (rows of unit length), take the dot products.
    """
    rng = np.random.default_rng(503)
    cases = []
    for N, K, d in [(4, 6, 3), (1, 1, 1), (3, 10, 8), (5, 2, 16), (2, 7, 2)]:
        z = rng.uniform(2.0, 10.0, size=(N, 1)) * rng.normal(size=(N, d))   # norms far from 1
        V = rng.uniform(0.05, 0.5, size=(K, 1)) * rng.normal(size=(K, d))    # many norms
        cases.append((z, V))
    cases.append((np.array([[-2.5]]), np.array([[0.7], [3.0]])))                 # d = 1: -1 and 1

    def reference(z, V):
        K, d = V.shape
        layer = WeightNormLinear(d, K).double()
        with torch.no_grad():
            layer.v.copy_(torch.from_numpy(V))
            return layer(F.normalize(torch.from_numpy(z), dim=-1)).numpy()    # (N, K)

    return check_function(
        "cosine_logits", fn, reference, cases, against="the library's WeightNormLinear",
        hint="normalise BOTH: every row of z to unit L2 norm (the head's L2-normalised bottleneck) "
             "and every row of V (weight normalisation), then z_hat @ V_hat.T; every logit must "
             "then lie in [-1, 1]")
