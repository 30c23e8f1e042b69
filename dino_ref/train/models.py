"""The networks of a tiny DINO: a small CNN or ViT backbone, the DINO projection head, the
multi-crop wrapper that runs both crop sizes, and the exponential-moving-average teacher.

The backbone uses GroupNorm: a sample's features depend on that sample only. The head's MLP has
BatchNorm by default, as in the paper's ResNet-50 recipe (`use_bn_in_head`); without it the
default run goes to the uniform collapse (h(P_t) -> log K, k-NN below the random network) unless
the head starts larger and the teacher is sharper and slower, as `--preset fig7` sets them
(docs/fig7.md). Its statistics are those of the whole global batch, all ranks
together (`GlobalBatchNorm1d`), so splitting a batch between processes changes nothing.

The ViT (`--backbone vit`) is the paper's architecture in miniature: patch embedding, a CLS
token, learned position embeddings (interpolated for the smaller local crops), pre-norm
transformer blocks, a final LayerNorm; the feature is the CLS token's (or the patch tokens' mean).
From scratch, in a few minutes of CPU, it learns no texture classes (docs/fig7.md); it is here for reading and for longer runs.
"""

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import MEAN, STD


def conv_block(c_in, c_out, stride):
    """ 3x3 convolution -> GroupNorm -> GELU """
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.GroupNorm(min(8, c_out), c_out), nn.GELU())


class ConvBackbone(nn.Module):
    """ small CNN + global average pooling: any input size -> one embed_dim feature per image """

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            layers += [conv_block(c_in, c, stride=1 if i == 0 else 2), conv_block(c, c, stride=1)]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(widths[-1])                         # like the ViT's final norm
        self.embed_dim = widths[-1]

    def forward(self, x):                                             # (N, 3, H, W) in [0, 1]
        x = self.features((x - MEAN) / STD)                           # (N, C, H / 4, W / 4)
        return self.norm(x.mean(dim=(2, 3)))                          # (N, C) global pooling


class Block(nn.Module):
    """ pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)) """

    def __init__(self, dim, heads, mlp_ratio=2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim))

    def attention(self, x):                                           # (N, L, dim)
        N, L, dim = x.shape
        q, k, v = self.qkv(x).view(N, L, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)                   # (N, heads, L, dim / heads)
        return self.proj(y.transpose(1, 2).reshape(N, L, dim))

    def forward(self, x):                                             # (N, L, dim)
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTBackbone(nn.Module):
    """ a tiny vision transformer: any input size divisible by the patch size -> the CLS feature """

    def __init__(self, image_size=32, patch_size=4, dim=64, depth=4, heads=4, mlp_ratio=2,
                 pool="cls", input_norm="dataset"):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if input_norm not in ("dataset", "image"):
            raise ValueError(f"input_norm must be 'dataset' or 'image', got {input_norm!r}")
        self.pool, self.input_norm = pool, input_norm
        if image_size % patch_size or dim % heads:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size "
                             f"{patch_size} and dim {dim} of heads {heads}")
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)  # linear, per patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.embed_dim = dim
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def normalize(self, x):
        """ (N, 3, H, W) -> the same, standardised: with the dataset's fixed mean and std, or per
        image ("image": each channel of each image to mean 0 and std 1, which removes the image's
        colour offset and contrast, as the CNN's GroupNorm does after its first convolution) """
        if self.input_norm == "image":
            mean = x.mean(dim=(2, 3), keepdim=True)                   # (N, 3, 1, 1)
            return (x - mean) / (x.std(dim=(2, 3), keepdim=True) + 1e-3)
        return (x - MEAN) / STD

    def position_embedding(self, grid):
        """ (1, 1 + grid^2, dim): the learned grid, bicubically resized for other crop sizes """
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)], 1)

    def forward(self, x):                                             # (N, 3, H, W) in [0, 1]
        if x.shape[-1] % self.patch_size or x.shape[-2] != x.shape[-1]:
            raise ValueError(f"ViT input must be square with a side divisible by the patch size "
                             f"{self.patch_size}, got {tuple(x.shape)}")
        tokens = self.patch_embed(self.normalize(x)).flatten(2).transpose(1, 2)  # (N, L, dim)
        cls = self.cls_token.expand(len(tokens), -1, -1)              # (N, 1, dim)
        x = torch.cat([cls, tokens], 1) + self.position_embedding(x.shape[-1] // self.patch_size)
        for block in self.blocks:
            x = block(x)
        if self.pool == "mean":                                       # the patch tokens' mean
            return self.norm(x[:, 1:].mean(dim=1))                    # (N, dim)
        return self.norm(x[:, 0])                                     # (N, dim) the CLS token


class AllReduceSum(torch.autograd.Function):
    """ the sum over ranks, differentiable: each rank's input gets the sum over ranks of the output's
    gradients (what torch.distributed.nn.functional.all_reduce does; that module is deprecated) """

    @staticmethod
    def forward(ctx, x):
        x = x.clone()                                                 # all_reduce works in place
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """ BatchNorm over the rows of all ranks: the row sum, square sum and count are all-reduced

    (SyncBatchNorm needs CUDA; this one runs on any device, and is plain BatchNorm1d without a
    process group or in eval mode)
    """

    def forward(self, x):                                             # (N, C)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        C = x.shape[1]
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)
        stats = AllReduceSum.apply(torch.cat([x.sum(0), (x * x).sum(0), count]))  # (2 C + 1,)
        n = stats[2 * C]
        mean = stats[:C] / n                                          # (C,)  E[x]
        var = stats[C:2 * C] / n - mean * mean                        # (C,)  E[x^2] - E[x]^2
        with torch.no_grad():                                         # as BatchNorm1d: unbiased
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp(min=1))
            self.num_batches_tracked.add_(1)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class WeightNormLinear(nn.Module):
    """ a bias-free linear layer whose weight rows are v / ||v||: weight norm with g fixed to 1 """

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.v, std=0.02)

    def forward(self, x):                                             # (N, in_dim)
        return x @ F.normalize(self.v, dim=1).T                       # (N, out_dim)


