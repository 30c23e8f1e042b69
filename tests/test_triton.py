"""The Triton backend (dino_ref/triton_kernels.py) against the NumPy reference and the golden cases.

Without a GPU the kernels run on CPU tensors through Triton's interpreter: conftest.py sets
TRITON_INTERPRET=1 before anything imports triton (Triton decides at definition time, for its own
library functions too). With a GPU the same tests run the compiled kernels on CUDA tensors.
Small shapes with small blocks (`geometry`) exercise several D blocks per row with tails, several
teacher blocks and row groups, and several finalize tiles.
"""
import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from dino_ref import DINOLoss, numpy_ref  # noqa: E402
from dino_ref import loss as loss_module  # noqa: E402
from dino_ref.readable import dino_cross_entropy_readable, teacher_targets  # noqa: E402
from golden_cases import golden_kwargs  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (conftest.py sets it unless told otherwise)",
                allow_module_level=True)
from dino_ref import triton_kernels  # noqa: E402

pytestmark = pytest.mark.triton
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# (T, S, B, D, geometry): geometry overrides the launch plan so small shapes still split rows
# into several D blocks with a tail (student and teacher), the teacher rows into several groups,
# and the finalize step into several row tiles
SHAPES = [
    (2, 5, 3, 37, dict(block=8, teacher_block=16, target_teacher_programs=9, final_rows=4)),
    (1, 3, 2, 50, dict(block=16, final_rows=2)),                         # T = 1
    (3, 3, 2, 40, dict(block=16, teacher_block=16)),                     # S = T
    (4, 6, 1, 130, dict(block=32, teacher_block=64)),                    # T = 4, B = 1
    (2, 4, 2, 1, None),                                                  # D = 1
]
# fewer programs, still several blocks per row with a tail, for the dtype and offset tests
SMALL = (2, 4, 2, 37, dict(block=16, teacher_block=16, target_teacher_programs=6, final_rows=2))


