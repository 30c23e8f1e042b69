"""The fused CPU pass of an earlier revision beside this tree's, side by side in one process:
medians of forward+backward (`dino_cross_entropy`) taken round-robin, at two spreads of the
student logits (N(0, 1) is head-like; N(0, 3) / tau_s = 0.1 sends many exp(z) below float32's
smallest normal number).

    python benchmarks/bench_fused_versions.py REV [--threads 2]

REV is a git revision whose dino_ref/fused.py is loaded with `git show` (e.g. the commit before a
change to the fused pass). No assertions: it only reports.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")    # as bench_loss.py: sleeping thread waits

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from dino_ref import fused as current  # noqa: E402

SHAPES = [(2, 10, 32, 65536), (2, 12, 64, 65536), (2, 10, 32, 16384), (2, 10, 8, 4096)]


def load_revision(rev):
    """ dino_ref/fused.py as of `rev`, imported as a module (its relative import made absolute) """
    source = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:dino_ref/fused.py"], check=True,
                            capture_output=True, text=True).stdout
    source = source.replace("from .readable import", "from dino_ref.readable import")
    path = os.path.join(tempfile.mkdtemp(), "fused_at_revision.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("fused_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    forms = {args.rev: load_revision(args.rev), "this tree": current}
    print(f"torch {torch.__version__}, {args.threads} threads, tau_s 0.1; forward+backward, ms")
    for spread in (1.0, 3.0):
        for T, S, B, D in SHAPES:
            gen = torch.Generator().manual_seed(0)
            s = (spread * torch.randn(S, B, D, generator=gen)).requires_grad_()
            P_t = torch.softmax(torch.randn(T, B, D, generator=gen), dim=-1)
            times = {name: [] for name in forms}
            repeats = 15 if D >= 65536 else 40
            for r in range(repeats + 2):                 # round-robin; the first two are warm-ups
                for name, module in forms.items():
                    s.grad = None
                    start = time.perf_counter()
                    module.dino_cross_entropy(P_t, s, 0.1).backward()
                    if r >= 2:
                        times[name].append(time.perf_counter() - start)
            old, new = (1e3 * statistics.median(times[name]) for name in forms)
            print(f"logits N(0, {spread:g}^2) ({T},{S},{B},{D}): {args.rev} {old:8.2f}  this tree "
                  f"{new:8.2f}  ratio {new / old:.3f}", flush=True)


if __name__ == "__main__":
    main()
