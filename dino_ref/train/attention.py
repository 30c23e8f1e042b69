"""Where a ViT's class token looks, measured against the object's mask (the paper's Fig. 1 and Sec. 4.2).

The last block's self-attention of the class token over the patches, per head; the paper keeps
the patches that hold 60 % of its mass and compares that set with the object's mask by Jaccard
similarity (|A n B| / |A u B|). Here the comparison is at patch resolution: a patch is object
when at least half of its pixels are. `jaccard` is the best head's mean over held-out images,
the head chosen on a separate split; the mean over heads is reported beside it.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["class_token_attention", "mass_threshold", "patch_mask", "jaccard",
           "jaccard_per_head", "attention_jaccard", "centre_prior"]


@torch.no_grad()
def class_token_attention(vit, images):
    """ the last block's attention of the class token over the patches, per head

    images (N, 3, H, W) -> (N, heads, H/p * W/p), each row the softmax row of the class token's
    query, softmax(q_cls k^T / sqrt(d)), with the class token's own entry dropped (so a row sums
    to 1 minus that entry, as in the paper's maps). The network runs its own forward; a hook reads
    the last block's input and recomputes the attention weights from its norm1 and qkv layers.
    """
    block = vit.blocks[-1]
    seen = {}
    hook = block.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    was_training = vit.training
    vit.eval()
    try:
        vit(images)
    finally:
        hook.remove()
        vit.train(was_training)
    x = block.norm1(seen["x"])                                        # (N, L, dim), L = 1 + patches
    N, L, dim = x.shape
    d = dim // block.heads
    q, k, _ = block.qkv(x).view(N, L, 3, block.heads, d).permute(2, 0, 3, 1, 4)  # (N, h, L, d)
    # softmax(q_cls k^T / sqrt(d)): the class token's query against every key
    scores = q[:, :, :1] @ k.transpose(-2, -1) / math.sqrt(d)         # (N, h, 1, L)
    return scores.softmax(dim=-1)[:, :, 0, 1:]                        # (N, h, L - 1) patches only


def mass_threshold(attention, mass=0.6):
    """ the patches holding `mass` of the attention: (..., P) -> bool (..., P)

    Each row is normalised to sum 1, sorted in decreasing order, and the smallest leading set whose
    cumulative mass reaches `mass` is kept (the paper's maps). Equal values are taken in patch
    order (a stable sort), so a uniform row over P patches keeps its first ceil(mass * P).
    """
    a = attention.double()
    a = a / a.sum(dim=-1, keepdim=True)
    values, order = a.sort(dim=-1, descending=True, stable=True)     # (..., P)
    before = values.cumsum(dim=-1) - values                           # mass ranked above each patch
    keep_sorted = before < mass - 1e-9                                # not yet reached: keep it
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def patch_mask(masks, patch_size):
    """ pixel masks (N, H, W) -> patch masks (N, H/p * W/p) bool, row-major like the ViT's
    tokens: a patch is object when at least half of its pixels are """
    frac = F.avg_pool2d(masks.unsqueeze(1).float(), patch_size)      # (N, 1, H/p, W/p)
    return (frac >= 0.5).flatten(1)                                   # (N, P)


def jaccard(a, b):
    """ |a n b| / |a u b| over the last dimension of two bool tensors; 1 where both are empty """
    inter = (a & b).sum(dim=-1).double()
    union = (a | b).sum(dim=-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def jaccard_per_head(vit, images, masks, mass=0.6):
    """ Jaccard of each head's thresholded class-token attention with the object's patch mask:
    (N, heads) """
    kept = mass_threshold(class_token_attention(vit, images), mass)   # (N, h, P)
    target = patch_mask(masks, vit.patch_size)                        # (N, P)
    return jaccard(kept, target.unsqueeze(1))                         # (N, h)


def far_from_centre(masks):
    """ (N,) bool: the object's centre (of its mask's pixels) lies farther from the image's centre
    than the median over these images: the half of the images a map of the centre scores badly on """
    n, h, w = masks.shape
    m = masks.double()
    area = m.sum(dim=(1, 2))
    y = (m.sum(dim=2) * (torch.arange(h, dtype=torch.float64) + 0.5)).sum(dim=1) / area
    x = (m.sum(dim=1) * (torch.arange(w, dtype=torch.float64) + 0.5)).sum(dim=1) / area
    distance = ((y - h / 2) ** 2 + (x - w / 2) ** 2).sqrt()            # (N,) pixels
    return distance > distance.median()


def attention_jaccard(vit, select, held_out, mass=0.6):
    """ the summaries: the head with the best mean Jaccard on `select` (images, masks), and on
    `held_out` (images, masks) that head's mean (`jaccard`), the same split into the held-out
    images whose object is near / far from the centre (`jaccard_near`, `jaccard_far`), the mean over
    heads and each head's mean; -> dict of floats and lists """
    per_head_select = jaccard_per_head(vit, *select, mass).mean(dim=0)    # (h,)
    per_image = jaccard_per_head(vit, *held_out, mass)                   # (N, h)
    per_head = per_image.mean(dim=0)                                     # (h,)
    best = int(per_head_select.argmax())
    far = far_from_centre(held_out[1])
    return {"jaccard": per_head[best].item(), "jaccard_mean_heads": per_head.mean().item(),
            "jaccard_near": per_image[~far, best].mean().item(),
            "jaccard_far": per_image[far, best].mean().item(),
            "best_head": best, "jaccard_per_head": per_head.tolist(),
            "jaccard_per_head_select": per_head_select.tolist()}


def centre_prior(grid, sigma):
    """ a map that looks at the image centre whatever the image: a Gaussian of `sigma` patches
    over the grid x grid patches, row-major; (grid^2,). The baseline a network that learned only
    where objects tend to be would reach. """
    c = torch.arange(grid, dtype=torch.float64) + 0.5 - grid / 2     # patch centres, 0 in the middle
    return torch.exp(-(c.view(-1, 1) ** 2 + c.view(1, -1) ** 2) / (2 * sigma ** 2)).flatten()
