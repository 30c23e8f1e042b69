"""Device time of the Triton kernels under the launch plan's warps rule (8 elements per thread)
beside 4 warps per program at the same block, with one device copy of s; float32 and bfloat16.
CUDA only. Results of an H200 run: benchmarks/results/h200/plan_warps_after.txt.

    python benchmarks/plan_warps.py

Device time as bench_loss.py measures it (`cuda_times`: CUDA events around a call queued behind
torch.cuda._sleep, medians of 30). The committed H200 results were printed by an inline form of
this script that timed the same way with a fixed sleep.
"""

import torch

from bench_loss import cuda_times, sleep_cycles_for          # benchmarks/ is on sys.path as a script
from dino_ref import triton_kernels

SHAPES = [(2, 10, 32, 65536), (2, 12, 64, 65536), (2, 12, 256, 65536), (2, 10, 32, 4096), (2, 10, 8, 4096)]


def main(shapes=SHAPES, device=torch.device("cuda")):
    sleep = sleep_cycles_for(5, device)                              # longer than any call here
    device_ms = lambda fn: cuda_times(fn, 30, sleep, device)["device_ms"]  # noqa: E731
    for dtype in (torch.float32, torch.bfloat16):
        for T, S, B, D in shapes:
            teacher = torch.randn(T, B, D, device=device, dtype=dtype)
            student = torch.randn(S, B, D, device=device, dtype=dtype, requires_grad=True)
            center = torch.zeros(D, device=device)
            plan = triton_kernels.plan(S, B, D, T)
            times = {}
            for name, geometry in (("rule", None), ("4 warps", dict(num_warps=4, block=plan["block"]))):
                def step():
                    student.grad = None
                    triton_kernels.dino_loss_with_geometry(teacher, student, center, 0.04, 0.1, 0.9,
                                                           geometry=geometry).backward()
                times[name] = device_ms(step)
            copy = device_ms(lambda: student.detach().clone())
            print(f"{str(dtype)[6:]:9s} ({T},{S},{B},{D}) block {plan['block']} warps {plan['num_warps']}: "
                  f"{times['rule']:.3f} ms ({times['rule'] / copy:.2f} copies); 4 warps "
                  f"{times['4 warps']:.3f} ms; copy {copy:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
