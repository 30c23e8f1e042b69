"""Compile dino_ref's Triton kernels for an NVIDIA GPU on a machine without one.

    python tools/compile_triton_kernels.py [--arch 90] [--shape T S B D] [--dtypes float32 bfloat16 ...]

Triton's CUDA backend (TTIR -> TTGIR -> LLVM -> PTX -> cubin, with the ptxas bundled in the
triton wheel) needs no GPU to compile. This records the launches of one forward+backward of
`dino_ref.triton_kernels` on meta tensors (shapes only), specialises the arguments the way a real
launch does (integers equal to 1 become constants, multiples of 16 get a divisibility hint,
pointers are 16-byte aligned), compiles every launch for the given architecture and prints each
kernel's registers and spills (from the bundled cuobjdump). Exit status 1 if a kernel fails to
compile. It cannot run TRITON_INTERPRET=1 (the kernels must be real JIT functions).
"""

import argparse
import os
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("unset TRITON_INTERPRET: the interpreter replaces the kernels this compiles")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from dino_ref import triton_kernels  # noqa: E402

KERNELS = ("_teacher_kernel", "_student_stats_kernel", "_finalize_kernel", "_student_grad_kernel")
TYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


class Recorder:
    """ stands in for a kernel: `kernel[grid](*args, **kwargs)` records the launch """

    def __init__(self, fn, launches):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launches.append((self.fn, grid, args, kwargs))


def record_launches(T, S, B, D, dtype):
    """ the launches of one forward (center update on) and backward, on meta tensors """
    launches = []
    originals = {name: getattr(triton_kernels, name) for name in KERNELS}
    try:
        for name, fn in originals.items():
            setattr(triton_kernels, name, Recorder(fn, launches))
        teacher = torch.empty(T, B, D, dtype=dtype, device="meta")
        student = torch.empty(S, B, D, dtype=dtype, device="meta")
        center = torch.empty(D, dtype=torch.float32, device="meta")
        _, (tstats, rowstat, c_old, p) = triton_kernels._forward(student, teacher, center, 0.04, 0.1,
                                                                 0.9, save=True)
        grad_out = torch.empty((), dtype=rowstat.dtype, device="meta")
        triton_kernels._backward(student, teacher, c_old, tstats, rowstat, p, 0.04, 0.1, grad_out)
    finally:
        for name, fn in originals.items():
            setattr(triton_kernels, name, fn)
    return launches


def specialise(fn, args, kwargs):
    """ signature, constants and attributes as Triton's launcher derives them from the values """
    signature, constexprs, attrs = {}, {}, {}
    options = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(fn.arg_names, args))
    values.update({k: v for k, v in kwargs.items() if k not in options})
    for index, name in enumerate(fn.arg_names):
        value = values[name]
        if name in kwargs:                                               # a tl.constexpr parameter
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + TYPE_NAMES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            if value == 1:
                signature[name], constexprs[name] = "constexpr", 1
            else:
                signature[name] = "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
                if value % 16 == 0:
                    attrs[(index,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: argument {name} of type {type(value).__name__}")
    return signature, constexprs, attrs, options


def resource_usage(cubin):
    """ registers and spills of a cubin, from the cuobjdump bundled with triton (or None) """
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        out = subprocess.run([tool, "-res-usage", fh.name], capture_output=True, text=True)
    lines = [line.strip() for line in out.stdout.splitlines() if "REG" in line]
    return lines[0] if lines else out.stdout.strip()[-200:]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    p.add_argument("--shape", type=int, nargs=4, default=[2, 12, 64, 65536], metavar=("T", "S", "B", "D"))
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16", "float64"])
    args = p.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    failures = 0
    for dtype_name in args.dtypes:
        for fn, grid, a, k in record_launches(*args.shape, getattr(torch, dtype_name)):
            signature, constexprs, attrs, options = specialise(fn, a, k)
            try:
                kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target,
                                        options=options)
                usage = resource_usage(kernel.asm["cubin"])
                print(f"ok   {dtype_name:8s} {fn.__name__:22s} grid {grid}: {usage}", flush=True)
            except Exception as e:  # noqa: BLE001  (report every kernel, then fail)
                failures += 1
                print(f"FAIL {dtype_name:8s} {fn.__name__:22s}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
