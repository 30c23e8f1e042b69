"""Procedural objects: one shape per image on a textured background, with its pixel mask.

Five classes of 32x32 colour images. A class is a *shape kind* (disc, square, triangle, ring,
cross) drawn with a random size, rotation, position and flat colour on random smooth clutter in
two close colours (or on one of the ten procedural textures of `data.py`: a background with a
class of its own, a cue that every crop keeps; docs/attention.md). The object's colour is 0.3
lighter, or 0.3 darker, than the background's mean colour in all three channels (one of the two
per image, at random), so the object is visible wherever its mask is set; colour and brightness
say nothing about the class. (Smaller objects, or a colour step of random sign per channel, left
the shapes unlearned; objects always lighter let a random ViT head find them by brightness alone:
docs/attention.md.) Labels and masks are used only
for evaluation: the mask is what the class-token attention of a ViT is compared with
(`attention.py`).
"""

import math

import torch
import torch.nn.functional as F

from .data import NUM_CLASSES as NUM_TEXTURES
from .data import pattern

SHAPES = ("disc", "square", "triangle", "ring", "cross")
NUM_SHAPES = len(SHAPES)
RADIUS = (8.0, 13.0)          # the shape's outer radius in pixels, for 32-pixel images
OBJECT_STEP = 0.3             # |object colour - background mean| in every channel
CLUTTER = 0.1                 # the background's two colours are mean -/+ at most this per channel
NOISE = 0.03                  # uniform sensor noise, +/- this, on every pixel
OBJECT_POLARITY = "image"     # the sign of the colour step: "image": one random sign per image for
                              # all three channels; "channel": random per channel (8 colour
                              # relations); "lighter": +1 everywhere
POLARITIES = ("image", "channel", "lighter")


def _uniform(n, lo, hi, g):
    """ n draws of U(lo, hi); (n, 1, 1) to broadcast over pixels """
    return (lo + (hi - lo) * torch.rand(n, generator=g)).view(n, 1, 1)


def shape_mask(label, u, v):
    """ inside of a shape kind at unit outer radius, in the shape's own coordinates u, v (any
    broadcastable shapes); -> bool """
    name = SHAPES[label]
    rho = torch.sqrt(u ** 2 + v ** 2)
    if name == "disc":
        return rho <= 1.0
    if name == "square":                                             # side 1.6 (corners at 1.13)
        return torch.maximum(u.abs(), v.abs()) <= 0.8
    if name == "triangle":                                           # equilateral, circumradius 1
        inside = torch.ones_like(rho, dtype=torch.bool)
        for k in range(3):                                           # three half-planes n_k . x <= 1/2
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= u * math.cos(a) + v * math.sin(a) <= 0.5
        return inside
    if name == "ring":
        return (rho <= 1.0) & (rho >= 0.55)
    if name == "cross":                                              # two bars of half-width 0.3
        return (((u.abs() <= 0.3) & (v.abs() <= 1.0)) | ((v.abs() <= 0.3) & (u.abs() <= 1.0)))
    raise ValueError(f"unknown shape {label}")


def clutter(n, size, g):
    """ n random smooth two-level clutter maps in [0, 1], (n, size, size): noise on a coarse grid
    of 3 to 8 cells a side, bicubically upsampled and sharpened; no two images share a pattern """
    cells = torch.randint(3, 9, (n,), generator=g)
    out = torch.empty(n, size, size)
    for c in range(3, 9):
        rows = (cells == c).nonzero().flatten()
        if len(rows):
            coarse = torch.randn(len(rows), 1, c, c, generator=g)
            fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
            out[rows] = torch.sigmoid(fine[:, 0] / 0.25)
    return out


