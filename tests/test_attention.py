"""The attention measurement: the class token's last-block attention, the 60 %-mass threshold,
the patch mask and the Jaccard similarity, each on hand-made cases."""

import math

import pytest
import torch

from dino_ref.train.attention import (attention_jaccard, centre_prior, class_token_attention,
                                      far_from_centre, jaccard, jaccard_per_head, mass_threshold,
                                      patch_mask)
from dino_ref.train.data import MEAN, STD
from dino_ref.train.models import ViTBackbone
from dino_ref.train.objects import make_objects


def kept(row, mass=0.6):
    """ the indices mass_threshold keeps in one row """
    return mass_threshold(torch.tensor(row, dtype=torch.float64), mass).nonzero().flatten().tolist()


def test_threshold_on_one_hot_uniform_and_sorted_rows():
    assert kept([0.0, 0.0, 1.0, 0.0]) == [2]                          # one patch holds everything
    assert kept([0.25] * 4) == [0, 1, 2]                              # ceil(0.6 * 4) = 3, in order
    assert kept([1.0] * 64) == list(range(39))                        # ceil(0.6 * 64) = 39, unnormalised
    assert kept([0.1, 0.5, 0.05, 0.2, 0.15]) == [1, 3]                # 0.5 + 0.2 reaches 0.6
    assert kept([0.1, 0.5, 0.05, 0.2, 0.15], mass=0.5) == [1]         # exactly 0.5 is enough
    assert kept([0.05, 0.3, 0.3, 0.35]) == [1, 3]                     # 0.35 + 0.3 (the first of the tie)
    assert kept([0.2] * 5) == [0, 1, 2]                               # 0.6 reached exactly at 3
    assert kept([0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) == [0, 1, 2]     # ties taken in patch order


def test_threshold_keeps_the_smallest_set_on_random_rows():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 3, 16, generator=g) ** 4                       # (N, heads, P), peaked
    keep = mass_threshold(a)
    assert keep.shape == a.shape and keep.dtype == torch.bool
    p = a / a.sum(-1, keepdim=True)
    held = (p * keep).sum(-1)                                         # mass of the kept set
    assert (held >= 0.6 - 1e-6).all()
    smallest_kept = torch.where(keep, p, torch.inf).amin(-1)          # dropping it falls short
    assert (held - smallest_kept < 0.6).all()
    assert ((p * ~keep).amax(-1) <= smallest_kept).all()              # nothing larger left out
    top = mass_threshold(a, mass=1e-3)                                # a sliver: the top patch only
    assert torch.equal(top.nonzero()[:, -1], a.argmax(-1).flatten())


def test_jaccard_on_hand_made_masks():
    A = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    B = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert jaccard(A, B).tolist() == [1 / 3, 1.0, 1.0, 0.0]           # both empty: 1
    assert jaccard(A.unsqueeze(1).expand(4, 2, 4), B.unsqueeze(1)).shape == (4, 2)


def test_patch_mask_needs_half_the_pixels():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)                        # patches of 4: a 2 x 2 grid
    m[0, 0:2, 0:4] = True                                             # top-left: 8 of 16 -> object
    m[0, 0:4, 4:7] = True                                             # top-right: 12 of 16 -> object
    m[0, 4:7, 0:2] = True                                             # bottom-left: 6 of 16 -> not
    m[0, 7, 7] = True                                                 # bottom-right: 1 of 16 -> not
    assert patch_mask(m, 4).tolist() == [[True, True, False, False]]
    assert patch_mask(torch.ones(2, 8, 8, dtype=torch.bool), 2).shape == (2, 16)
    # row-major, like the ViT's tokens: the pixel (row 5, column 1) is in patch 1 * 2 + 0
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 4:8, 0:4] = True
    assert patch_mask(m, 4)[0].nonzero().flatten().tolist() == [2]


@torch.no_grad()
def manual_last_block(vit, images):
    """ the tokens, every block but the last, then the last block's normalised input h and its
    class-token attention by hand, one head and one key at a time: (h, (N, heads, P)) """
    x = vit.patch_embed((images - MEAN) / STD).flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(len(x), -1, -1), x], 1) + vit.pos_embed  # (N, L, dim)
    for block in vit.blocks[:-1]:
        x = block(x)
    last = vit.blocks[-1]
    h = last.norm1(x)
    N, L, dim = h.shape
    W, b = last.qkv.weight, last.qkv.bias                             # (3 dim, dim), (3 dim,)
    d = dim // last.heads
    out = torch.empty(N, last.heads, L - 1)
    for n in range(N):
        for head in range(last.heads):
            rq, rk = slice(head * d, (head + 1) * d), slice(dim + head * d, dim + (head + 1) * d)
            q = h[n, 0] @ W[rq].T + b[rq]                             # (d,) the class token's query
            k = h[n] @ W[rk].T + b[rk]                                # (L, d)
            scores = torch.stack([q @ k[j] / math.sqrt(d) for j in range(L)])
            weights = scores.exp() / scores.exp().sum()               # softmax over the L keys
            out[n, head] = weights[1:]
    return h, out


