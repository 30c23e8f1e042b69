"""`python -m dino_ref`: the loss on a sample multi-crop batch, both versions side by side."""
import argparse
import time

import numpy as np
import torch

from . import DINOLoss, numpy_ref
from .common import num_pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m dino_ref",
        description="Compute the DINO loss on a sample multi-crop batch (2 global + 8 local crops, "
                    "batch 8, output_dim 256) with the NumPy reference and the torch module, over "
                    "four calls (epochs 0, 1, 29, None), and print loss, gradient and center "
                    "differences. Takes no options besides --help.",
        epilog="Next: python -m dino_ref.train --help (a tiny DINO trained on your CPU).")
    return parser.parse_args(argv)


def main(argv=None):
    parse_args(argv)
    T, S, B, D = 2, 10, 8, 256  # 2 global + 8 local crops, batch 8, output_dim 256
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=D) + 0.5 * rng.normal(size=(T, B, D))   # (T, B, D), biased: the center matters
    student = rng.normal(size=(S, B, D))                              # (S, B, D)
    print(f"teacher (T, B, D) = {teacher.shape}, student (S, B, D) = {student.shape}, "
          f"{num_pairs(T, S)} (teacher view, student view) pairs")

    ref = numpy_ref.DINOLoss(output_dim=D)
    mod = DINOLoss(output_dim=D).double()
    print(f"{'call':>4} {'epoch':>5} {'tau_t':>7} {'NumPy loss':>12} {'torch loss':>12} "
          f"{'|d loss|':>9} {'|d grad|':>9} {'|d center|':>10}")
    for call, epoch in enumerate([0, 1, 29, None]):
        loss_ref = ref(teacher, student, epoch=epoch)
        s = torch.tensor(student, requires_grad=True)
        loss = mod(torch.tensor(teacher), s, epoch=epoch)
        loss.backward()
        d_loss = abs(loss.item() - loss_ref)
        d_grad = np.abs(s.grad.numpy() - ref.backward()).max()
        d_center = np.abs(mod.center.numpy() - ref.center).max()
        print(f"{call:>4} {str(epoch):>5} {mod.teacher_temperature(epoch):7.4f} {loss_ref:12.6f} "
              f"{loss.item():12.6f} {d_loss:9.1e} {d_grad:9.1e} {d_center:10.1e}")
        assert d_loss < 1e-10 * abs(loss_ref) and d_grad < 1e-12 and d_center < 1e-12

    t32, s32 = torch.tensor(teacher, dtype=torch.float32), torch.tensor(student, dtype=torch.float32)
    start = time.perf_counter()
    DINOLoss(output_dim=D)(t32, s32.requires_grad_()).backward()
    print(f"the two versions agree (float64); torch float32 forward+backward: "
          f"{1e3 * (time.perf_counter() - start):.1f} ms")
    print("next: python -m dino_ref.train   (a tiny DINO trained on your CPU)")


if __name__ == "__main__":
    main()
