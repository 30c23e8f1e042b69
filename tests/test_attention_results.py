"""The committed runs of `--preset vit-attention` (notebooks/results/attention_seed*.json, what
notebook 10 reads): every field the notebook and docs/attention.md quote, the run's own command,
and the seed-0 teacher's Jaccard recomputed from its committed weights."""

import json
from pathlib import Path

import pytest
import torch

from dino_ref.train import make_student, parse_args
from dino_ref.train.attention import attention_jaccard
from dino_ref.train.objects import make_attention_sets

RESULTS = Path(__file__).resolve().parent.parent / "notebooks" / "results"
FIELDS = ("command", "reproduce", "wall_time_s", "knn_accuracy", "knn_accuracy_random_init", "jaccard",
          "jaccard_random_init", "jaccard_centre_prior", "jaccard_mean_heads",
          "jaccard_mean_heads_random_init", "jaccard_per_head", "jaccard_per_head_random_init",
          "jaccard_near", "jaccard_far", "jaccard_random_init_near", "jaccard_random_init_far",
          "jaccard_centre_prior_near", "jaccard_centre_prior_far")


def load(seed):
    return json.loads((RESULTS / f"attention_seed{seed}.json").read_text())


@pytest.mark.parametrize("seed", range(3))
def test_each_run_has_its_fields_and_is_the_preset_at_its_seed(seed):
    run = load(seed)
    assert set(FIELDS) <= set(run)
    config = parse_args(run["command"])
    assert config.seed == seed and run["command"][:2] == ["--preset", "vit-attention"]
    assert f"attention_seed{seed}.json" in run["reproduce"]
    assert 0 < run["wall_time_s"] <= 15 * 60                             # the CPU budget per run
    assert max(run["jaccard_per_head"]) >= run["jaccard"] >= min(run["jaccard_per_head"])


def test_seed0_teacher_weights_give_the_recorded_jaccard():
    run = load(0)
    config = parse_args(run["command"])
    vit = make_student(config).backbone
    vit.load_state_dict(torch.load(RESULTS / "attention_seed0_teacher.pt", weights_only=True))
    select, held_out = make_attention_sets(config.seed, config.global_size)
    got = attention_jaccard(vit, select, held_out)
    assert got["jaccard"] == pytest.approx(run["jaccard"], abs=1e-6)
    assert got["jaccard_per_head"] == pytest.approx(run["jaccard_per_head"], abs=1e-6)
    assert (got["jaccard_near"], got["jaccard_far"]) == pytest.approx((run["jaccard_near"], run["jaccard_far"]),
                                                                      abs=1e-6)


def _supervised_tool():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "tools" / "attention_supervised.py"
    spec = importlib.util.spec_from_file_location("attention_supervised", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_supervised_reference_starts_where_the_dino_run_starts_and_learns_from_labels(monkeypatch):
    from dino_ref.train import preset
    from dino_ref.train.loop import build
    tool = _supervised_tool()
    config = preset("vit-attention", seed=1, train_per_class=40, test_per_class=10, epochs=2,
                    threads=1)
    dino_start = build(config).student.backbone.state_dict()          # the DINO run's initialisation
    born = []

    def build_and_copy(c):                                            # the tool's network, at birth
        run = build(c)
        born.append({k: v.clone() for k, v in run.student.backbone.state_dict().items()})
        return run

    monkeypatch.setattr(tool, "build", build_and_copy)
    vit, accuracy, (train, test), steps = tool.train_supervised(config)
    assert steps == 2 * (40 * 5 // config.batch_size)
    assert len(born) == 1 and born[0].keys() == dino_start.keys()
    assert all(torch.equal(born[0][k], dino_start[k]) for k in dino_start)
    assert any(not torch.equal(born[0][k], v) for k, v in vit.state_dict().items())   # it trained
    assert 0.0 <= accuracy <= 1.0
    assert train[0].shape == (200, 3, 32, 32) and test[0].shape == (50, 3, 32, 32)


@pytest.mark.parametrize("seed", range(3))
def test_each_supervised_reference_matches_its_dino_run(seed):
    run = json.loads((RESULTS / f"attention_supervised_seed{seed}.json").read_text())
    dino = load(seed)
    assert {"command", "reproduce", "steps", "wall_time_s", "linear_accuracy", "knn_accuracy", "jaccard",
            "jaccard_mean_heads", "jaccard_per_head"} <= set(run)
    assert run["command"] == ["--seed", str(seed)]                     # the preset, nothing changed
    assert f"attention_supervised_seed{seed}.json" in run["reproduce"]
    assert run["steps"] == dino["knn_history"][-1][0]                  # as many steps as DINO's run
    assert max(run["jaccard_per_head"]) >= run["jaccard"] >= min(run["jaccard_per_head"])
