"""DINOv2's pieces: Sinkhorn-Knopp targets, KoLeo, the iBOT masked-patch loss.

Three agreements: the NumPy loops (`numpy_dinov2`) and the torch versions in float64 to 1e-10;
the torch versions and the authors' own functions (the `dinov2` package, installed with
`pip install --no-deps dinov2==0.0.1.dev2`) to 1e-5 relative in float32; and the places where the
two differ on purpose (overflow, one row, no process group, an antipodal pair). The uneven-shard
DDP checks are in test_dinov2_distributed.py.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dino_ref import DINOLoss, KoLeoLoss, iBOTPatchLoss, numpy_dinov2, sinkhorn_knopp
from dino_ref.common import view_pairs

SETTINGS = settings(max_examples=25, deadline=None)
RTOL_AUTHORS = 1e-5


@pytest.fixture(scope="module")
def authors():
    """ the authors' dinov2.loss module """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(
            "dinov2.loss", reason="the authors' package is absent: pip install --no-deps dinov2==0.0.1.dev2")


@pytest.fixture
def one_rank_group(tmp_path):
    """ a process group of one gloo rank: dinov2's iBOT Sinkhorn all-reduces without a guard """
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/init", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def cosine_logits(gen, N, K, dim=16):
    """ (N, K) logits as the DINO head makes them: cosines of unit vectors, in [-1, 1] """
    a = F.normalize(torch.randn(N, dim, generator=gen), dim=-1)
    w = F.normalize(torch.randn(K, dim, generator=gen), dim=-1)
    return a @ w.T


def random_masks(gen, B, N, counts=None):
    """ (B, N) bool masks; counts[b] masked patches in image b (random when None) """
    counts = counts or torch.randint(0, N + 1, (B,), generator=gen).tolist()
    masks = torch.zeros(B, N, dtype=torch.bool)
    for b, c in enumerate(counts):
        masks[b, torch.randperm(N, generator=gen)[:c]] = True
    return masks


def assert_relative(got, expected, rtol):
    """ |got - expected| <= rtol |expected| entry by entry (no absolute slack), and report it """
    got, expected = got.double(), expected.double()
    assert got.shape == expected.shape
    assert torch.isfinite(expected).all() and torch.isfinite(got).all()
    excess = (got - expected).abs() - rtol * expected.abs()
    assert (excess <= 0).all(), f"max relative difference {((got - expected).abs() / expected.abs()).max():.3g}"


# --- NumPy loops vs torch, float64 ------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), lead=st.sampled_from([(1,), (5,), (12,), (2, 3), (3, 4)]),
       K=st.integers(1, 9), tau=st.floats(0.02, 1.0), spread=st.floats(0.1, 60.0),
       n_iterations=st.integers(1, 4))
def test_sinkhorn_loops_equal_torch(seed, lead, K, tau, spread, n_iterations):
    """ t / tau_t of standard deviation `spread` (the loops' float64 exp holds e^-745 and above) """
    t = spread * tau * np.random.default_rng(seed).normal(size=(*lead, K))
    loops = numpy_dinov2.sinkhorn_knopp(t, tau, n_iterations)
    ours = sinkhorn_knopp(torch.tensor(t), tau, n_iterations)
    assert ours.dtype == torch.float64 and ours.shape == t.shape
    np.testing.assert_allclose(ours.numpy(), loops, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(loops.sum(-1), 1.0, rtol=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 10), D=st.integers(1, 6),
       eps=st.sampled_from([1e-8, 1e-4]))
def test_koleo_loops_equal_torch(seed, n, D, eps):
    x = np.random.default_rng(seed).normal(size=(n, D))
    xt = torch.tensor(x)
    x_hat = F.normalize(xt, dim=-1, eps=eps)
    from dino_ref.dinov2 import nearest_neighbours
    assert nearest_neighbours(x_hat).tolist() == numpy_dinov2.nearest_neighbours(x_hat.numpy()).tolist()
    ours = KoLeoLoss()(xt, eps=eps).item()
    assert ours == pytest.approx(numpy_dinov2.koleo_loss(x, eps), rel=1e-10, abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 5), N=st.integers(1, 6), K=st.integers(1, 7),
       tau_s=st.floats(0.05, 1.0))
