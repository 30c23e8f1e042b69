"""The procedural objects: one shape per image, its pixel mask, a balanced label."""

import math

import pytest
import torch

from dino_ref.train.objects import (NUM_SHAPES, SHAPES, draw_objects, make_object_splits,
                                    make_objects, shape_mask)


def test_objects_are_deterministic_from_the_seed():
    a, b, c = make_objects(4, seed=5), make_objects(4, seed=5), make_objects(4, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_shapes_dtypes_range_and_class_balance():
    images, masks, labels = make_objects(7, seed=0)
    N = 7 * NUM_SHAPES
    assert images.shape == (N, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (N, 32, 32) and masks.dtype == torch.bool
    assert labels.shape == (N,) and labels.dtype == torch.long
    assert torch.bincount(labels, minlength=NUM_SHAPES).tolist() == [7] * NUM_SHAPES
    assert images.min() >= 0 and images.max() <= 1
    assert labels.tolist() != sorted(labels.tolist())                # the classes are mixed
    assert make_objects(2, size=64)[0].shape == (2 * NUM_SHAPES, 3, 64, 64)


def test_every_image_has_an_object_of_a_plausible_size():
    _, masks, labels = make_objects(40, seed=1)
    area = masks.float().mean(dim=(1, 2))                              # fraction of the image
    assert area.min() > 0.05 and area.max() < 0.6                      # a disc of radius 13: 0.52
    for label in range(NUM_SHAPES):                                    # sizes vary within a class
        a = area[labels == label]
        assert a.max() > 1.5 * a.min()


@pytest.mark.parametrize("background", ["clutter", "textures"])
def test_object_pixels_differ_from_the_background_where_the_mask_is_set(background):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(NUM_SHAPES).repeat(20)
    images, masks, backgrounds = draw_objects(labels, 32, g, background)
    outside = ~masks.unsqueeze(1).expand_as(images)
    assert torch.equal(images[outside], backgrounds[outside])         # untouched off the object
    diff = (images - backgrounds).abs().amin(dim=1)                    # (N, H, W) smallest channel
    assert diff[masks].min() > 0.1                                     # every channel differs
    # the object is one flat colour (up to the noise), unlike the textured background
    for img, m in zip(images[:10], masks[:10]):
        inside = img[:, m]                                             # (3, n_object_pixels)
        assert (inside.amax(1) - inside.amin(1)).max() <= 0.06 + 1e-6


def test_train_and_test_splits_are_independent_draws():
    (xtr, mtr, ytr), (xte, mte, yte) = make_object_splits(3, 2, seed=0)
    assert len(xtr) == 3 * NUM_SHAPES and len(xte) == 2 * NUM_SHAPES
    assert not torch.equal(xtr[:len(xte)], xte)


def test_shape_masks_at_unit_radius():
    # the area of each shape, sampled on a fine grid over [-1.2, 1.2]^2, against its formula
    t = torch.linspace(-1.2, 1.2, 1201)
    u, v = t.view(1, -1), t.view(-1, 1)
    cell = (t[1] - t[0]).item() ** 2
    expected = {"disc": math.pi, "square": 1.6 ** 2, "triangle": 3 * math.sqrt(3) / 4,
                "ring": math.pi * (1 - 0.55 ** 2), "cross": 2 * 0.6 * 2.0 - 0.6 ** 2}
    for label, name in enumerate(SHAPES):
        area = shape_mask(label, u, v).sum().item() * cell
        assert math.isclose(area, expected[name], rel_tol=0.01), name
    assert not shape_mask(SHAPES.index("ring"), torch.zeros(1), torch.zeros(1)).item()  # a hole


def test_the_two_backgrounds_give_the_same_objects():
    a = make_objects(3, seed=2)
    b = make_objects(3, seed=2, background="textures")
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])        # masks and labels
    assert not torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="background"):
        make_objects(1, background="stripes")


def test_attention_sets_are_fixed_by_the_seed_and_apart_from_the_splits():
    from dino_ref.train.objects import make_attention_sets
    (sx, sm), (hx, hm) = make_attention_sets(0, n_per_class=3)
    (sx2, _), (hx2, _) = make_attention_sets(0, n_per_class=3)
    assert torch.equal(sx, sx2) and torch.equal(hx, hx2)
    assert sx.shape == hx.shape == (3 * NUM_SHAPES, 3, 32, 32) and sm.shape == (3 * NUM_SHAPES, 32, 32)
    (tx, _, _), (ex, _, _) = make_object_splits(3, 3, seed=0)
    for a in (sx, hx):
        for b in (tx, ex):
            assert not torch.equal(a, b)
    assert not torch.equal(sx, hx)


def test_one_polarity_per_image_lighter_or_darker_in_all_three_channels():
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(NUM_SHAPES).repeat(40)
    images, masks, backgrounds = draw_objects(labels, 32, g, "clutter")
    # the object's mean colour minus the background's, per image and channel: (N, 3)
    inside = (images * masks.unsqueeze(1)).sum((2, 3)) / masks.sum((1, 2)).unsqueeze(1)
    outside = (backgrounds * ~masks.unsqueeze(1)).sum((2, 3)) / (~masks).sum((1, 2)).unsqueeze(1)
    sign = torch.sign(inside - outside)
    assert (sign == sign[:, :1]).all()                                 # one sign per image
    lighter = (sign[:, 0] > 0).float().mean().item()
    assert 0.3 < lighter < 0.7                                         # both polarities occur


@pytest.mark.parametrize("polarity", ["channel", "lighter", "stripes"])
def test_the_other_polarities_and_a_bad_one(monkeypatch, polarity):
    from dino_ref.train import objects
    monkeypatch.setattr(objects, "OBJECT_POLARITY", polarity)
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(NUM_SHAPES).repeat(40)
    if polarity == "stripes":
        with pytest.raises(ValueError, match="OBJECT_POLARITY"):
            draw_objects(labels, 32, g, "clutter")
        return
    images, masks, backgrounds = draw_objects(labels, 32, g, "clutter")
    step = images - backgrounds                                        # zero off the object
    sign = torch.sign((step * masks.unsqueeze(1)).sum((2, 3)))         # (N, 3)
    if polarity == "lighter":
        assert (sign > 0).all()
    else:                                                              # mixed within images
        assert ((sign != sign[:, :1]).any(1)).float().mean() > 0.5
