"""pytest --nbval runs the notebooks in fresh kernels. On a machine where matplotlib has never
run, its first import builds a font cache and logs that on stderr, which would show up as an
unexpected output of the first cell; build the cache here, once, before any kernel starts."""
import matplotlib.font_manager  # noqa: F401
