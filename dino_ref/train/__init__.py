"""A tiny DINO that trains on a laptop CPU (`python -m dino_ref.train --help`).

    config.py     Config (every field a --flag), the presets, the command-line parser
    loop.py       build(config) -> Run; train_step, the one DINO step; train(), the loop
    models.py     the CNN / ViT backbone, the DINO head, the EMA teacher
    data.py       procedural textures (ten labelled classes, made from a seed)
    objects.py    procedural objects (five shape kinds on textures, with their masks)
    multicrop.py  the DINO views: 2 global + N local crops
    knn.py        the weighted k-NN evaluation
    attention.py  the class token's attention against the object mask (Jaccard)
"""

from .config import PRESETS, Config, make_parser, parse_args, preset
from .loop import (Run, build, clip_gradients, cosine_schedule, main, plot_curves, set_schedules,
                   summary, train, train_step, views)
from .models import ema_update, make_student, make_teacher

__all__ = ["Config", "PRESETS", "preset", "make_parser", "parse_args", "Run", "build",
           "train_step", "train", "views", "set_schedules", "cosine_schedule", "clip_gradients",
           "ema_update", "make_student", "make_teacher", "summary", "plot_curves", "main"]
