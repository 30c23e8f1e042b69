"""Both versions against numbers produced by the original authors' code (float64, rtol 1e-10)."""
import numpy as np
import torch

from dino_ref import DINOLoss, numpy_ref
from golden_cases import GOLDEN_FILES, golden_kwargs

RTOL = 1e-10


def assert_close(actual, expected, what):
    """ relative to the largest magnitude of the expected array """
    err = np.abs(np.asarray(actual) - expected).max() / max(np.abs(expected).max(), 1e-300)
    assert err < RTOL, f"{what}: relative error {err:.2e}"


def test_six_golden_cases_present():
    assert len(GOLDEN_FILES) == 6


def test_each_golden_case_holds_three_calls():
    """ the loops below compare every stored call: none may be empty """
    for path in GOLDEN_FILES:
        g = np.load(path)
        assert len(g["epochs"]) == 3, path.name
        for key in ["teacher_temp_used", "loss", "grad_student", "center"]:
            assert len(g[key]) == 3, (path.name, key)


def test_numpy_reference_matches_golden(golden):
    loss_fn = numpy_ref.DINOLoss(**golden_kwargs(golden))
    for k, epoch in enumerate(golden["epochs"]):
        assert loss_fn.teacher_temperature(int(epoch)) == golden["teacher_temp_used"][k]
        loss = loss_fn(golden["teacher"], golden["student"], epoch=int(epoch))
        assert_close(loss, golden["loss"][k], f"loss, call {k}")
        assert_close(loss_fn.backward(), golden["grad_student"][k], f"grad, call {k}")
        assert_close(loss_fn.center[0, 0], golden["center"][k], f"center, call {k}")


def test_torch_module_matches_golden(golden):
    loss_fn = DINOLoss(**golden_kwargs(golden)).double()
    teacher = torch.tensor(golden["teacher"])
    for k, epoch in enumerate(golden["epochs"]):
        student = torch.tensor(golden["student"], requires_grad=True)
        loss = loss_fn(teacher, student, epoch=int(epoch))
        loss.backward()
        assert loss.dtype == torch.float64
        assert_close(loss.item(), golden["loss"][k], f"loss, call {k}")
        assert_close(student.grad.numpy(), golden["grad_student"][k], f"grad, call {k}")
        assert_close(loss_fn.center[0, 0].numpy(), golden["center"][k], f"center, call {k}")


def test_torch_float32_close_to_golden(golden):
    """ the usual float32 setting: the center stays float32, loss within float32 rounding """
    loss_fn = DINOLoss(**golden_kwargs(golden))
    teacher = torch.tensor(golden["teacher"], dtype=torch.float32)
    student = torch.tensor(golden["student"], dtype=torch.float32)
    for k, epoch in enumerate(golden["epochs"]):
        loss = loss_fn(teacher, student, epoch=int(epoch))
        assert loss.dtype == torch.float32 and loss_fn.center.dtype == torch.float32
        np.testing.assert_allclose(loss.item(), golden["loss"][k], rtol=1e-5)
        np.testing.assert_allclose(loss_fn.center[0, 0].numpy(), golden["center"][k], rtol=1e-5, atol=1e-6)
