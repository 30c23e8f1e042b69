"""Random teacher and student logits, and teacher targets, for the loss tests."""
import torch


def batch(T=2, S=6, B=4, D=16, seed=0, dtype=torch.float32):
    """ teacher logits (T, B, D) around a shared offset per dimension (the center matters), student
    logits (S, B, D) """
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(D, generator=gen) + 0.5 * torch.randn(T, B, D, generator=gen)
    return teacher.to(dtype), torch.randn(S, B, D, generator=gen).to(dtype)


def targets_and_student(T=2, S=4, B=3, D=5, seed=0, dtype=torch.float64):
    """ sharp teacher targets P_t (T, B, D) and student logits (S, B, D) """
    gen = torch.Generator().manual_seed(seed)
    P_t = torch.softmax(torch.randn(T, B, D, generator=gen, dtype=dtype) / 0.07, dim=-1)
    return P_t, torch.randn(S, B, D, generator=gen, dtype=dtype)
