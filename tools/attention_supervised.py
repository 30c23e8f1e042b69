"""The paper's third reference for the attention maps: the preset's ViT trained with the labels.

    python tools/attention_supervised.py OUT.json [--seed S] [--threads T] [--epochs E]

The DINO run of `--preset vit-attention` at the seed as the trainer builds it (`build()`: the
same initialisation, train split, batch order and learning-rate / weight-decay schedules), its
backbone with a linear classifier on the class-token feature, cross-entropy on the shape labels,
one global view per image drawn as DINO's are (crop, flip, colour jitter), AdamW, the same batch
and number of steps (no gradient clipping). Then the
same measurements as `attention_attempt.py`: k-NN of the feature (and the classifier's test
accuracy) and the Jaccard of the class-token attention with the object masks.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dino_ref.train import preset
from dino_ref.train.attention import attention_jaccard
from dino_ref.train.knn import knn_accuracy
from dino_ref.train.loop import _param_groups, build, set_schedules
from dino_ref.train.multicrop import color_jitter, random_resized_crop
from dino_ref.train.objects import NUM_SHAPES, make_attention_sets


def train_supervised(config):
    """ the DINO run's network (build(): its data, initialisation, schedules and batch order), its
    backbone and a linear classifier trained with the labels; -> (vit, test accuracy of the
    classifier, (train, test) splits, steps) """
    run = build(config)
    vit = run.student.backbone                                       # the DINO run's initialisation
    model = torch.nn.Sequential(vit, torch.nn.Linear(vit.embed_dim, NUM_SHAPES))
    run.optimizer = torch.optim.AdamW(_param_groups(model), lr=0.0)  # set_schedules drives this one
    (x, y), (x_test, y_test) = run.train_set, run.test_set
    for step in range(run.total_steps):
        i = step % run.steps_per_epoch
        if i == 0:
            run.order = torch.randperm(len(x), generator=run.generator)
        idx = run.order[i * config.batch_size:(i + 1) * config.batch_size]
        view = color_jitter(random_resized_crop(x[idx], config.global_size, config.global_scale,
                                                run.generator), run.generator)   # one global view
        set_schedules(run, step)
        loss = F.cross_entropy(model(view), y[idx])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return vit, accuracy, (run.train_set, run.test_set), run.total_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    args = parser.parse_args()
    config = preset("vit-attention", seed=args.seed, threads=args.threads,   # build() sets threads
                    **({"epochs": args.epochs} if args.epochs else {}))
    start = time.time()
    vit, accuracy, (train, test), steps = train_supervised(config)
    wall = time.time() - start
    select, held_out = make_attention_sets(config.seed, config.global_size)
    scores = attention_jaccard(vit.eval(), select, held_out)
    flags = ["--seed", str(args.seed)] + (["--epochs", str(args.epochs)] if args.epochs else [])
    result = {"command": flags, "steps": steps, "wall_time_s": round(wall, 1),
              "linear_accuracy": accuracy,
              "knn_accuracy": knn_accuracy(vit, train, test, NUM_SHAPES),
              "jaccard": scores["jaccard"], "jaccard_mean_heads": scores["jaccard_mean_heads"],
              "jaccard_per_head": scores["jaccard_per_head"],
              "reproduce": " ".join(["python tools/attention_supervised.py", args.out] + flags
                                    + (["--threads", str(args.threads)] if args.threads else []))}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
