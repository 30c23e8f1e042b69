"""Every value a user can type into `python -m dino_ref.train` is met by exit status 2 and one
line naming the flag and the value (argparse's error), before any data is made; never by a
traceback, and never by a silent run."""

import dataclasses

import pytest
import torch

import dino_ref.train.loop as loop
from dino_ref.train import Config, main, parse_args

# (the Config field it tests, the arguments, text the error line must contain)
BAD = [
    ("epochs", ["--epochs", "0"], "'0'"), ("epochs", ["--epochs", "-1"], "'-1'"),
    ("epochs", ["--epochs", "1.5"], "'1.5'"), ("epochs", ["--epochs", "abc"], "'abc'"),
    ("steps", ["--steps", "0"], "'0'"), ("steps", ["--steps", "-1"], "'-1'"),
    ("batch_size", ["--batch-size", "0"], "'0'"),
    ("batch_size", ["--batch-size", "2001"], "exceeds the train split"),
    ("local_crops", ["--local-crops", "-1"], "'-1'"),
    ("global_size", ["--global-size", "0"], "'0'"), ("local_size", ["--local-size", "0"], "'0'"),
    ("global_scale", ["--global-scale", "0.5", "0.2"], "0.5 0.2"),
    ("global_scale", ["--global-scale", "0", "1"], "'0'"),
    ("local_scale", ["--local-scale", "0.1", "1.5"], "'1.5'"),
    ("local_scale", ["--local-scale", "nan", "0.4"], "'nan'"),
    ("out_dim", ["--out-dim", "0"], "'0'"),
    ("backbone", ["--backbone", "resnet"], "'resnet'"),
    ("widths", ["--widths", "0"], "'0'"), ("widths", ["--widths", "12", "16"], "12 16"),
    ("patch_size", ["--patch-size", "0"], "'0'"),
    ("patch_size", ["--backbone", "vit", "--patch-size", "5"], "--patch-size 5"),
    ("vit_dim", ["--vit-dim", "0"], "'0'"),
    ("vit_heads", ["--backbone", "vit", "--vit-dim", "10", "--vit-heads", "4"], "--vit-dim 10"),
    ("vit_depth", ["--vit-depth", "0"], "'0'"), ("vit_heads", ["--vit-heads", "0"], "'0'"),
    ("vit_pool", ["--vit-pool", "max"], "'max'"),
    ("vit_input_norm", ["--vit-input-norm", "batch"], "'batch'"),
    ("hidden_dim", ["--hidden-dim", "0"], "'0'"), ("bottleneck_dim", ["--bottleneck-dim", "0"], "'0'"),
    ("head_layers", ["--head-layers", "0"], "'0'"),
    ("head_init_std", ["--head-init-std", "0"], "'0'"),
    ("head_init_std", ["--head-init-std", "nan"], "'nan'"),
    ("head_bn", ["--head-bn=no"], "'no'"),
    ("teacher_temp", ["--teacher-temp", "-0.1"], "'-0.1'"),
    ("teacher_temp", ["--teacher-temp", "inf"], "'inf'"),
    ("warmup_teacher_temp", ["--warmup-teacher-temp", "nan"], "'nan'"),
    ("warmup_teacher_temp_epochs", ["--warmup-teacher-temp-epochs", "-1"], "'-1'"),
    ("student_temp", ["--student-temp", "0"], "'0'"),
    ("center_momentum", ["--center-momentum", "1.5"], "'1.5'"),
    ("center_momentum", ["--center-momentum", "-0.1"], "'-0.1'"),
    ("centering", ["--centering", "mean"], "'mean'"),
    ("koleo", ["--koleo", "-0.1"], "'-0.1'"), ("koleo", ["--koleo", "nan"], "'nan'"),
    ("momentum_teacher", ["--momentum-teacher", "1.2"], "'1.2'"),
    ("lr", ["--lr", "nan"], "'nan'"), ("lr", ["--lr", "-1"], "'-1'"),
    ("min_lr", ["--min-lr=-1e-5"], "'-1e-5'"),
    ("min_lr", ["--min-lr", "-1e-5"], "expected one argument"),       # argparse: -1e-5 looks like a flag
    ("warmup_epochs", ["--warmup-epochs", "-1"], "'-1'"),
    ("weight_decay", ["--weight-decay", "-0.1"], "'-0.1'"),
    ("weight_decay_end", ["--weight-decay-end", "inf"], "'inf'"),
    ("clip_grad", ["--clip-grad", "-1"], "'-1'"),
    ("freeze_last_layer", ["--freeze-last-layer", "-1"], "'-1'"),
    ("data", ["--data", "mnist"], "'mnist'"),
    ("batch_size", ["--data", "objects", "--batch-size", "1001"], "x 5 classes = 1000"),
    ("train_per_class", ["--train-per-class", "0"], "'0'"),
    ("test_per_class", ["--test-per-class", "0"], "'0'"),
    ("knn_k", ["--knn-k", "0"], "'0'"), ("knn_k", ["--knn-k", "100000"], "--knn-k 100000"),
    ("knn_every", ["--knn-every", "0"], "'0'"),
    ("seed", ["--seed", "-1"], "'-1'"),
    ("device", ["--device", "gpu0"], "'gpu0'"),
    ("threads", ["--threads", "0"], "'0'"),
    ("plot", ["--plot", "/no/such/folder/c.png"], "/no/such/folder"),
    ("metrics_json", ["--metrics-json", "/no/such/folder/m.json"], "/no/such/folder"),
    ("save", ["--save", "/no/such/folder/c.pt"], "/no/such/folder"),
    ("save", ["--save", "."], "'.'"),
    ("resume", ["--resume"], "--save"),
    ("progress", ["--progress=0"], "'0'"), ("quiet", ["--quiet=1"], "'1'"),
]
if not torch.cuda.is_available():
    BAD.append(("device", ["--device", "cuda"], "'cuda'"))


@pytest.fixture
def no_training(monkeypatch):
    """ fail the test if the command gets as far as training (or building any data) """
    def refuse(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(loop, "train", refuse)
    monkeypatch.setattr(loop, "build", refuse)


@pytest.mark.parametrize("field,argv,shown", BAD, ids=[" ".join(b[1]) for b in BAD])
def test_a_bad_value_exits_2_with_one_line(field, argv, shown, capsys, no_training):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "error:" in err and shown in err, err
    flags = [a for a in argv if a.startswith("--")]
    assert flags[-1].split("=")[0] in err or field.replace("_", "-") in err, err


def test_every_flag_has_a_bad_value_in_the_table():
    assert {f.name for f in dataclasses.fields(Config)} <= {b[0] for b in BAD}


def test_batch_size_must_split_into_the_ranks(monkeypatch, capsys, no_training):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit) as exit_:
        main(["--batch-size", "64"])
    assert exit_.value.code == 2 and "does not split into 3 ranks" in capsys.readouterr().err


def test_edge_values_are_accepted():
    c = parse_args(["--teacher-temp", "0", "--warmup-teacher-temp", "0", "--center-momentum", "1",
                    "--momentum-teacher", "1", "--local-crops", "0", "--clip-grad", "0",
                    "--global-scale", "1", "1", "--batch-size", "2000", "--knn-k", "2000",
                    "--warmup-teacher-temp-epochs", "0", "--lr", "0"])
    assert c.teacher_temp == 0.0 and c.global_scale == (1.0, 1.0) and c.batch_size == 2000
