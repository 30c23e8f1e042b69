"""Run the paper's Appendix D ablations on the toy and store one JSON list per sweep.

    python tools/run_ablations.py [--sweep teacher_temp center_momentum local_crops] [--seeds 0 1 2]
                                  [--jobs 2]

Every run starts from `--preset fig7` (the CNN without BatchNorm in its head) and changes only
the swept hyper-parameter:
  teacher_temp     the paper's grid, tau_t in {0 (hard targets), 0.02, 0.04, 0.06, 0.08} constant
                   and the warmup 0.04 -> 0.07 over the first 30 % of the run (9 of 30 epochs),
                   plus the toy's own grid around its operating point (seed 0, log-spaced
                   0.005 ... 0.1), each run marked "grid": "paper" or "toy";
  center_momentum  m in {0, 0.9, 0.99, 0.999} at the preset's tau_t;
  local_crops      N in {0, 2, 4, 6} local crops (seed 0): are the local crops worth their cost?
Results: notebooks/results/ablation_<sweep>.json, a list of runs, each with its `command` (the
exact `python -m dino_ref.train ...` line; add `--metrics-json FILE` to keep its metrics).
Runs already recorded are skipped, and a run whose configuration equals one of the committed
Fig. 7 runs (notebooks/results/fig7_*.json) is taken from there instead of being run again.
One thread per run (`--threads 1`), `--jobs` runs at a time; the file is rewritten after each run;
a run that fails is reported and left unrecorded, so the next call retries it.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.std import tqdm

RESULTS = Path(__file__).resolve().parent.parent / "notebooks" / "results"
PAPER_TEACHER_TEMPS = [0.0, 0.02, 0.04, 0.06, 0.08, (0.04, 0.07)]
TOY_TEACHER_TEMPS = [0.005, 0.0075, 0.01, 0.0125, 0.015, 0.025, 0.05, 0.1]
CENTER_MOMENTA = [0.0, 0.9, 0.99, 0.999]
LOCAL_CROPS = [0, 2, 4, 6]
SWEEPS = ["teacher_temp", "center_momentum", "local_crops"]
WARMUP_FRACTION = 0.3          # the paper ramps tau_t over 30 of its 100 epochs
PRESET_EPOCHS = 30


def flags(sweep, setting):
    """ the flags after `--preset fig7` that set one value of a sweep """
    if sweep == "center_momentum":
        return ["--center-momentum", f"{setting:g}"]
    if sweep == "local_crops":
        return ["--local-crops", str(setting)]
    if isinstance(setting, (tuple, list)):                            # the warmup, as its two ends
        warm, final = setting
        return ["--warmup-teacher-temp", f"{warm:g}", "--teacher-temp", f"{final:g}",
                "--warmup-teacher-temp-epochs", str(round(WARMUP_FRACTION * PRESET_EPOCHS))]
    return ["--teacher-temp", f"{setting:g}", "--warmup-teacher-temp", f"{setting:g}"]


def command(sweep, setting, seed):
    """ the argv after `python -m dino_ref.train` for one run """
    return ["--preset", "fig7", *flags(sweep, setting), "--seed", str(seed), "--threads", "1"]


def plan(sweeps, seeds):
    """ [(sweep, grid, setting, seed)] in the order they run """
    todo = []
    for seed in seeds:
        if "teacher_temp" in sweeps:
            todo += [("teacher_temp", "paper", s, seed) for s in PAPER_TEACHER_TEMPS]
            if seed == 0:
                todo += [("teacher_temp", "toy", s, seed) for s in TOY_TEACHER_TEMPS]
        if "center_momentum" in sweeps:
            todo += [("center_momentum", "paper", s, seed) for s in CENTER_MOMENTA]
        if "local_crops" in sweeps and seed == 0:
            todo += [("local_crops", "toy", s, seed) for s in LOCAL_CROPS]
    return todo


def final_value(setting):
    """ the swept value; a warmup by the value it ends at """
    return setting[-1] if isinstance(setting, (tuple, list)) else setting


def key(sweep, grid, setting, seed):
    setting = list(setting) if isinstance(setting, (tuple, list)) else setting
    return json.dumps([sweep, grid, setting, seed])


def config_of(argv):
    """ the Config a command line parses to, without the fields that only name outputs """
    from dino_ref.train import parse_args
    import dataclasses
    argv = list(argv)
    for flag in ("--metrics-json", "--plot", "--save"):            # paths: checked where they point
        while flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    c = dataclasses.asdict(parse_args(argv))
    for field in ("metrics_json", "plot", "save", "progress", "quiet", "threads", "resume"):
        c.pop(field, None)
    return c


def committed_fig7_run(argv):
    """ the metrics of a committed Fig. 7 run with the same configuration, or None """
    want = config_of(argv)
    for path in sorted(RESULTS.glob("fig7_*.json")):
        m = json.loads(path.read_text())
        if config_of(m["command"]) == want:
            return m, path.name
    return None


def record(sweep, grid, setting, seed, metrics, source):
    """ one entry of the results file """
    f = metrics["final"]
    per_epoch = [r for r in metrics["history"]
                 if r["step"] == 1 or abs(r["epoch"] - round(r["epoch"])) < 1e-9]
    return {
        "sweep": sweep, "grid": grid,
        "setting": list(setting) if isinstance(setting, (tuple, list)) else setting,
        "seed": seed,
        "command": "python -m dino_ref.train " + shlex.join(command(sweep, setting, seed)),
        "knn_accuracy": f["knn_accuracy"], "knn_accuracy_random_init": f["knn_accuracy_random_init"],
        "teacher_entropy": f["teacher_entropy"], "batch_entropy": f["batch_entropy"], "kl": f["kl"],
        "loss": f["loss"], "log_K": f["log_K"], "chance": f["chance"],
        "teacher_entropy_init": metrics["history"][0]["teacher_entropy"],
        "wall_time_s": f["wall_time_s"], "source": source,
        "history": [{k: r[k] for k in ("step", "epoch", "loss", "teacher_entropy", "batch_entropy",
                                       "kl", "teacher_temp") if k in r}
                    | ({"knn_accuracy": r["knn_accuracy"]} if "knn_accuracy" in r else {})
                    for r in per_epoch],
    }


def run(sweep, setting, seed):
    """ run one training in a subprocess; its metrics """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        subprocess.run([sys.executable, "-m", "dino_ref.train", *command(sweep, setting, seed),
                        "--no-progress", "--metrics-json", str(out)], check=True,
                       stdout=subprocess.DEVNULL, cwd=RESULTS.parent.parent)
        return json.loads(out.read_text())


def load(sweep):
    path = RESULTS / f"ablation_{sweep}.json"
    return json.loads(path.read_text()) if path.exists() else []


def save(sweep, runs):
    order = {"paper": 0, "toy": 1}
    runs.sort(key=lambda r: (order[r["grid"]], json.dumps(r["setting"]), r["seed"]))
    path = RESULTS / f"ablation_{sweep}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in runs) + "\n]\n")
    tmp.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", nargs="+", default=SWEEPS, choices=SWEEPS, help="(default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default: %(default)s)")
    parser.add_argument("--settings", nargs="+", type=float, default=None, metavar="X",
                        help="only these values of the swept parameter (a warmup by its final "
                             "value; default: the whole grid)")
    parser.add_argument("--dry-run", action="store_true", help="list the commands, run nothing")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    results = {s: load(s) for s in args.sweep}
    done = {key(r["sweep"], r["grid"], r["setting"], r["seed"]) for rs in results.values() for r in rs}
    todo = [t for t in plan(args.sweep, args.seeds) if key(*t) not in done
            and (args.settings is None or final_value(t[2]) in args.settings)]
    lock = threading.Lock()

    def one(task):
        sweep, grid, setting, seed = task
        argv = command(sweep, setting, seed)
        found = committed_fig7_run(argv)
        try:
            metrics, source = found if found else (run(sweep, setting, seed), "run")
        except subprocess.CalledProcessError as error:               # left unrecorded: retried next time
            tqdm.write(f"FAILED (exit {error.returncode}): python -m dino_ref.train {shlex.join(argv)}")
            return task
        with lock:
            results[sweep].append(record(sweep, grid, setting, seed, metrics, source))
            save(sweep, results[sweep])
        return task

    if args.dry_run:
        for sweep, grid, setting, seed in todo:
            print(f"[{grid}] python -m dino_ref.train " + shlex.join(command(sweep, setting, seed)))
        return
    bar = tqdm(total=len(todo), desc="ablations", dynamic_ncols=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for task in [pool.submit(one, t) for t in todo]:
            sweep, grid, setting, seed = task.result()
            bar.update()
            bar.set_postfix_str(f"{sweep}={setting} seed {seed}")
    bar.close()


if __name__ == "__main__":
    main()
