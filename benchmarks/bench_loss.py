"""Speed and memory of dino_ref's loss against the two loss forms the public implementations use.

    python benchmarks/bench_loss.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16 ...]
                                    [--out benchmarks/results]
    python benchmarks/bench_loss.py --device cuda --dtype float32 bfloat16 --tune --budget-s 240
    TRITON_INTERPRET=1 python benchmarks/bench_loss.py --smoke --device cpu --tune --out /tmp/x

On CUDA (`--device cuda`) the forms are the einsum form (nidl's algorithm; eager and
`torch.compile`d), dino_ref's eager backend and its Triton backend (the default "auto" there), at
(T,S,B,D) = (2,12,64,65536), (2,12,256,65536), (2,10,32,65536), every dtype given in one process;
each forward+backward is timed several ways (see `cuda_times`, `cuda_graph_time`) beside one
device copy of s; `--tune` adds launch geometries of the Triton kernels; `--budget-s` skips what
no longer fits. Writes <out>/bench_cuda[_<dtype>].json (after each item) and .png. `--smoke` runs
the same code at tiny sizes (on CPU tensors: the kernels interpreted, CUDA-only readings None).

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
#
# `--device cuda` (or `--smoke`: tiny sizes, and on CPU tensors the Triton kernels in the
# interpreter, where the CUDA-only readings are None) runs, for every dtype given, in one process
# (torch.compile warms up once): the forms at the two large sizes, then the launch geometries
# (`--tune`) at those sizes, then the small size; each item is skipped when `--budget-s` has run
# out, and the JSON files are rewritten after each item, so a run cut short still leaves data.

CUDA_SIZES = [(12, 64, 65536), (12, 256, 65536), (10, 32, 65536)]      # the first two: tuned
SMOKE_SIZES = [(4, 3, 300), (3, 2, 520), (3, 2, 200)]
CUDA_FORMS = ("einsum", "einsum_compiled", "dino_ref_eager", "dino_ref")
PEERS = ("einsum", "einsum_compiled", "dino_ref_eager")                # what dino_ref must beat
GRAPH_FORMS = ("einsum", "dino_ref_eager", "dino_ref")                 # also timed by graph replay
LABELS = {"einsum": "einsum form (nidl's algorithm), eager", "einsum_compiled": "einsum form, torch.compile",
          "dino_ref_eager": 'dino_ref backend="eager"', "dino_ref": 'dino_ref "auto" (Triton)'}
# launch geometries of the Triton kernels (dino_ref.triton_kernels.plan arguments): block = D
# elements per student program (programs per row = D / block), warps per program, teacher block
TUNE_GEOMETRIES = [dict(), dict(num_warps=2), dict(num_warps=8), dict(block=256, num_warps=2),
                   dict(block=512), dict(block=512, num_warps=2), dict(block=2048),
                   dict(block=2048, num_warps=8), dict(block=4096, num_warps=8),
                   dict(block=4096, num_warps=16), dict(teacher_block=4096, num_warps=8),
                   dict(target_teacher_programs=4096)]
SMOKE_GEOMETRIES = [dict(), dict(block=256, num_warps=2), dict(block=128, teacher_block=128)]
COMPILE_GUESS_S = 60.0      # torch.compile's first forward+backward, until one is measured
TARGET_COPIES, TARGET_SPEEDUP = 2.0, 5.0


class Clock:
    """ the run's time budget: seconds left, and a stage line with the time since the start """

    def __init__(self, budget_s):
        self.t0 = time.monotonic()
        self.budget_s = budget_s or math.inf
        self.compile_s = COMPILE_GUESS_S
        self.prewarm = None

    def left(self):
        return self.budget_s - (time.monotonic() - self.t0)

    def log(self, msg):
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)


