"""dino_ref: the DINO self-distillation loss, as a NumPy reference with explicit loops
(`dino_ref.numpy_ref`, no torch) and a vectorized torch module (`dino_ref.DINOLoss`)."""

__version__ = "0.1.0"
__all__ = ["DINOLoss", "numpy_ref"]


def __getattr__(name):
    # import torch only when the torch module is asked for, so that
    # `from dino_ref import numpy_ref` works (and stays light) without torch
    if name == "DINOLoss":
        from .loss import DINOLoss
        return DINOLoss
    raise AttributeError(f"module 'dino_ref' has no attribute {name!r}")
