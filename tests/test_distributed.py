"""The center under torch.distributed: two gloo processes on loopback with uneven shards."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dino_ref import DINOLoss

SHARDS = [(0, 3), (3, 10)]  # rank 0 holds 3 rows, rank 1 holds 7: a last batch without drop_last


def global_batch(step):
    gen = torch.Generator().manual_seed(step)
    teacher = 3 * torch.randn(16, generator=gen) + torch.randn(2, 10, 16, generator=gen)
    return teacher.double(), torch.randn(6, 10, 16, generator=gen).double()


def _rank_main(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        loss_fn = DINOLoss(16, warmup_teacher_temp_epochs=3).double()
        a, b = SHARDS[rank]
        losses = []
        for step in range(3):
            teacher, student = global_batch(step)
            losses.append(loss_fn(teacher[:, a:b], student[:, a:b], epoch=step))
        torch.save({"losses": torch.stack(losses), "center": loss_fn.center}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_ranks_with_uneven_shards_match_one_process(tmp_path):
    init_file, out_file = tmp_path / "init", tmp_path / "out"
    mp.spawn(_rank_main, args=(2, str(init_file), str(out_file)), nprocs=2, join=True)
    results = [torch.load(f"{out_file}.{rank}") for rank in range(2)]

    single = DINOLoss(16, warmup_teacher_temp_epochs=3).double()
    mean_of_means = DINOLoss(16, warmup_teacher_temp_epochs=3).double()  # what nidl/lightly do
    for step in range(3):
        teacher, student = global_batch(step)
        centers_before = single.center.clone()
        single(teacher, student, epoch=step)
        # the loss stays rank-local: each rank's loss is the one-process loss on its own rows
        for rank, (a, b) in enumerate(SHARDS):
            local = DINOLoss(16, warmup_teacher_temp_epochs=3).double()
            local.center.copy_(centers_before)
            expected = local(teacher[:, a:b], student[:, a:b], epoch=step)
            torch.testing.assert_close(results[rank]["losses"][step], expected, rtol=1e-12, atol=0)
        shard_means = torch.stack([teacher[:, a:b].mean(dim=(0, 1)) for a, b in SHARDS]).mean(0)
        mean_of_means.center.mul_(0.9).add_(0.1 * shard_means)
    for rank in range(2):
        torch.testing.assert_close(results[rank]["center"], single.center, rtol=1e-12, atol=1e-14)
    # and the mean of per-rank means would have been measurably wrong here
    assert (mean_of_means.center - single.center).abs().max() > 1e-3