def test_ibot_loops_equal_torch(seed, B, N, K, tau_s):
    gen = torch.Generator().manual_seed(seed)
    masks = random_masks(gen, B, N)
    s, logits = torch.randn(B, N, K, generator=gen).double(), torch.randn(B, N, K, generator=gen).double()
    t = F.softmax(logits / 0.07, dim=-1)
    loss_fn = iBOTPatchLoss(K, student_temp=tau_s).double()
    dense = loss_fn(s, t, masks).item()
    assert dense == pytest.approx(numpy_dinov2.ibot_loss_dense(s.numpy(), t.numpy(), masks.numpy(), tau_s),
                                  rel=1e-10, abs=1e-12)
    if masks.any():
        masked = loss_fn.forward_masked(s[masks], t[masks], masks).item()
        loops = numpy_dinov2.ibot_loss_masked(s[masks].numpy(), t[masks].numpy(), masks.numpy(), tau_s)
        assert masked == pytest.approx(loops, rel=1e-10, abs=1e-12)
        assert masked == pytest.approx(dense, rel=1e-10, abs=1e-12)   # the same L, two layouts
    center = np.zeros((1, 1, K))
    for step in range(2):
        loss_fn.update_center(logits[step % B:])
        center = numpy_dinov2.ibot_center_update(center, logits[step % B:].numpy(), 0.9)
    np.testing.assert_allclose(loss_fn.center.numpy(), center, rtol=1e-10, atol=1e-14)


def test_ibot_weights_count_every_image_once():
    """ a worked example: images with 1, 4 and 0 masked patches """
    masks = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    expected = [1.0, 0.25, 0.25, 0.25, 0.25]
    from dino_ref.dinov2 import mask_weights
    assert mask_weights(masks).tolist() == expected
    assert numpy_dinov2.mask_weights(masks.numpy()).tolist() == expected


# --- Sinkhorn-Knopp: properties ---------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), N=st.integers(1, 12), K=st.integers(1, 9), tau=st.floats(0.03, 0.5))
def test_sinkhorn_ignores_a_shift_per_prototype(seed, N, K, tau):
    """ adding a_k to every logit of prototype k scales row k of Q: the first row step undoes it """
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(N, K))
    base = sinkhorn_knopp(torch.tensor(t), tau)
    per_prototype = sinkhorn_knopp(torch.tensor(t + 50 * rng.normal(size=(1, K))), tau)
    torch.testing.assert_close(per_prototype, base, rtol=1e-9, atol=1e-15)


def test_sinkhorn_changes_with_a_shift_per_sample():
    """ why the overflow guard must not subtract each sample's max: adding a_b to every logit of
    sample b scales column b of Q BEFORE the first row step, so the 3-iteration result moves """
    t = cosine_logits(torch.Generator().manual_seed(10), 16, 8).double()
    shift = torch.zeros(16, 1, dtype=torch.float64)
    shift[0] = 0.1                                                    # sample 0 moved by 0.1
    moved = sinkhorn_knopp(t + shift, 0.05) - sinkhorn_knopp(t, 0.05)
    assert moved.abs().max() > 1e-3
    converged = sinkhorn_knopp(t + shift, 0.05, 200) - sinkhorn_knopp(t, 0.05, 200)
    assert converged.abs().max() < 1e-9                               # only the limit forgets it


def test_sinkhorn_marginals_after_each_iteration():
    """ columns sum to 1 (each target a distribution); prototype totals approach N/K """
    gen = torch.Generator().manual_seed(0)
    t = 3 * cosine_logits(gen, 64, 8).double()
    gaps = []
    for n in range(1, 6):
        P = sinkhorn_knopp(t, 0.05, n_iterations=n)                   # (N, K)
        torch.testing.assert_close(P.sum(-1), torch.ones(64, dtype=torch.float64), rtol=0, atol=1e-13)
        gaps.append((P.sum(0) * 8 / 64 - 1).abs().max().item())       # max_k |K/N sum_b P[b, k] - 1|
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps           # equipartition, closer each time


