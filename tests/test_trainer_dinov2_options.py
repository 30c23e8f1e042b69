"""The trainer's DINOv2 options: --centering sinkhorn and --koleo WEIGHT."""

import pytest
import torch

from dino_ref.dinov2 import KoLeoLoss
from dino_ref.train import Config, build, parse_args, set_schedules, train, train_step, views

SMALL = dict(train_per_class=4, test_per_class=1, batch_size=8, threads=1, progress=False)


def test_the_flags_reach_the_config():
    config = parse_args(["--centering", "sinkhorn", "--koleo", "0.1"])
    assert (config.centering, config.koleo) == ("sinkhorn", 0.1)
    assert (Config().centering, Config().koleo) == ("center", 0.0)      # DINO unless asked


def test_sinkhorn_centering_trains_and_leaves_the_center_unused():
    run = build(Config(centering="sinkhorn", steps=3, **SMALL))
    assert run.loss_fn.centering == "sinkhorn"
    metrics = train(Config(centering="sinkhorn", steps=3, save=None, **SMALL))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics["history"])
    assert len(metrics["history"]) == 3


def one_step(koleo_weight):
    config = Config(steps=1, **SMALL)
    run = build(config)
    set_schedules(run, 0)
    globals_, locals_ = views(run, 0)
    loss, _ = train_step(run.student, run.teacher, run.loss_fn, run.optimizer, globals_, locals_,
                         0.0, run.momentum_at[0], 0.0, 0, koleo_weight)
    return run, loss, globals_


def test_koleo_adds_its_gradient_to_the_backbone_and_leaves_the_logged_loss():
    plain, loss_plain, _ = one_step(0.0)
    koleo, loss_koleo, globals_ = one_step(0.1)
    assert loss_plain.item() == loss_koleo.item()                    # the DINO loss is what is returned
    moved = [k for k, v in koleo.student.state_dict().items()
             if not torch.equal(v, plain.student.state_dict()[k])]
    assert any(k.startswith("backbone.") for k in moved)


def test_koleo_gradient_is_the_weighted_regulariser_on_each_global_view():
    torch.manual_seed(0)
    config = Config(steps=1, **SMALL)
    run = build(config)
    globals_, locals_ = views(run, 0)
    _, feats = run.student(globals_, locals_, return_features=True)
    (0.1 * sum(KoLeoLoss()(feats[v]) for v in range(2))).backward()
    expected = run.student.backbone.norm.weight.grad.clone()
    run.student.zero_grad(set_to_none=True)
    logits, feats = run.student(globals_, locals_, return_features=True)
    dino = run.loss_fn(run.teacher(globals_).detach(), logits, 0.0, update_center=False)
    dino.backward()
    dino_grad = run.student.backbone.norm.weight.grad.clone()
    run2 = build(config)
    set_schedules(run2, 0)
    g2, l2 = views(run2, 0)
    assert torch.equal(g2, globals_)
    run2.optimizer.step = lambda: None                               # keep the gradient to read it
    train_step(run2.student, run2.teacher, run2.loss_fn, run2.optimizer, g2, l2, 0.0, 1.0, 0.0, 0, 0.1)
    got = run2.student.backbone.norm.weight.grad
    assert torch.allclose(got, dino_grad + expected, rtol=1e-5, atol=1e-7)


def test_koleo_needs_two_images_per_rank():
    with pytest.raises(ValueError, match="koleo"):
        build(Config(koleo=0.1, batch_size=1, steps=1, **{k: v for k, v in SMALL.items()
                                                          if k != "batch_size"}))
