"""A tiny DINO that trains on a laptop CPU: `python -m dino_ref.train --help`.

The student sees 2 global + N local crops, the teacher (an EMA of the student) only the 2 global
ones; `dino_ref.DINOLoss` makes the student's output distribution match the teacher's centred,
sharpened one. We log the loss = h(P_t) + KL(P_t || P_s) split into its two parts, the batch
entropy h(P_bar_t) (entropy of the batch-mean target) and the k-NN accuracy of the teacher
backbone. The paper's collapse study (Sec. 5.3, Fig. 7) is `--preset fig7` (the CNN with no
BatchNorm in its head: BatchNorm in the head is a batch-wise centering of its own and would hide
the first collapse) and two flag choices after it: no centering `--center-momentum 1.0`, no
sharpening `--teacher-temp 0.1 --warmup-teacher-temp 0.1` (tau_t = tau_s).

Under `torchrun --nproc-per-node 2 -m dino_ref.train` every rank builds the same global batch
and crops (same seed) and trains on its half; DDP averages the gradients and the loss
all-reduces the center (and the head's BatchNorm its statistics), so the run matches a single
process on the whole batch.

This module holds the run's `Config` (every field is a --flag), the presets and the parser.
"""

import argparse
import dataclasses
from dataclasses import dataclass

__all__ = ["Config", "PRESETS", "preset", "make_parser", "parse_args"]


def _field(default, help):
    """ a Config field with its --help text """
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class Config:
    """ everything a run depends on; the CLI flags are these fields """
    epochs: int = _field(30, "passes over the train split")
    steps: int | None = _field(None, "if set, stop after this many steps (short runs)")
    batch_size: int = _field(64, "global batch, split between ranks")
    local_crops: int = _field(6, "N local crops per image (plus 2 global)")
    global_size: int = _field(32, "side of the global crops (pixels)")
    local_size: int = _field(16, "side of the local crops (pixels)")
    global_scale: tuple = _field((0.4, 1.0), "area fraction range of the global crops")
    local_scale: tuple = _field((0.05, 0.4), "area fraction range of the local crops")
    out_dim: int = _field(1024, "K, the number of prototypes (the head's output dimension)")
    backbone: str = _field("cnn", "cnn (GroupNorm CNN) or vit (tiny vision transformer)")
    widths: tuple = _field((16, 32, 64), "CNN backbone: channels per stage")
    patch_size: int = _field(4, "ViT backbone: patch side (pixels)")
    vit_dim: int = _field(64, "ViT backbone: token width")
    vit_depth: int = _field(4, "ViT backbone: number of transformer blocks")
    vit_heads: int = _field(4, "ViT backbone: attention heads per block")
    vit_pool: str = _field("cls", "ViT backbone: feature = cls token or mean of the patch tokens")
    hidden_dim: int = _field(256, "head: hidden width of the MLP")
    bottleneck_dim: int = _field(64, "head: bottleneck width (L2-normalised)")
    head_layers: int = _field(3, "head: linear layers of the MLP (1: straight to the bottleneck)")
    head_init_std: float = _field(0.02, "head: std of the MLP weights at init (truncated normal)")
    head_bn: bool = _field(True, "BatchNorm in the head MLP (a second, batch-wise centering)")
    teacher_temp: float = _field(0.07, "tau_final, the teacher temperature after the warmup")
    warmup_teacher_temp: float = _field(0.04, "tau_warm, the teacher temperature at epoch 0")
    warmup_teacher_temp_epochs: int = _field(10, "W, epochs of the teacher-temperature ramp")
    student_temp: float = _field(0.1, "tau_s, the student temperature")
    center_momentum: float = _field(0.9, "m, the center's momentum (1.0: no centering)")
    centering: str = _field("center", "center (DINO's moving average) or sinkhorn (DINOv2's "
                            "Sinkhorn-Knopp targets; the center is then unused)")
    koleo: float = _field(0.0, "weight of the KoLeo regulariser on the pooled backbone feature of "
                          "each global crop (DINOv2: 0.1; 0: off)")
    momentum_teacher: float = _field(0.996, "lambda, the EMA momentum at step 0 (cosine to 1)")
    lr: float = _field(1e-3, "peak learning rate (AdamW), for the whole batch")
    min_lr: float = _field(1e-5, "learning rate at the end of the cosine decay")
    warmup_epochs: int = _field(3, "epochs of linear LR warmup")
    weight_decay: float = _field(0.04, "weight decay at step 0 (cosine to --weight-decay-end)")
    weight_decay_end: float = _field(0.4, "weight decay at the last step")
    clip_grad: float = _field(3.0, "per-parameter gradient norm clip (0: off)")
    freeze_last_layer: int = _field(1, "epochs with the head's last layer frozen")
    train_per_class: int = _field(200, "images per class in the train split")
    test_per_class: int = _field(50, "images per class in the test split")
    knn_k: int = _field(20, "k of the k-NN evaluation")
    knn_every: int = _field(5, "epochs between k-NN evaluations")
    seed: int = _field(0, "seed of the data, the crops and the initialisation")
    device: str = _field("cpu", "torch device (cpu, cuda, ...)")
    threads: int | None = _field(None, "torch threads per process (None: cores / processes)")
    plot: str | None = _field(None, "write a PNG of the curves here")
    metrics_json: str | None = _field(None, "write the metrics (final, history, config) here")
    save: str | None = _field(None, "checkpoint: student, teacher, dino_loss (center), config")
    progress: bool = _field(True, "progress bar and summary")