# --- agreement with the authors' functions, float32 -------------------------------------------------

def test_sinkhorn_equals_the_authors(authors):
    gen = torch.Generator().manual_seed(1)
    for case in range(40):
        N, K = torch.randint(1, 65, (2,), generator=gen).tolist()
        K = 3 * K
        tau = 0.04 + 0.06 * torch.rand((), generator=gen).item()
        t = cosine_logits(gen, N, K) if case % 2 else 0.5 * torch.randn(N, K, generator=gen)
        theirs = authors.DINOLoss(K).sinkhorn_knopp_teacher(t.clone(), tau)
        assert_relative(sinkhorn_knopp(t, tau), theirs, RTOL_AUTHORS)


def test_dinoloss_sinkhorn_targets_are_the_authors_over_all_views(authors):
    """ dinov2 runs Sinkhorn-Knopp on the T*B class tokens of both global views together """
    gen = torch.Generator().manual_seed(2)
    T, B, K = 2, 12, 96
    t = cosine_logits(gen, T * B, K).reshape(T, B, K)
    ours = DINOLoss(K, centering="sinkhorn").teacher_targets(t, epoch=0)        # tau_t(0) = 0.04
    theirs = authors.DINOLoss(K).sinkhorn_knopp_teacher(t.reshape(T * B, K), 0.04).reshape(T, B, K)
    assert_relative(ours, theirs, RTOL_AUTHORS)


def test_sinkhorn_is_finite_where_the_authors_overflow(authors):
    gen = torch.Generator().manual_seed(3)
    t = 10 * torch.randn(32, 64, generator=gen)                       # t / tau_t up to ~ 1e3: exp overflows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = authors.DINOLoss(64).sinkhorn_knopp_teacher(t.clone(), 0.04)
    assert torch.isnan(theirs).any()
    ours = sinkhorn_knopp(t, 0.04)
    exact = numpy_dinov2.sinkhorn_knopp(t.double().numpy(), 0.04)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.sum(-1), torch.ones(32), rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.double().numpy(), exact, rtol=0, atol=1e-5)


def test_sinkhorn_stays_accurate_where_the_authors_lose_digits(authors):
    """ finite but off: dinov2 divides exp(t / tau_t) by its total first, so a prototype that every
    sample scores 4 below the top logit lands in subnormal floats (e^-100 ~ 4e-44) and comes back
    from the row step with few correct digits; ours does not """
    gen = torch.Generator().manual_seed(4)
    t = 0.5 * torch.randn(16, 8, generator=gen)
    t[:, 0] = -1.5 + 0.01 * torch.randn(16, generator=gen)           # a prototype nobody picks
    t[0, 1] = 2.5                                                     # the top logit: 100 tau_t above
    theirs = authors.DINOLoss(8).sinkhorn_knopp_teacher(t.clone(), 0.04)
    assert torch.isfinite(theirs).all()
    exact = torch.from_numpy(numpy_dinov2.sinkhorn_knopp(t.double().numpy(), 0.04))
    ours_err = ((sinkhorn_knopp(t, 0.04).double() - exact).abs() / exact).max().item()
    theirs_err = ((theirs.double() - exact).abs() / exact).max().item()
    assert ours_err < 1e-5 and theirs_err > 1e-3, (ours_err, theirs_err)


def test_ibot_sinkhorn_equals_the_authors_and_runs_without_a_group(authors, one_rank_group):
    gen = torch.Generator().manual_seed(5)
    for M, K in [(1, 8), (7, 33), (40, 130)]:
        t = cosine_logits(gen, M, K)
        theirs = authors.iBOTPatchLoss(K).sinkhorn_knopp_teacher(t.clone(), 0.05, torch.tensor([M]))
        ours = iBOTPatchLoss(K).sinkhorn_knopp_teacher(t, 0.05, torch.tensor([M]))
        assert_relative(ours, theirs, RTOL_AUTHORS)


