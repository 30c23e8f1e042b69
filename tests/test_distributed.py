"""torch.distributed: two gloo processes on loopback with uneven shards against one process (the
loss, DDP gradients with no_sync, and the trainer under torchrun).

The ranks run in a child process in its own session (`process_group.run_in_own_session`): on a
timeout the whole group is killed, and no worker may outlive the test.
"""
import contextlib
import json
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from process_group import run_in_own_session, two_rank_results
from tiny_run import TINY_FLAGS, free_port, subprocess_env

from dino_ref import DINOLoss

SHARDS = [(0, 3), (3, 10)]  # rank 0 holds 3 rows, rank 1 holds 7: a last batch without drop_last
DDP_SHARDS = [(0, 5), (5, 8)]                     # a global batch of B = 8 rows as 5 + 3
DDP_MICRO = [[(0, 3), (3, 5)], [(5, 7), (7, 8)]]  # each shard as two micro-batches (no_sync)
B_DDP = 8


def global_batch(step):
    gen = torch.Generator().manual_seed(step)
    teacher = 3 * torch.randn(16, generator=gen) + torch.randn(2, 10, 16, generator=gen)
    return teacher.double(), torch.randn(6, 10, 16, generator=gen).double()


def ddp_batch(step):
    """ teacher logits (2, 8, 16) from a fixed map, student inputs (6, 8, 4) for a linear model """
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(6, B_DDP, 4, generator=gen).double()              # 2 global + 4 local crops
    w_teacher = torch.randn(4, 16, generator=gen).double()
    return 2.0 + x[:2] @ w_teacher, x


def student_model():
    """ the same fixed weights in every process """
    model = torch.nn.Linear(4, 16).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel(), dtype=p.dtype).reshape(p.shape))
    return model


def _center_run(rank):
    loss_fn = DINOLoss(16, warmup_teacher_temp_epochs=3).double()
    a, b = SHARDS[rank]
    losses = []
    for step in range(3):
        teacher, student = global_batch(step)
        losses.append(loss_fn(teacher[:, a:b], student[:, a:b], epoch=step))
    return {"losses": torch.stack(losses), "center": loss_fn.center}


def _ddp_run(rank, world_size, micro, exact):
    """ two steps of DDP on uneven shards; each rank's (micro-batch) loss weighted by
    b * world / B (exact) or by 1 / n_micro (the naive recipe); the gradients of each step """
    from torch.nn.parallel import DistributedDataParallel
    model = DistributedDataParallel(student_model())
    loss_fn = DINOLoss(16).double()
    pieces = DDP_MICRO[rank] if micro else [DDP_SHARDS[rank]]
    grads = []
    for step in range(2):
        teacher, x = ddp_batch(step)
        model.zero_grad()
        for j, (a, b) in enumerate(pieces):
            weight = (b - a) * world_size / B_DDP if exact else 1 / len(pieces)
            last = j == len(pieces) - 1
            with contextlib.nullcontext() if last else model.no_sync():  # sync on the last one only
                loss = loss_fn(teacher[:, a:b], model(x[:, a:b]), epoch=1, update_center=False)
                (loss * weight).backward()
        loss_fn.update_center(torch.cat([teacher[:, a:b] for a, b in pieces], dim=1))
        grads.append([p.grad.clone() for p in model.parameters()])
    return {"grads": grads, "center": loss_fn.center}


