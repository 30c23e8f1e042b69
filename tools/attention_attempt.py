"""One attempt of the ViT-on-objects search: train, then measure the attention maps.

    python tools/attention_attempt.py OUT.json [--keep-teacher] -- --data objects --backbone vit ... --threads 1

Everything after `--` is a `python -m dino_ref.train` command line. The script trains with it
(the checkpoint in a temporary folder), then measures the class-token attention of the trained
teacher and of the same network at initialisation (the same seed) against the object masks on two
fresh object sets (the head chosen on one, scored on the other), and writes OUT.json with the
command, wall time, k-NN (trained and at init), the Jaccard summaries and the final entropies
(with --keep-teacher also the trained teacher's weights, OUT.pt).
"""

import json
import sys
import tempfile
from pathlib import Path

import torch

from dino_ref.train import make_student, parse_args, train
from dino_ref.train.attention import (attention_jaccard, centre_prior, far_from_centre, jaccard,
                                      mass_threshold, patch_mask)
from dino_ref.train.objects import make_attention_sets


def measure(nets, config, n_per_class=100):
    """ the Jaccard summaries of each ViT in `nets` on a selection set and a held-out set (drawn
    once, apart from train/test), and the centre prior's Jaccard on the held-out set (all, and the
    halves whose object is near / far from the centre) """
    background = "textures" if config.data == "objects-on-textures" else "clutter"
    select, held_out = make_attention_sets(config.seed, config.global_size, n_per_class, background)
    grid = config.global_size // config.patch_size                    # a map of the centre only
    prior = mass_threshold(centre_prior(grid, grid / 4))
    J = jaccard(prior, patch_mask(held_out[1], config.patch_size))            # (N,)
    far = far_from_centre(held_out[1])                                 # the half a centre map misses
    centre = {"jaccard_centre_prior": J.mean().item(), "jaccard_centre_prior_near": J[~far].mean().item(),
              "jaccard_centre_prior_far": J[far].mean().item()}
    return [attention_jaccard(vit, select, held_out) for vit in nets], centre


def attempt(argv, keep=None):
    """ train with the trainer flags `argv`, then measure; -> the result dict (with `keep`, a
    path: the trained teacher's weights saved there) """
    config = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config.save = str(Path(tmp) / "run.pt")
        config.progress = False
        metrics = train(config)
        teacher = make_student(config)
        teacher.load_state_dict(torch.load(config.save, weights_only=True, map_location="cpu")["teacher"])
    if keep:                                                         # for a closer look
        torch.save(teacher.state_dict(), keep)
    torch.manual_seed(config.seed)                                   # build()'s initialisation
    init = make_student(config)
    f = metrics["final"]
    result = {"command": argv, "wall_time_s": round(f["wall_time_s"], 1),
              "knn_accuracy": f["knn_accuracy"],
              "knn_accuracy_random_init": f["knn_accuracy_random_init"],
              "teacher_entropy_over_log_K": f["teacher_entropy"] / f["log_K"], "kl": f["kl"],
              "knn_history": [(r["step"], r["knn_accuracy"]) for r in metrics["history"]
                              if "knn_accuracy" in r]}
    if config.backbone == "vit":
        (trained, random_init), centre = measure((teacher.backbone, init.backbone), config)
        result.update(jaccard=trained["jaccard"], jaccard_random_init=random_init["jaccard"],
                      jaccard_near=trained["jaccard_near"], jaccard_far=trained["jaccard_far"],
                      jaccard_random_init_near=random_init["jaccard_near"],
                      jaccard_random_init_far=random_init["jaccard_far"],
                      **centre,
                      jaccard_mean_heads=trained["jaccard_mean_heads"],
                      jaccard_mean_heads_random_init=random_init["jaccard_mean_heads"],
                      jaccard_per_head=trained["jaccard_per_head"],
                      jaccard_per_head_random_init=random_init["jaccard_per_head"])
    return result


def main(argv):
    out, keep, argv = argv[0], "--keep-teacher" in argv[:argv.index("--")], argv[argv.index("--") + 1:]
    result = attempt(argv, Path(out).with_suffix(".pt") if keep else None)
    result["reproduce"] = " ".join(["python tools/attention_attempt.py", out]
                                   + (["--keep-teacher"] if keep else []) + ["--"] + argv)
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "knn_history"}))


if __name__ == "__main__":
    main(sys.argv[1:])
