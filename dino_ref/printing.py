"""Numbers printed by the notebooks, rounded so that another machine prints the same digits."""

import math

__all__ = ["fmt"]


def fmt(x, digits, margin=1e-5):
    """ x with `digits` decimals, after checking that x is not near a rounding boundary

    Another CPU, BLAS or torch version may change the last bits of a result (float32 sums in
    another order move it by ~1e-6 relative); x may move by a relative `margin` (10x that) without
    changing the printed digits, or this raises ValueError: print fewer digits, or a boolean.
    """
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"fmt: {x} is not a finite number")
    scaled = abs(x) * 10 ** digits
    if abs(scaled - math.floor(scaled) - 0.5) <= margin * max(1.0, scaled):
        raise ValueError(f"fmt: {x!r} lies within a relative {margin:g} of a rounding boundary at "
                         f"{digits} decimals; print fewer digits")
    return f"{x:.{digits}f}"
