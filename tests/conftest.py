import os
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# CI machines are slow and noisy: no per-example deadline; the number of cases is fixed
settings.register_profile("dino_ref", deadline=None, max_examples=150, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dino_ref"))

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz"))


def golden_kwargs(g):
    """ the constructor arguments stored in a golden case """
    return dict(output_dim=int(g["output_dim"]), warmup_teacher_temp=float(g["warmup_teacher_temp"]),
                teacher_temp=float(g["teacher_temp"]),
                warmup_teacher_temp_epochs=int(g["warmup_teacher_temp_epochs"]),
                student_temp=float(g["student_temp"]), center_momentum=float(g["center_momentum"]))


@pytest.fixture(params=GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def golden(request):
    return dict(np.load(request.param))
