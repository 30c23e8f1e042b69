"""Cases where a drop-in loss could be silently wrong: second-order autograd, functorch and
forward-mode AD, half-precision modules, float32 under logit offsets, uneven micro-batches,
code written for nidl, facebookresearch/dino checkpoints, torch.compile, and error messages."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from dino_ref import DINOLoss, numpy_ref
from dino_ref.fused import dino_cross_entropy, fused_pass
from dino_ref.readable import dino_cross_entropy_readable, teacher_targets

# torch's forward-mode and compile machinery script a few decompositions on first use
quiet_torch_internals = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def targets_and_student(T=2, S=4, B=3, D=5, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    P_t = torch.softmax(torch.randn(T, B, D, generator=gen, dtype=dtype) / 0.07, dim=-1)
    return P_t, torch.randn(S, B, D, generator=gen, dtype=dtype)


# 1. second-order autograd, functorch, forward-mode AD ---------------------------------------
def test_double_backward_passes_gradgradcheck():
    P_t, student = targets_and_student()
    student.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda s: dino_cross_entropy(P_t, s, 0.1), (student,))


def test_hessian_equals_the_readable_forms():
    P_t, student = targets_and_student()
    H = torch.autograd.functional.hessian(lambda s: dino_cross_entropy(P_t, s, 0.1), student)
    H_ref = torch.autograd.functional.hessian(
        lambda s: dino_cross_entropy_readable(P_t, s, 0.1), student)
    assert H_ref.abs().max() > 1.0                                     # far from the zeros of old
    torch.testing.assert_close(H, H_ref, rtol=1e-10, atol=1e-12)


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
    batch = torch.stack([student, 2 * student])
    torch.testing.assert_close(torch.func.vmap(loss_of)(batch),
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


# 2. the center keeps its precision under module casts -----------------------------------------
@pytest.mark.parametrize("cast,from_float64", [
    (lambda m: m.half(), torch.float64), (lambda m: m.bfloat16(), torch.float64),
    (lambda m: m.to(torch.float16), torch.float64), (lambda m: m.float(), torch.float32)],
    ids=["half", "bfloat16", "to_float16", "float"])
def test_center_stays_float32_when_the_module_is_cast(cast, from_float64):
    assert cast(DINOLoss(8)).center.dtype == torch.float32
    assert cast(DINOLoss(8).double()).center.dtype == from_float64   # a float64 center stays


def test_double_and_float_set_the_center_dtype_and_state_dict_round_trips():
    loss_fn = DINOLoss(8).double()
    assert loss_fn.center.dtype == torch.float64
    loss_fn.center.fill_(1 / 3)
    half = DINOLoss(8).double().half()
    half.load_state_dict(loss_fn.state_dict(), strict=True)
    assert half.center.dtype == torch.float64 and torch.equal(half.center, loss_fn.center)
    moved = half.to("meta")
    assert moved.center.device.type == "meta" and moved.center.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_moving_average_does_not_stall_in_a_half_precision_module(dtype):
    """ momentum 0.999, teacher of ones: c = 1 - 0.999^5000 = 0.9933 (bfloat16 storage: 0.25) """
    loss_fn = DINOLoss(4, center_momentum=0.999).to(dtype)
    for _ in range(5000):
        loss_fn.update_center(torch.ones(2, 1, 4, dtype=dtype))
    torch.testing.assert_close(loss_fn.center, torch.full((1, 1, 4), 1 - 0.999 ** 5000),
                               rtol=1e-5, atol=0)


# 3. float32 accuracy when the logits share an offset -------------------------------------------
def test_float32_loss_is_shift_invariant():
    """ (T, S, B, D) = (2, 10, 8, 4096): error against float64 on the same float32 inputs """
    gen = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 8, 4096, generator=gen), torch.randn(10, 8, 4096, generator=gen)
    P_t = teacher_targets(teacher, torch.zeros(1, 1, 4096), 0.04)
    for offset in [0.0, 10.0, 100.0, 1000.0]:
        s = student + offset
        truth = dino_cross_entropy_readable(P_t.double(), s.double(), 0.1)
        for loss in [fused_pass(s, P_t, 0.1), fused_pass(s, P_t, 0.1, torch.empty_like(s))]:
            assert abs(loss.item() - truth.item()) < 2e-5, (offset, loss.item(), truth.item())


def test_float64_loss_is_shift_invariant():
    P_t, student = targets_and_student(T=2, S=6, B=4, D=64)
    base = dino_cross_entropy(P_t, student, 0.1)
    for offset in [10.0, 1e3, 1e4]:                                    # (s + offset rounds: 1e-12 at 1e4)
        torch.testing.assert_close(dino_cross_entropy(P_t, student + offset, 0.1), base,
                                   rtol=1e-12, atol=0)


@given(seed=st.integers(0, 2 ** 31), scale=st.sampled_from([1.0, 100.0, 1e4]),
       offset=st.sampled_from([0.0, 1e3, -1e5]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_one_output_dimension_gives_exactly_zero(seed, scale, offset, dtype):
    gen = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(2, 3, 1, generator=gen) + offset
    student = scale * torch.randn(5, 3, 1, generator=gen) + offset
    loss_fn = DINOLoss(1).to(dtype)
    assert loss_fn(teacher.to(dtype), student.to(dtype)).item() == 0.0


@given(seed=st.integers(0, 2 ** 31), T=st.integers(1, 3), extra=st.integers(0, 3),
       D=st.sampled_from([1, 2, 7]), scale=st.sampled_from([0.01, 1.0, 30.0, 1e3]),
       offset=st.sampled_from([0.0, 1e3]))
def test_loss_is_never_negative(seed, T, extra, D, scale, offset):
    """ peaked teacher and student on the same dimension: the loss is ~0 and must not dip below """
    S = max(T + extra, 2)
    gen = torch.Generator().manual_seed(seed)
    teacher = scale * torch.randn(T, 2, D, generator=gen) + offset
    student = torch.cat([teacher, scale * torch.randn(S - T, 2, D, generator=gen) + offset])
    for dtype in [torch.float32, torch.float64]:
        s = student.to(dtype).requires_grad_(True)
        assert DINOLoss(D).to(dtype)(teacher.to(dtype), s).item() >= 0.0


# 4. uneven micro-batches: weight b_micro / B -------------------------------------------------------
def accumulated_grads(model, x, splits, weight):
    """ one optimizer step over micro-batches of `splits` rows, each loss times weight(b, B) """
    model.zero_grad()
    loss_fn, teacher_outs, b0 = DINOLoss(16).double(), [], 0
    for b in splits:
        t = model(x[:2, b0:b0 + b]).detach()
        loss = loss_fn(t, model(x[:, b0:b0 + b]), epoch=1, update_center=False)
        (loss * weight(b, sum(splits))).backward()
        teacher_outs.append(t)
        b0 += b
    loss_fn.update_center(torch.cat(teacher_outs, dim=1))             # list inputs: concatenate
    return [p.grad.clone() for p in model.parameters()], loss_fn.center


@pytest.mark.parametrize("splits", [(5, 3), (6, 1, 1)])
def test_accumulation_over_uneven_micro_batches_equals_the_whole_batch(splits):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, sum(splits), 4, generator=gen).double()        # 2 global + 4 local crops
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 16).double()

    model.zero_grad()
    whole = DINOLoss(16).double()
    whole(model(x[:2]).detach(), model(x), epoch=1).backward()
    expected = [p.grad.clone() for p in model.parameters()]

    grads, center = accumulated_grads(model, x, splits, lambda b, B: b / B)   # the README recipe
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(center, whole.center, rtol=1e-12, atol=1e-15)
    # the former recipe, 1 / n_micro, is exact only for equal micro-batches: > 5 % off here
    naive, _ = accumulated_grads(model, x, splits, lambda b, B: 1 / len(splits))
    assert (naive[0] - expected[0]).norm() > 0.05 * expected[0].norm()


# 5. code written for nidl.losses.DINOLoss ----------------------------------------------------------
def test_zero_dim_tensor_hyperparameters_and_epochs_as_nidl_accepts():
    as_t = torch.tensor
    loss_fn = DINOLoss(16, warmup_teacher_temp=as_t(0.04), teacher_temp=as_t(0.07),
                       warmup_teacher_temp_epochs=5, student_temp=as_t(0.1), center_momentum=as_t(0.9))
    assert all(isinstance(getattr(loss_fn, name), float) for name in
               ["warmup_teacher_temp", "teacher_temp", "student_temp", "center_momentum"])
    teacher, student = torch.randn(2, 4, 16), torch.randn(6, 4, 16)
    for epoch in [torch.tensor(3), np.int64(3), np.float64(3.0), torch.tensor(3.0)]:
        assert loss_fn.teacher_temperature(epoch) == loss_fn.teacher_temperature(3)
        loss = loss_fn(teacher, student, epoch=epoch, update_center=False)
        assert torch.equal(loss, loss_fn(teacher, student, epoch=3, update_center=False))
        assert numpy_ref.DINOLoss(16).teacher_temperature(epoch) == numpy_ref.DINOLoss(16).teacher_temperature(3)


@pytest.mark.parametrize("W", [0, 1, 30])
def test_teacher_temp_schedule_is_built_as_nidl_builds_it(W):
    loss_fn = DINOLoss(8, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=W)
    expected = torch.linspace(0.04, 0.07, W)                           # nidl: linspace(warm, final, W)
    assert loss_fn.teacher_temp_schedule.shape == (W,)
    torch.testing.assert_close(loss_fn.teacher_temp_schedule, expected, rtol=0, atol=0)
    for e in range(W):                                                 # the same ramp, in float64
        assert loss_fn.teacher_temperature(e) == pytest.approx(expected[e].item(), abs=1e-7)


# 6. a facebookresearch/dino checkpoint -------------------------------------------------------------
def test_a_center_saved_as_1_by_D_loads_with_strict_true():
    center = torch.randn(1, 32)                                        # the original's (1, D) buffer
    loss_fn = DINOLoss(32)
    loss_fn.load_state_dict({"center": center}, strict=True)
    assert loss_fn.center.shape == (1, 1, 32) and torch.equal(loss_fn.center[0], center)
    with pytest.raises(RuntimeError, match="size mismatch"):
        DINOLoss(16).load_state_dict({"center": center}, strict=True)


# 7. clear errors -------------------------------------------------------------------------------------
def test_center_on_another_device_names_the_fix():
    teacher, student = torch.randn(2, 4, 8), torch.randn(6, 4, 8)
    on_meta = DINOLoss(8).to("meta")
    for call in [lambda: on_meta(teacher, student), lambda: on_meta.update_center(teacher),
                 lambda: on_meta.teacher_targets(teacher),
                 lambda: DINOLoss(8)(teacher.to("meta"), student.to("meta"))]:
        with pytest.raises(ValueError, match=r"loss_fn\.to\("):
            call()


def test_list_of_numpy_views_raises_the_libraries_error():
    with pytest.raises(ValueError, match="list of torch.Tensor.*ndarray"):
        DINOLoss(8)([np.zeros((4, 8))] * 2, torch.randn(6, 4, 8))


@pytest.mark.parametrize("version", ["torch", "numpy"])
def test_layout_mistakes_get_a_hint(version):
    loss_fn = DINOLoss(8) if version == "torch" else numpy_ref.DINOLoss(8)
    make = torch.randn if version == "torch" else (lambda *shape: np.random.default_rng(0).normal(size=shape))
    with pytest.raises(ValueError, match="swap"):                       # teacher and student swapped
        loss_fn(make(6, 4, 8), make(2, 4, 8))
    with pytest.raises(ValueError, match=r"transpose\(0, 1\)"):        # both (B, V, D)
        loss_fn(make(4, 2, 8), make(4, 6, 8))
    with pytest.raises(ValueError, match=r"student_out\.transpose\(0, 1\)"):
        loss_fn(make(2, 4, 8), make(4, 6, 8))


# 8. torch.compile of a training step with a per-iteration float epoch ------------------------------
def _compile_works():
    try:
        torch.compile(lambda x: x + 1, backend="eager")(torch.ones(1))
        return True
    except Exception:                                                  # no dynamo on this platform
        return False


@pytest.mark.skipif(not _compile_works(), reason="torch.compile is not available")
@quiet_torch_internals
def test_compiled_training_step_has_no_graph_break_and_few_recompiles():
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 8)
    loss_fn = DINOLoss(8, warmup_teacher_temp_epochs=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def forward(x, epoch):                                             # the step up to the loss
        return loss_fn(model(x[:2]).detach(), model(x), epoch=epoch)

    step = torch.compile(forward, backend="aot_eager", fullgraph=True)  # a graph break raises
    for it in range(100):
        loss = step(torch.randn(4, 3, 4), it / 20)                     # epochs 0.00 .. 4.95
        loss.backward()
        opt.step()
        opt.zero_grad()
    # 1 compile + <= 2 recompiles (a float seen once is a constant, then a symbol; e >= W)
    assert counters["stats"]["unique_graphs"] <= 3
    assert loss_fn.center.abs().sum() > 0


# 9. the CLI ------------------------------------------------------------------------------------------
def test_python_m_dino_ref_help_prints_help_without_running_the_demo():
    out = subprocess.run([sys.executable, "-m", "dino_ref", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout and "NumPy loss" not in out.stdout
