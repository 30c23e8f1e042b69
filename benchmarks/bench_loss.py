"""Speed and memory of dino_ref's loss against the two loss forms the public implementations use.

    python benchmarks/bench_loss.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16]
                                    [--out benchmarks/results]

Three forms, each a full loss call (teacher softmax, loss, center update), teacher without grad:
  original  the original authors' algorithm: log_softmax of a student view inside the loop over
            (teacher view, student view) pairs;
  einsum    nidl's and lightly's algorithm: log_softmax of all student views once, then a
            (T, S) matrix of cross-entropies by einsum, diagonal zeroed, summed;
  dino_ref  dino_ref.DINOLoss (fused forward, analytic backward, chunked, see dino_ref/fused.py).
The two baselines are written here from their published algorithm (no code of theirs is used).

Times are medians over repeats taken round-robin (one repeat of each form in turn), so the
forms see the same machine state. Peak memory growth is measured in a fresh process per
(form, size): the rise of the resident-set high-water mark (CPU) or of max_memory_allocated
(CUDA) over one forward+backward, inputs allocated before the baseline reading.
Writes <out>/bench_<device>[_<dtype>].json and .png. No assertions: it only reports.
"""

import os

# Intra-op threads that spin-wait at every fork/join steal the cores from each other as soon as
# another process shares them (each op then costs a scheduler tick, ~8 ms here, whatever its
# size). Sleeping waiters avoid that; it must be set before torch loads OpenMP. Applies to all
# three forms alike; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dino_ref import DINOLoss  # noqa: E402

T = 2
TAU_T, TAU_S, M = 0.04, 0.1, 0.9
FORMS = ("original", "einsum", "dino_ref")


# ---- the two baselines, re-implemented from their published algorithm ----------------------

def original_form(teacher, student, center):
    """ pair loop, log_softmax inside it; student (S, B, D), teacher (T, B, D), center (1, D) """
    S, B, D = student.shape
    s_views = (student.reshape(S * B, D) / TAU_S).chunk(S)                 # S x (B, D)
    q_views = F.softmax((teacher.reshape(-1, D) - center) / TAU_T, -1).detach().chunk(T)
    total, n_terms = 0, 0
    for iq, q in enumerate(q_views):
        for v in range(S):
            if v == iq:
                continue
            loss = torch.sum(-q * F.log_softmax(s_views[v], dim=-1), dim=-1)  # (B,)
            total += loss.mean()
            n_terms += 1
    total /= n_terms
    with torch.no_grad():                                                   # c <- m c + (1-m) mean(t)
        center.mul_(M).add_(teacher.reshape(-1, D).mean(0, keepdim=True), alpha=1 - M)
    return total


def einsum_form(teacher, student, center):
    """ log_softmax once, (T, S) loss matrix by einsum, diagonal zeroed """
    S, B, D = student.shape
    P_t = F.softmax((teacher - center) / TAU_T, -1)                         # (T, B, D)
    log_P_s = F.log_softmax(student / TAU_S, -1)                            # (S, B, D)
    loss_matrix = torch.einsum("tbd,sbd->ts", -P_t, log_P_s) / B            # (T, S)
    off_diagonal = 1 - torch.eye(T, S, device=student.device, dtype=loss_matrix.dtype)
    loss = (loss_matrix * off_diagonal).sum() / (T * S - min(T, S))
    with torch.no_grad():
        center.mul_(M).add_(teacher.mean(dim=(0, 1)), alpha=1 - M)
    return loss


def make_form(name, D, device, dtype):
    """ a callable (teacher, student) -> loss with its own center state """
    if name == "dino_ref":
        loss_fn = DINOLoss(D, warmup_teacher_temp=TAU_T, teacher_temp=TAU_T, student_temp=TAU_S,
                           center_momentum=M).to(device)
        return lambda t, s: loss_fn(t, s)
    center = torch.zeros(1, D, device=device, dtype=dtype)
    f = original_form if name == "original" else einsum_form
    return lambda t, s: f(t, s, center)