def test_the_authors_ibot_sinkhorn_needs_a_process_group(authors):
    assert not dist.is_initialized()
    t = torch.randn(5, 8)
    with pytest.raises((RuntimeError, ValueError)):
        authors.iBOTPatchLoss(8).sinkhorn_knopp_teacher(t, 0.05, torch.tensor([5]))
    assert torch.isfinite(iBOTPatchLoss(8).sinkhorn_knopp_teacher(t, 0.05, torch.tensor([5]))).all()


def ibot_cases(gen):
    """ (masks, student, teacher targets) with uneven masks, one masked patch in all, an image without """
    K, N = 24, 9
    for counts in [[1, 0, 0], [9, 2, 5, 0], [3, 3], [1], [0, 7, 1, 4, 2]]:
        masks = random_masks(gen, len(counts), N, counts)
        s = torch.randn(len(counts), N, K, generator=gen)
        t = F.softmax(cosine_logits(gen, len(counts) * N, K).reshape(len(counts), N, K) / 0.05, dim=-1)
        yield masks, s, t


def test_ibot_loss_and_gradient_equal_the_authors(authors):
    gen = torch.Generator().manual_seed(6)
    for masks, s, t in ibot_cases(gen):
        ours, theirs = iBOTPatchLoss(24), authors.iBOTPatchLoss(24)
        M = int(masks.sum())
        pad = torch.randn(3, 24, generator=gen)                      # rows past n_masked_patches
        weights = (1 / masks.sum(-1, keepdim=True).clamp(min=1)).expand_as(masks)[masks]
        for kwargs, extra in [({}, 0), ({"n_masked_patches": M}, 3), ({"masks_weight": weights}, 0)]:
            s_ours = torch.cat([s[masks], pad[:extra]]).requires_grad_()
            s_theirs = s_ours.detach().clone().requires_grad_()
            t_m = torch.cat([t[masks], F.softmax(pad[:extra], -1)])
            a = ours.forward_masked(s_ours, t_m, masks, **kwargs)
            b = theirs.forward_masked(s_theirs, t_m, masks, **kwargs)
            assert_relative(a.detach(), b.detach(), RTOL_AUTHORS)
            a.backward(), b.backward()
            assert_relative(s_ours.grad[:M], s_theirs.grad[:M], RTOL_AUTHORS)
        s_req = s.clone().requires_grad_()
        assert_relative(ours(s, t, masks), theirs(s, t, masks), RTOL_AUTHORS)
        assert_relative(ours(s_req, t, masks), ours.forward_masked(s[masks], t[masks], masks), 1e-6)


def test_ibot_center_follows_the_authors(authors):
    gen = torch.Generator().manual_seed(7)
    ours, theirs = iBOTPatchLoss(16), authors.iBOTPatchLoss(16)
    for step in range(4):
        t = 2 + torch.randn(int(torch.randint(1, 20, (), generator=gen)), 16, generator=gen)
        assert_relative(ours.softmax_center_teacher(t, 0.06), theirs.softmax_center_teacher(t, 0.06),
                        RTOL_AUTHORS)
        ours.update_center(t.unsqueeze(0))                           # dinov2 passes (1, M, K)
        theirs.update_center(t.unsqueeze(0))
    theirs.apply_center_update()                                     # dinov2 applies it lazily
    assert_relative(ours.center, theirs.center, RTOL_AUTHORS)


def koleo_authors(authors, x, eps=1e-8):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                              # torch.cuda.amp.autocast: deprecated
        return authors.KoLeoLoss()(x, eps=eps)