def draw_objects(labels, size, g, background="clutter"):
    """ one object per label on a background of random clutter, or of one of the ten textures
    (`background="textures"`): (images (N, 3, size, size) in [0, 1], masks (N, size, size) bool,
    backgrounds (N, 3, size, size): the images without the object) """
    n = len(labels)
    scale = size / 32
    # the object: radius, rotation, a centre that keeps it inside the image
    r = _uniform(n, RADIUS[0] * scale, RADIUS[1] * scale, g)           # (n, 1, 1) pixels
    angle = _uniform(n, 0.0, 2 * math.pi, g)
    cy = r + (size - 2 * r) * torch.rand(n, 1, 1, generator=g)
    cx = r + (size - 2 * r) * torch.rand(n, 1, 1, generator=g)
    yx = torch.arange(size, dtype=torch.float32) + 0.5                # pixel centres
    dy, dx = yx.view(1, size, 1) - cy, yx.view(1, 1, size) - cx       # (n, size, size)
    u = (dx * torch.cos(angle) + dy * torch.sin(angle)) / r           # the shape's frame, radius 1
    v = (-dx * torch.sin(angle) + dy * torch.cos(angle)) / r
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for label in range(NUM_SHAPES):
        rows = labels == label
        masks[rows] = shape_mask(label, u[rows], v[rows])

    # the background: clutter or a random texture, in two close colours around a mean colour
    if background == "textures":
        kinds = torch.randint(NUM_TEXTURES, (n,), generator=g)
        texture = torch.empty(n, size, size)
        for kind in range(NUM_TEXTURES):
            rows = (kinds == kind).nonzero().flatten()
            if len(rows):
                texture[rows] = pattern(kind, len(rows), size, g)
    elif background == "clutter":
        texture = clutter(n, size, g)
    else:
        raise ValueError(f"background must be 'clutter' or 'textures', got {background!r}")
    mean = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)            # in [0.3, 0.7]
    spread = CLUTTER * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)   # colour 1 - colour 0, / 2
    backgrounds = mean + spread * (2 * texture.unsqueeze(1) - 1)      # (n, 3, size, size)
    backgrounds = backgrounds + NOISE * (2 * torch.rand(backgrounds.shape, generator=g) - 1)

    # the object: a flat colour OBJECT_STEP away from the mean in every channel, with noise
    if OBJECT_POLARITY not in POLARITIES:
        raise ValueError(f"OBJECT_POLARITY must be one of {POLARITIES}, got {OBJECT_POLARITY!r}")
    # drawn for every polarity, so that the object's noise drawn after it is the same whichever
    # polarity is set: the polarities give the same images but for the object's colour
    sign = torch.where(torch.rand(n, 3, 1, 1, generator=g) < 0.5, -1.0, 1.0)   # (n, 3, 1, 1)
    if OBJECT_POLARITY == "image":
        sign = sign[:, :1]                                            # channel 0's sign for all three
    elif OBJECT_POLARITY == "lighter":
        sign = torch.ones_like(sign)
    colour = mean + OBJECT_STEP * sign                                # in [0, 1]
    objects = colour + NOISE * (2 * torch.rand(backgrounds.shape, generator=g) - 1)
    images = torch.where(masks.unsqueeze(1), objects, backgrounds)
    return images.clamp(0, 1), masks, backgrounds.clamp(0, 1)


def make_objects(n_per_class, size=32, seed=0, background="clutter"):
    """ (images (N, 3, size, size) in [0, 1], masks (N, size, size) bool, labels (N,)) with
    N = n_per_class * NUM_SHAPES; the same seed gives the same set """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_SHAPES).repeat_interleave(n_per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]         # mix the classes
    images, masks, _ = draw_objects(labels, size, g, background)
    return images, masks, labels


def make_object_splits(n_train_per_class=400, n_test_per_class=100, size=32, seed=0,
                       background="clutter"):
    """ a train split (the k-NN memory bank, also the DINO training set) and a test split, each
    (images, masks, labels), drawn independently """
    return (make_objects(n_train_per_class, size, seed, background),
            make_objects(n_test_per_class, size, seed + 1_000_003, background))


def make_attention_sets(seed=0, size=32, n_per_class=100, background="clutter"):
    """ the two sets that score the attention maps, drawn apart from the train and test splits:
    (select, held_out), each (images, masks); the best head is chosen on `select` and scored on
    `held_out` (`attention.attention_jaccard`) """
    return (make_objects(n_per_class, size, seed + 2_000_003, background)[:2],
            make_objects(n_per_class, size, seed + 3_000_005, background)[:2])