class Prewarm:
    """ compile ahead, in child processes, while the parent compiles its first size: the einsum
    form's torch.compile at the other (size, dtype) pairs (Inductor's FX-graph cache then serves
    the parent) and the Triton kernels of every tuned launch geometry (Triton's cache). Purely a
    saving of time: the parent compiles whatever a child did not. The parent waits for the
    children (killing stragglers) before it times anything, so nothing else runs on the GPU. """

    def __init__(self, jobs_per_child, device, log_dir):
        self.procs = []
        env = dict(os.environ, TORCHINDUCTOR_COMPILE_THREADS="2", OMP_NUM_THREADS="1")
        for k, jobs in enumerate(j for j in jobs_per_child if j):
            log = os.path.join(log_dir, f"prewarm_{k}.log")
            with open(log, "w") as fh:
                proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--prewarm",
                                         json.dumps(jobs), "--device", str(device)],
                                        stdout=fh, stderr=subprocess.STDOUT, env=env,
                                        preexec_fn=_die_with_parent)
            self.procs.append((proc, log, len(jobs)))
        self.done = False

    def wait(self, clock, reserve_s=120.0):
        """ until every child has finished, or until only reserve_s of the budget is left """
        if self.done:
            return
        self.done = True
        t0 = time.monotonic()
        for proc, log, n in self.procs:
            try:
                proc.wait(timeout=max(1.0, min(180.0, clock.left() - reserve_s)))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with open(log) as fh:
                lines = fh.read().splitlines()
            ok = sum(line.startswith("prewarmed ") for line in lines)
            clock.log(f"  prewarm child {proc.pid}: rc {proc.returncode}, {ok}/{n} jobs"
                      + ("" if proc.returncode == 0 else " | " + " | ".join(lines[-3:])[:600]))
        clock.log(f"  waited {time.monotonic() - t0:.1f}s for the prewarm children")


def _die_with_parent():
    """ in a child, before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG) """
    try:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except Exception:  # noqa: BLE001  (elsewhere: the parent's wait kills the children)
        pass


def prewarm_jobs(sizes_, dtypes, geometries, tune, n_tune_children=3):
    """ [[job, ...] per child]: one child per torch.compile (size, dtype) but the parent's
    first, and the tuned geometries spread over n_tune_children """
    compile_jobs = [["compile", S, B, D, name, None] for S, B, D in sizes_ for name in dtypes][1:]
    tune_jobs = [["tune", S, B, D, name, g] for S, B, D in sizes_[:2] for name in dtypes
                 for g in geometries] if tune else []
    per_child = [[job] for job in compile_jobs]
    per_child += [tune_jobs[k::n_tune_children] for k in range(n_tune_children)]
    return per_child


def run_prewarm(jobs, device):
    """ child process: run each job once (compiling what it needs), print a line per job """
    from dino_ref import triton_kernels
    for kind, S, B, D, name, geometry in jobs:
        t0 = time.perf_counter()
        try:
            teacher, student = make_device_inputs(S, B, D, device, getattr(torch, name))
            if kind == "compile":
                make_cuda_form("einsum_compiled", D, device, getattr(torch, name))(teacher, student).backward()
            else:
                center = torch.zeros(1, 1, D, device=device)
                triton_kernels.dino_loss_with_geometry(teacher, student, center, TAU_T, TAU_S, M,
                                                       geometry=geometry).backward()
            sync(device)
            print(f"prewarmed {kind} {S} {B} {D} {name} {geometry} in {time.perf_counter() - t0:.1f}s",
                  flush=True)
        except Exception as e:  # noqa: BLE001  (the parent compiles it then)
            print(f"failed {kind} {S} {B} {D} {name} {geometry}: {type(e).__name__}: {e}"[:500], flush=True)
        finally:
            teacher = student = None  # noqa: F841


def make_cuda_form(name, D, device, dtype):
    """ a callable (teacher, student) -> loss with its own center; "dino_ref" is the default
    DINOLoss (backend "auto": Triton on CUDA; "triton" on CPU tensors, in the interpreter),
    "dino_ref_eager" the same with backend="eager" """
    if name.startswith("dino_ref"):
        backend = "eager" if name == "dino_ref_eager" else ("auto" if device.type == "cuda" else "triton")
        loss_fn = DINOLoss(D, warmup_teacher_temp=TAU_T, teacher_temp=TAU_T, student_temp=TAU_S,
                           center_momentum=M, backend=backend).to(device)
        return lambda t, s: loss_fn(t, s)
    center = torch.zeros(1, D, device=device, dtype=dtype)
    if name == "einsum_compiled":  # static shapes: one graph per size; CPU smoke: dynamo only
        f = torch.compile(einsum_form, dynamic=False,
                          backend="inductor" if device.type == "cuda" else "eager")
    else:
        f = einsum_form
    return lambda t, s: f(t, s, center)


