"""DINOv2's pieces under torch.distributed: two gloo ranks with uneven shards against one process.

Sinkhorn-Knopp all-reduces its sums and its number of samples, the iBOT center its row sums and
row counts, so every rank gets the one-process result. The authors' class-token Sinkhorn takes
B = local rows x world size (equal shards assumed): measured here when dinov2 is installed.
The ranks run in a child process of their own session (`process_group.run_in_own_session`).
"""
import sys
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from process_group import two_rank_results

from dino_ref import DINOLoss, iBOTPatchLoss, sinkhorn_knopp

SHARDS = [(0, 3), (3, 10)]                # rank 0 holds 3 rows, rank 1 holds 7
PATCH_SHARDS = [(0, 1), (1, 13)]          # masked patches: 1 on rank 0, 12 on rank 1


def batch():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 10, 12, generator=gen).double()          # (T, B, K)
    student = torch.randn(5, 10, 12, generator=gen).double()          # (S, B, K)
    patches = 1.5 + torch.randn(13, 12, generator=gen).double()       # (M, K) masked patch logits
    return teacher, student, patches


def _rank_main(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        teacher, student, patches = batch()
        (a, b), (p, q) = SHARDS[rank], PATCH_SHARDS[rank]
        ibot = iBOTPatchLoss(12).double()
        ibot.update_center(patches[p:q].unsqueeze(0))
        loss_fn = DINOLoss(12, centering="sinkhorn").double()
        out = {"targets": sinkhorn_knopp(teacher[:, a:b], 0.05),
               "ibot_targets": ibot.sinkhorn_knopp_teacher(patches[p:q], 0.05, torch.tensor([q - p])),
               "ibot_center": ibot.center,
               "loss": loss_fn(teacher[:, a:b], student[:, a:b], epoch=0)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from dinov2.loss import DINOLoss as AuthorsDINOLoss
            rows = teacher[:, a:b].reshape(-1, 12).float()
            out["authors_targets"] = AuthorsDINOLoss(12).sinkhorn_knopp_teacher(rows, 0.05).reshape(2, b - a, 12)
        except ImportError:
            pass
        torch.save(out, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    return two_rank_results(__file__, tmp_path_factory.mktemp("ranks"))


def test_sinkhorn_on_uneven_shards_equals_one_process(two_ranks):
    teacher, student, patches = batch()
    whole = sinkhorn_knopp(teacher, 0.05)                             # (2, 10, 12) on one process
    for rank, (a, b) in enumerate(SHARDS):
        torch.testing.assert_close(two_ranks[rank]["targets"], whole[:, a:b], rtol=1e-12, atol=1e-15)
    # the loss is rank-local: each rank's loss is the one-process loss of its rows, global targets
    from dino_ref.fused import dino_cross_entropy
    whole_epoch0 = sinkhorn_knopp(teacher, DINOLoss(12).teacher_temperature(0))
    for rank, (a, b) in enumerate(SHARDS):
        expected = dino_cross_entropy(whole_epoch0[:, a:b], student[:, a:b], 0.1)
        torch.testing.assert_close(two_ranks[rank]["loss"], expected, rtol=1e-12, atol=0)
    # and a per-rank Sinkhorn (no all-reduce) would have been measurably different
    alone = sinkhorn_knopp(teacher[:, :3], 0.05)
    assert (alone - whole[:, :3]).abs().max() > 1e-2


def test_ibot_sinkhorn_and_center_on_uneven_shards_equal_one_process(two_ranks):
    _, _, patches = batch()
    whole = iBOTPatchLoss(12).double()
    targets = whole.sinkhorn_knopp_teacher(patches, 0.05, torch.tensor([13]))
    whole.update_center(patches.unsqueeze(0))
    for rank, (p, q) in enumerate(PATCH_SHARDS):
        torch.testing.assert_close(two_ranks[rank]["ibot_targets"], targets[p:q], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(two_ranks[rank]["ibot_center"], whole.center, rtol=1e-12, atol=1e-15)
    # the authors' center: the sum over ranks of per-rank means, divided by the world size
    mean_of_means = 0.1 * torch.stack([patches[p:q].mean(0) for p, q in PATCH_SHARDS]).mean(0)
    assert (mean_of_means - whole.center[0, 0]).abs().max() > 1e-2


def test_the_authors_sinkhorn_differs_on_uneven_shards(two_ranks):
    if "authors_targets" not in two_ranks[0]:
        pytest.skip("the authors' package is absent: pip install --no-deps dinov2==0.0.1.dev2")
    teacher, _, _ = batch()
    whole = sinkhorn_knopp(teacher.float(), 0.05)
    worst = max((two_ranks[rank]["authors_targets"] - whole[:, a:b]).abs().max().item()
                for rank, (a, b) in enumerate(SHARDS))
    assert worst > 1e-2, worst                                        # B = local rows x world


if __name__ == "__main__":                                            # the ranks, for two_ranks
    out_dir = sys.argv[1]
    # fork: the ranks reuse this interpreter's imports (torch once, not three times)
    mp.start_processes(_rank_main, args=(2, f"{out_dir}/init", f"{out_dir}/out"), nprocs=2, join=True,
                       start_method="fork" if "fork" in mp.get_all_start_methods() else "spawn")