def test_koleo_loss_and_gradient_equal_the_authors(authors):
    gen = torch.Generator().manual_seed(8)
    for n, D in [(2, 3), (5, 16), (32, 64), (64, 8)]:
        x = torch.randn(n, D, generator=gen) * torch.rand(n, 1, generator=gen) * 5
        a_in, b_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = KoLeoLoss()(a_in), koleo_authors(authors, b_in)
        assert_relative(a.detach(), b.detach(), RTOL_AUTHORS)
        a.backward(), b.backward()
        assert_relative(a_in.grad, b_in.grad, RTOL_AUTHORS)


def test_koleo_duplicate_rows_give_the_authors_large_finite_penalty(authors):
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    ours = KoLeoLoss()(x)
    assert torch.isfinite(ours) and ours > 10                        # -log(~1e-8) for two of 3 rows
    assert_relative(ours, koleo_authors(authors, x), RTOL_AUTHORS)
    expected = numpy_dinov2.koleo_loss(x.double().numpy())
    assert ours.item() == pytest.approx(expected, rel=1e-5)


def test_koleo_one_row_is_an_error_where_the_authors_return_a_number(authors):
    x = torch.randn(1, 8)
    assert torch.isfinite(koleo_authors(authors, x))                 # meaningless: the row with itself
    with pytest.raises(ValueError, match=r"at least 2 rows.*\(1, 8\)"):
        KoLeoLoss()(x)
    with pytest.raises(ValueError, match="n >= 2"):
        numpy_dinov2.koleo_loss(x.numpy())


def test_koleo_antipodal_pair_is_not_paired_with_itself(authors):
    """ dinov2 masks the diagonal with -1, which ties with an antipodal row; we never pick i """
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert KoLeoLoss()(x).item() == pytest.approx(-math.log(2.0), abs=1e-6)   # distance 2
    # dinov2: row 0 picks itself (rho = ||(eps, eps)||), row 1 picks row 0 (rho = 2)
    itself = -math.log(math.sqrt(2) * 1e-8 + 1e-8)
    assert koleo_authors(authors, x).item() == pytest.approx((itself - math.log(2.0)) / 2, rel=1e-5)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 9))
def test_koleo_ignores_row_scale_and_order(seed, n):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(n, 4)))
    scaled = x * torch.tensor(rng.uniform(0.1, 10, size=(n, 1)))
    permuted = x[torch.from_numpy(rng.permutation(n))]
    base = KoLeoLoss()(x).item()
    assert KoLeoLoss()(scaled).item() == pytest.approx(base, rel=1e-9)
    assert KoLeoLoss()(permuted).item() == pytest.approx(base, rel=1e-9)


# --- DINOLoss(centering="sinkhorn") ---------------------------------------------------------------

def test_dinoloss_with_sinkhorn_neither_uses_nor_updates_the_center():
    gen = torch.Generator().manual_seed(9)
    T, S, B, K = 2, 5, 6, 10
    t, s = torch.randn(T, B, K, generator=gen).double(), torch.randn(S, B, K, generator=gen).double()
    loss_fn = DINOLoss(K, centering="sinkhorn").double()
    loss_fn.center.fill_(3.0)                                        # would change softmax targets
    loss = loss_fn(t, s, epoch=0)
    assert torch.equal(loss_fn.center, torch.full((1, 1, K), 3.0, dtype=torch.float64))
    loss_fn.update_center(t)
    assert torch.equal(loss_fn.center, torch.full((1, 1, K), 3.0, dtype=torch.float64))
    P_t = numpy_dinov2.sinkhorn_knopp(t.numpy(), 0.04)              # tau_t(0) = 0.04
    log_P_s = torch.log_softmax(s / 0.1, dim=-1).numpy()
    terms = [-(P_t[i, b] * log_P_s[v, b]).sum() for i, v in view_pairs(T, S) for b in range(B)]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    center = DINOLoss(K).double()
    center(t, s, epoch=0)
    assert not torch.equal(center.center, torch.zeros(1, 1, K, dtype=torch.float64))


