"""dino_ref: the DINO self-distillation loss, as a NumPy reference with explicit loops
(`dino_ref.numpy_ref`, no torch) and a vectorized torch module (`dino_ref.DINOLoss`); DINOv2's
additions (`sinkhorn_knopp`, `KoLeoLoss`, `iBOTPatchLoss`; loops in `dino_ref.numpy_dinov2`).

The loss library is this package's top level; the toy trainer (`dino_ref.train`) and the
notebooks' checkers (`dino_ref.exercises`) are subpackages that `import dino_ref` does not load.
"""

__version__ = "0.1.0"
__all__ = ["DINOLoss", "numpy_ref", "teacher_entropy", "batch_entropy", "kl_divergence",
           "sinkhorn_knopp", "KoLeoLoss", "iBOTPatchLoss"]

# torch is imported only when a torch name is asked for, so that `from dino_ref import numpy_ref`
# works (and stays light) without torch
_TORCH_NAMES = {"DINOLoss": "loss", "teacher_entropy": "diagnostics",
                "batch_entropy": "diagnostics", "kl_divergence": "diagnostics",
                "sinkhorn_knopp": "dinov2", "KoLeoLoss": "dinov2", "iBOTPatchLoss": "dinov2"}


def __getattr__(name):
    if name in _TORCH_NAMES:
        import importlib
        return getattr(importlib.import_module(f".{_TORCH_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'dino_ref' has no attribute {name!r}")
