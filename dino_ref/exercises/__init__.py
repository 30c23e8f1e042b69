"""Checkers for the notebooks' exercises: `check_<name>(fn)` compares a learner's function with
the NumPy reference (`dino_ref.numpy_ref`) on random cases and prints a pass, or raises
`ExerciseFailed` with the case that failed and a hint.

One module per notebook; everything is re-exported here, so a notebook calls
`from dino_ref.exercises import check_pair_count`.
"""

from ._core import ExerciseFailed, check_function
from .pairing import *          # noqa: F401,F403  notebook 01
from .sharpening import *       # noqa: F401,F403  notebook 02
from .centering import *        # noqa: F401,F403  notebook 03
from .loss import *             # noqa: F401,F403  notebook 04
from .training import *         # noqa: F401,F403  notebook 05
from .collapse import *         # noqa: F401,F403  notebook 06
from .ablations import *        # noqa: F401,F403  notebook 07
from .dinov2 import *           # noqa: F401,F403  notebook 08
from .engineering import *      # noqa: F401,F403  notebook 09
from .attention import *        # noqa: F401,F403  notebook 10

__all__ = ["ExerciseFailed", "check_function"]
for _module in (pairing, sharpening, centering, loss, training, collapse, ablations, dinov2,  # noqa: F405
                engineering, attention):
    __all__ += _module.__all__
