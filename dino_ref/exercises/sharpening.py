"""Checkers for the exercises of notebook 02 (sharpening): the log-softmax with a temperature
(finite where the probability underflows), the teacher-temperature schedule tau_t(e), and the two
entropies of a batch of targets."""

import numpy as np

from .. import numpy_ref
from ._core import ExerciseFailed, check_function

__all__ = ["check_log_softmax", "check_teacher_temperature", "check_entropies"]


def _failures_named(name, fn, hint):
    """ fn, except that an exception (other than NotImplementedError) becomes ExerciseFailed
    naming the inputs, e.g. a ZeroDivisionError at W = 1 """
    def guarded(*args):
        try:
            return fn(*args)
        except (NotImplementedError, ExerciseFailed):
            raise
        except Exception as error:
            shown = ", ".join(f"array{a.shape}" if isinstance(a, np.ndarray) else repr(a) for a in args)
            raise ExerciseFailed(f"{name}: raised {type(error).__name__}: {error}\n"
                                 f"  inputs:   {shown}\n  hint: {hint}") from None
    return guarded


def _log_softmax_cases(seed):
    """ (x, tau): one vector, a (N, K) batch, a (T, B, K) stack; logits of unit scale, logits whose
    gaps at tau = 0.04 exceed what exp can resolve (a probability of exp(-1000) is 0 in float64,
    its logarithm is not), and logits with a large offset (exp overflows without the max shift) """
    rng = np.random.default_rng(seed)
    cases = [(rng.normal(size=10), 1.0), (rng.normal(size=10), 0.04),
             (rng.normal(size=(4, 7)), 0.1), (rng.normal(size=(2, 3, 5)), 0.07),
             (np.array([40.0, 0.0, -3.0]), 0.04),                           # gaps of 1000 / tau
             (30.0 * rng.normal(size=(2, 4, 6)), 0.04),
             (500.0 + 30.0 * rng.normal(size=(3, 6)), 0.04), (np.zeros(4), 0.1)]
    cases += [(rng.normal(scale=float(rng.uniform(0.1, 3)), size=(int(rng.integers(1, 5)),
               int(rng.integers(2, 12)))), float(rng.uniform(0.03, 2))) for _ in range(8)]
    return cases


def _softmax(x, tau):
    z = np.asarray(x, dtype=float) / tau
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_LOG_SOFTMAX_MISTAKES = [
    (lambda x, tau: np.log(_softmax(x, tau)),
     "log(softmax(x / tau)) is -inf wherever a probability underflows to 0 (exp(-1000) in float64), "
     "though its logarithm is a finite number: take the logarithm by hand, "
     "z - max(z) - log(sum(exp(z - max(z)))) with z = x / tau, so that exp is never followed by log."),
    (lambda x, tau: (np.asarray(x) / tau) - np.log(np.exp(np.asarray(x) / tau).sum(-1, keepdims=True)),
     "exp(x / tau) overflows (a logit of 500 at tau = 0.04 is exp(12500)): subtract each row's "
     "maximum from x / tau before exp, and take it into account in the result."),
    (lambda x, tau: numpy_ref.log_softmax(x, 1.0),
     "the temperature is missing: the logits are divided by tau before the softmax."),
    (lambda x, tau: numpy_ref.log_softmax(np.asarray(x) * tau, 1.0),
     "the logits were multiplied by tau; they are divided by it."),
    (lambda x, tau: _softmax(x, tau),
     "these are the probabilities softmax(x / tau); the exercise asks for their logarithm."),
    (lambda x, tau: np.asarray(x) / tau - np.log(np.exp(np.asarray(x) / tau
                                                          - (np.asarray(x) / tau).max()).sum())
     - (np.asarray(x) / tau).max(),
     "the log-sum-exp was taken over the whole array; each row (the last axis) is normalised on "
     "its own."),
]


def check_log_softmax(log_softmax):
    """ log_softmax(x, tau) -> log softmax(x / tau) along the last axis, any leading shape, finite
    wherever x is (no -inf from an underflowed probability, no overflow) """
    hint = ("with z = x / tau, log softmax(z)_d = z_d - log sum_k exp(z_k); subtract each row's "
            "maximum m first, z_d - m - log sum_k exp(z_k - m), and never take the log of a "
            "probability that may be 0; along the last axis only.")

    def tolerance(args, expected):                  # rounding grows with |x / tau| (float32 too)
        x, tau = args
        return 1.0 + np.abs(np.asarray(x)).max() / tau

    return check_function(
        "check_log_softmax", _failures_named("check_log_softmax", log_softmax, hint),
        numpy_ref.log_softmax, _log_softmax_cases(seed=201), hint, rtol=1e-5, atol=1e-5,
        against="numpy_ref.log_softmax", mistakes=_LOG_SOFTMAX_MISTAKES, atol_scale=tolerance)