# named starting points for the CLI (`--preset NAME`); flags given with it still apply
PRESETS = {
    # the paper's Fig. 7 with one network: the CNN whose head has no BatchNorm (like the paper's
    # ViT head: the loss's center is then the only batch-wise centering), a larger head at init,
    # a sharp constant teacher temperature and a slower teacher, so that the recipe's features
    # learn within 30 epochs (docs/fig7.md: what was tried, what mattered)
    "fig7": dict(backbone="cnn", head_bn=False, head_init_std=0.2, teacher_temp=0.0125,
                 warmup_teacher_temp=0.0125, momentum_teacher=0.998, epochs=30),
}


def preset(name, **overrides):
    """ the Config of `--preset name`, with overrides (what `--preset name --flag value` gives) """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})


def _flag_text(key, value):
    """ how a Config value is given on the command line: --head-bn / --no-head-bn, --k v """
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _preset_help():
    return "; ".join(f"{name}: " + " ".join(_flag_text(k, v) for k, v in sets.items())
                     for name, sets in PRESETS.items())


def make_parser():
    """ the argparse parser: --preset, then one --flag per Config field, each with help and default """
    parser = argparse.ArgumentParser(prog="python -m dino_ref.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a named setting; every other flag given still applies. "
                        f"Sets {_preset_help()} (default: %(default)s)")
    defaults = Config()
    for f in dataclasses.fields(Config):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        text = f.metadata["help"] + " (default: %(default)s)"
        if isinstance(default, bool):
            action = parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                         default=default, help=text)
        elif isinstance(default, tuple):
            action = parser.add_argument(flag, type=type(default[0]), nargs=len(default) if f.name.endswith(
                "scale") else "+", default=default, metavar="X", help=text)
        else:
            kind = {"steps": int, "threads": int}.get(f.name, type(default) if default is not None else str)
            action = parser.add_argument(flag, type=kind, default=default, help=text)
        if action.help.count("default") > 1:                          # argparse added its own
            action.help = f.metadata["help"] + " (default: %(default)s)"
    return parser


def parse_args(argv=None):
    """ a Config from the command line: every field is a --flag; --preset sets new defaults """
    parser = make_parser()
    known, _ = parser.parse_known_args(argv)
    if known.preset is not None:
        parser.set_defaults(**PRESETS[known.preset])
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    return Config(**values)
