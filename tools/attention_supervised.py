"""The paper's third reference for the attention maps: the preset's ViT trained with the labels.

    python tools/attention_supervised.py OUT.json [--seed S] [--threads T] [--epochs E]

The network of `--preset vit-attention` at the seed (the same initialisation as the DINO run),
a linear classifier on its class-token feature, cross-entropy on the shape labels of the same
train split, one global view per image drawn as DINO's are (crop, flip, colour jitter), AdamW
with the preset's learning rate, warmup and cosine schedule, batch and number of steps. Then the
same measurements as `attention_attempt.py`: k-NN of the feature (and the classifier's test
accuracy) and the Jaccard of the class-token attention with the object masks.
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dino_ref.train import make_student, preset
from dino_ref.train.attention import attention_jaccard
from dino_ref.train.knn import knn_accuracy
from dino_ref.train.loop import _param_groups, cosine_schedule
from dino_ref.train.multicrop import multicrop
from dino_ref.train.objects import NUM_SHAPES, make_attention_sets, make_object_splits


def train_supervised(config):
    """ the preset's ViT and a linear classifier trained with labels; -> (vit, test accuracy) """
    torch.manual_seed(config.seed)                                   # the data, as build() draws it
    (x, _, y), (x_test, _, y_test) = make_object_splits(
        config.train_per_class, config.test_per_class, config.global_size, config.seed)
    vit = make_student(config).backbone                              # the DINO run's initialisation
    classifier = torch.nn.Linear(vit.embed_dim, NUM_SHAPES)
    model = torch.nn.Sequential(vit, classifier)
    optimizer = torch.optim.AdamW(_param_groups(model), lr=0.0)
    steps_per_epoch = len(x) // config.batch_size
    total = config.epochs * steps_per_epoch
    lr_at = cosine_schedule(config.lr, config.min_lr, total,
                            min(config.warmup_epochs * steps_per_epoch, total // 2))
    wd_at = cosine_schedule(config.weight_decay, config.weight_decay_end, total)
    g = torch.Generator().manual_seed(config.seed + 1)
    for step in range(total):
        i = step % steps_per_epoch
        if i == 0:
            order = torch.randperm(len(x), generator=g)
        idx = order[i * config.batch_size:(i + 1) * config.batch_size]
        view = multicrop(x[idx], g, 0, config.global_size, config.local_size,
                         config.global_scale, config.local_scale)[0][0]   # (b, 3, G, G)
        for group in optimizer.param_groups:
            group["lr"] = lr_at[step]
        optimizer.param_groups[0]["weight_decay"] = wd_at[step]
        loss = F.cross_entropy(model(view), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return vit, accuracy, ((x, y), (x_test, y_test)), total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset("vit-attention", seed=args.seed,
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
