"""The loss on a CUDA device: the checks that only a GPU run can make (skipped without one).

* the golden cases in float64 through the eager path (what backend="auto" takes for float64);
* the Triton kernels in float32 and bfloat16 against the eager path in float64 on the same
  (rounded) inputs: loss, gradient and center over two calls, at uneven shapes (D not a multiple
  of any block, B and S odd) and with non-contiguous teacher and student tensors;
* no host synchronisation in a forward+backward (torch.cuda.set_sync_debug_mode("error"));
* a forward+backward captured in a CUDA graph and replayed on fresh inputs copied into the
  captured (non-contiguous) tensors gives the numbers of plain calls.

DINO_REF_CUDA_TESTS_ON_CPU=1 runs the first two groups on CPU tensors instead (the kernels under
Triton's interpreter, smaller shapes): a check of the tests themselves on a machine without a GPU.
"""
import os

import numpy as np
import pytest
import torch

from dino_ref import DINOLoss
from golden_cases import golden_kwargs

CUDA = torch.cuda.is_available()
ON_CPU = not CUDA and os.environ.get("DINO_REF_CUDA_TESTS_ON_CPU") == "1"
DEVICE = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.skipif(not (CUDA or ON_CPU), reason="needs a CUDA device")
cuda_only = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
if ON_CPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("DINO_REF_CUDA_TESTS_ON_CPU=1 needs TRITON_INTERPRET=1", allow_module_level=True)

# (T, S, B, D): uneven everywhere; the last ones split rows into many blocks with a tail
SHAPES = [(2, 5, 3, 1000), (1, 3, 2, 333), (3, 7, 5, 4099), (2, 11, 3, 65537)]
if ON_CPU:
    SHAPES = SHAPES[:2]
# ‖x − ref‖ / ‖ref‖ allowed for the gradient, and |loss − ref| / |ref| for the loss
GRAD_TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3}
LOSS_TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-5}


def norm_err(actual, expected):
    actual, expected = actual.double().cpu(), expected.double().cpu()
    assert torch.isfinite(actual).all()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-300)).item()


def make_inputs(T, S, B, D, dtype, seed, layout):
    """ teacher (T, B, D) and student (S, B, D) in `dtype`, and the leaf tensor whose .grad
    holds dL/ds (laid out as the student or not); layout "contiguous", "transposed" (views of
    (B, V, D) tensors) or "sliced" (the first D columns of (V, B, D + 5) tensors) """
    gen = torch.Generator().manual_seed(seed)
    t = (torch.randn(D, generator=gen) + 0.7 * torch.randn(T, B, D, generator=gen))
    s = 2 * torch.randn(S, B, D, generator=gen) + 3.0             # a shared offset as well
    t, s = t.to(DEVICE, dtype), s.to(DEVICE, dtype)
    if layout == "transposed":
        teacher = t.transpose(0, 1).contiguous().transpose(0, 1)
        leaf = s.transpose(0, 1).contiguous().requires_grad_(True)    # (B, S, D)
        student = leaf.transpose(0, 1)
    elif layout == "sliced":
        teacher = torch.cat([t, torch.randn(T, B, 5, device=DEVICE).to(dtype)], -1)[..., :D]
        leaf = torch.cat([s, torch.randn(S, B, 5, device=DEVICE).to(dtype)], -1).requires_grad_(True)
        student = leaf[..., :D]
    else:
        teacher, leaf = t, s.clone().requires_grad_(True)
        student = leaf
    assert layout == "contiguous" or not student.is_contiguous()   # (a (1, B, D) teacher may be)
    return teacher, student, leaf


def grad_of(leaf, layout, D):
    """ dL/ds as (S, B, D) from the leaf's gradient """
    if layout == "transposed":
        return leaf.grad.transpose(0, 1)
    if layout == "sliced":
        assert not leaf.grad[..., D:].any()
        return leaf.grad[..., :D]
    return leaf.grad


def test_golden_cases_float64_on_the_eager_path(golden):
    """ backend "auto" on float64 device tensors takes the eager path: the golden numbers to 1e-10 """
    loss_fn = DINOLoss(**golden_kwargs(golden)).to(DEVICE).double()
    teacher = torch.tensor(golden["teacher"], device=DEVICE)
    for k, epoch in enumerate(golden["epochs"]):
        student = torch.tensor(golden["student"], device=DEVICE, requires_grad=True)
        loss = loss_fn(teacher, student, epoch=int(epoch))
        loss.backward()
        assert loss.dtype == torch.float64 and loss.device.type == DEVICE
        for actual, expected in ((loss.detach(), golden["loss"][k]), (student.grad, golden["grad_student"][k]),
                                 (loss_fn.center[0, 0], golden["center"][k])):
            expected = torch.as_tensor(np.asarray(expected), dtype=torch.float64)
            err = (actual.cpu() - expected).abs().max() / expected.abs().max().clamp_min(1e-300)
            assert err < 1e-10, (k, err)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("T,S,B,D", SHAPES, ids=[f"{T}-{S}-{B}-{D}" for T, S, B, D in SHAPES])
