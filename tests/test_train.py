"""The trainer: CLI smoke run, determinism, and 2 gloo processes against 1 process."""

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from process_group import run_in_own_session

from dino_ref.diagnostics import teacher_entropy
from dino_ref.diagnostics import batch_entropy
from dino_ref.train import PRESETS, Config, make_parser, parse_args, preset, train

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


def test_preset_sets_its_fields_and_later_flags_still_apply():
    c = parse_args(["--preset", "fig7"])
    assert c == preset("fig7")
    for key, value in PRESETS["fig7"].items():
        assert getattr(c, key) == value, key
    assert c.head_bn is False and c.student_temp == 0.1                # tau_s as in the paper
    later = parse_args(["--preset", "fig7", "--center-momentum", "1.0", "--seed", "2"])
    assert later == dataclasses.replace(c, center_momentum=1.0, seed=2)
    if "teacher_temp" in PRESETS["fig7"]:                             # a flag can undo the preset
        assert parse_args(["--preset", "fig7", "--teacher-temp", "0.1"]).teacher_temp == 0.1
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_every_flag_has_help_and_shows_its_default():
    parser = make_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in flags} == {f.name for f in dataclasses.fields(Config)} | {"preset"}
    for a in flags:
        assert a.help and "%(default)s" in a.help, a.dest
    text = parser.format_help()
    assert "(default: 0.996)" in text and "(default: cnn)" in text
    preset_help = parser._option_string_actions["--preset"].help
    for key, value in PRESETS["fig7"].items():                        # --preset says what it sets
        flag = key.replace("_", "-")
        assert (f"--{flag} {value}" if not isinstance(value, bool)
                else f"--{flag}" if value else f"--no-{flag}") in preset_help


def test_batch_entropy_tells_the_collapses_from_a_healthy_batch():
    T, B, K = 2, 8, 16
    one_dim = torch.zeros(T, B, K)
    one_dim[..., 3] = 1.0                                             # every row the same one-hot
    spread = torch.zeros(T, B, K)
    spread[:, torch.arange(B), torch.arange(B)] = 1.0                 # each image its own dimension
    uniform = torch.full((T, B, K), 1.0 / K)
    for P, h, h_batch in [(one_dim, 0.0, 0.0), (spread, 0.0, math.log(B)),
                          (uniform, math.log(K), math.log(K))]:
        assert abs(teacher_entropy(P).item() - h) < 1e-6
        assert abs(batch_entropy(P).item() - h_batch) < 1e-6
    P = torch.softmax(torch.randn(T, B, K), -1)
    assert batch_entropy(P) >= teacher_entropy(P)                     # entropy is concave


def test_history_records_batch_entropy():
    m = train(steps=2, **TINY)
    for r in m["history"]:
        assert 0.0 <= r["teacher_entropy"] <= r["batch_entropy"] + 1e-6 <= m["final"]["log_K"] + 1e-5
    assert "batch_entropy" in m["final"]


def test_fig7_preset_runs_a_head_without_batchnorm(tmp_path):
    m = train(preset("fig7", steps=2, **TINY, save=str(tmp_path / "c.pt")))
    assert m["config"]["head_bn"] is False and len(m["history"]) == 2
    state = torch.load(tmp_path / "c.pt")["student"]
    assert any(k.startswith("head.mlp.") for k in state)
    assert not any("running_mean" in k for k in state)                # no BatchNorm anywhere


def test_the_vit_backbone_trains_through_the_config_fields(tmp_path):
    m = train(steps=2, **TINY, backbone="vit", patch_size=8, vit_dim=16, vit_depth=1, vit_heads=2,
              head_bn=False, save=str(tmp_path / "v.pt"))
    assert m["config"]["backbone"] == "vit" and len(m["history"]) == 2
    state = torch.load(tmp_path / "v.pt")["student"]
    assert state["backbone.pos_embed"].shape == (1, 1 + (32 // 8) ** 2, 16)  # patch_size, vit_dim
    assert sum(k.startswith("backbone.blocks.") and k.endswith("qkv.weight") for k in state) == 1


RESULTS = sorted((Path(__file__).parent.parent / "notebooks" / "results").glob("fig7_*.json"))


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_committed_metrics_come_from_their_printed_command(path):
    m = json.loads(path.read_text())
    argv = m["command"]                                               # python -m dino_ref.train ARGV
    assert argv[:2] == ["--preset", "fig7"]
    expected = dataclasses.asdict(parse_args(argv))
    as_json = json.loads(json.dumps(expected))                        # tuples -> lists, as stored
    # a Config field added after the file was written is absent there: it must be at its default
    # (the one value that reproduces the stored run)
    added = set(as_json) - set(m["config"])
    defaults = json.loads(json.dumps(dataclasses.asdict(Config())))
    assert {k: as_json[k] for k in added} == {k: defaults[k] for k in added}
    assert m["config"] == {k: v for k, v in as_json.items() if k not in added}
    assert Path(m["config"]["metrics_json"]).name == path.name
