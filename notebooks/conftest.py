"""pytest --nbval runs the notebooks in fresh kernels, which inherit this process's environment.

On a machine where matplotlib has never run, its first import builds a font cache and logs that
on stderr, which would show up as an unexpected output of the first cell; build the cache here,
once, before any kernel starts.

torch's OpenMP threads spin-wait at every fork/join by default; as soon as another process
shares the cores they steal each other's time slices. Measured on the 2-core machine at load ~6:
60 trainer steps took 150-200 s wall (100 s CPU) that way, 28-33 s with OMP_WAIT_POLICY=PASSIVE
(20 s CPU) and 27-28 s with one thread, same results; it is how a training cell of the collapse
notebook ran past nbval's 600 s timeout. The kernels wait passively unless the
variable is already set (it must be set before a process loads torch).
"""
import os

import matplotlib.font_manager  # noqa: F401

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
