"""Procedural textures: a labelled toy image set made from a seed, nothing to download.

Ten classes of 32x32 colour textures. A class is a *pattern* (stripes, rings, dots, ...), drawn
with random colours, period, phase, small rotation, edge softness and noise, so its identity
survives cropping, horizontal flips and colour changes, while colour (what a random network
mostly sees) says nothing about the class. Labels are used only for evaluation.
"""

import math

import torch

CLASSES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard",
           "rings", "spokes", "dots", "grid", "waves", "blobs")
NUM_CLASSES = len(CLASSES)
MEAN, STD = 0.5, 0.25  # images are fed to networks as (x - MEAN) / STD


def _uniform(n, lo, hi, g):
    """ n draws of U(lo, hi); (n, 1, 1) to broadcast over pixels """
    return (lo + (hi - lo) * torch.rand(n, generator=g)).view(n, 1, 1)


def _wave(x, softness):
    """ a periodic profile in [0, 1] with period 1: from a sine (soft) to a square wave (sharp) """
    return torch.sigmoid(torch.cos(2 * math.pi * x) / softness)


def pattern(label, n, size, g):
    """ n grey-level masks of one class, values in [0, 1]; (n, size, size) """
    yx = (torch.arange(size, dtype=torch.float32) + 0.5)
    y, x = yx.view(1, size, 1), yx.view(1, 1, size)                  # pixel coordinates
    angle = _uniform(n, -0.2, 0.2, g)                                # small rotation (radians)
    u = x * torch.cos(angle) + y * torch.sin(angle)                  # (n, size, size)
    v = -x * torch.sin(angle) + y * torch.cos(angle)
    period = _uniform(n, 5.0, 7.0, g)                                # pixels
    phase_u, phase_v = _uniform(n, 0, 1, g), _uniform(n, 0, 1, g)
    soft = _uniform(n, 0.2, 0.3, g)
    cy, cx = _uniform(n, 0, size, g), _uniform(n, 0, size, g)        # a centre for rings/spokes
    name = CLASSES[label]
    if name == "horizontal stripes":
        return _wave(v / period + phase_v, soft)
    if name == "vertical stripes":
        return _wave(u / period + phase_u, soft)
    if name == "diagonal stripes":                                  # either diagonal: flips swap them
        sign = torch.where(torch.rand(n, 1, 1, generator=g) < 0.5, -1.0, 1.0)
        return _wave((u + sign * v) / (period * math.sqrt(2)) + phase_u, soft)
    if name == "checkerboard":
        a, b = _wave(u / (2 * period) + phase_u, soft), _wave(v / (2 * period) + phase_v, soft)
        return a * b + (1 - a) * (1 - b)                            # xor of two square waves
    if name == "rings":
        r = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        return _wave(r / period + phase_u, soft)
    if name == "spokes":
        theta = torch.atan2(y - cy, x - cx)                          # (n, size, size)
        spokes = torch.randint(5, 11, (n, 1, 1), generator=g)
        return _wave(spokes * theta / (2 * math.pi) + phase_u, soft)
    if name == "dots":
        du = torch.remainder(u / period + phase_u, 1.0) - 0.5
        dv = torch.remainder(v / period + phase_v, 1.0) - 0.5
        radius = _uniform(n, 0.18, 0.35, g)
        return torch.sigmoid((radius - torch.sqrt(du ** 2 + dv ** 2)) / (0.1 * soft))
    if name == "grid":
        line = _uniform(n, 0.12, 0.25, g)                            # line width / period
        du = torch.remainder(u / period + phase_u, 1.0)
        dv = torch.remainder(v / period + phase_v, 1.0)
        return torch.sigmoid((line - torch.minimum(du, dv)) / (0.1 * soft))
    if name == "waves":
        amplitude, wavelength = _uniform(n, 1.5, 3.5, g), _uniform(n, 10.0, 20.0, g)
        bend = amplitude * torch.sin(2 * math.pi * (u / wavelength + phase_u))
        return _wave((v + bend) / period + phase_v, soft)
    if name == "blobs":                                             # smooth random noise, thresholded
        coarse = torch.randn(n, 1, 5, 5, generator=g)
        noise = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic",
                                                align_corners=False)[:, 0]
        return torch.sigmoid(noise / soft)
    raise ValueError(f"unknown class {label}")


def make_textures(n_per_class, size=32, seed=0):
    """ (images (N, 3, size, size) in [0, 1], labels (N,)); the same seed gives the same set """
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label in range(NUM_CLASSES):
        mask = pattern(label, n_per_class, size, g).unsqueeze(1)     # (n, 1, H, W)
        bg = 0.2 + 0.6 * torch.rand(n_per_class, 3, 1, 1, generator=g)  # random colours at a
        step = torch.nn.functional.normalize(torch.randn(n_per_class, 3, 1, 1, generator=g), dim=1)
        fg = (bg + 0.6 * step).clamp(0, 1)                           # fixed distance from bg
        img = bg + (fg - bg) * mask                                  # (n, 3, H, W)
        img = img + 0.05 * torch.randn(img.shape, generator=g)       # sensor noise
        images.append(img.clamp(0, 1))
        labels.append(torch.full((n_per_class,), label, dtype=torch.long))
    images, labels = torch.cat(images), torch.cat(labels)
    order = torch.randperm(len(labels), generator=g)                 # mix the classes
    return images[order], labels[order]


def make_splits(n_train_per_class=200, n_test_per_class=50, size=32, seed=0):
    """ a labelled train split (the k-NN memory bank, also the DINO training set) and a test split """
    train = make_textures(n_train_per_class, size, seed)
    test = make_textures(n_test_per_class, size, seed + 1_000_003)  # independent draws
    return train, test
