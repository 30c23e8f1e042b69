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
          "jaccard_mean_heads_random_init", "jaccard_per_head", "jaccard_per_head_random_init")


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