def median(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    """ the 10th and 90th percentiles (None under 4 samples) """
    if len(xs) < 4:
        return None
    q = statistics.quantiles(xs, n=10)
    return [q[0], q[-1]]


def cuda_times(step, repeats, sleep_cycles, device):
    """ ms per call of step() (a forward+backward), medians over repeats:
    plain   CUDA events around a call issued on an idle GPU: host and launch gaps included,
            what a training loop sees;
    device  the same with the GPU held busy by torch.cuda._sleep while the call is queued, so
            the kernels run back to back: device time alone;
    host    wall time of the host to enqueue one call (GPU busy, nothing waits for it);
    uncovered  repeats whose enqueue outlasted the sleep (their device time holds host gaps).
    On CPU tensors (smoke runs) every reading is the wall time of a call. """
    if device.type != "cuda":
        wall = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            wall.append((time.perf_counter() - t0) * 1e3)
        w = median(wall)
        return {"plain_ms": w, "device_ms": w, "host_ms": w, "sleep_ms": None, "uncovered": 0,
                "device_p10_p90_ms": spread(wall)}
    ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
    plain, device_t, host, sleep, uncovered = [], [], [], [], 0
    for _ in range(repeats):
        start, end, before = ev(), ev(), ev()
        torch.cuda.synchronize()
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        plain.append(start.elapsed_time(end))
        before.record()
        torch.cuda._sleep(sleep_cycles)                  # the GPU is busy while we enqueue
        start.record()
        t0 = time.perf_counter()
        step()
        host.append((time.perf_counter() - t0) * 1e3)
        end.record()
        torch.cuda.synchronize()
        device_t.append(start.elapsed_time(end))
        sleep.append(before.elapsed_time(start))
        uncovered += host[-1] > sleep[-1]
    return {"plain_ms": median(plain), "device_ms": median(device_t), "host_ms": median(host),
            "sleep_ms": median(sleep), "uncovered": uncovered, "device_p10_p90_ms": spread(device_t)}


def cuda_graph_time(step, repeats, sleep_cycles, device):
    """ ms per replay of step() captured in a CUDA graph, median of replays queued behind a GPU
    sleep (None on CPU tensors, or if the form cannot be captured: the error is printed) """
    if device.type != "cuda":
        return None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):                  # warm-up on a side stream, as capture needs
            step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    except Exception as e:  # noqa: BLE001  (report, do not fail the benchmark)
        print(f"    CUDA graph capture failed: {type(e).__name__}: {e}", flush=True)
        try:
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001
            pass
        return None
    graph.replay()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(repeats)]
    torch.cuda._sleep(sleep_cycles)
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    ms = median([start.elapsed_time(end) for start, end in events])
    del graph
    return ms


def sleep_cycles_for(ms, device):
    """ torch.cuda._sleep cycles that keep the GPU busy for about `ms` milliseconds (measured
    twice, the second time with the clocks up; 0 on CPU) """
    if device.type != "cuda":
        return 0
    n = 10 ** 7
    for _ in range(2):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(n)
        end.record()
        torch.cuda.synchronize()
        per_ms = n / max(start.elapsed_time(end), 1e-3)
    return int(per_ms * ms)


def peak_growth_mb(step, student, device):
    """ growth of max_memory_allocated over one call, MiB (None on CPU tensors) """
    if device.type != "cuda":
        return None
    student.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20


def launches_per_call(step, device):
    """ device operations of one call, from torch.profiler: their number, their summed device
    time and the most frequent names (on CPU tensors the profiler runs, and counts none) """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        step()
        sync(device)
    ops = [e for e in prof.events() if "CUDA" in str(getattr(e, "device_type", ""))]
    names = {}
    for e in ops:
        names[e.name[:60]] = names.get(e.name[:60], 0) + 1
    return {"device_ops": len(ops),
            "device_ops_ms": sum(e.time_range.elapsed_us() for e in ops) / 1e3,
            "names": dict(sorted(names.items(), key=lambda kv: -kv[1])[:12])}