def _schedule_cases(seed):
    """ (e, tau_warm, tau_final, W): W = 0 and W = 1, integer epochs on both sides of W, e = W - 1,
    fractional e inside the ramp and in (W - 1, W) where the clamp matters, then random cases """
    rng = np.random.default_rng(seed)
    cases = [(0, 0.04, 0.07, 0), (3.5, 0.04, 0.07, 0), (0, 0.04, 0.07, 1), (0.5, 0.04, 0.07, 1),
             (1, 0.04, 0.07, 1), (0, 0.04, 0.07, 2), (1, 0.04, 0.07, 2), (1.5, 0.04, 0.07, 2),
             (2, 0.04, 0.07, 2), (0, 0.04, 0.07, 30), (1, 0.04, 0.07, 30), (14.5, 0.04, 0.07, 30),
             (29, 0.04, 0.07, 30), (29.5, 0.04, 0.07, 30), (30, 0.04, 0.07, 30), (99, 0.04, 0.07, 30),
             (4, 0.1, 0.05, 10), (9.25, 0.1, 0.05, 10)]
    for _ in range(12):
        W = int(rng.integers(0, 20))
        e = float(rng.uniform(0, W + 3)) if rng.random() < 0.5 else int(rng.integers(0, W + 3))
        tau_warm, tau_final = round(float(rng.uniform(0.02, 0.06)), 3), round(float(rng.uniform(0.06, 0.1)), 3)
        cases.append((e, tau_warm, tau_final, W))
    return cases


def check_teacher_temperature(teacher_temperature):
    """ teacher_temperature(e, tau_warm, tau_final, W) -> tau_t(e) = tau_warm +
    (tau_final - tau_warm) * min(e / (W - 1), 1) for e < W, tau_final for e >= W """
    hint = ("the ramp has W points, e = 0 ... W - 1, both ends included: divide by W - 1 (not W), "
            "clamp e / (W - 1) at 1 (a fractional e between W - 1 and W stays at tau_final), "
            "return tau_warm for e < W when W = 1 and tau_final for every e when W = 0.")
    return check_function(
        "check_teacher_temperature", _failures_named("check_teacher_temperature", teacher_temperature, hint),
        numpy_ref.teacher_temperature, _schedule_cases(seed=202), hint, rtol=1e-9, atol=1e-12)


def entropies_reference(P_t):
    """ [h(P_t), h(P_bar_t)]: the mean over all rows of each row's entropy, and the entropy of
    the batch-mean distribution; P_t (..., K), rows along the leading axes """
    K = P_t.shape[-1]
    rows = P_t.reshape(-1, K)                                  # (T*B, K)
    return np.array([numpy_ref.entropy(rows).mean(), numpy_ref.entropy(rows.mean(axis=0))])


def _entropy_cases(seed):
    """ P_t (T, B, K): random distributions, healthy one-hot rows (each row its own dimension),
    collapse onto one dimension, uniform rows, then random sharp and flat batches """
    rng = np.random.default_rng(seed)
    eye = np.eye(8)
    cases = [(eye[None],),                                      # healthy: row b one-hot on d = b
             (np.tile(eye[:1], (2, 4, 1)),),                    # collapsed: every row on d = 0
             (np.full((2, 3, 5), 0.2),),                        # uniform
             (rng.dirichlet(np.ones(6), size=(2, 4)),)]
    for _ in range(8):
        T, B, K = int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(2, 12))
        cases.append((numpy_ref.softmax(rng.normal(size=(T, B, K)), float(rng.uniform(0.02, 2))),))
    return cases


def check_entropies(entropies):
    """ entropies(P_t) -> (h(P_t), h(P_bar_t)) for P_t (T, B, K), in nats """
    hint = ("h(P_t) is the mean over the T*B rows of -sum_d p_d log p_d; h(P_bar_t) first averages "
            "the rows into one distribution, then takes its entropy (not the other way round); "
            "use 0 log 0 = 0 (one-hot rows contain exact zeros) and return the two in that order.")
    return check_function("check_entropies", _failures_named("check_entropies", entropies, hint),
                          entropies_reference, _entropy_cases(seed=203), hint)
