"""Checkers for the exercises of notebook 10 (where the class token looks), see
dino_ref.exercises.

check_mass_threshold: the paper's 60 %-mass threshold of an attention map.
check_patch_jaccard: patch masks from pixel masks, and the Jaccard similarity of two patch sets.
"""

import numpy as np
import torch

from ..train.attention import jaccard, mass_threshold, patch_mask
from ._core import ExerciseFailed, check_function

__all__ = ["check_mass_threshold", "check_patch_jaccard"]


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


def _ranked_keep(a, mass, keep_rule, descending=True):
    """ rank each row of `a`, flag the ranked values with keep_rule(ranked values, mass), and put
    the flags back at the patches' own positions (what the typical wrong answers share) """
    order = np.argsort(-a if descending else a, axis=-1, kind="stable")
    keep = keep_rule(np.take_along_axis(a, order, axis=-1), mass)
    out = np.zeros_like(keep)
    np.put_along_axis(out, order, keep, axis=-1)
    return out


def _normalised(a):
    return a / a.sum(axis=-1, keepdims=True)


def _mistakes():
    """ typical wrong answers, each with the hint that names it """
    def unnormalised(a, mass):                   # cumulative raw values against `mass`
        return _ranked_keep(a, mass, lambda s, m: np.cumsum(s, axis=-1) - s < m)

    def without_crossing(a, mass):               # stops before the patch that reaches the mass
        return _ranked_keep(_normalised(a), mass, lambda s, m: np.cumsum(s, axis=-1) < m)

    def ascending(a, mass):                      # the weakest patches first
        return _ranked_keep(_normalised(a), mass, lambda s, m: np.cumsum(s, axis=-1) - s < m,
                            descending=False)

    def sorted_order(a, mass):                   # the kept flags left in sorted order
        s = -np.sort(-_normalised(a), axis=-1)
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


def _jaccard_reference(masks, kept, patch_size):
    m, k = torch.from_numpy(masks), torch.from_numpy(kept)
    return jaccard(k.bool(), patch_mask(m.bool(), patch_size)).numpy()


def _jaccard_cases(rng):
    """ (pixel masks (N, H, W) bool, kept patches (N, P) bool, patch size): random masks, patches
    exactly half object (counted as object), empty masks and empty kept sets (both empty: 1) """
    cases = []
    for n, side, p in [(4, 8, 2), (3, 12, 4), (5, 16, 4), (2, 6, 3)]:
        masks = rng.random((n, side, side)) < rng.uniform(0.2, 0.6, size=(n, 1, 1))
        kept = rng.random((n, (side // p) ** 2)) < 0.4
        cases.append((masks, kept, p))
    half = np.zeros((3, 4, 4), dtype=bool)                             # 2 x 2 patches of 2 x 2 pixels
    half[:, 0, :2] = True                                             # patch 0: 2 of its 4 pixels
    half[0, 2, 2:] = True                                             # image 0, patch 3: 2 of 4 too
    half[1] = False                                                   # no object, nothing kept: 1
    kept = np.array([[True, False, False, True], [False] * 4, [False, True, True, False]])
    cases.append((half, kept, 2))
    return cases


def _object_share(masks, p):
    """ (N, H, W) bool -> (N, P): the share of object pixels in each p x p patch, row by row """
    n, h, w = masks.shape
    return masks.reshape(n, h // p, p, w // p, p).mean(axis=(2, 4)).reshape(n, -1)


def _jaccard_mistakes():
    def strict_half(masks, kept, p):            # more than half, not at least half
        return _iou(kept, _object_share(masks, p) > 0.5)

    def any_pixel(masks, kept, p):              # one object pixel makes an object patch
        return _iou(kept, _object_share(masks, p) > 0)

    def column_major(masks, kept, p):           # the patch grid flattened column by column
        n, h, w = masks.shape
        share = _object_share(masks, p).reshape(n, h // p, w // p)
        return _iou(kept, share.transpose(0, 2, 1).reshape(n, -1) >= 0.5)

    def empty_zero(masks, kept, p):             # both empty scored 0
        return _iou(kept, _object_share(masks, p) >= 0.5, empty=0.0)

    def dice(masks, kept, p):                   # 2|A n B| / (|A| + |B|), the Dice score
        b = _object_share(masks, p) >= 0.5
        a = kept.astype(bool)
        total = a.sum(-1) + b.sum(-1)
        return np.where(total > 0, 2 * (a & b).sum(-1) / np.maximum(total, 1), 1.0)

    return [
        (strict_half, "a patch is object when *at least* half of its pixels are (>= 0.5, not > 0.5)"),
        (any_pixel, "a patch is object when at least half of its pixels are, not when any pixel is"),
        (column_major, "flatten the patch grid row by row (row-major, like the ViT's tokens): "
                       "patch (r, c) is number r * (W / p) + c"),
        (empty_zero, "when both sets are empty the two agree: the Jaccard is 1 there, not 0"),
        (dice, "this is the Dice score 2|A n B| / (|A| + |B|); the Jaccard is |A n B| / |A u B|"),
    ]


def _iou(kept, target, empty=1.0):
    a, b = kept.astype(bool), target.astype(bool)
    union = (a | b).sum(-1)
    return np.where(union > 0, (a & b).sum(-1) / np.maximum(union, 1), empty)


def check_patch_jaccard(fn):
    """ fn(masks (N, H, W) bool, kept (N, P) bool, patch_size) -> (N,) Jaccard similarity of each
    image's kept patches with its object patches (a patch is object when at least half of its
    pixels are; patches numbered row by row; 1 where both are empty); True, or ExerciseFailed """
    cases = _jaccard_cases(np.random.default_rng(1002))
    return check_function("patch_jaccard", fn, _jaccard_reference, cases, rtol=0.0, atol=1e-6,
                          against="dino_ref.train.attention.jaccard and patch_mask",  # float32 passes
                          mistakes=_jaccard_mistakes(),
                          hint="average each p x p block of the mask, call the patch object where "
                               "that is >= 0.5, flatten row by row, then |A n B| / |A u B| per "
                               "image (1 when both are empty)")