def _rank_main(rank, world_size, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        out = {"center_run": _center_run(rank)}
        for micro in [False, True]:
            for exact in [True, False]:
                out[micro, exact] = _ddp_run(rank, world_size, micro, exact)
        torch.save(out, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """ run both ranks once (in a child process of their own session) and load their results """
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    return two_rank_results(__file__, tmp_path_factory.mktemp("ranks"))


def test_two_ranks_with_uneven_shards_match_one_process(two_ranks):
    results = [r["center_run"] for r in two_ranks]
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


def one_process_grads():
    """ the gradient of the mean loss over all B rows, in one process, for the two DDP steps """
    model, loss_fn = student_model(), DINOLoss(16).double()
    grads = []
    for step in range(2):
        teacher, x = ddp_batch(step)
        model.zero_grad()
        loss_fn(teacher, model(x), epoch=1).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads, loss_fn.center


@pytest.mark.parametrize("micro", [False, True], ids=["one_backward", "no_sync_micro_batches"])
def test_ddp_gradient_with_uneven_shards_equals_one_process(two_ranks, micro):
    """ each rank's loss (or micro-batch loss) times b * world / B: DDP's average of the rank
    gradients is then the one-process gradient of the whole batch """
    expected, center = one_process_grads()
    for rank in range(2):
        run = two_ranks[rank][micro, True]
        for step in range(2):
            for g, e in zip(run["grads"][step], expected[step], strict=True):
                torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(run["center"], center, rtol=1e-12, atol=1e-14)
    # the naive weights (1 per rank, 1 / n_micro per micro-batch) are measurably off here
    naive = two_ranks[0][micro, False]["grads"][0][0]
    assert (naive - expected[0][0]).norm() > 0.05 * expected[0][0].norm()


def test_a_leftover_process_fails_the_run_and_is_killed():
    leak = [sys.executable, "-c", "import subprocess as sp; sp.Popen(['sleep', '60'], stdout=sp.DEVNULL, "
            "stderr=sp.DEVNULL)"]                                      # an orphan that does not hold the pipes
    with pytest.raises(AssertionError, match="left processes"):
        run_in_own_session(leak, timeout=60, grace=1)
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(AssertionError, match="ran past"):
        run_in_own_session(hang, timeout=1)
    # a worker in a session of its own (as torchrun starts them) that holds the pipes and hangs
    detached = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60'], "
                "start_new_session=True); time.sleep(60)"]
    start = time.monotonic()
    with pytest.raises(AssertionError, match="ran past"):
        run_in_own_session(detached, timeout=2)
    assert time.monotonic() - start < 30


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_the_trainer_on_two_gloo_processes_matches_one(tmp_path):
    steps = ["--steps", "3", "--no-progress", *TINY_FLAGS]
    one = subprocess.run([sys.executable, "-m", "dino_ref.train", *steps, "--threads", "1",
                          "--metrics-json", str(tmp_path / "one.json"), "--save", str(tmp_path / "one.pt")],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert one.returncode == 0, one.stderr
    # its own session: on a timeout the whole group dies, and no worker may outlive the run
    two = run_in_own_session([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                              "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                              "--master-port", str(free_port()), "-m", "dino_ref.train", *steps,
                              "--metrics-json", str(tmp_path / "two.json"), "--save", str(tmp_path / "two.pt")],
                             env=subprocess_env(), timeout=300)
    assert two.returncode == 0, two.stderr
    h1 = json.loads((tmp_path / "one.json").read_text())
    h2 = json.loads((tmp_path / "two.json").read_text())
    assert h2["final"]["world_size"] == 2
    assert len(h1["history"]) == 3
    for r1, r2 in zip(h1["history"], h2["history"], strict=True):
        assert abs(r1["loss"] - r2["loss"]) < 1e-4
        assert abs(r1["teacher_entropy"] - r2["teacher_entropy"]) < 1e-4
    c1 = torch.load(tmp_path / "one.pt")
    c2 = torch.load(tmp_path / "two.pt")
    assert torch.allclose(c1["dino_loss"]["center"], c2["dino_loss"]["center"], atol=1e-5)
    assert c1["dino_loss"]["center"].abs().max() > 0
    assert c1["teacher"]
    for k, v in c1["teacher"].items():
        assert torch.allclose(v, c2["teacher"][k], atol=1e-4), k


if __name__ == "__main__":                                            # the ranks, for two_ranks
    out_dir = sys.argv[1]
    mp.spawn(_rank_main, args=(2, f"{out_dir}/init", f"{out_dir}/out"), nprocs=2, join=True)