def profile_launches(row, device, clock):
    """ row["forms"][form]["launches"] for each form measured in the row (the profiler runs
    last in the benchmark: nothing is timed after CUPTI has been switched on) """
    S, B, D = row["S"], row["B"], row["D"]
    dtype = getattr(torch, row["dtype"])
    teacher, student = make_device_inputs(S, B, D, device, dtype)
    for name in CUDA_FORMS:
        r = row["forms"].get(name, {})
        if "device_ms" not in r or clock.left() < 8:
            continue
        f = make_cuda_form(name, D, device, dtype)

        def step():
            student.grad = None
            f(teacher, student).backward()
        try:
            step()                                       # compiled already: dynamo's cache, Triton's
            r["launches"] = launches_per_call(step, device)
        except Exception as e:  # noqa: BLE001
            r["launches"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        student.grad = None
    clock.log(f"  device ops per call at S={S} B={B} D={D} {row['dtype']}: "
              + ", ".join(f"{n} {row['forms'][n].get('launches', {}).get('device_ops', '-')}"
                          for n in CUDA_FORMS if n in row["forms"]))


def triton_memory_limit_mb(S, B, D, dtype):
    """ what the Triton path may allocate in one call: the gradient (student's dtype) plus the
    kernels' float32 scratch, O(S·B·D/block + T·B·D/teacher_block + groups·D) (as in
    tests/test_triton.py), + 1 MiB of allocator rounding """
    from dino_ref import triton_kernels
    p = triton_kernels.plan(S, B, D, T)
    scratch = 4 * (2 * T * B * p["n_dblk"] + p["n_groups"] * D + 4 * S * B * p["n_blk"] + 2 * S * B + D
                   + p["n_row_programs"])
    return (S * B * D * dtype.itemsize + scratch) / 2 ** 20 + 1.0


def make_device_inputs(S, B, D, device, dtype, seed=0):
    """ random teacher (T, B, D) and student (S, B, D), drawn on the device (fast at 10^8 values) """
    gen = torch.Generator(device=device).manual_seed(seed)
    teacher = torch.randn(T, B, D, generator=gen, device=device).to(dtype)
    student = torch.randn(S, B, D, generator=gen, device=device).to(dtype).requires_grad_()
    return teacher, student


def bench_device_size(S, B, D, device, dtype, repeats, clock):
    """ every form at one size: times, graph replay, peak memory, launches; one copy of s """
    teacher, student = make_device_inputs(S, B, D, device, dtype)
    compile_ok = clock.left() > clock.compile_s + 30
    names = [n for n in CUDA_FORMS if compile_ok or n != "einsum_compiled"]
    forms = {name: make_cuda_form(name, D, device, dtype) for name in names}
    src, dst = student.detach().clone(), torch.empty_like(student)
    out = {} if compile_ok else {"einsum_compiled": {"skipped": "time budget (compilation)"}}

    def step_of(name):
        def step():
            student.grad = None
            forms[name](teacher, student).backward()
        return step

    ok = []
    for name in names:                                   # warm-up: compile, autotune, caches
        try:
            t0 = time.perf_counter()
            step_of(name)()
            sync(device)
            first_s = time.perf_counter() - t0
            for _ in range(2):
                step_of(name)()
            sync(device)
            ok.append(name)
            out[name] = {"first_call_s": first_s}
            if name == "einsum_compiled":
                clock.compile_s = first_s
        except Exception as e:  # noqa: BLE001  (report the form as failed, measure the others)
            out[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"  {name} FAILED: {out[name]['error'][:300]}", flush=True)
    clock.log(f"  warmed up {ok} (first calls: "
              + ", ".join(f"{n} {out[n]['first_call_s']:.1f}s" for n in ok) + ")")
    if clock.prewarm is not None:                        # nothing else on the GPU while timing
        clock.prewarm.wait(clock)
    student.grad = None
    host_guess = max([cuda_times(step_of(n), 3, sleep_cycles_for(20, device), device)["host_ms"]
                      for n in ok] or [0.0])
    cycles = sleep_cycles_for(max(10.0, 4 * host_guess), device)   # longer than any host enqueue
    opt = lambda x: "   -   " if x is None else f"{x:7.3f}"  # noqa: E731
    for name in ok:
        step = step_of(name)
        r = out[name]
        try:
            r.update(cuda_times(step, repeats, cycles, device))
            r["peak_mb"] = peak_growth_mb(step, student, device)
            r["graph_ms"] = cuda_graph_time(step, repeats, cycles, device) if name in GRAPH_FORMS else None
        except Exception as e:  # noqa: BLE001  (keep the other forms)
            r["error"] = f"{type(e).__name__}: {e}"[:2000]
            r.pop("device_ms", None)
            clock.log(f"  {name} FAILED while timed: {r['error'][:300]}")
            continue
        finally:
            student.grad = None
        clock.log(f"  {name:16s} device {opt(r['device_ms'])} ms  plain {opt(r['plain_ms'])} ms  "
                  f"host {opt(r['host_ms'])} ms  graph {opt(r['graph_ms'])} ms  peak {opt(r['peak_mb'])} MB"
                  + (f"  ({r['uncovered']} repeats not covered by the sleep)" if r["uncovered"] else ""))
    copy = cuda_times(lambda: dst.copy_(src), repeats, cycles, device)
    student_mb = student.numel() * student.element_size() / 2 ** 20
    row = {"T": T, "S": S, "B": B, "D": D, "dtype": str(dtype).replace("torch.", ""),
           "forms": {n: out[n] for n in CUDA_FORMS if n in out}, "copy_ms": copy["device_ms"],
           "copy_gbps": 2 * student_mb * 2 ** 20 / (copy["device_ms"] * 1e6), "student_mb": student_mb,
           "sleep_cycles": cycles}
    row["targets"] = targets(row)
    del forms, teacher, student, src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def targets(row):
    """ dino_ref against the goals: device time (events behind a sleep; graph replay) in copies
    of s (goal <= 2), speed-up over the fastest peer (plain: what a loop sees; device: kernels
    alone; goal >= 5), peak memory against gradient + scratch """
    f, copy = row["forms"], row["copy_ms"]
    ours = f.get("dino_ref", {})
    if "device_ms" not in ours:
        return {"error": "dino_ref was not measured"}

    def best(key):
        vals = [f[n][key] for n in PEERS if f.get(n, {}).get(key) is not None]
        return min(vals) if vals else None

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    t = {"device_copies": ratio(ours["device_ms"], copy), "graph_copies": ratio(ours.get("graph_ms"), copy),
         "speedup_plain": ratio(best("plain_ms"), ours["plain_ms"]),
         "speedup_device": ratio(best("device_ms"), ours["device_ms"]),
         "speedup_graph_vs_peer_graph": ratio(best("graph_ms"), ours.get("graph_ms"))}
    t["copies_ok"] = t["device_copies"] is not None and t["device_copies"] <= TARGET_COPIES
    t["speedup_ok"] = t["speedup_plain"] is not None and t["speedup_plain"] >= TARGET_SPEEDUP
    if ours.get("peak_mb") is not None:
        limit = triton_memory_limit_mb(row["S"], row["B"], row["D"], getattr(torch, row["dtype"]))
        t.update(peak_mb=ours["peak_mb"], memory_limit_mb=limit, memory_ok=ours["peak_mb"] <= limit)
    return t


def tune_device(S, B, D, device, dtype, repeats, clock, geometries):
    """ the Triton loss call (forward+backward) per launch geometry: device time behind a sleep,
    graph replay, host time; the best by device time first in the printed summary """
    from dino_ref import triton_kernels
    teacher, student = make_device_inputs(S, B, D, device, dtype)
    center = torch.zeros(1, 1, D, device=device)
    results = []
    cycles = sleep_cycles_for(10.0, device)
    for geometry in geometries:
        if clock.left() < 15:
            results.append({"geometry_args": geometry, "skipped": "time budget"})
            continue

        def step():
            student.grad = None
            triton_kernels.dino_loss_with_geometry(teacher, student, center, TAU_T, TAU_S, M,
                                                   geometry=geometry).backward()
        try:
            t0 = time.perf_counter()
            step()
            sync(device)
            first_s = time.perf_counter() - t0
            step()
            r = cuda_times(step, repeats, cycles, device)
            r["graph_ms"] = cuda_graph_time(step, repeats, cycles, device)
            r["first_call_s"] = first_s
        except Exception as e:  # noqa: BLE001
            r = {"error": f"{type(e).__name__}: {e}"[:1000]}
            try:
                sync(device)
            except Exception:  # noqa: BLE001  (a sticky CUDA error: reported above)
                pass
        r["geometry_args"] = geometry
        r["geometry"] = triton_kernels.plan(S, B, D, T, **geometry)
        student.grad = None
        clock.log(f"  tune {geometry}: device {r.get('device_ms', r.get('error'))} ms, "
                  f"graph {r.get('graph_ms')} ms, host {r.get('host_ms')} ms")
        results.append(r)
    return results


def fmt_cuda_table(rows):
    head = ("dtype", "(T,S,B,D)", "form", "device ms", "× copy", "graph ms", "host ms", "plain ms",
            "speed-up (plain)", "peak MB", "device ops")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    num = lambda x, f="{:.3f}": "-" if x is None else f.format(x)  # noqa: E731
    for r in rows:
        f = r["forms"]
        size = f"({r['T']},{r['S']},{r['B']},{r['D']})"
        best_peer = min([f[n]["plain_ms"] for n in PEERS if f.get(n, {}).get("plain_ms") is not None]
                        or [math.nan])
        for name in CUDA_FORMS:
            x = f.get(name, {"skipped": "not run"})
            if "device_ms" not in x:
                lines.append(f"{r['dtype']} | {size} | {name} | "
                             + ("failed: " + x["error"][:80] if "error" in x else x.get("skipped", "?")))
                continue
            ops = x.get("launches", {}).get("device_ops")
            lines.append(" | ".join([
                r["dtype"], size, name, num(x["device_ms"]), num(x["device_ms"] / r["copy_ms"], "{:.1f}"),
                num(x["graph_ms"]), num(x["host_ms"]), num(x["plain_ms"]),
                num(best_peer / x["plain_ms"], "{:.1f}x"), num(x["peak_mb"], "{:.0f}"), num(ops, "{}")]))
        lines.append(f"{r['dtype']} | {size} | one copy of s | {r['copy_ms']:.3f} | 1.0 | | | | | "
                     f"{r['student_mb']:.0f} (size of s) | {r['copy_gbps']:.0f} GB/s")
        t = r.get("targets", {})
        if "device_copies" in t:
            lines.append(f"{r['dtype']} | {size} | goals | device {num(t['device_copies'], '{:.2f}')}"
                         f" copies (<= {TARGET_COPIES}: {t['copies_ok']}), graph {num(t['graph_copies'], '{:.2f}')}"
                         f" copies; speed-up plain {num(t['speedup_plain'], '{:.1f}')}x (>= {TARGET_SPEEDUP}: "
                         f"{t['speedup_ok']}), device {num(t['speedup_device'], '{:.1f}')}x; memory "
                         f"{num(t.get('peak_mb'), '{:.0f}')} MB <= {num(t.get('memory_limit_mb'), '{:.0f}')}: "
                         f"{t.get('memory_ok')}")
    return "\n".join(lines)


def fmt_tuning(rows, top=None):
    """ per (size, dtype): the launch geometries by device time (the `top` fastest and the
    default plan, marked "default") """
    lines = []
    for r in rows:
        tuned = [x for x in r.get("tuning", []) if "device_ms" in x]
        if not tuned:
            continue
        copy = r.get("copy_ms") or math.nan
        lines.append(f"tuning {r['dtype']} ({r['T']},{r['S']},{r['B']},{r['D']}), copy {copy:.3f} ms: "
                     "geometry | device ms | × copy | graph ms | host ms")
        ranked = sorted(tuned, key=lambda x: x["device_ms"])
        shown = ranked if top is None else [x for k, x in enumerate(ranked) if k < top or not x["geometry_args"]]
        for x in shown:
            g = x["geometry"]
            mark = "default " if not x["geometry_args"] else ""
            lines.append(f"  {mark}block {g['block']} ({g['n_blk']}/row) warps {g['num_warps']} teacher_block "
                         f"{g['teacher_block']} groups {g['n_groups']} | {x['device_ms']:.3f} | "
                         f"{x['device_ms'] / copy:.2f} | "
                         f"{'-' if x['graph_ms'] is None else format(x['graph_ms'], '.3f')} | {x['host_ms']:.3f}")
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
            ax.bar(xs, [r["forms"].get(name, {}).get(key) or math.nan for r in rows], width,
                   label=LABELS[name])
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
    plt.close(fig)


def write_json(path, data):
    """ atomically: a reader (or a run killed mid-write) never sees half a file """
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh, indent=1)
    os.replace(path + ".tmp", path)


