"""Gradients: only the student receives one; gradcheck, second order, torch.func and forward-mode
AD of the fused form against the readable form and finite differences."""
import pytest
import torch

from dino_ref import DINOLoss
from dino_ref.fused import dino_cross_entropy
from dino_ref.readable import dino_cross_entropy_readable, teacher_targets
from logits import batch, targets_and_student

# torch's forward-mode and compile machinery script a few decompositions on first use
quiet_torch_internals = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def test_teacher_never_receives_gradient():
    teacher, student = batch()
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    DINOLoss(16)(teacher, student).backward()
    assert teacher.grad is None and student.grad is not None


def test_shared_weights_get_only_the_student_path_gradient():
    """ teacher and student from one parameter (dinov2#407): only the student branch counts """
    w = torch.randn(16, 16, requires_grad=True)
    x_t, x_s = torch.randn(2, 4, 16), torch.randn(6, 4, 16)
    DINOLoss(16)(x_t @ w, x_s @ w).backward()
    w_detached = w.detach().clone().requires_grad_(True)        # the teacher branch detached by hand
    DINOLoss(16)((x_t @ w_detached).detach(), x_s @ w_detached).backward()
    torch.testing.assert_close(w.grad, w_detached.grad, rtol=0, atol=0)


@pytest.mark.parametrize("T,S,B,D", [(1, 2, 3, 5), (2, 2, 2, 4), (2, 5, 3, 6), (3, 3, 2, 3), (4, 6, 1, 7)])
def test_gradcheck_fused(T, S, B, D):
    gen = torch.Generator().manual_seed(T * 100 + S)
    P_t = torch.softmax(torch.randn(T, B, D, dtype=torch.float64, generator=gen) / 0.3, -1)
    student = torch.randn(S, B, D, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: dino_cross_entropy(P_t, s, 0.2), (student,))


def test_gradcheck_module():
    loss_fn = DINOLoss(output_dim=5, warmup_teacher_temp_epochs=3).double()
    teacher = torch.randn(2, 3, 5, dtype=torch.float64)
    student = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: loss_fn(teacher, s, epoch=1, update_center=False), (student,))


def test_double_backward_passes_gradgradcheck():
    P_t, student = targets_and_student()
    student.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda s: dino_cross_entropy(P_t, s, 0.1), (student,))


def test_hessian_equals_the_readable_forms():
    P_t, student = targets_and_student()
    H = torch.autograd.functional.hessian(lambda s: dino_cross_entropy(P_t, s, 0.1), student)
    H_readable = torch.autograd.functional.hessian(
        lambda s: dino_cross_entropy_readable(P_t, s, 0.1), student)
    assert H_readable.abs().max() > 1.0                                # a zero Hessian would agree trivially
    torch.testing.assert_close(H, H_readable, rtol=1e-10, atol=1e-12)


def test_gradient_penalty_through_the_loss_equals_the_readable_forms():
    """ d/dw of |dL/dw|^2 for student logits s = x w (a penalty on the parameter gradient) """
    gen = torch.Generator().manual_seed(1)
    x_t, x_s = torch.randn(2, 3, 4, generator=gen).double(), torch.randn(5, 3, 4, generator=gen).double()
    w0 = torch.randn(4, 6, generator=gen).double()

    def penalty_grad(cross_entropy):
        w = w0.clone().requires_grad_(True)
        P_t = teacher_targets(x_t @ w, torch.zeros(1, 1, 6, dtype=torch.float64), 0.04)
        loss = cross_entropy(P_t, x_s @ w, 0.1)
        (g,) = torch.autograd.grad(loss, w, create_graph=True)
        (loss + g.pow(2).sum()).backward()
        return w.grad

    expected = penalty_grad(dino_cross_entropy_readable)
    torch.testing.assert_close(penalty_grad(dino_cross_entropy), expected, rtol=1e-10, atol=1e-13)


@quiet_torch_internals
def test_torch_func_grad_vmap_and_jvp_agree_with_the_fused_gradient():
    P_t, student = targets_and_student()
    loss_of = lambda s: dino_cross_entropy(P_t, s, 0.1)                # noqa: E731
    s = student.clone().requires_grad_(True)
    loss_of(s).backward()
    fused_grad = s.grad

    torch.testing.assert_close(torch.func.grad(loss_of)(student), fused_grad, rtol=1e-12, atol=1e-15)
    students = torch.stack([student, 2 * student])
    torch.testing.assert_close(torch.func.vmap(loss_of)(students),
                               torch.stack([loss_of(student), loss_of(2 * student)]), rtol=1e-12, atol=0)
    tangent = torch.randn_like(student)
    value, directional = torch.func.jvp(loss_of, (student,), (tangent,))
    torch.testing.assert_close(value, loss_of(student), rtol=1e-12, atol=0)
    torch.testing.assert_close(directional, (fused_grad * tangent).sum(), rtol=1e-10, atol=1e-14)


@quiet_torch_internals
def test_forward_mode_dual_tensor_gives_the_directional_derivative():
    import torch.autograd.forward_ad as fwAD
    teacher, student = torch.randn(2, 3, 5).double(), torch.randn(4, 3, 5).double()
    tangent = torch.randn_like(student)
    loss_fn = DINOLoss(5).double()
    s = student.clone().requires_grad_(True)
    loss_fn(teacher, s, update_center=False).backward()
    with fwAD.dual_level():
        loss = loss_fn(teacher, fwAD.make_dual(student, tangent), update_center=False)
        directional = fwAD.unpack_dual(loss).tangent
    torch.testing.assert_close(directional, (s.grad * tangent).sum(), rtol=1e-10, atol=1e-14)