def make_inputs(S, B, D, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(T, B, D, generator=gen).to(device, dtype)
    student = torch.randn(S, B, D, generator=gen).to(device, dtype).requires_grad_()
    return teacher, student


# ---- measurements --------------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forms(S, B, D, device, dtype, repeats):
    """ {form: {"fwd": ms, "fwd_bwd": ms}}, medians, round-robin over forms """
    teacher, student = make_inputs(S, B, D, device, dtype)
    forms = {name: make_form(name, D, device, dtype) for name in FORMS}
    samples = {name: {"fwd": [], "fwd_bwd": []} for name in FORMS}

    def one(name, backward):
        student.grad = None
        sync(device)
        t0 = time.perf_counter()
        if backward:
            forms[name](teacher, student).backward()
        else:
            with torch.no_grad():
                forms[name](teacher, student)
        sync(device)
        return (time.perf_counter() - t0) * 1e3

    for name in FORMS:  # warm-up: one-time library initialisation is not what we measure
        one(name, True)
    for _ in range(repeats):
        for mode in ("fwd", "fwd_bwd"):
            for name in FORMS:
                samples[name][mode].append(one(name, mode == "fwd_bwd"))
    student.grad = None
    return {name: {mode: statistics.median(v) for mode, v in modes.items()}
            for name, modes in samples.items()}


def time_memory_passes(S, B, D, device, dtype, repeats=9):
    """ ms for one pass over a tensor of the student's size: read it (a max), copy it into an
    existing buffer, exp it into an existing buffer, copy it into a fresh one (page faults) """
    src = torch.randn(S, B, D, device=device).to(dtype)
    dst = torch.empty_like(src)

    def med(f):
        f()
        ts = []
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            ts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ts)

    return {"read": med(lambda: src.amax()), "copy": med(lambda: dst.copy_(src)),
            "exp": med(lambda: torch.exp(src, out=dst)),
            "fresh_copy": med(lambda: torch.empty_like(src).copy_(src))}


def peak_memory_child(form, S, B, D, device, dtype):
    """ run in a fresh process: peak memory growth (bytes) of one forward+backward """
    device = torch.device(device)
    teacher, student = make_inputs(S, B, D, device, dtype)
    f = make_form(form, D, device, dtype)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        f(teacher, student).backward()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark VmHWM to VmRSS
        fh.write("5")
    before = proc_status_kb("VmRSS")
    f(teacher, student).backward()
    return (proc_status_kb("VmHWM") - before) * 1024


