"""The procedural textures and the multi-crop augmentation."""

import math

import torch

from dino_ref.train.data import NUM_CLASSES, make_splits, make_textures
from dino_ref.train.multicrop import color_jitter, hue_rotation, multicrop, random_resized_crop


def test_textures_are_deterministic_balanced_and_in_range():
    x1, y1 = make_textures(5, seed=3)
    x2, y2 = make_textures(5, seed=3)
    assert x1.shape == (5 * NUM_CLASSES, 3, 32, 32)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.bincount(y1).tolist() == [5] * NUM_CLASSES
    assert x1.min() >= 0 and x1.max() <= 1
    assert not torch.equal(make_textures(5, seed=4)[0], x1)


def test_train_and_test_splits_differ():
    (xtr, _), (xte, _) = make_splits(3, 2)
    assert len(xtr) == 3 * NUM_CLASSES and len(xte) == 2 * NUM_CLASSES
    assert not torch.equal(xtr[:len(xte)], xte)


def test_multicrop_shapes_and_determinism():
    x, _ = make_textures(1)
    G1, L1 = multicrop(x, torch.Generator().manual_seed(0), n_local=5)
    G2, L2 = multicrop(x, torch.Generator().manual_seed(0), n_local=5)
    assert G1.shape == (2, len(x), 3, 32, 32) and L1.shape == (5, len(x), 3, 16, 16)
    assert torch.equal(G1, G2) and torch.equal(L1, L2)
    assert G1.min() >= 0 and G1.max() <= 1
    assert multicrop(x, torch.Generator(), n_local=0)[1].shape == (0, len(x), 3, 16, 16)


def test_crop_area_follows_the_scale_range():
    # an image that is 1 on a centred square of known area: a crop's mean reveals its coverage;
    # instead measure directly: crop a coordinate ramp and read the covered extent
    B, H = 400, 64
    ramp = torch.linspace(0, 1, H)
    img = torch.stack([ramp.view(1, H).expand(H, H), ramp.view(H, 1).expand(H, H),
                       torch.zeros(H, H)]).expand(B, 3, H, H)
    for lo, hi in [(0.05, 0.4), (0.4, 1.0)]:
        crop = random_resized_crop(img, 16, (lo, hi), torch.Generator().manual_seed(1), flip_p=0)
        width = crop[:, 0, :, -1] - crop[:, 0, :, 0]                 # x extent (fraction, minus a pixel)
        height = crop[:, 1, -1, :] - crop[:, 1, 0, :]
        area = (width.mean(1) * height.mean(1)) * (16 / 15) ** 2     # edge pixel centres -> full crop
        assert area.min() > lo * 0.8 and area.max() < hi * 1.05
        assert area.max() - area.min() > 0.5 * (hi - lo)             # the range is used


def test_flip_mirrors_the_crop():
    x, _ = make_textures(1)
    full = random_resized_crop(x, 32, (1.0, 1.0), torch.Generator().manual_seed(0),
                               ratio=(1.0, 1.0), flip_p=0.0)
    flipped = random_resized_crop(x, 32, (1.0, 1.0), torch.Generator().manual_seed(0),
                                  ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(full, x, atol=1e-5)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)


def test_hue_rotation_keeps_grey_and_norm():
    R = hue_rotation(torch.tensor([0.0, 1.0, math.pi]))
    assert torch.allclose(R[0], torch.eye(3))
    assert torch.allclose(R @ torch.ones(3), torch.ones(3).expand(3, 3), atol=1e-6)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-6)


def test_color_jitter_changes_colour_not_layout():
    x, _ = make_textures(2)
    y = color_jitter(x, torch.Generator().manual_seed(0), p=1.0, grey_p=0.0)
    assert y.shape == x.shape and not torch.allclose(x, y)
    grey = color_jitter(x, torch.Generator().manual_seed(0), p=0.0, grey_p=1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