def test_attention_equals_a_manual_softmax_of_q_k():
    torch.manual_seed(0)
    vit = ViTBackbone(image_size=16, patch_size=4, dim=12, depth=2, heads=3)
    with torch.no_grad():
        for p in vit.parameters():                                    # away from the near-zero init
            p.normal_(0, 0.3)
    images = torch.rand(2, 3, 16, 16)
    attn = class_token_attention(vit, images)                         # (2, 3, 16)
    h, expected = manual_last_block(vit, images)
    assert attn.shape == (2, 3, 16)
    assert torch.allclose(attn, expected, atol=1e-6)
    assert (attn.sum(-1) < 1).all() and (attn > 0).all()

    # and it is the attention the network used: weights @ V through proj = the block's output
    last, d = vit.blocks[-1], 12 // 3
    with torch.no_grad():
        v = h @ last.qkv.weight[24:].T + last.qkv.bias[24:]          # (2, 17, 12)
        full = torch.cat([1 - attn.sum(-1, keepdim=True), attn], -1)  # (2, 3, 17) cls entry back
        y = torch.einsum("nhl,nlhd->nhd", full, v.view(2, 17, 3, d)).reshape(2, 12)
        assert torch.allclose(last.proj(y), last.attention(h)[:, 0], atol=1e-5)


def test_summaries_choose_the_head_on_the_selection_split():
    torch.manual_seed(0)
    vit = ViTBackbone(image_size=32, patch_size=8, dim=16, depth=1, heads=2)
    x, m, _ = make_objects(4, seed=0)
    y, n, _ = make_objects(4, seed=1)
    out = attention_jaccard(vit, (x, m), (y, n))
    per_head = jaccard_per_head(vit, y, n).mean(0)
    assert out["best_head"] == int(jaccard_per_head(vit, x, m).mean(0).argmax())
    assert out["jaccard"] == pytest.approx(per_head[out["best_head"]].item())
    assert out["jaccard_mean_heads"] == pytest.approx(per_head.mean().item())
    assert len(out["jaccard_per_head"]) == 2 and 0 <= out["jaccard"] <= 1
    assert vit.training                                               # the mode is restored
    # the near and far halves average back to the whole
    far = far_from_centre(n)
    best = jaccard_per_head(vit, y, n)[:, out["best_head"]]
    assert out["jaccard_near"] == pytest.approx(best[~far].mean().item())
    assert out["jaccard_far"] == pytest.approx(best[far].mean().item())
    assert (out["jaccard_near"] * (~far).sum() + out["jaccard_far"] * far.sum()).item() / len(far) \
        == pytest.approx(out["jaccard"])


def test_far_from_centre_splits_at_the_median_distance_of_the_object():
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[0, 14:18, 14:18] = True                                     # centred: distance 0
    masks[1, 12:16, 16:20] = True                                     # 2.8 px off (centre 14, 18)
    masks[2, 0:4, 0:4] = True                                         # a corner: 19.8 px
    masks[3, 28:32, 10:14] = True                                     # bottom edge: 14.3 px
    assert far_from_centre(masks).tolist() == [False, False, True, True]
    ring = torch.zeros(1, 32, 32, dtype=torch.bool)
    ring[0, 8:24, 8:24] = True
    ring[0, 12:20, 12:20] = False                                     # a hole: the centre still counts
    assert far_from_centre(torch.cat([ring, masks[2:3]])).tolist() == [False, True]


def test_centre_prior_keeps_the_middle_patches():
    prior = centre_prior(4, 0.5)                                      # 4 x 4 patches
    assert prior.argmax().item() in (5, 6, 9, 10)                     # the four middle ones
    assert mass_threshold(prior, 0.9).nonzero().flatten().tolist() == [5, 6, 9, 10]  # 96 % of the mass
    assert mass_threshold(prior, 0.6).sum().item() == 3                    # each holds 24 %