def proc_status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(form, S, B, D, device, dtype):
    if device.type == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        return None  # needs Linux
    cmd = [sys.executable, os.path.abspath(__file__), "--child", form, str(S), str(B), str(D),
           "--device", str(device), "--dtype", str(dtype).replace("torch.", ""),
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def lower_bound(passes):
    """ what no implementation can beat: the loss reads s once and takes one exp per element
    (softmax needs it); with the gradient it also writes dL/ds, a fresh tensor (one copy plus
    the page faults of a new tensor: fresh_copy - copy) """
    return {"fwd": max(passes["read"], passes["exp"]),
            "fwd_bwd": max(passes["copy"], passes["exp"]) + max(0.0, passes["fresh_copy"] - passes["copy"])}


# ---- report --------------------------------------------------------------------------------

def sizes(quick):
    """ (S, B, D): a sweep in S at (B, D) = (32, 65536), one in D at (S, B) = (10, 32), and the
    large setting (12, 64, 65536) """
    if quick:
        by_S = [(4, 32, 65536), (10, 32, 65536)]
        by_D = [(10, 32, 4096), (10, 32, 65536)]
        extra = []
    else:
        by_S = [(2, 32, 65536), (4, 32, 65536), (6, 32, 65536), (10, 32, 65536), (12, 32, 65536)]
        by_D = [(10, 32, 1024), (10, 32, 4096), (10, 32, 16384), (10, 32, 65536)]
        extra = [(12, 64, 65536)]
    return list(dict.fromkeys(by_S + by_D + extra)), by_S, by_D


def fmt_table(rows):
    head = ("(T,S,B,D)", "mode", "original ms", "einsum ms", "dino_ref ms", "speed-up",
            "copy ms", "lower bnd ms", "peak MB orig/eins/ours", "mem ratio")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        for mode in ("fwd", "fwd_bwd"):
            t = r["time_ms"]
            best = min(t["original"][mode], t["einsum"][mode])
            mem = r["peak_mb"]
            mem_s = "/".join("-" if mem[f] is None else f"{mem[f]:.0f}" for f in FORMS)
            ratio = (f"{mem['dino_ref'] / mem['einsum']:.2f}" if None not in mem.values()
                     and mode == "fwd_bwd" else "")
            lb = r["lower_bound_ms"][mode]
            lines.append(" | ".join([
                f"({T},{r['S']},{r['B']},{r['D']})", "fwd+bwd" if mode == "fwd_bwd" else "fwd",
                f"{t['original'][mode]:.1f}", f"{t['einsum'][mode]:.1f}", f"{t['dino_ref'][mode]:.1f}",
                f"{best / t['dino_ref'][mode]:.1f}x", f"{r['passes_ms']['copy']:.2f}", f"{lb:.1f}",
                mem_s if mode == "fwd_bwd" else "", ratio]))
    return "\n".join(lines)


def plot(rows, by_S, by_D, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pick(keys):
        return [next(r for r in rows if (r["S"], r["B"], r["D"]) == k) for k in keys]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, x_name in ((axes[0], by_S, "S"), (axes[1], by_D, "D")):
        sel = pick(keys)
        xs = [r[x_name] for r in sel]
        for name, style in zip(FORMS, ("o-", "s-", "^-")):
            ax.plot(xs, [r["time_ms"][name]["fwd_bwd"] for r in sel], style, label=name)
        ax.plot(xs, [r["lower_bound_ms"]["fwd_bwd"] for r in sel], "k--", label="memory-traffic bound")
        ax.set_yscale("log")
        ax.set_ylabel("forward+backward, ms (median)")
        if x_name == "D":
            ax.set_xscale("log", base=2)
            ax.set_xlabel("output dim D (S=10, B=32)")
        else:
            ax.set_xlabel("student views S (B=32, D=65536)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~1 min on CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the per-process memory runs")
    p.add_argument("--child", nargs=4, metavar=("FORM", "S", "B", "D"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.child:
        form, S, B, D = args.child[0], *map(int, args.child[1:])
        print(peak_memory_child(form, S, B, D, device, dtype))
        return

    repeats = args.repeats or (3 if args.quick else 7)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    all_sizes, by_S, by_D = sizes(args.quick)
    rows = []
    for S, B, D in all_sizes:
        t = time_forms(S, B, D, device, dtype, repeats)
        passes = time_memory_passes(S, B, D, device, dtype)
        mem = {name: None if args.no_memory else peak_memory(name, S, B, D, device, dtype)
               for name in FORMS}
        rows.append({
            "T": T, "S": S, "B": B, "D": D, "time_ms": t, "passes_ms": passes,
            "lower_bound_ms": lower_bound(passes),
            "peak_mb": {k: None if v is None else v / 2 ** 20 for k, v in mem.items()},
        })
        r = t["dino_ref"]["fwd_bwd"]
        print(f"S={S:3d} B={B:3d} D={D:6d}  fwd+bwd ms: original {t['original']['fwd_bwd']:8.1f}  "
              f"einsum {t['einsum']['fwd_bwd']:8.1f}  dino_ref {r:7.1f}  (copy {passes['copy']:.2f})",
              flush=True)

    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "dtype": args.dtype, "threads": torch.get_num_threads(), "repeats": repeats,
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
           "machine": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           # other processes on the same cores slow the many-op forms: say how busy it was
           "loadavg_1min_before_after": [load_before,
                                         os.getloadavg()[0] if hasattr(os, "getloadavg") else None]}
    print(f"\nOMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}; "
          f"1-min load average before/after: {env['loadavg_1min_before_after']} "
          f"(cores: {os.cpu_count()}; above ~0.5 other processes share the cores)")
    print(fmt_table(rows))
    print("\nspeed-up = min(original, einsum) / dino_ref; mem ratio = dino_ref / einsum peak growth;")
    print("lower bound: fwd = max(read s, exp of s); fwd+bwd = max(copy s, exp of s) + page faults of "
          "one fresh s-sized tensor (fresh copy - copy)")
    for r in rows:
        pm = r["passes_ms"]
        print(f"  S={r['S']} B={r['B']} D={r['D']}: read {pm['read']:.2f} ms, copy {pm['copy']:.2f} ms "
              f"({r['S'] * r['B'] * r['D'] * dtype.itemsize * 2 / pm['copy'] / 1e6:.1f} GB/s), "
              f"exp {pm['exp']:.2f} ms, copy into a fresh tensor {pm['fresh_copy']:.2f} ms; dino_ref fwd+bwd = "
              f"{r['time_ms']['dino_ref']['fwd_bwd'] / pm['copy']:.1f} copies")
    os.makedirs(args.out, exist_ok=True)
    stem = f"bench_{device.type}" + ("" if args.dtype == "float32" else f"_{args.dtype}")
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump({"env": env, "forms": FORMS, "results": rows}, fh, indent=1)
    plot(rows, by_S, by_D, os.path.join(args.out, stem + ".png"),
         f"DINO loss, {device.type} {args.dtype}, {env['threads']} threads, T={T}")
    print(f"\nwrote {os.path.join(args.out, stem + '.json')} and .png")


if __name__ == "__main__":
    main()
