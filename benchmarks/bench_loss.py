"""Speed and memory of dino_ref's loss against the two loss forms the public implementations use.

    python benchmarks/bench_loss.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16]
                                    [--out benchmarks/results]

On CUDA (`--device cuda`) the forms are the einsum form (eager and `torch.compile`d), dino_ref's
eager backend and its Triton backend (the default "auto" there), at (T,S,B,D) = (2,12,64,65536),
(2,12,256,65536), (2,10,32,1024); each forward+backward is timed four ways (see `cuda_times`)
beside one device copy of s. Writes <out>/bench_cuda[_<dtype>].json and .png.

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
import math  # noqa: E402
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


# ---- CUDA: device time apart from the host, host enqueue time, memory ------------------------

CUDA_SIZES = [(12, 64, 65536), (12, 256, 65536), (10, 32, 1024)]
CUDA_FORMS = ("einsum", "einsum_compiled", "dino_ref_eager", "dino_ref")
LABELS = {"einsum": "einsum form (nidl, eager)", "einsum_compiled": "einsum form, torch.compile",
          "dino_ref_eager": 'dino_ref backend="eager"', "dino_ref": 'dino_ref "auto" (Triton)'}


def make_cuda_form(name, D, device, dtype):
    """ a callable (teacher, student) -> loss with its own center; "dino_ref" is the default
    DINOLoss (backend "auto": Triton on CUDA), "dino_ref_eager" the same with backend="eager" """
    if name.startswith("dino_ref"):
        loss_fn = DINOLoss(D, warmup_teacher_temp=TAU_T, teacher_temp=TAU_T, student_temp=TAU_S,
                           center_momentum=M, backend="eager" if name == "dino_ref_eager" else "auto")
        loss_fn = loss_fn.to(device)
        return lambda t, s: loss_fn(t, s)
    center = torch.zeros(1, D, device=device, dtype=dtype)
    f = torch.compile(einsum_form, dynamic=False) if name == "einsum_compiled" else einsum_form
    return lambda t, s: f(t, s, center)


def cuda_times(step, repeats, sleep_cycles):
    """ ms per call of step() (a forward+backward), medians over repeats:
    plain   CUDA events around a call issued on an idle GPU: host and launch gaps included,
            what a training loop sees;
    device  the same with the GPU held busy by torch.cuda._sleep while the call is queued, so
            the kernels run back to back: device time alone;
    host    wall time of the host to enqueue one call (GPU busy, nothing waits for it)
    """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    plain, device, host = [], [], []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        plain.append(start.elapsed_time(end))
        torch.cuda._sleep(sleep_cycles)                  # the GPU is busy while we enqueue
        start.record()
        t0 = time.perf_counter()
        step()
        host.append((time.perf_counter() - t0) * 1e3)
        end.record()
        torch.cuda.synchronize()
        device.append(start.elapsed_time(end))
    return {"plain_ms": statistics.median(plain), "device_ms": statistics.median(device),
            "host_ms": statistics.median(host)}


def cuda_graph_time(step, repeats):
    """ ms per replay of step() captured in a CUDA graph (None if the form cannot be captured) """
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except Exception as e:  # noqa: BLE001  (report, do not fail the benchmark)
        print(f"    CUDA graph capture failed: {type(e).__name__}: {e}", flush=True)
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def sleep_cycles_for(ms):
    """ torch.cuda._sleep cycles that keep the GPU busy for about `ms` milliseconds """
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = 10 ** 6
    start.record()
    torch.cuda._sleep(n)
    end.record()
    torch.cuda.synchronize()
    return int(n * ms / max(start.elapsed_time(end), 1e-3))


def bench_cuda_size(S, B, D, device, dtype, repeats):
    teacher, student = make_inputs(S, B, D, device, dtype)
    forms = {name: make_cuda_form(name, D, device, dtype) for name in CUDA_FORMS}
    src, dst = student.detach().clone(), torch.empty_like(student)
    out = {}

    def step_of(name):
        def step():
            student.grad = None
            forms[name](teacher, student).backward()
        return step

    failed = {}
    for name in CUDA_FORMS:                               # warm-up: compile, autotune, caches
        try:
            for _ in range(3):
                step_of(name)()
        except Exception as e:  # noqa: BLE001  (report the form as failed, measure the others)
            failed[name] = f"{type(e).__name__}: {e}"
            print(f"  {name} FAILED: {failed[name]}", flush=True)
    torch.cuda.synchronize()
    names = [n for n in CUDA_FORMS if n not in failed]
    host_guess = max(cuda_times(step_of(n), 3, sleep_cycles_for(20))["host_ms"] for n in names)
    cycles = sleep_cycles_for(max(5.0, 3 * host_guess))   # longer than any host enqueue
    for name in names:
        step = step_of(name)
        r = cuda_times(step, repeats, cycles)
        student.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize()
        r["peak_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
        r["graph_ms"] = cuda_graph_time(step, repeats) if name.startswith("dino_ref") else None
        out[name] = r
        student.grad = None
        print(f"  {name:16s} device {r['device_ms']:7.3f} ms  plain {r['plain_ms']:7.3f} ms  "
              f"host {r['host_ms']:6.3f} ms  graph {r['graph_ms'] or float('nan'):7.3f} ms  "
              f"peak {r['peak_mb']:7.1f} MB", flush=True)
    out.update({name: {"error": msg} for name, msg in failed.items()})
    copy = cuda_times(lambda: dst.copy_(src), repeats, cycles)
    return {"T": T, "S": S, "B": B, "D": D, "forms": out, "copy_ms": copy["device_ms"],
            "student_mb": student.numel() * student.element_size() / 2 ** 20}


# launch geometries of the Triton kernels to compare (dino_ref.triton_kernels.plan arguments)
TUNE_GEOMETRIES = [dict(), dict(num_warps=8), dict(block=512), dict(block=256),
                   dict(block=2048, num_warps=8), dict(block=512, num_warps=2)]


def tune_cuda(S, B, D, device, dtype, repeats):
    """ device time of the Triton loss call (forward+backward) per launch geometry """
    from dino_ref import triton_kernels
    teacher, student = make_inputs(S, B, D, device, dtype)
    center = torch.zeros(1, 1, D, device=device)
    results = []
    for geometry in TUNE_GEOMETRIES:
        def step():
            student.grad = None
            triton_kernels.dino_loss_with_geometry(teacher, student, center, TAU_T, TAU_S, M, geometry=geometry).backward()
        try:
            for _ in range(2):
                step()
            r = cuda_times(step, repeats, sleep_cycles_for(5.0))
        except Exception as e:  # noqa: BLE001
            r = {"error": f"{type(e).__name__}: {e}"}
        r["geometry"] = triton_kernels.plan(S, B, D, T, **geometry)
        print(f"  tune S={S} B={B} D={D} {geometry}: {r.get('device_ms', r.get('error'))}", flush=True)
        results.append(r)
    return results


def fmt_cuda_table(rows):
    head = ("(T,S,B,D)", "form", "device ms", "× copy", "graph ms", "host ms", "plain ms",
            "speed-up (plain)", "peak MB")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        f = r["forms"]
        best_peer = min(f[n].get("plain_ms", math.inf) for n in ("einsum", "einsum_compiled"))
        for name in CUDA_FORMS:
            x = f[name]
            if "error" in x:
                lines.append(f"({r['T']},{r['S']},{r['B']},{r['D']}) | {name} | failed: {x['error'][:80]}")
                continue
            lines.append(" | ".join([
                f"({r['T']},{r['S']},{r['B']},{r['D']})", name, f"{x['device_ms']:.3f}",
                f"{x['device_ms'] / r['copy_ms']:.1f}",
                "-" if x["graph_ms"] is None else f"{x['graph_ms']:.3f}", f"{x['host_ms']:.3f}",
                f"{x['plain_ms']:.3f}", f"{best_peer / x['plain_ms']:.1f}x", f"{x['peak_mb']:.0f}"]))
        lines.append(f"({r['T']},{r['S']},{r['B']},{r['D']}) | one copy of s | {r['copy_ms']:.3f} | 1.0 "
                     f"| | | | | {r['student_mb']:.0f} (size of s)")
    return "\n".join(lines)


def plot_cuda(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"S={r['S']} B={r['B']}\nD={r['D']}" for r in rows]
    width = 0.8 / (len(CUDA_FORMS) + 1)
    for ax, key, ylabel in ((axes[0], "device_ms", "device time per call, ms (median)"),
                            (axes[1], "plain_ms", "call time incl. host, ms (median)")):
        for k, name in enumerate(CUDA_FORMS):
            xs = [j + k * width for j in range(len(rows))]
            ax.bar(xs, [r["forms"][name].get(key, math.nan) for r in rows], width, label=LABELS[name])
        xs = [j + len(CUDA_FORMS) * width for j in range(len(rows))]
        ax.bar(xs, [r["copy_ms"] for r in rows], width, label="one copy of s", color="k")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], labels)
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("size (T = 2)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.25), ncol=3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")


def main_cuda(args):
    device, dtype = torch.device("cuda"), getattr(torch, args.dtype)
    repeats = args.repeats or (10 if args.quick else 30)
    rows = []
    for S, B, D in CUDA_SIZES:
        print(f"S={S} B={B} D={D} {args.dtype}", flush=True)
        rows.append(bench_cuda_size(S, B, D, device, dtype, repeats))
        if args.tune and D >= 16384:
            rows[-1]["tuning"] = tune_cuda(S, B, D, device, dtype, max(5, repeats // 3))
    import triton
    env = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "gpu": torch.cuda.get_device_name(device),
           "dtype": args.dtype, "repeats": repeats}
    print(fmt_cuda_table(rows))
    print("\ndevice: CUDA events around a call queued behind torch.cuda._sleep (kernels back to back);"
          " graph: per replay of a captured forward+backward; host: time to enqueue one call;"
          " plain: CUDA events around a call on an idle GPU (host included); speed-up (plain) ="
          " the faster of einsum and einsum_compiled / the form; × copy = device / one copy of s")
    os.makedirs(args.out, exist_ok=True)
    stem = "bench_cuda" + ("" if args.dtype == "float32" else f"_{args.dtype}")
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump({"env": env, "forms": CUDA_FORMS, "results": rows}, fh, indent=1)
    plot_cuda(rows, os.path.join(args.out, stem + ".png"),
              f"DINO loss forward+backward, {env['gpu']}, {args.dtype}")
    print(f"\nwrote {os.path.join(args.out, stem + '.json')} and .png")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~1 min on CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the per-process memory runs")
    p.add_argument("--tune", action="store_true",
                   help="CUDA: also time the Triton kernels under a few launch geometries")
    p.add_argument("--child", nargs=4, metavar=("FORM", "S", "B", "D"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.child:
        form, S, B, D = args.child[0], *map(int, args.child[1:])
        print(peak_memory_child(form, S, B, D, device, dtype))
        return
    if device.type == "cuda":
        main_cuda(args)
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
