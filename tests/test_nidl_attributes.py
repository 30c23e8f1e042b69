"""Code written for nidl.losses.DINOLoss that edits attributes between calls gets nidl's numbers.

nidl reads `teacher_temp`, `warmup_teacher_temp_epochs` and `teacher_temp_schedule` at call time:
an epoch e < warmup_teacher_temp_epochs takes teacher_temp_schedule[e] (built once, at
construction: linspace(tau_warm, tau_final, W)), any later epoch (and epoch=None) takes
teacher_temp. The comparison with nidl's own class runs when nidl 0.0.2 is installed
(`pip install --no-deps nidl==0.0.2`; its module is loaded from its file, since the package's
__init__ imports scikit-learn); the documented semantics are checked either way.
"""

import importlib.util
import os

import pytest
import torch

from dino_ref import DINOLoss

D = 32


def nidl_class():
    """ nidl.losses.DINOLoss, loaded from nidl/losses/dino.py alone (it needs only torch) """
    spec = importlib.util.find_spec("nidl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nidl is not installed (pip install --no-deps nidl==0.0.2): compared with "
                    "the documented semantics only")
    path = os.path.join(spec.submodule_search_locations[0], "losses", "dino.py")
    module_spec = importlib.util.spec_from_file_location("nidl_losses_dino", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.DINOLoss


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, D, generator=g).double(), torch.randn(5, 4, D, generator=g).double()


# each edit: (name, a function that edits a loss module, the epochs to call it at)
EDITS = [
    ("teacher_temp", lambda m: setattr(m, "teacher_temp", 0.03), [0, 3, 9, 10, 12, None]),
    ("schedule", lambda m: setattr(m, "teacher_temp_schedule", torch.linspace(0.05, 0.02, 10)),
     [0, 3, 9, 10, None]),
    ("shorter_warmup", lambda m: setattr(m, "warmup_teacher_temp_epochs", 4), [0, 2, 3, 4, 7, None]),
    ("longer_warmup_with_its_schedule",
     lambda m: (setattr(m, "warmup_teacher_temp_epochs", 15),
                setattr(m, "teacher_temp_schedule", torch.linspace(0.04, 0.07, 15))),
     [0, 9, 12, 14, 15, None]),
    ("schedule_then_teacher_temp",
     lambda m: (setattr(m, "teacher_temp_schedule", [0.03, 0.035, 0.05]),
                setattr(m, "warmup_teacher_temp_epochs", 3), setattr(m, "teacher_temp", 0.06)),
     [0, 1, 2, 3, None]),
]


def expected_temperature(module_before, edit, epoch):
    """ nidl's rule on a copy of the attributes: schedule[e] during the warmup, else teacher_temp """
    class Attrs:                                                       # what nidl holds
        teacher_temp = module_before.teacher_temp
        warmup_teacher_temp_epochs = module_before.warmup_teacher_temp_epochs
        teacher_temp_schedule = module_before.teacher_temp_schedule
    attrs = Attrs()
    edit(attrs)
    if epoch is not None and epoch < attrs.warmup_teacher_temp_epochs:
        return float(torch.as_tensor(attrs.teacher_temp_schedule)[epoch])
    return float(attrs.teacher_temp)


@pytest.mark.parametrize("name,edit,epochs", EDITS, ids=[e[0] for e in EDITS])
def test_edited_attributes_follow_nidls_rule(name, edit, epochs):
    loss_fn = DINOLoss(D, warmup_teacher_temp_epochs=10).double()
    before = DINOLoss(D, warmup_teacher_temp_epochs=10)
    edit(loss_fn)
    for epoch in epochs:
        expected = expected_temperature(before, edit, epoch)
        assert loss_fn.teacher_temperature(epoch) == pytest.approx(expected, rel=1e-6, abs=0), epoch


@pytest.mark.parametrize("name,edit,epochs", EDITS, ids=[e[0] for e in EDITS])
def test_edited_attributes_give_nidls_losses(name, edit, epochs):
    NidlDINOLoss = nidl_class()
    ours = DINOLoss(D, warmup_teacher_temp_epochs=10).double()
    theirs = NidlDINOLoss(D, warmup_teacher_temp_epochs=10).double()
    edit(ours)
    edit(theirs)
    for step, epoch in enumerate(epochs):
        teacher, student = batch(step)
        expected = theirs(teacher, student, epoch=epoch)
        # nidl's schedule is a float32 tensor: its warmup temperatures carry float32 rounding
        torch.testing.assert_close(ours(teacher, student, epoch=epoch), expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(ours.center, theirs.center, rtol=1e-12, atol=0)


def test_the_issue_case_teacher_temp_after_construction_keeps_the_warmup_ramp():
    """ after loss.teacher_temp = 0.03, epoch 3 of a 30-epoch warmup still reads the ramp built at
    construction (0.04 -> 0.07), and epochs past the warmup read 0.03 """
    loss_fn = DINOLoss(D)
    loss_fn.teacher_temp = 0.03
    assert loss_fn.teacher_temperature(3) == pytest.approx(0.04 + 0.03 * 3 / 29, rel=1e-12)
    assert loss_fn.teacher_temperature(30) == loss_fn.teacher_temperature(None) == 0.03
    # a fractional epoch between two points of an assigned schedule: linear between them
    loss_fn.teacher_temp_schedule = [0.04, 0.06] + [0.07] * 28
    assert loss_fn.teacher_temperature(0.5) == pytest.approx(0.05, rel=1e-12)
    assert loss_fn.teacher_temperature(1) == 0.06


def test_assignments_that_cannot_be_honoured_fail_clearly():
    loss_fn = DINOLoss(D, warmup_teacher_temp_epochs=5)
    with pytest.raises(ValueError, match="teacher_temp must be a finite number >= 0"):
        loss_fn.teacher_temp = -0.1
    with pytest.raises(ValueError, match="teacher_temp must be a finite number >= 0"):
        loss_fn.teacher_temp = float("nan")
    with pytest.raises(ValueError, match="warmup_teacher_temp_epochs must be an integer >= 0"):
        loss_fn.warmup_teacher_temp_epochs = 2.5
    with pytest.raises(ValueError, match="teacher_temp_schedule must be a 1-D sequence"):
        loss_fn.teacher_temp_schedule = torch.tensor([0.04, -1.0])
    with pytest.raises(AttributeError, match="teacher_temp_schedule"):
        loss_fn.warmup_teacher_temp = 0.02
    # a warmup longer than its schedule: nidl raises IndexError at those epochs, here a ValueError
    loss_fn.warmup_teacher_temp_epochs = 8
    assert loss_fn.teacher_temperature(4) == pytest.approx(0.07)
    with pytest.raises(ValueError, match="has only 5 entries"):
        loss_fn.teacher_temperature(5)
    assert loss_fn.teacher_temperature(8) == 0.07
