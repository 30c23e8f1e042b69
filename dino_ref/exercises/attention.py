"""Checkers for the exercises of notebook 10 (where the class token looks), see
dino_ref.exercises.

check_mass_threshold: the paper's 60 %-mass threshold of an attention map.
"""

import numpy as np
import torch

from ..train.attention import mass_threshold
from ._core import ExerciseFailed, check_function

__all__ = ["check_mass_threshold"]


def _reference(attention, mass):
    return mass_threshold(torch.from_numpy(attention), mass).numpy()


def _determined(attention, mass, margin=1e-6):
    """ whether the kept set is fixed beyond rounding: no two values of a row within `margin` of
    each other, and no cumulative share within `margin` of `mass` """
    a = attention / attention.sum(axis=-1, keepdims=True)
    s = -np.sort(-a, axis=-1)
    gaps_ok = np.all(s[..., :-1] - s[..., 1:] > margin)
    return bool(gaps_ok and np.all(np.abs(np.cumsum(s, axis=-1) - mass) > margin))


def _cases(rng):
    """ attention maps (..., P) and masses: rows of one head and of several heads, rows that sum to
    less than 1 (the class token's own share left out, as in the maps), a peaked row whose first
    patch alone holds the mass, and masses other than 0.6 """
    shapes_masses = [((4, 16), 0.6), ((3, 2, 64), 0.6), ((5, 9), 0.6), ((2, 16), 0.3),
                     ((2, 3, 16), 0.9), ((6, 25), 0.6)]
    cases = []
    while len(cases) < len(shapes_masses):
        shape, mass = shapes_masses[len(cases)]
        a = rng.dirichlet(np.full(shape[-1], 0.5), size=shape[:-1])
        a = a * rng.uniform(0.6, 0.98, size=shape[:-1] + (1,))      # rows sum to less than 1
        if _determined(a, mass):
            cases.append((a, mass))
    peaked = np.array([[0.7, 0.1, 0.05, 0.05], [0.05, 0.05, 0.1, 0.7]]) * 0.9
    cases.append((peaked, 0.6))
    return cases


def _mistakes():
    """ typical wrong answers, each with the hint that names it """
    def unnormalised(a, mass):                   # cumulative raw values against `mass`
        s = np.sort(a, axis=-1)[..., ::-1]
        before = np.cumsum(s, axis=-1) - s
        keep = before < mass
        order = np.argsort(-a, axis=-1, kind="stable")
        out = np.zeros_like(keep)
        np.put_along_axis(out, order, keep, axis=-1)
        return out

    def without_crossing(a, mass):               # stops before the patch that reaches the mass
        a = a / a.sum(axis=-1, keepdims=True)
        order = np.argsort(-a, axis=-1, kind="stable")
        s = np.take_along_axis(a, order, axis=-1)
        keep = np.cumsum(s, axis=-1) < mass
        out = np.zeros_like(keep)
        np.put_along_axis(out, order, keep, axis=-1)
        return out

    def ascending(a, mass):                      # the weakest patches first
        a = a / a.sum(axis=-1, keepdims=True)
        order = np.argsort(a, axis=-1, kind="stable")
        s = np.take_along_axis(a, order, axis=-1)
        keep = np.cumsum(s, axis=-1) - s < mass
        out = np.zeros_like(keep)
        np.put_along_axis(out, order, keep, axis=-1)
        return out

    def sorted_order(a, mass):                   # the kept flags left in sorted order
        a = a / a.sum(axis=-1, keepdims=True)
        s = -np.sort(-a, axis=-1)
        return np.cumsum(s, axis=-1) - s < mass

    def value_threshold(a, mass):                # patches above mass * the row's maximum
        return a >= mass * a.max(axis=-1, keepdims=True)

    return [
        (unnormalised, "normalise each row to sum 1 first: the class token's own share is left "
                       "out of the map, so a row sums to less than 1 and its raw cumulative sum "
                       "reaches the mass too late"),
        (without_crossing, "keep the patch whose value makes the cumulative mass reach the "
                           "threshold: a patch is kept while the mass ranked *above* it is below "
                           "the threshold"),
        (ascending, "sort in decreasing order: the kept set is the strongest patches"),
        (sorted_order, "the flags are in sorted order: put them back at the patches' own "
                       "positions (scatter by the sort's order)"),
        (value_threshold, "this keeps patches by value (above a fraction of the maximum); the "
                          "paper's threshold is on the cumulative *mass* of the sorted values"),
    ]


def check_mass_threshold(fn):
    """ fn(attention (..., P), mass) -> bool (..., P): per row (normalised to sum 1), the smallest
    set of patches, strongest first, whose attention together reaches `mass` (the paper keeps 60 %
    of the mass); True, or ExerciseFailed """
    cases = _cases(np.random.default_rng(1001))
    for a, mass in cases:                                            # a wrong type named first
        try:
            got = fn(a.copy(), mass)
        except NotImplementedError:
            raise ExerciseFailed("mass_threshold: not implemented yet (replace the "
                                 "`raise NotImplementedError` with your code)") from None
        got = got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got)
        if got.shape != a.shape:
            raise ExerciseFailed(f"mass_threshold: attention {a.shape} gave shape {got.shape}; "
                                 "return one flag per patch, the same shape as the attention")
        if not np.isin(got, (0, 1)).all():
            raise ExerciseFailed("mass_threshold: return flags (True/False or 1/0), not "
                                 f"values; got {np.ravel(got)[:4]} ...")
        break
    return check_function("mass_threshold", fn, _reference, cases, rtol=0.0, atol=0.0,
                          against="dino_ref.train.attention.mass_threshold",
                          mistakes=_mistakes(),
                          hint="per row: divide by the row's sum, sort the values in "
                               "decreasing order, keep a patch while the mass ranked above it is "
                               "below the threshold, and return the flags at the patches' own "
                               "positions")
