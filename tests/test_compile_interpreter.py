"""torch.compile of a loss call that takes the Triton path on CPU tensors (Triton's interpreter,
TRITON_INTERPRET=1, set by conftest.py without a GPU): the kernels run eagerly inside the compiled
function and give the uncompiled call's loss, gradient and center."""

import os

import pytest
import torch

pytest.importorskip("triton")
from dino_ref import DINOLoss  # noqa: E402

pytestmark = pytest.mark.triton


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="Triton's interpreter is off")
def test_compiled_call_under_the_interpreter_matches_the_plain_call():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 4, 64, generator=g), torch.randn(4, 4, 64, generator=g)
    results = []
    for compiled in (False, True):
        loss_fn = DINOLoss(64, backend="triton")
        s = student.clone().requires_grad_()
        loss = (torch.compile(loss_fn) if compiled else loss_fn)(teacher, s, epoch=0)
        loss.backward()
        results.append((loss.detach(), s.grad, loss_fn.center.clone()))
    for plain, compiled in zip(*results):
        assert torch.equal(plain, compiled)
