"""The trainer: CLI smoke run, determinism, and 2 gloo processes against 1 process."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from process_group import run_in_own_session

from dino_ref.train import Config, parse_args, train

TINY = dict(widths=(8, 16, 16), hidden_dim=32, bottleneck_dim=16, out_dim=64, train_per_class=8,
            test_per_class=4, batch_size=16, local_crops=2, knn_every=1, progress=False)
TINY_FLAGS = ["--widths", "8", "16", "16", "--hidden-dim", "32", "--bottleneck-dim", "16",
              "--out-dim", "64", "--train-per-class", "8", "--test-per-class", "4",
              "--batch-size", "16", "--local-crops", "2", "--knn-every", "1"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")
    env.pop("WORLD_SIZE", None)
    return env


def test_flags_fill_the_config():
    c = parse_args(["--epochs", "3", "--center-momentum", "1.0", "--teacher-temp", "0.1",
                    "--widths", "8", "16", "--local-scale", "0.1", "0.3", "--no-progress"])
    assert (c.epochs, c.center_momentum, c.teacher_temp) == (3, 1.0, 0.1)
    assert c.widths == (8, 16) and c.local_scale == (0.1, 0.3) and c.progress is False
    assert parse_args([]) == Config()


def test_train_returns_metrics_and_is_deterministic():
    a = train(steps=4, **TINY)
    b = train(steps=4, **TINY)
    f = a["final"]
    for key in ["teacher_entropy", "kl", "knn_accuracy", "knn_accuracy_random_init", "out_dim",
                "num_classes", "log_K", "loss"]:
        assert key in f
    assert len(a["history"]) == 4
    for r in a["history"]:
        assert abs(r["loss"] - (r["teacher_entropy"] + r["kl"])) < 1e-6
        assert {"lr", "momentum", "teacher_temp"} <= set(r)
    strip = lambda m: {k: v for k, v in m["final"].items() if k != "wall_time_s"}  # noqa: E731
    assert strip(a) == strip(b) and a["history"] == b["history"]


def test_cli_smoke_writes_json_and_plot(tmp_path):
    js, png = tmp_path / "m.json", tmp_path / "c.png"
    out = subprocess.run([sys.executable, "-m", "dino_ref.train", "--steps", "3", *TINY_FLAGS,
                          "--metrics-json", str(js), "--plot", str(png)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "k-NN accuracy" in out.stdout
    m = json.loads(js.read_text())
    assert m["final"]["out_dim"] == 64 and len(m["history"]) == 3
    assert png.stat().st_size > 1000



def test_plot_curves_keeps_the_callers_matplotlib_backend(tmp_path):
    """ a notebook that saves the curves keeps its inline backend (its later figures still show) """
    import matplotlib
    from dino_ref.train import plot_curves
    hist = [{"step": s, "teacher_entropy": 1.0, "loss": 1.5, "kl": 0.5, "knn_accuracy": 0.3} for s in (1, 2)]
    final = {"log_K": 2.0, "knn_accuracy_random_init": 0.2, "chance": 0.1}
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # any backend other than Agg stands for the notebook's inline one
    try:
        plot_curves({"history": hist, "final": final}, tmp_path / "c.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_match_one(tmp_path):
    steps = ["--steps", "3", "--no-progress", *TINY_FLAGS]
    one = subprocess.run([sys.executable, "-m", "dino_ref.train", *steps, "--threads", "1",
                          "--metrics-json", str(tmp_path / "one.json"), "--save", str(tmp_path / "one.pt")],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert one.returncode == 0, one.stderr
    # its own session: on a timeout the whole group dies, and no worker may outlive the run
    two = run_in_own_session([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                              "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                              "--master-port", str(_free_port()), "-m", "dino_ref.train", *steps,
                              "--metrics-json", str(tmp_path / "two.json"), "--save", str(tmp_path / "two.pt")],
                             env=_env(), timeout=300)
    assert two.returncode == 0, two.stderr
    h1 = json.loads((tmp_path / "one.json").read_text())
    h2 = json.loads((tmp_path / "two.json").read_text())
    assert h2["final"]["world_size"] == 2
    for r1, r2 in zip(h1["history"], h2["history"], strict=True):
        assert abs(r1["loss"] - r2["loss"]) < 1e-4
        assert abs(r1["teacher_entropy"] - r2["teacher_entropy"]) < 1e-4
    c1 = torch.load(tmp_path / "one.pt")
    c2 = torch.load(tmp_path / "two.pt")
    assert torch.allclose(c1["dino_loss"]["center"], c2["dino_loss"]["center"], atol=1e-5)
    assert c1["dino_loss"]["center"].abs().max() > 0
    for k, v in c1["teacher"].items():
        assert torch.allclose(v, c2["teacher"][k], atol=1e-4), k
