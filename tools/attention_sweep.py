"""Many attempts of the ViT-on-objects search at once, one process each (for a machine with
many cores or a GPU).

    python tools/attention_sweep.py OUT_DIR --workers 16 --device cuda [--only NAME ...]

Each attempt is a trainer command line plus the object generator's settings (the object's
radius range, whether its colour step has a fixed sign); the grid is `attempts()` below. Every
finished attempt writes OUT_DIR/NAME.json (what `tools/attention_attempt.py` writes, plus the
data settings); attempts already there are skipped, and the slowest-to-come are listed last,
so a run cut short keeps the first ones. `--list` prints the grid.
"""

import argparse
import itertools
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

STEPS = 4000          # batch 32: about 10 minutes on the 2-core CPU with 2 threads


def epochs_for(per_class, batch=32, steps=STEPS):
    """ the epochs whose steps come closest to `steps` (5 classes of `per_class` images) """
    return max(1, round(steps / (5 * per_class // batch)))


LOSSES = {   # the head and loss: fig7's (sharp constant teacher) or the paper's
    "fig7": ["--preset", "fig7"],
    "paper": ["--no-head-bn", "--warmup-teacher-temp", "0.04", "--teacher-temp", "0.07",
              "--warmup-teacher-temp-epochs", "10"],
}


def attempts():
    """ {name: (trainer flags, data settings)}, the most promising first """
    grid = {}
    for sign, radius, per_class, loss, lr in itertools.product(
            ["fixed", "random"], ["large", "small"], [1000, 200], ["fig7", "paper"], ["1e-3", "2e-3"]):
        name = f"{sign}-{radius}-n{per_class}-{loss}-lr{lr}"
        flags = LOSSES[loss] + ["--data", "objects", "--backbone", "vit", "--batch-size", "32",
                                "--local-crops", "2", "--lr", lr, "--train-per-class", str(per_class),
                                "--epochs", str(epochs_for(per_class))]
        data = {"sign": 1 if sign == "fixed" else None,
                "radius": (8.0, 13.0) if radius == "large" else (6.0, 10.0)}
        grid[name] = (flags, data)
    base_flags, base_data = grid["fixed-large-n1000-fig7-lr1e-3"]
    extras = {   # variations around the first
        "x-outdim256": (base_flags + ["--out-dim", "256"], base_data),
        "x-local6": (base_flags + ["--local-crops", "6"], base_data),
        "x-gscale0.6": (base_flags + ["--global-scale", "0.6", "1.0"], base_data),
        "x-lscale0.1-0.5": (base_flags + ["--local-scale", "0.1", "0.5"], base_data),
        "x-dim96-heads6": (base_flags + ["--vit-dim", "96", "--vit-heads", "6"], base_data),
        "x-depth6": (base_flags + ["--vit-depth", "6"], base_data),
        "x-patch8": (base_flags + ["--patch-size", "8"], base_data),
        "x-warmup10": (base_flags + ["--warmup-epochs", "10"], base_data),
        "x-wd0.04": (base_flags + ["--weight-decay-end", "0.04"], base_data),
        "x-mom0.996": (base_flags + ["--momentum-teacher", "0.996"], base_data),
        "x-tt0.03": (base_flags + ["--teacher-temp", "0.03", "--warmup-teacher-temp", "0.03"], base_data),
        "x-batch64-lr2e-3": ([f if f != "32" else "64" for f in base_flags] + ["--lr", "2e-3"], base_data),
        "x-steps2x": (base_flags + ["--epochs", str(2 * epochs_for(1000))], base_data),
        "x-radius10-15": (base_flags, {**base_data, "radius": (10.0, 15.0)}),
        "x-cls-mean": (base_flags + ["--vit-pool", "mean"], base_data),
        "x-koleo0.1": (base_flags + ["--koleo", "0.1"], base_data),
    }
    order = list(grid)[:8] + list(extras) + list(grid)[8:]
    grid.update(extras)
    return {name: grid[name] for name in order}


def work(job):
    """ one attempt in this process: set the data, train, measure, write the JSON """
    name, flags, data, out, device, stop = job
    import torch
    torch.set_num_threads(1)
    from dino_ref.train import objects
    from attention_attempt import attempt
    objects.OBJECT_POLARITY = "lighter" if data["sign"] == 1 else "channel"
    objects.RADIUS = tuple(data["radius"])
    objects.CLUTTER = data.get("clutter", objects.CLUTTER)
    start = time.time()
    try:
        result = attempt(flags + ["--device", device, "--threads", "1", "--no-progress", "--quiet"]
                         + (["--steps", str(stop)] if stop else []))
    except Exception as error:                                        # keep the sweep going
        result = {"error": repr(error)}
    result.update(name=name, data=data, sweep_wall_s=round(time.time() - start, 1))
    Path(out, f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return name, {k: result.get(k) for k in ("knn_accuracy", "knn_accuracy_random_init", "jaccard",
                                              "jaccard_random_init", "sweep_wall_s", "error")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--smoke-steps", type=int, default=None, help="stop each run early (a test)")
    args = parser.parse_args()
    grid = attempts()
    if args.list:
        for name, (flags, data) in grid.items():
            print(name, data, " ".join(flags))
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = [(name, flags, data, args.out, args.device, args.smoke_steps) for name, (flags, data) in grid.items()
            if (not args.only or name in args.only) and not Path(args.out, f"{name}.json").exists()]
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for name, summary in pool.imap_unordered(work, jobs):
            print(f"[{time.strftime('%H:%M:%S')}] {name} {json.dumps(summary)}", flush=True)


if __name__ == "__main__":
    main()
