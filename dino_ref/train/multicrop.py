"""Multi-crop augmentation as batched torch ops: 2 global + N local views of every image.

Each crop is one affine map (scale, aspect ratio, position, horizontal flip) sampled per image
and applied to the whole batch at once with `affine_grid` + `grid_sample`; colour jitter is a
per-image brightness, contrast, saturation and hue change (a rotation about the grey axis).
All randomness comes from the `torch.Generator` passed in, so a seed fixes every crop.
"""

import math

import torch
import torch.nn.functional as F


def _rand(n, lo, hi, g):
    """ n draws of U(lo, hi); (n,) """
    return lo + (hi - lo) * torch.rand(n, generator=g)


def random_resized_crop(images, size, scale, g, ratio=(3 / 4, 4 / 3), flip_p=0.5):
    """ a random crop of area fraction in `scale`, flipped with prob flip_p, resized to size x size

    images (B, C, H, W) -> (B, C, size, size)
    """
    B = images.shape[0]
    area = _rand(B, scale[0], scale[1], g)                           # fraction of the image area
    aspect = torch.exp(_rand(B, math.log(ratio[0]), math.log(ratio[1]), g))
    w = torch.sqrt(area * aspect).clamp(max=1.0)                     # crop width / image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - w) * _rand(B, -1, 1, g)                                # crop centre in [-1, 1] coords
    cy = (1 - h) * _rand(B, -1, 1, g)
    flip = torch.where(torch.rand(B, generator=g) < flip_p, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3)                                     # output coords -> input coords
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, (B, images.shape[1], size, size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)                         # (B, C, size, size)


def _grey(images):
    """ luma of RGB images; (B, 3, H, W) -> (B, 1, H, W) """
    w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return torch.einsum("bchw,c->bhw", images, w).unsqueeze(1)


def hue_rotation(angle):
    """ RGB matrices rotating colours about the grey axis (1, 1, 1) by `angle`; (B,) -> (B, 3, 3) """
    k = torch.ones(3) / math.sqrt(3.0)                               # unit grey axis
    K = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    c, s = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    # Rodrigues: R = I + sin(a) K + (1 - cos(a)) K^2
    return torch.eye(3) + s * K + (1 - c) * (K @ K)


def color_jitter(images, g, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.5,
                 p=0.8, grey_p=0.2):
    """ per-image colour jitter (applied with prob p), then greyscale with prob grey_p

    images (B, 3, H, W) in [0, 1] -> same shape, in [0, 1]; hue is in turns (0.5 = any hue)
    """
    B = images.shape[0]
    on = (torch.rand(B, generator=g) < p).float()                     # which images get jittered
    b = 1 + on * _rand(B, -brightness, brightness, g)
    c = 1 + on * _rand(B, -contrast, contrast, g)
    s = 1 + on * _rand(B, -saturation, saturation, g)
    a = on * _rand(B, -hue, hue, g) * 2 * math.pi
    grey = torch.rand(B, generator=g) < grey_p
    R = hue_rotation(a)                                               # (B, 3, 3)
    b, c, s, R = (t.to(images.device, images.dtype) for t in (b, c, s, R))
    view = (B, 1, 1, 1)
    x = images * b.view(view)                                         # brightness
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)                    # (B, 1, 1, 1)
    x = (x - mean) * c.view(view) + mean                              # contrast
    x = (x - _grey(x)) * s.view(view) + _grey(x)                      # saturation
    x = torch.einsum("bij,bjhw->bihw", R, x)                          # hue
    x = torch.where(grey.to(images.device).view(view), _grey(x).expand_as(x), x)
    return x.clamp(0, 1)


def multicrop(images, g, n_local=6, global_size=32, local_size=16,
              global_scale=(0.4, 1.0), local_scale=(0.05, 0.4)):
    """ the DINO views of a batch: (globals (2, B, 3, G, G), locals (n_local, B, 3, L, L))

    Every view is a random resized crop with a random flip, then colour jitter.
    """
    def view(size, scale):
        return color_jitter(random_resized_crop(images, size, scale, g), g)
    globals_ = torch.stack([view(global_size, global_scale) for _ in range(2)])
    if n_local > 0:
        locals_ = torch.stack([view(local_size, local_scale) for _ in range(n_local)])
    else:
        locals_ = images.new_zeros(0, images.shape[0], images.shape[1], local_size, local_size)
    return globals_, locals_
