"""The toy trainer's loop: metrics and determinism, the curves, the Fig. 7 preset and the ViT
backbone, and the committed Fig. 7 metrics against their commands."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dino_ref.train import Config, parse_args, preset, train
from tiny_run import TINY


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


def test_history_records_batch_entropy():
    m = train(steps=2, **TINY)
    assert len(m["history"]) == 2
    for r in m["history"]:
        assert 0.0 <= r["teacher_entropy"] <= r["batch_entropy"] + 1e-6 <= m["final"]["log_K"] + 1e-5
    assert "batch_entropy" in m["final"]


def test_fig7_preset_runs_a_head_without_batchnorm(tmp_path):
    m = train(preset("fig7", steps=2, **TINY, save=str(tmp_path / "c.pt")))
    assert m["config"]["head_bn"] is False and len(m["history"]) == 2
    state = torch.load(tmp_path / "c.pt")["student"]
    assert any(k.startswith("head.mlp.") for k in state)
    assert not any("running_mean" in k for k in state)                # no BatchNorm anywhere


def test_vit_attention_preset_trains_a_vit_on_the_objects_with_per_image_input_norm(tmp_path):
    small = dict(TINY, widths=(8,), vit_dim=16, train_per_class=8, batch_size=10)
    m = train(preset("vit-attention", steps=2, **small, save=str(tmp_path / "c.pt")))
    assert m["config"]["backbone"] == "vit" and m["config"]["data"] == "objects"
    assert m["config"]["vit_input_norm"] == "image" and len(m["history"]) == 2
    state = torch.load(tmp_path / "c.pt")["teacher"]
    assert "backbone.cls_token" in state


def test_the_vit_backbone_trains_through_the_config_fields(tmp_path):
    m = train(steps=2, **TINY, backbone="vit", patch_size=8, vit_dim=16, vit_depth=1, vit_heads=2,
              head_bn=False, save=str(tmp_path / "v.pt"))
    assert m["config"]["backbone"] == "vit" and len(m["history"]) == 2
    state = torch.load(tmp_path / "v.pt")["student"]
    assert state["backbone.pos_embed"].shape == (1, 1 + (32 // 8) ** 2, 16)  # patch_size, vit_dim
    assert sum(k.startswith("backbone.blocks.") and k.endswith("qkv.weight") for k in state) == 1


def test_the_object_images_train_with_five_classes():
    m = train(steps=2, **TINY, data="objects", backbone="vit", patch_size=8, vit_dim=16,
              vit_depth=1, vit_heads=2, head_bn=False)
    assert m["config"]["data"] == "objects" and m["final"]["num_classes"] == 5
    assert m["final"]["chance"] == 0.2 and len(m["history"]) == 2


RESULTS = sorted((Path(__file__).parent.parent / "notebooks" / "results").glob("fig7_*.json"))


def test_each_fig7_run_has_committed_metrics():
    """ the recipe and its two ablations (the files the test below checks) """
    runs = {p.stem.rsplit("_seed", 1)[0] for p in RESULTS}
    assert runs == {"fig7_default", "fig7_no_centering", "fig7_no_sharpening"}


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
