"""The networks: CNN and ViT backbones, the DINO head, the EMA teacher."""

import pytest
import torch
import torch.nn.functional as F

from dino_ref.train.models import (DINOHead, ViTBackbone, WeightNormLinear, ema_update, make_student,
                                   make_teacher)
from dino_ref.train import Config


def test_student_accepts_both_crop_sizes():
    torch.manual_seed(0)
    net = make_student(Config(out_dim=50, widths=(8, 16, 16), hidden_dim=32, bottleneck_dim=8))
    out = net(torch.rand(2, 3, 3, 32, 32), torch.rand(4, 3, 3, 16, 16))
    assert out.shape == (6, 3, 50)
    assert net(torch.rand(2, 3, 3, 32, 32)).shape == (2, 3, 50)


def test_head_normalises_bottleneck_and_last_layer():
    torch.manual_seed(0)
    head = DINOHead(16, 40, hidden_dim=32, bottleneck_dim=8)
    with torch.no_grad():
        head.last_layer.v.mul_(7.0)                                   # the norm g stays 1
    x = torch.randn(5, 16)
    z = F.normalize(head.mlp(x), dim=-1)
    W = F.normalize(head.last_layer.v, dim=1)
    assert torch.allclose(W.norm(dim=1), torch.ones(40))
    assert torch.allclose(head(x), z @ W.T, atol=1e-6)
    assert head(x).abs().max() <= 1 + 1e-6                            # logits are cosines


def test_weight_norm_layer_is_scale_invariant():
    layer = WeightNormLinear(4, 3)
    x = torch.randn(2, 4)
    before = layer(x)
    with torch.no_grad():
        layer.v.mul_(0.1)
    assert torch.allclose(before, layer(x), atol=1e-6)


def test_ema_update_and_teacher_has_no_gradient():
    torch.manual_seed(0)
    student = make_student(Config(out_dim=10, widths=(4, 8, 8), hidden_dim=8, bottleneck_dim=4))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    old = [p.clone() for p in teacher.parameters()]
    assert old
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    ema_update(teacher, student, 0.9)
    for t, o, s in zip(teacher.parameters(), old, student.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * o + 0.1 * s, atol=1e-6)
    ema_update(teacher, student, 1.0)                                 # momentum 1: frozen teacher
    ema_update(teacher, student, 0.0)                                 # momentum 0: a copy
    assert all(torch.equal(t, s) for t, s in zip(teacher.parameters(), student.parameters()))


def test_vit_backbone_shapes_and_both_crop_sizes():
    torch.manual_seed(0)
    vit = ViTBackbone(image_size=32, patch_size=8, dim=16, depth=2, heads=2)
    assert vit(torch.rand(5, 3, 32, 32)).shape == (5, 16)
    assert vit(torch.rand(5, 3, 16, 16)).shape == (5, 16)             # interpolated positions
    assert vit.position_embedding(4) is vit.pos_embed                 # the native grid as learned
    assert vit.position_embedding(2).shape == (1, 1 + 2 * 2, 16)
    net = make_student(Config(out_dim=50, hidden_dim=32, bottleneck_dim=8, head_bn=False,
                              backbone="vit", global_size=32, patch_size=8, vit_dim=16,
                              vit_depth=2, vit_heads=2))
    out = net(torch.rand(2, 3, 3, 32, 32), torch.rand(4, 3, 3, 16, 16))
    assert out.shape == (6, 3, 50)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in net.head.modules())


def test_vit_feature_is_the_cls_token_of_each_image_alone():
    torch.manual_seed(0)
    vit = ViTBackbone(image_size=16, patch_size=4, dim=16, depth=2, heads=4).eval()
    x = torch.rand(3, 3, 16, 16)
    both = vit(x)
    assert torch.allclose(both[1:2], vit(x[1:2]), atol=1e-5)          # no mixing across the batch
    y = x.clone()
    y[:, :, :4, :4] = torch.rand(3, 3, 4, 4)                          # change one patch
    assert not torch.allclose(vit(y), both)                           # the CLS token attends to it