class DINOHead(nn.Module):
    """ MLP -> bottleneck -> L2-normalise -> weight-normalised last layer to K = out_dim logits """

    def __init__(self, in_dim, out_dim, hidden_dim=256, bottleneck_dim=64, n_layers=3, use_bn=True,
                 init_std=0.02):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers = []
        for i in range(n_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < n_layers - 1:
                layers += [GlobalBatchNorm1d(dims[i + 1])] if use_bn else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)

    def forward(self, x):                                             # (..., in_dim)
        z = self.mlp(x.reshape(-1, x.shape[-1]))                      # (N, bottleneck), BN over N rows
        z = F.normalize(z, dim=-1)                                    # on the sphere
        return self.last_layer(z).reshape(*x.shape[:-1], -1)          # (..., K) cosines in [-1, 1]


class MultiCropNet(nn.Module):
    """ backbone + head over views of several sizes: one backbone pass per size, one head pass """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *view_groups, return_features=False):          # each (V_g, B, 3, H_g, W_g)
        """ the logits (V, B, K); with return_features also the backbone features (V, B, C) """
        feats = []
        for views in view_groups:
            if views.shape[0] == 0:
                continue
            V, B = views.shape[:2]
            feats.append(self.backbone(views.flatten(0, 1)).view(V, B, -1))  # (V_g, B, C)
        feats = torch.cat(feats)                                      # (V, B, C)
        logits = self.head(feats)                                     # (V, B, K)
        return (logits, feats) if return_features else logits


def make_student(config):
    """ a freshly initialised student network from a Config's backbone and head fields """
    if config.backbone == "cnn":
        backbone = ConvBackbone(config.widths)
    elif config.backbone == "vit":
        backbone = ViTBackbone(config.global_size, config.patch_size, config.vit_dim,
                               config.vit_depth, config.vit_heads, pool=config.vit_pool,
                               input_norm=config.vit_input_norm)
    else:
        raise ValueError(f"backbone must be 'cnn' or 'vit', got {config.backbone!r}")
    head = DINOHead(backbone.embed_dim, config.out_dim, config.hidden_dim, config.bottleneck_dim,
                    config.head_layers, use_bn=config.head_bn, init_std=config.head_init_std)
    return MultiCropNet(backbone, head)


def make_teacher(student):
    """ the teacher starts as a copy of the student and never receives gradients """
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher, student, momentum):
    """ theta_t <- lambda theta_t + (1 - lambda) theta_s, for every parameter """
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - momentum)
