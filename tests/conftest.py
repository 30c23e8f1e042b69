import os

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels (tests/test_triton.py) run in Triton's CPU interpreter. Triton
# decides at import time, for its own library functions too, so the variable is set here, before
# anything imports triton. It changes nothing else: "auto" never takes Triton on CPU tensors.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
from golden_cases import GOLDEN_FILES
from hypothesis import HealthCheck, settings

# CI machines are slow and noisy: no per-example deadline; the number of cases is fixed
settings.register_profile("dino_ref", deadline=None, max_examples=150, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dino_ref"))

@pytest.fixture(params=GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def golden(request):
    return dict(np.load(request.param))
