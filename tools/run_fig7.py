"""Run the paper's Fig. 7 with `--preset fig7` and store the metrics the collapse notebook plots.

    python tools/run_fig7.py --seeds 0 1 2 [--jobs 2]

Three commands per seed, differing only in the loss's hyper-parameters:
    default        python -m dino_ref.train --preset fig7
    no centering   ... --center-momentum 1.0
    no sharpening  ... --teacher-temp 0.1 --warmup-teacher-temp 0.1   (tau_t = tau_s = 0.1)
Each writes notebooks/results/fig7_<run>_seed<s>.json; this script then adds the exact argv
("command", what follows `python -m dino_ref.train`) and the machine's load average, and keeps
every 10th history record (plus every k-NN evaluation) so the files stay small.
tests/test_train.py checks that each file's `config` is what its `command` parses to.
"""

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RUNS = {"default": [], "no_centering": ["--center-momentum", "1.0"],
        "no_sharpening": ["--teacher-temp", "0.1", "--warmup-teacher-temp", "0.1"]}
RESULTS = Path("notebooks") / "results"


def command(run, seed):
    """ the argv after `python -m dino_ref.train` for one run and seed """
    path = RESULTS / f"fig7_{run}_seed{seed}.json"
    return ["--preset", "fig7", *RUNS[run], "--seed", str(seed), "--threads", "1",
            "--no-progress", "--metrics-json", str(path)]


def run_one(run, seed):
    load_before = os.getloadavg()[0]
    subprocess.run([sys.executable, "-m", "dino_ref.train", *command(run, seed)], check=True)
    finish(run, seed, load_before)


def finish(run, seed, load_before, keep_every=10):
    """ add the command and the load to a run's metrics file, thin its history, print a line """
    argv = command(run, seed)
    path = Path(argv[-1])
    m = json.loads(path.read_text())
    m["history"] = [r for r in m["history"]                           # idempotent
                    if r["step"] % keep_every == 0 or "knn_accuracy" in r or r["step"] == 1]
    m["command"] = argv
    m["load_average_1min"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    path.write_text(json.dumps(m, indent=None, separators=(",", ":")) + "\n")
    f = m["final"]
    print(f"{run:14s} seed {seed}: h {f['teacher_entropy'] / f['log_K']:.3f} log K, "
          f"h_batch {f['batch_entropy'] / f['log_K']:.3f} log K, KL {f['kl']:.4f}, "
          f"k-NN {f['knn_accuracy']:.3f} (init {f['knn_accuracy_random_init']:.3f}), "
          f"{f['wall_time_s']:.0f} s, load {m['load_average_1min']}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="(default: %(default)s)")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS),
                        help="(default: all three)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default: %(default)s)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="RUN:SEED",
                        help="runs not to start, e.g. no_sharpening:0 (default: none)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    todo = [(run, seed) for seed in args.seeds for run in args.runs
            if f"{run}:{seed}" not in args.skip]
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(run_one, run, seed) for run, seed in todo]:
            future.result()


if __name__ == "__main__":
    main()