def test_vit_rejects_bad_sizes():
    with pytest.raises(ValueError, match="patch_size"):
        ViTBackbone(image_size=30, patch_size=4)
    vit = ViTBackbone(image_size=32, patch_size=8, dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="divisible"):
        vit(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match="backbone"):
        make_student(Config(out_dim=10, backbone="resnet"))


def test_vit_mean_pool_is_the_normed_mean_of_the_patch_tokens_and_cls_the_default():
    torch.manual_seed(0)
    cls_net = ViTBackbone(image_size=16, patch_size=4, dim=16, depth=1, heads=2)
    mean_net = ViTBackbone(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pool="mean")
    mean_net.load_state_dict(cls_net.state_dict())
    x = torch.rand(3, 3, 16, 16)
    tokens = {}
    cls_net.blocks[-1].register_forward_hook(lambda m, i, out: tokens.setdefault("x", out))
    f_cls = cls_net(x)                                               # (3, 16)
    assert torch.allclose(f_cls, cls_net.norm(tokens["x"][:, 0]))
    assert torch.allclose(mean_net(x), cls_net.norm(tokens["x"][:, 1:].mean(1)), atol=1e-6)
    assert not torch.allclose(mean_net(x), f_cls)
    with pytest.raises(ValueError, match="pool"):
        ViTBackbone(pool="max")


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_head_layers_counts_the_linear_layers(n_layers):
    net = make_student(Config(out_dim=32, widths=(4, 8), hidden_dim=12, bottleneck_dim=6,
                              head_bn=False, head_layers=n_layers))
    linears = [m for m in net.head.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == n_layers and linears[-1].out_features == 6
    assert net(torch.rand(2, 3, 3, 16, 16)).shape == (2, 3, 32)


def test_head_init_std_scales_the_mlp_weights_and_keeps_the_default_init():
    torch.manual_seed(0)
    default = make_student(Config(out_dim=32, widths=(4, 64), head_bn=False))
    torch.manual_seed(0)
    same = make_student(Config(out_dim=32, widths=(4, 64), head_bn=False, head_init_std=0.02))
    for a, b in zip(default.parameters(), same.parameters(), strict=True):
        assert torch.equal(a, b)                                      # 0.02 is the default
    wide = make_student(Config(out_dim=32, widths=(4, 64), head_bn=False, head_init_std=0.2))
    std = wide.head.mlp[2].weight.std().item()                       # (256, 256) weights
    assert 0.19 < std < 0.21                                          # 65536 draws of N(0, 0.2^2)


def test_vit_per_image_input_norm_ignores_each_images_colour_offset_and_contrast():
    torch.manual_seed(0)
    vit = ViTBackbone(image_size=16, patch_size=4, dim=16, depth=2, heads=2, input_norm="image").eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    vit = vit.double()
    scale = 0.2 + torch.rand(3, 3, 1, 1, dtype=torch.float64)         # per image and channel
    shift = torch.rand(3, 3, 1, 1, dtype=torch.float64) - 0.5
    with torch.no_grad():
        same, moved = vit(x), vit(scale * x + shift)
        # the standardised inputs agree up to the 1e-3 guard on the std
        torch.testing.assert_close(moved, same, atol=2e-2, rtol=0)
        # while the dataset's fixed normalisation sees the change
        fixed = ViTBackbone(image_size=16, patch_size=4, dim=16, depth=2, heads=2).double().eval()
        fixed.load_state_dict(vit.state_dict())
        assert (fixed(scale * x + shift) - fixed(x)).abs().max() > 0.1
    z = vit.normalize(x)
    torch.testing.assert_close(z.mean(dim=(2, 3)), torch.zeros(3, 3, dtype=torch.float64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="input_norm"):
        ViTBackbone(input_norm="batch")
