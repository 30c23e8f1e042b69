"""What the losses share about a batch: the dtype they compute in, and the mean over all rows of
all ranks (the center of DINO and iBOT, the batch entropy)."""

import torch
import torch.distributed as dist

__all__ = ["compute_dtype", "global_batch_mean"]


def compute_dtype(*tensors):
    """ float64 if any input is float64, else float32 (half and bfloat16 are computed in float32) """
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype



@torch.no_grad()
def global_batch_mean(teacher):
    """ mean over all teacher rows of all ranks; (T, B, D) -> (1, 1, D)

    Under torch.distributed, all-reduce the row sum and the row count (not a mean of means),
    so the center is exact even when ranks hold different batch sizes.
    """
    T, B, D = teacher.shape
    rows_sum = teacher.sum(dim=(0, 1))                                # (D,)
    if dist.is_available() and dist.is_initialized():
        count = torch.full((1,), float(T * B), dtype=teacher.dtype, device=teacher.device)
        packed = torch.cat([rows_sum, count])                         # (D + 1,) one all-reduce
        dist.all_reduce(packed)
        rows_sum, n_rows = packed[:D], packed[D:]
    else:
        n_rows = T * B
    return (rows_sum / n_rows).reshape(1, 1, D)
