"""The checker machinery shared by all exercises: run a learner's function and the expected answer on
the same random cases, print one line on success, raise `ExerciseFailed` with a hint otherwise."""

import inspect

import numpy as np

__all__ = ["ExerciseFailed", "check_function"]


class ExerciseFailed(AssertionError):
    """ the learner's answer disagrees with the expected one (an AssertionError, so graders see it) """


def check_function(name, fn, expected_fn, cases, hint, rtol=1e-6, atol=1e-9,
                   against="the NumPy reference", mistakes=(), atol_scale=None):
    """ compare fn(*args) with expected_fn(*args) for every args in cases; True, or ExerciseFailed

    name: what is printed; cases: a list of argument tuples (inputs are copied before each call,
    so an answer that writes into its inputs cannot change the expected answer); hint: one sentence
    telling the commonest mistake; against: what computes the expected answer, for the printed lines.
    Outputs are compared as float arrays with rtol/atol. mistakes: (wrong(*args), hint) pairs; when
    a failing answer equals one of these typical wrong answers, its hint names the mistake.
    atol_scale(args, expected) -> a number that multiplies atol in that case (for outputs whose
    rounding error grows with the size of the inputs).
    """
    for k, args in enumerate(cases):
        expected = np.asarray(expected_fn(*_copy(args)), dtype=float)
        try:
            got = fn(*_copy(args))
        except NotImplementedError:
            raise ExerciseFailed(f"{name}: not implemented yet (replace the "
                                 "`raise NotImplementedError` with your code)") from None
        got = np.asarray(_to_numpy(got), dtype=float)
        tol = dict(rtol=rtol, atol=atol * (atol_scale(args, expected) if atol_scale else 1.0))
        if got.shape != expected.shape or not np.allclose(got, expected, **tol):
            raise ExerciseFailed(
                f"{name}: case {k + 1} of {len(cases)} differs from {against}.\n"
                f"  inputs:   {_describe(args, _names(fn, len(args)))}\n"
                f"  expected: {_short(expected)}\n"
                f"  got:      {_short(got)}\n"
                f"  hint: {_named_mistake(fn, got, args, cases, mistakes, tol) or hint}")
    print(f"{name}: passed, {len(cases)} random cases agree with {against}")
    return True


def _named_mistake(fn, got, args, cases, mistakes, tol):
    """ the hint of the typical wrong answer that `got` equals on the failing case; when several
    do, the one that also agrees with fn on every other case (or the first); None if none does """
    def agrees(wrong, a, value):
        with np.errstate(all="ignore"):
            try:
                w = np.asarray(_to_numpy(wrong(*_copy(a))), dtype=float)
            except Exception:          # a wrong formula may fail where the answer did not
                return False
        return w.shape == value.shape and np.allclose(value, w, equal_nan=True, **tol)

    matching = [(wrong, hint) for wrong, hint in mistakes if agrees(wrong, args, got)]
    if len(matching) > 1:
        answers = []
        for a in cases:
            try:
                with np.errstate(all="ignore"):
                    answers.append((a, np.asarray(_to_numpy(fn(*_copy(a))), dtype=float)))
            except Exception:
                break
        everywhere = [(w, h) for w, h in matching if all(agrees(w, a, v) for a, v in answers)]
        matching = everywhere or matching
    return matching[0][1] if matching else None


def _copy(args):
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)


def _to_numpy(x):
    """ torch tensors (if the learner used torch) become NumPy arrays """
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


def _names(fn, n):
    """ the names of fn's n positional parameters, or None (e.g. for fn(*args)) """
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if len(params) != n or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                               for p in params):
        return None
    return [p.name for p in params]


def _describe(args, names=None):
    """ every input by name: arrays with their shape, numbers and tuples with their value """
    names = names or [f"argument {k}" for k in range(len(args))]
    return ", ".join(_one(name, a) for name, a in zip(names, args))


def _one(name, a):
    """ an array by its shape (a short integer array, such as a layout, by its values too) """
    if not isinstance(a, np.ndarray):
        return f"{name} = {a!r}"
    if a.dtype.kind in "iu" and a.ndim == 1 and a.size <= 16:
        return f"{name} = {a.tolist()}"
    return f"{name} {a.shape}"


def _short(x):
    """ shape and the first few numbers of an array """
    flat = np.ravel(x)
    head = np.array2string(flat[:4], precision=6, separator=", ")
    return f"shape {x.shape}, values {head}{' ...' if flat.size > 4 else ''}"