def test_dinoloss_records_the_centering_in_repr_and_state():
    sk = DINOLoss(8, centering="sinkhorn")
    assert "centering='sinkhorn'" in repr(sk) and "centering='center'" in repr(DINOLoss(8))
    state = sk.state_dict()
    assert state["sinkhorn_centering"].item() is True
    assert set(DINOLoss(8).state_dict()) == {"center"}               # a center-mode state is unchanged
    DINOLoss(8, centering="sinkhorn").load_state_dict(state, strict=True)
    with pytest.raises(ValueError, match='saved with centering="sinkhorn".*centering="center"'):
        DINOLoss(8).load_state_dict(state)
    with pytest.raises(ValueError, match='saved with centering="center"'):
        DINOLoss(8, centering="sinkhorn").load_state_dict(DINOLoss(8).state_dict())


def test_dinoloss_centering_errors():
    with pytest.raises(ValueError, match='"center" or "sinkhorn"'):
        DINOLoss(8, centering="batchnorm")
    with pytest.raises(ValueError, match='backend="triton".*centering="sinkhorn"'):
        DINOLoss(8, centering="sinkhorn", backend="triton")
    hard = DINOLoss(8, warmup_teacher_temp=0.0, centering="sinkhorn")
    with pytest.raises(ValueError, match="teacher_temp must be a finite number > 0"):
        hard(torch.randn(2, 3, 8), torch.randn(4, 3, 8), epoch=0)


# --- clear errors and the center's dtype ------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: sinkhorn_knopp(torch.randn(8), 0.1), r"\(\.\.\., K\).*\(8,\)"),
    (lambda: sinkhorn_knopp(torch.randn(0, 4), 0.1), r"at least one row.*\(0, 4\)"),
    (lambda: sinkhorn_knopp(torch.randn(3, 4), 0.0), "teacher_temp"),
    (lambda: sinkhorn_knopp(torch.randn(3, 4), 0.1, n_iterations=0), "n_iterations"),
    (lambda: KoLeoLoss()(torch.randn(3, 4, 5)), r"\(n, D\).*\(3, 4, 5\)"),
    (lambda: iBOTPatchLoss(4).forward_masked(torch.randn(3, 4), torch.randn(3, 4),
                                             torch.ones(2, 2, dtype=torch.bool)), r"3 masked patches but \(4,\)"),
    (lambda: iBOTPatchLoss(4).forward_masked(torch.randn(3, 4), torch.randn(3, 4), torch.ones(1, 3)),
     "must be a bool"),
    (lambda: iBOTPatchLoss(4)(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool)),
     r"masks \(2, 4\)"),
    (lambda: iBOTPatchLoss(4).sinkhorn_knopp_teacher(torch.randn(5, 4), 0.1, torch.tensor([4])),
     r"must equal the number of rows.*\(5, 4\)"),
    (lambda: iBOTPatchLoss(4).softmax_center_teacher(torch.randn(5, 3), 0.1), r"\(\.\.\., 4\).*\(5, 3\)"),
], ids=["sk-1d", "sk-empty", "sk-tau0", "sk-iter0", "koleo-3d", "ibot-count", "ibot-float-mask",
        "ibot-dense-shape", "ibot-sk-count", "ibot-K"])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ibot_center_keeps_its_dtype_and_survives_a_non_finite_batch():
    loss_fn = iBOTPatchLoss(4).half()
    assert loss_fn.center.dtype == torch.float32
    loss_fn.update_center(torch.ones(1, 3, 4, dtype=torch.float16))
    expected = torch.full((1, 1, 4), 0.1)
    torch.testing.assert_close(loss_fn.center, expected)
    bad = torch.ones(1, 3, 4)
    bad[0, 1, 2] = float("inf")
    loss_fn.update_center(bad)
    assert loss_fn.center[0, 0, 2] == expected[0, 0, 2]              # the non-finite dimension kept
    torch.testing.assert_close(loss_fn.center[0, 0, [0, 1, 3]], torch.full((3,), 0.19))