def main_device(args):
    """ the CUDA benchmark (--device cuda), or its smoke run on CPU tensors (--smoke) """
    device = torch.device(args.device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("--smoke on CPU tensors runs the Triton kernels in the interpreter: set TRITON_INTERPRET=1")
    clock = Clock(args.budget_s)
    smoke = args.smoke
    repeats = args.repeats or (3 if smoke else 10 if args.quick else 30)
    tune_repeats = max(3, repeats // 2)
    sizes_ = SMOKE_SIZES if smoke else CUDA_SIZES
    big, small = sizes_[:2], sizes_[2:]
    geometries = SMOKE_GEOMETRIES if smoke else TUNE_GEOMETRIES
    import triton
    env = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "device": str(device), "smoke": smoke,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "repeats": repeats, "tune_repeats": tune_repeats, "budget_s": args.budget_s,
           "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(sm_count=props.multi_processor_count, memory_gb=props.total_memory / 1e9)
    os.makedirs(args.out, exist_ok=True)
    stem = "bench_cuda" if device.type == "cuda" else "bench_smoke_cpu"
    docs = {}
    for name in args.dtype:
        path = os.path.join(args.out, stem + ("" if name == "float32" else f"_{name}") + ".json")
        docs[name] = (path, {"env": dict(env, dtype=name), "forms": CUDA_FORMS, "labels": LABELS,
                             "results": [], "complete": False})

    def rows_of(name):
        return docs[name][1]["results"]

    def flush(name):
        write_json(*docs[name])

    clock.log(f"device benchmark on {env['gpu'] or device}: dtypes {args.dtype}, sizes {sizes_}, "
              f"repeats {repeats}, budget {args.budget_s} s")
    if not args.no_prewarm:
        import tempfile
        jobs = prewarm_jobs(big + small, args.dtype, geometries, args.tune)
        clock.prewarm = Prewarm(jobs, device, tempfile.mkdtemp(prefix="bench_prewarm_"))
        clock.log(f"started {len(clock.prewarm.procs)} prewarm children ({sum(map(len, jobs))} jobs)")
    # the forms at the large sizes, the launch geometries there, then the forms at the small size
    phases = [("forms", size, name) for size in big for name in args.dtype]
    phases += [("tune", size, name) for size in big for name in args.dtype] if args.tune else []
    phases += [("forms", size, name) for size in small for name in args.dtype]
    for kind, (S, B, D), name in phases:
        what = f"{kind} S={S} B={B} D={D} {name}"
        if clock.left() < (15 if kind == "tune" or (S, B, D) in small else 25):
            clock.log(f"skip {what}: time budget")
            docs[name][1].setdefault("skipped", []).append(what)
            flush(name)
            continue
        clock.log(what)
        dtype = getattr(torch, name)
        if kind == "tune" and clock.prewarm is not None:
            clock.prewarm.wait(clock)
        try:
            if kind == "forms":
                rows_of(name).append(bench_device_size(S, B, D, device, dtype, repeats, clock))
            else:
                row = next((r for r in rows_of(name) if (r["S"], r["B"], r["D"]) == (S, B, D)), None)
                result = tune_device(S, B, D, device, dtype, tune_repeats, clock, geometries)
                if row is None:
                    rows_of(name).append({"T": T, "S": S, "B": B, "D": D, "dtype": name, "forms": {},
                                          "tuning": result})
                else:
                    row["tuning"] = result
        except Exception as e:  # noqa: BLE001  (keep what was measured)
            clock.log(f"  FAILED: {type(e).__name__}: {e}")
            rows_of(name).append({"T": T, "S": S, "B": B, "D": D, "dtype": name, "forms": {},
                                  "error": f"{kind}: {type(e).__name__}: {e}"[:2000]})
            try:
                sync(device)
            except Exception as e2:  # noqa: BLE001  (a sticky CUDA error: the rest fails fast)
                clock.log(f"  and then: {type(e2).__name__}: {e2}")
        flush(name)
    if clock.prewarm is not None:
        clock.prewarm.wait(clock, reserve_s=math.inf)    # kills any child still running
    if not args.no_profile:                              # last: CUPTI may slow what follows it
        for name in args.dtype:
            for row in rows_of(name):
                if "copy_ms" in row and clock.left() > 10:
                    try:
                        profile_launches(row, device, clock)
                    except Exception as e:  # noqa: BLE001
                        clock.log(f"  profiler failed: {type(e).__name__}: {e}")
            flush(name)
    for name in args.dtype:
        path, doc = docs[name]
        doc["results"].sort(key=lambda r: (r["S"] * r["B"], r["D"]))
        doc["complete"] = True
        doc["elapsed_s"] = time.monotonic() - clock.t0
        flush(name)
        rows = [r for r in doc["results"] if "copy_ms" in r]
        if rows and not args.no_plot:
            try:
                plot_cuda(rows, path[:-5] + ".png",
                          f"DINO loss forward+backward, {env['gpu'] or device}, {name}")
            except Exception as e:  # noqa: BLE001
                clock.log(f"plot failed: {type(e).__name__}: {e}")
    all_rows = [r for name in args.dtype for r in docs[name][1]["results"] if "copy_ms" in r]
    print(fmt_tuning([r for name in args.dtype for r in docs[name][1]["results"]], top=4))
    print()
    print(fmt_cuda_table(all_rows))
    print("\ndevice: CUDA events around a call queued behind torch.cuda._sleep (kernels back to back);"
          " graph: per replay of a captured forward+backward, behind a sleep; host: time to enqueue one"
          " call; plain: CUDA events around a call on an idle GPU (host included); speed-up (plain) ="
          " the fastest of einsum, einsum_compiled, dino_ref_eager / the form; × copy = device / one"
          " copy of s; device ops: kernels + copies + memsets of one call (torch.profiler)")
    clock.log("wrote " + ", ".join(path for path, _ in docs.values()))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~1 min on CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"],
                   help="one dtype (CPU); with --device cuda or --smoke, several run in one process")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the per-process memory runs")
    p.add_argument("--tune", action="store_true",
                   help="CUDA: also time the Triton kernels under a few launch geometries")
    p.add_argument("--smoke", action="store_true",
                   help="the device benchmark at tiny sizes; with --device cpu on CPU tensors, the "
                        "Triton kernels in the interpreter (TRITON_INTERPRET=1), CUDA-only readings None")
    p.add_argument("--budget-s", type=float, default=None,
                   help="device benchmark: skip what is left after this many seconds")
    p.add_argument("--no-profile", action="store_true", help="device benchmark: no launch counts")
    p.add_argument("--no-plot", action="store_true", help="device benchmark: no PNG")
    p.add_argument("--no-prewarm", action="store_true",
                   help="device benchmark: no compilation ahead in child processes")
    p.add_argument("--prewarm", metavar="JOBS", help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=4, metavar=("FORM", "S", "B", "D"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        form, S, B, D = args.child[0], *map(int, args.child[1:])
        print(peak_memory_child(form, S, B, D, torch.device(args.device), getattr(torch, args.dtype[0])))
        return
    if args.prewarm:
        run_prewarm(json.loads(args.prewarm), torch.device(args.device))
        return
    if args.device == "cuda" or args.smoke:
        main_device(args)
        return
    if len(args.dtype) > 1:
        p.error("the CPU benchmark takes one --dtype")
    args.dtype = args.dtype[0]
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

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