def test_triton_against_eager_float64(T, S, B, D, dtype, layout):
    """ two calls (the second with the updated center, a warmup temperature): the Triton
    kernels in `dtype` against the eager path in float64 on the same rounded inputs """
    kw = dict(warmup_teacher_temp_epochs=4, student_temp=0.1, center_momentum=0.9)
    fast = DINOLoss(D, backend="triton", **kw).to(DEVICE)
    ref = DINOLoss(D, backend="eager", **kw).to(DEVICE).double()
    for call, epoch in enumerate([1, 2.5]):
        teacher, student, leaf = make_inputs(T, S, B, D, dtype, seed=10 * call + T + S, layout=layout)
        loss = fast(teacher, student, epoch=epoch)
        loss.backward()
        s64 = student.detach().double().requires_grad_(True)
        expected = ref(teacher.double(), s64, epoch=epoch)
        expected.backward()
        assert loss.dtype == torch.float32 and leaf.grad.dtype == dtype
        assert abs(loss.item() - expected.item()) <= LOSS_TOL[dtype] * abs(expected.item()), \
            (loss.item(), expected.item())
        assert norm_err(grad_of(leaf, layout, D), s64.grad) < GRAD_TOL[dtype]
        assert fast.center.dtype == torch.float32
        assert norm_err(fast.center, ref.center) < 1e-6


@cuda_only
@pytest.mark.parametrize("backend,dtype", [("triton", torch.float32), ("triton", torch.bfloat16),
                                           ("auto", torch.bfloat16), ("eager", torch.float32),
                                           ("auto", torch.float64)])
def test_no_host_synchronisation_in_a_step(backend, dtype):
    """ forward + backward + center update, then an SGD step on the student: nothing waits for
    the GPU (a synchronising CUDA call raises under sync debug mode "error") """
    T, S, B, D = 2, 6, 4, 4099
    teacher, student, leaf = make_inputs(T, S, B, D, dtype, seed=0, layout="contiguous")
    loss_fn = DINOLoss(D, backend=backend).to(DEVICE)

    def step():
        leaf.grad = None
        loss_fn(teacher, student, epoch=2).backward()
        with torch.no_grad():
            leaf.sub_(0.1 * leaf.grad)

    step()                                                        # compile the kernels
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    assert torch.isfinite(leaf).all()


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_cuda_graph_replays_fresh_inputs(dtype):
    """ capture forward + backward + center update on non-contiguous (transposed) inputs at an
    uneven shape; each replay reads new values copied into the captured tensors and gives the
    loss, gradient and center of a plain call on those values """
    T, S, B, D = 2, 7, 5, 4099
    layout = "transposed"
    teacher, student, leaf = make_inputs(T, S, B, D, dtype, seed=0, layout=layout)
    del student              # the view holds the leaf's AccumulateGrad node, made on the default stream
    plain_fn, graph_fn = DINOLoss(D).to(DEVICE), DINOLoss(D).to(DEVICE)
    fresh = [make_inputs(T, S, B, D, dtype, seed=k + 1, layout=layout) for k in range(3)]
    expected = []
    for t, s, lf in fresh:
        loss = plain_fn(t, s, epoch=1)
        loss.backward()
        expected.append((loss.detach().clone(), grad_of(lf, layout, D).clone(), plain_fn.center.clone()))
    # a graph kept alive keeps an AccumulateGrad node made on the default stream: the captured
    # backward would then accumulate there, which capture forbids
    del loss

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):                               # warm-up on a side stream
        for _ in range(2):
            leaf.grad = None
            DINOLoss(D).to(DEVICE)(teacher, leaf.transpose(0, 1), epoch=1).backward()
    torch.cuda.current_stream().wait_stream(stream)
    leaf.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        # the student view is made inside the capture, as a training step would: a view made
        # before it carries a backward node of the default stream
        static_loss = graph_fn(teacher, leaf.transpose(0, 1), epoch=1)
        static_loss.backward()
    graph_fn.center.zero_()                                       # capture ran nothing
    for (t, s, lf), (loss, grad, center) in zip(fresh, expected):
        with torch.no_grad():
            teacher.copy_(t)
            leaf.copy_(lf)
        leaf.grad.fill_(float("nan"))                             # every element is rewritten
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_loss, loss, rtol=1e-6, atol=0)
        torch.testing.assert_close(grad_of(leaf, layout, D), grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(graph_fn.center, center, rtol=1e-6, atol=1e-7)