def batch(T, S, B, D, seed=0, dtype=torch.float64, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(D, generator=gen) + 0.7 * torch.randn(T, B, D, generator=gen)
    student = 2 * torch.randn(S, B, D, generator=gen) + offset
    return teacher.to(DEVICE, dtype), student.to(DEVICE, dtype)


@pytest.fixture
def with_geometry(monkeypatch):
    """ make the module's calls use a test geometry """
    def use(geometry):
        monkeypatch.setattr(triton_kernels, "dino_loss",
                            lambda *a, **k: triton_kernels.dino_loss_with_geometry(
                                *a, geometry=geometry, **k))
    return use


def rel_err(actual, expected, scale=1e-300):
    """ max |actual - expected| over max(max |expected|, scale): a gradient that is zero in exact
    arithmetic (D = 1) is compared on its natural scale, not on 0 """
    expected = np.asarray(expected, dtype=np.float64)
    return np.abs(np.asarray(actual, dtype=np.float64) - expected).max() / max(np.abs(expected).max(), scale)


def grad_scale(T, S, B, tau_s=0.1):
    """ the size of one term of dL/ds: n_v / (n B tau_s), n_v <= T """
    return T / ((T * S - min(T, S)) * B * tau_s)


# golden cases and the NumPy reference ------------------------------------------------------
def test_golden_cases_float64(golden):
    loss_fn = DINOLoss(**golden_kwargs(golden), backend="triton").to(DEVICE).double()
    teacher = torch.tensor(golden["teacher"], device=DEVICE)
    for k, epoch in enumerate(golden["epochs"]):
        student = torch.tensor(golden["student"], device=DEVICE, requires_grad=True)
        loss = loss_fn(teacher, student, epoch=int(epoch))
        loss.backward()
        assert loss.dtype == torch.float64
        assert rel_err(loss.item(), golden["loss"][k]) < 1e-10
        assert rel_err(student.grad.cpu(), golden["grad_student"][k]) < 1e-10
        assert rel_err(loss_fn.center[0, 0].cpu(), golden["center"][k]) < 1e-10


@pytest.mark.parametrize("T,S,B,D,geometry,dtype",
                         [(*shape, torch.float64) for shape in SHAPES]
                         + [(*shape, torch.float32) for shape in (SMALL, SHAPES[3], SHAPES[4])])
def test_agrees_with_numpy_reference(T, S, B, D, geometry, dtype, with_geometry):
    """ two consecutive calls (the second with the updated center): loss, gradient, center """
    with_geometry(geometry)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    loss_fn = DINOLoss(D, student_temp=0.1, warmup_teacher_temp_epochs=4,
                       backend="triton").to(DEVICE, dtype)
    ref = numpy_ref.DINOLoss(D, student_temp=0.1, warmup_teacher_temp_epochs=4)
    for call, epoch in enumerate([1, 2.5]):
        teacher, student = batch(T, S, B, D, seed=call, dtype=dtype)
        student.requires_grad_(True)
        loss = loss_fn(teacher, student, epoch=epoch)
        loss.backward()
        expected = ref(teacher.double().cpu().numpy(), student.detach().double().cpu().numpy(), epoch=epoch)
        assert abs(loss.item() - expected) <= tol * max(1.0, abs(expected)), (loss.item(), expected)
        grad = ref.backward()
        assert student.grad.dtype == dtype
        assert rel_err(student.grad.cpu(), grad, grad_scale(T, S, B)) < (1e-12 if dtype == torch.float64 else 1e-5)
        assert rel_err(loss_fn.center[0, 0].cpu(), ref.center[0, 0]) < tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_output_dimension_gives_zero_loss_and_gradient(dtype):
    """ one class: P_t = P_s = 1, so the loss is 0 and each gradient term cancels: exactly on the
    CPU; on a GPU the compiler may contract z = (t - c) / tau into an FMA in one kernel and not in
    another, so a term can be off by an ulp of its size """
    loss_fn = DINOLoss(1, student_temp=0.1, warmup_teacher_temp_epochs=4, backend="triton").to(DEVICE, dtype)
    for call, epoch in enumerate([1, 2.5]):
        teacher, student = batch(2, 4, 2, 1, seed=call, dtype=dtype)
        student.requires_grad_(True)
        loss = loss_fn(teacher, student, epoch=epoch)
        loss.backward()
        assert loss.item() == 0.0
        eps = torch.finfo(dtype).eps
        assert student.grad.abs().max().item() <= 16 * eps * grad_scale(2, 4, 2)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_and_hyperparameters_agree_with_numpy(seed, with_geometry):
    """ seeded random T, S, B, D, block sizes, temperatures, momentum, epoch; float64, two calls """
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 4))
    S, B, D = int(rng.integers(max(T, 2), 6)), int(rng.integers(1, 4)), int(rng.integers(1, 150))
    block = max(int(rng.choice([8, 16, 32])), 1 << (-(-D // 5) - 1).bit_length())  # <= 5 blocks a row
    with_geometry(dict(block=block, teacher_block=int(rng.choice([16, 64])),
                       target_teacher_programs=int(rng.integers(1, 12)),
                       final_rows=int(rng.choice([1, 2, 4, 128]))))
    kw = dict(warmup_teacher_temp=float(rng.uniform(0.02, 0.08)), teacher_temp=float(rng.uniform(0.04, 0.1)),
              warmup_teacher_temp_epochs=int(rng.integers(0, 5)), student_temp=float(rng.uniform(0.05, 0.5)),
              center_momentum=float(rng.uniform(0.5, 1.0)))
    loss_fn = DINOLoss(D, backend="triton", **kw).to(DEVICE).double()
    ref = numpy_ref.DINOLoss(D, **kw)
    for call in range(2):
        epoch = float(rng.uniform(0, 6))
        teacher, student = batch(T, S, B, D, seed=100 * seed + call)
        student.requires_grad_(True)
        loss = loss_fn(teacher, student, epoch=epoch)
        loss.backward()
        expected = ref(teacher.cpu().numpy(), student.detach().cpu().numpy(), epoch=epoch)
        assert abs(loss.item() - expected) <= 1e-12 * max(1.0, abs(expected))
        assert rel_err(student.grad.cpu(), ref.backward()) < 1e-12
        assert rel_err(loss_fn.center[0, 0].cpu(), ref.center[0, 0]) < 1e-12


def test_no_grad_call_gives_the_same_loss(with_geometry):
    T, S, B, D, geometry = SHAPES[2]
    with_geometry(geometry)
    teacher, student = batch(T, S, B, D)
    with torch.no_grad():
        a = DINOLoss(D, backend="triton").to(DEVICE).double()(teacher, student)
    b = DINOLoss(D, backend="triton").to(DEVICE).double()(teacher, student.requires_grad_(True))
    assert a.item() == b.item()


# float32 accuracy under a shared offset, half precision ------------------------------------
@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_float32_shift_invariant(offset, with_geometry):
    """ the dot products are taken on max-shifted logits: no cancellation at offset 1000 """
    T, S, B, D, geometry = SMALL
    with_geometry(geometry)
    teacher, student = batch(T, S, B, D)
    truth = numpy_ref.dino_loss(teacher.cpu().numpy(), student.cpu().numpy(), np.zeros((1, 1, D)), 0.07, 0.1)
    loss = DINOLoss(D, warmup_teacher_temp_epochs=0, backend="triton").to(DEVICE)(
        teacher.float(), (student + offset).float())
    assert loss.item() >= 0
    assert abs(loss.item() - truth) < 2e-6 * truth


@pytest.mark.parametrize("dtype,eps", [(torch.bfloat16, 2.0 ** -7), (torch.float16, 2.0 ** -10)])
def test_half_precision_in_its_own_dtype(dtype, eps, with_geometry):
    """ read in bf16/fp16, computed in float32, gradient written in bf16/fp16 (the interpreter
    truncates instead of rounding: within one unit of the last place either way) """
    T, S, B, D, geometry = SMALL
    with_geometry(geometry)
    teacher, student = batch(T, S, B, D, dtype=dtype)
    student = (10 * student).requires_grad_(True)                 # sharp student softmax
    loss_fn = DINOLoss(D, backend="triton").to(DEVICE)
    loss = loss_fn(teacher, student, epoch=0)
    loss.backward()
    assert loss.dtype == torch.float32 and loss_fn.center.dtype == torch.float32
    assert student.grad.dtype == dtype and torch.isfinite(student.grad).all()
    t64, s64 = teacher.double().cpu().numpy(), student.detach().double().cpu().numpy()
    ref = numpy_ref.DINOLoss(D)
    expected = ref(t64, s64, epoch=0)                             # the same (rounded) inputs
    assert abs(loss.item() - expected) < 1e-5 * expected
    g_ref = ref.backward()
    err = np.abs(student.grad.double().cpu().numpy() - g_ref)
    assert (err <= eps * np.abs(g_ref) + 1e-6 * np.abs(g_ref).max()).all(), err.max()
    assert rel_err(loss_fn.center[0, 0].cpu(), ref.center[0, 0]) < 1e-6


# gradients and the center ---------------------------------------------------------------
def test_teacher_gets_no_gradient():
    teacher, student = batch(2, 3, 2, 8)
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    DINOLoss(8, backend="triton").to(DEVICE).double()(teacher, student).backward()
    assert teacher.grad is None and student.grad is not None


def test_second_order_autograd_matches_the_readable_form():
    """ create_graph=True: backward uses differentiable torch ops; Hessian and gradient penalty """
    T, S, B, D = 2, 3, 2, 5
    teacher, student = batch(T, S, B, D)
    center = 0.1 * torch.randn(1, 1, D, dtype=torch.float64).to(DEVICE)
    loss_fn = DINOLoss(D, backend="triton").to(DEVICE).double()

    def fused(s):
        loss_fn.center.copy_(center)
        return loss_fn(teacher, s, epoch=3, update_center=False)

    def readable(s):
        return dino_cross_entropy_readable(teacher_targets(teacher, center, loss_fn.teacher_temperature(3)), s, 0.1)

    H = torch.autograd.functional.hessian(fused, student)
    H_readable = torch.autograd.functional.hessian(readable, student)
    assert H.abs().max() > 0.1
    torch.testing.assert_close(H, H_readable, rtol=1e-10, atol=1e-12)
    s = student.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fused(s), s, create_graph=True)
    (g_first,) = torch.autograd.grad(fused(s), s)                 # the kernel's gradient
    # the double-backward graph and the kernel round differently (GPU FMAs): ~1e-15 absolute
    torch.testing.assert_close(g.detach(), g_first, rtol=1e-12, atol=1e-14)


def test_retained_graph_gives_the_same_gradient_twice():
    teacher, student = batch(2, 4, 2, 16)
    student.requires_grad_(True)
    loss = DINOLoss(16, backend="triton").to(DEVICE).double()(teacher, student)
    loss.backward(retain_graph=True)
    first = student.grad.clone()
    student.grad = None
    (2 * loss).backward()
    torch.testing.assert_close(student.grad, 2 * first, rtol=1e-15, atol=0)


def test_center_update_between_forward_and_backward_leaves_the_gradient():
    """ backward uses the center of its forward (a copy), not the buffer's value at backward time """
    teacher, student = batch(2, 3, 2, 16)
    loss_fn = DINOLoss(16, backend="triton").to(DEVICE).double()
    s1, s2 = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    loss_fn(teacher, s1, update_center=False).backward()
    loss = loss_fn(teacher, s2, update_center=False)
    loss_fn.update_center(10 * teacher)                           # between forward and backward
    loss.backward()
    assert loss_fn.center.abs().max() > 0.1
    torch.testing.assert_close(s2.grad, s1.grad, rtol=0, atol=0)


@pytest.mark.parametrize("S,B,D", [(12, 64, 65536), (12, 256, 65536), (10, 32, 1024), (3, 1, 100),
                                   (4, 2, 1), (2, 1024, 4096), (2, 1, 2 ** 21)])
def test_launch_plan_covers_each_row_once(S, B, D):
    """ student blocks, teacher blocks, teacher row groups and finalize row tiles each tile their
    range with no empty piece; the finalize tile holds every block of its rows """
    T = 2
    p = triton_kernels.plan(S, B, D, T)
    assert (p["n_blk"] - 1) * p["block"] < D <= p["n_blk"] * p["block"]
    assert (p["n_dblk"] - 1) * p["teacher_block"] < D <= p["n_dblk"] * p["teacher_block"]
    assert (p["n_groups"] - 1) * p["rows_per_group"] < T * B <= p["n_groups"] * p["rows_per_group"]
    assert (p["n_row_programs"] - 1) * p["final_rows"] < S * B <= p["n_row_programs"] * p["final_rows"]
    assert p["n_blk"] <= triton_kernels.MAX_BLOCKS
    assert p["final_rows"] * max(2, p["n_blk"]) <= max(triton_kernels.FINAL_TILE, 2 * p["n_blk"])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf: NaN loss
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_teacher_row_keeps_the_center_per_dimension(bad):
    D = 8
    teacher, student = batch(2, 4, 3, D)
    loss_fn = DINOLoss(D, backend="triton").to(DEVICE).double()
    loss_fn(teacher, student)
    before = loss_fn.center.clone()
    poisoned = teacher.clone()
    poisoned[1, 2, 3] = bad
    loss_fn(poisoned, student)
    assert torch.isfinite(loss_fn.center).all()
    assert loss_fn.center[0, 0, 3] == before[0, 0, 3]
    keep = torch.arange(D, device=DEVICE) != 3
    expected = 0.9 * before + 0.1 * poisoned.mean(dim=(0, 1))
    torch.testing.assert_close(loss_fn.center[..., keep], expected[..., keep], rtol=1e-14, atol=1e-15)


def test_update_center_false_then_update_center_equals_one_call():
    teacher, student = batch(2, 4, 6, 24)
    full = DINOLoss(24, backend="triton").to(DEVICE).double()
    full_loss = full(teacher, student, epoch=1)
    deferred = DINOLoss(24, backend="triton").to(DEVICE).double()
    losses = [deferred(teacher[:, a:b], student[:, a:b], epoch=1, update_center=False) * (b - a)
              for a, b in [(0, 4), (4, 6)]]
    assert not deferred.center.any()                              # untouched
    deferred.update_center(teacher)
    torch.testing.assert_close(deferred.center, full.center, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(sum(losses) / 6, full_loss, rtol=1e-13, atol=0)


def test_same_numbers_as_the_eager_backend_float32():
    teacher, student = batch(2, 6, 4, 64, dtype=torch.float32)
    results = []
    for backend in ("eager", "triton"):
        loss_fn = DINOLoss(64, backend=backend).to(DEVICE)
        s = student.clone().requires_grad_(True)
        losses = [loss_fn(teacher, s, epoch=e) for e in range(2)]
        sum(losses).backward()
        results.append((torch.stack(losses), s.grad, loss_fn.center))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# the CUDA build, without a GPU ---------------------------------------------------------
def test_kernels_compile_for_an_h200():
    """ every launch of a forward+backward compiles to sm_90 machine code with Triton's CUDA
    backend (no GPU needed; the interpreter above checks the numbers, this the GPU build) """
    import pathlib
    import subprocess
    import sys

    import triton
    tools = pathlib.Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    if not (tools / "ptxas").exists() or not (tools / "cuobjdump").exists():
        pytest.skip("this triton has no CUDA backend (ptxas, cuobjdump)")
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    out = subprocess.run([sys.executable, str(root / "tools" / "compile_triton_kernels.py"), "--arch", "90",
                          "--dtypes", "float32", "bfloat16", "float64"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    compiled = [line for line in out.stdout.splitlines() if line.startswith("ok ")]
    assert len(compiled) == 12, out.stdout
    usage = [line for line in compiled if "STACK:" in line and "float64" not in line]  # cuobjdump's
    assert usage, out.stdout
    assert all("STACK:0 " in line for line in usage), out.stdout                       # no spills


# backend selection ---------------------------------------------------------------------
def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend must be"):
        DINOLoss(8, backend="cuda")


def test_triton_backend_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    loss_fn = DINOLoss(8, backend="triton")
    before = loss_fn.center.clone()
    teacher, student = (x.cpu() for x in batch(2, 3, 2, 8, dtype=torch.float32))
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        loss_fn(teacher, student)
    assert torch.equal(loss_fn.center, before)


def test_triton_backend_without_triton_raises(monkeypatch):
    monkeypatch.setattr(loss_module, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="needs the triton package"):
        DINOLoss(8, backend="triton")
    DINOLoss(8, backend="auto")                                   # "auto" falls back silently


@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_cpu_tensors_take_the_eager_path(backend, monkeypatch):
    """ "auto" and "eager" never launch a kernel on CPU tensors, interpreter or not """
    def fail(*args, **kwargs):
        raise AssertionError("the Triton path was taken")
    monkeypatch.setattr(triton_kernels, "dino_loss", fail)
    teacher, student = (x.cpu() for x in batch(2, 3, 2, 8, dtype=torch.float32))
    assert torch.isfinite(DINOLoss(8, backend=backend)(teacher, student))


@cuda_only
@pytest.mark.parametrize("dtype,expected", [(torch.float32, True), (torch.bfloat16, True),
                                            (torch.float64, False)])
def test_auto_takes_triton_on_cuda_below_float64(dtype, expected, monkeypatch):
    calls = []
    original = triton_kernels.dino_loss
    monkeypatch.setattr(triton_kernels, "dino_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    teacher, student = batch(2, 3, 2, 8, dtype=dtype)
    DINOLoss(8).to(DEVICE)(teacher, student)
    assert bool(calls) == expected


@cuda_only
def test_center_on_another_device_raises():
    teacher, student = batch(2, 3, 2, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match="center"):
        DINOLoss(8, backend="triton")(teacher, student)


# CUDA only: graph capture and memory ---------------------------------------------------
@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_capture_and_replay(dtype):
    """ forward + backward + center update captured once, replayed: the same numbers as plain calls """
    T, S, B, D = 2, 6, 8, 4096
    teacher, student = batch(T, S, B, D, dtype=dtype)
    student.requires_grad_(True)
    plain_fn, graph_fn = DINOLoss(D).to(DEVICE), DINOLoss(D).to(DEVICE)
    expected = []
    for _ in range(3):
        student.grad = None
        loss = plain_fn(teacher, student)
        loss.backward()
        expected.append((loss.detach().clone(), student.grad.clone(), plain_fn.center.clone()))
    # a graph kept alive keeps the student's AccumulateGrad node, made on the default stream: the
    # captured backward would then accumulate there, which capture forbids
    del loss

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):                               # warm-up: compile the kernels
        probe = DINOLoss(D).to(DEVICE)
        probe(teacher, student).backward()
    torch.cuda.current_stream().wait_stream(stream)
    student.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = graph_fn(teacher, student)
        static_loss.backward()
    graph_fn.center.zero_()                                       # capture ran nothing
    for k in range(3):
        student.grad.zero_()
        graph.replay()
        torch.cuda.synchronize()
        loss, grad, center = expected[k]
        assert torch.equal(static_loss, loss)
        assert torch.equal(student.grad, grad)
        assert torch.equal(graph_fn.center, center)


@cuda_only
def test_bfloat16_peak_memory_is_the_gradient_plus_small_scratch():
    """ no float32 copy of the student: growth <= the bf16 gradient + the kernels' scratch
    (per-row and per-block statistics, teacher column sums: O(S·B·D/block + T·B·D/1024 + 16·D)) """
    T, S, B, D = 2, 12, 64, 65536
    teacher, student = batch(T, S, B, D, dtype=torch.bfloat16)
    student.requires_grad_(True)
    loss_fn = DINOLoss(D).to(DEVICE)
    loss_fn(teacher, student).backward()                          # compile
    student.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    loss_fn(teacher, student).backward()
    torch.cuda.synchronize()
    growth = torch.cuda.max_memory_allocated() - before
    gradient = student.numel() * student.element_size()
    p = triton_kernels.plan(S, B, D, T)
    scratch = 4 * (2 * T * B * p["n_dblk"] + p["n_groups"] * D + 4 * S * B * p["n_blk"] + 2 * S * B + D
                   + p["n_row_programs"])
    assert growth <= gradient + scratch + 2 ** 20, (growth, gradient, scratch)   # + allocator rounding
