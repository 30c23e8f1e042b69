"""Resume: a run killed (SIGKILL) after its first checkpoint and resumed with the same command
ends bit-identical to the run never interrupted: networks, center, optimizer and metrics. On one
process and under torchrun with 2 gloo ranks (in a session of its own: nothing outlives it)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import torch
from process_group import MARKER, _kill, leftovers

TINY = ["--widths", "8", "16", "16", "--hidden-dim", "32", "--bottleneck-dim", "16", "--out-dim", "64",
        "--train-per-class", "4", "--test-per-class", "1", "--batch-size", "8", "--local-crops", "2",
        "--knn-every", "1", "--knn-k", "5", "--epochs", "4", "--threads", "1", "--no-progress"]
STEPS_PER_EPOCH, TOTAL = 5, 20                                        # 40 images / 8, 4 epochs


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(ranks):
    if ranks == 1:
        return [sys.executable, "-m", "dino_ref.train"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
            str(ranks), "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
            "-m", "dino_ref.train"]


def _env(token):
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    env.pop("WORLD_SIZE", None)
    env[MARKER] = token                                               # every worker inherits it
    return env


def _run(ranks, out, kill_after_checkpoint=False, timeout=600):
    """ the tiny run with --resume, writing out.pt and out.json; with kill_after_checkpoint, every
    process of the run is SIGKILLed as soon as the first checkpoint exists. -> return code """
    ckpt = f"{out}.pt"
    token = uuid.uuid4().hex
    proc = subprocess.Popen(_command(ranks) + TINY + ["--save", ckpt, "--resume", "--metrics-json",
                                                      f"{out}.json"],
                            start_new_session=True, env=_env(token), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_after_checkpoint and os.path.exists(ckpt):
                _kill(leftovers(proc.pid, token) + [proc.pid])       # torchrun's workers too
                break
            time.sleep(0.005)
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        _kill(leftovers(proc.pid, token))
    assert not leftovers(proc.pid, token)
    return proc.returncode, proc.stderr.read()


def _same_tensors(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("ranks", [1, 2], ids=["one_process", "two_gloo_ranks"])
def test_killed_then_resumed_run_ends_bit_identical(tmp_path, ranks):
    if ranks > 1 and not torch.distributed.is_available():
        pytest.skip("no torch.distributed")
    code, err = _run(ranks, tmp_path / "whole")                       # --resume, no checkpoint yet
    assert code == 0, err
    assert "Warning" not in err, err                                  # no FutureWarning (all_reduce)
    code, err = _run(ranks, tmp_path / "cut", kill_after_checkpoint=True)
    assert code == -signal.SIGKILL, (code, err)                       # killed, not finished
    first = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert first["step"] % STEPS_PER_EPOCH == 0 and first["step"] < TOTAL
    code, err = _run(ranks, tmp_path / "cut")                         # the same command again
    assert code == 0, err

    whole, cut = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("whole", "cut"))
    assert whole["step"] == cut["step"] == TOTAL
    for key in ["student", "teacher", "dino_loss", "optimizer", "rng", "history"]:
        assert _same_tensors(whole[key], cut[key]), key
    m_whole, m_cut = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "cut"))
    assert m_whole["history"] == m_cut["history"]
    drop = lambda f: {k: v for k, v in f.items() if k != "wall_time_s"}  # noqa: E731
    assert drop(m_whole["final"]) == drop(m_cut["final"])
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    ckpt = tmp_path / "c.pt"
    out = subprocess.run(_command(1) + TINY + ["--epochs", "1", "--save", str(ckpt)],
                         capture_output=True, text=True, env=_env("x"), timeout=300)
    assert out.returncode == 0, out.stderr
    other = subprocess.run(_command(1) + TINY + ["--lr", "0.01", "--save", str(ckpt), "--resume"],
                           capture_output=True, text=True, env=_env("x"), timeout=300)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.count("\n") == 1 and "--lr 0.001 (now 0.01)" in other.stderr
    assert "--epochs 1 (now 4)" in other.stderr
    # output fields may change: another metrics file, quiet, threads
    same = subprocess.run(_command(1) + TINY + ["--epochs", "1", "--save", str(ckpt), "--resume",
                                                "--quiet", "--metrics-json", str(tmp_path / "m.json")],
                          capture_output=True, text=True, env=_env("x"), timeout=300)
    assert same.returncode == 0, same.stderr
    assert same.stdout == ""                                          # --quiet: no summary
    assert len(json.loads((tmp_path / "m.json").read_text())["history"]) == STEPS_PER_EPOCH
