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
import math
import os
from dataclasses import dataclass

import torch

from .data import NUM_CLASSES
from .objects import NUM_SHAPES

__all__ = ["Config", "PRESETS", "OUTPUT_FIELDS", "preset", "make_parser", "parse_args",
           "check_config", "num_classes"]


def _number(kind, low, high=None, low_open=False):
    """ an argparse type: text -> int or float in [low, high] ((low, high] if low_open), finite """
    name = "an integer" if kind is int else "a finite number"
    allowed = f"{name} {'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (value is None or not math.isfinite(value) or value < low or (low_open and value == low)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"got {text!r}, allowed: {allowed}")
        return value
    parse.__name__ = kind.__name__                                    # argparse's messages name it
    return parse


def _output_path(text):
    """ an argparse type: a file path in an existing, writable folder (checked before training) """
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"got {text!r}, a folder: give a file path")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"got {text!r}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"got {text!r}: the folder {folder} is not writable")
    return text


def _device(text):
    """ an argparse type: a torch device that this machine has (cpu, cuda, cuda:N, mps) """
    allowed = "cpu, or cuda / cuda:N / mps where available"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"got {text!r}, allowed: {allowed}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"got {text!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"got {text!r}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"got {text!r}, allowed: {allowed}")
    return text


def _field(default, help, check=None, choices=None):
    """ a Config field with its --help text, the argparse type that checks a typed value, and
    its choices """
    return dataclasses.field(default=default,
                             metadata={"help": help, "check": check, "choices": choices})


POSITIVE, NON_NEGATIVE = _number(int, 1), _number(int, 0)
TEMPERATURE = _number(float, 0.0)                                     # 0: hard targets
FRACTION = _number(float, 0.0, 1.0, low_open=True)                    # (0, 1]


@dataclass
class Config:
    """ everything a run depends on; the CLI flags are these fields """
    epochs: int = _field(30, "passes over the train split", _number(int, 1, 10 ** 6))
    steps: int | None = _field(None, "if set, stop after this many steps (short runs)",
                               _number(int, 1, 10 ** 7))
    batch_size: int = _field(64, "global batch, split between ranks", POSITIVE)
    local_crops: int = _field(6, "N local crops per image (plus 2 global)", _number(int, 0, 64))
    global_size: int = _field(32, "side of the global crops (pixels)", _number(int, 8, 512))
    local_size: int = _field(16, "side of the local crops (pixels)", _number(int, 4, 512))
    global_scale: tuple = _field((0.4, 1.0), "area fraction range of the global crops", FRACTION)
    local_scale: tuple = _field((0.05, 0.4), "area fraction range of the local crops", FRACTION)
    out_dim: int = _field(1024, "K, the number of prototypes (the head's output dimension)",
                          _number(int, 1, 2 ** 20))
    backbone: str = _field("cnn", "cnn (GroupNorm CNN) or vit (tiny vision transformer)",
                           choices=("cnn", "vit"))
    widths: tuple = _field((16, 32, 64), "CNN backbone: channels per stage", _number(int, 1, 4096))
    patch_size: int = _field(4, "ViT backbone: patch side (pixels)", POSITIVE)
    vit_dim: int = _field(64, "ViT backbone: token width", _number(int, 1, 4096))
    vit_depth: int = _field(4, "ViT backbone: number of transformer blocks", _number(int, 1, 64))
    vit_heads: int = _field(4, "ViT backbone: attention heads per block", POSITIVE)
    vit_pool: str = _field("cls", "ViT backbone: feature = cls token or mean of the patch tokens",
                           choices=("cls", "mean"))
    vit_input_norm: str = _field("dataset", "ViT backbone: input standardisation with the dataset's "
                                 "mean and std, or per image (each image's channels to mean 0, "
                                 "std 1)", choices=("dataset", "image"))
    hidden_dim: int = _field(256, "head: hidden width of the MLP", _number(int, 1, 2 ** 16))
    bottleneck_dim: int = _field(64, "head: bottleneck width (L2-normalised)", _number(int, 1, 2 ** 16))
    head_layers: int = _field(3, "head: linear layers of the MLP (1: straight to the bottleneck)",
                              _number(int, 1, 64))
    head_init_std: float = _field(0.02, "head: std of the MLP weights at init (truncated normal)",
                                  _number(float, 0.0, low_open=True))
    head_bn: bool = _field(True, "BatchNorm in the head MLP (a second, batch-wise centering)")
    teacher_temp: float = _field(0.07, "tau_final, the teacher temperature after the warmup "
                                 "(0: hard one-hot targets)", TEMPERATURE)
    warmup_teacher_temp: float = _field(0.04, "tau_warm, the teacher temperature at epoch 0",
                                        TEMPERATURE)
    warmup_teacher_temp_epochs: int = _field(10, "W, epochs of the teacher-temperature ramp",
                                             NON_NEGATIVE)
    student_temp: float = _field(0.1, "tau_s, the student temperature",
                                 _number(float, 0.0, low_open=True))
    center_momentum: float = _field(0.9, "m, the center's momentum (1.0: no centering)",
                                    _number(float, 0.0, 1.0))
    centering: str = _field("center", "center (DINO's moving average) or sinkhorn (DINOv2's "
                            "Sinkhorn-Knopp targets; the center is then unused)",
                            choices=("center", "sinkhorn"))
    koleo: float = _field(0.0, "weight of the KoLeo regulariser on the pooled backbone feature of "
                          "each global crop (DINOv2: 0.1; 0: off)", _number(float, 0.0))
    momentum_teacher: float = _field(0.996, "lambda, the EMA momentum at step 0 (cosine to 1)",
                                     _number(float, 0.0, 1.0))
    lr: float = _field(1e-3, "peak learning rate (AdamW), for the whole batch", _number(float, 0.0))
    min_lr: float = _field(1e-5, "learning rate at the end of the cosine decay", _number(float, 0.0))
    warmup_epochs: int = _field(3, "epochs of linear LR warmup", NON_NEGATIVE)
    weight_decay: float = _field(0.04, "weight decay at step 0 (cosine to --weight-decay-end)",
                                 _number(float, 0.0))
    weight_decay_end: float = _field(0.4, "weight decay at the last step", _number(float, 0.0))
    clip_grad: float = _field(3.0, "per-parameter gradient norm clip (0: off)", _number(float, 0.0))
    freeze_last_layer: int = _field(1, "epochs with the head's last layer frozen", NON_NEGATIVE)
    data: str = _field("textures", "the images: textures (ten pattern classes), objects (five "
                       "shape kinds on random clutter, with masks for the attention maps) or "
                       "objects-on-textures (the same shapes on the ten textures)",
                       choices=("textures", "objects", "objects-on-textures"))
    train_per_class: int = _field(200, "images per class in the train split", _number(int, 1, 10 ** 5))
    test_per_class: int = _field(50, "images per class in the test split", _number(int, 1, 10 ** 5))
    knn_k: int = _field(20, "k of the k-NN evaluation", POSITIVE)
    knn_every: int = _field(5, "epochs between k-NN evaluations", POSITIVE)
    seed: int = _field(0, "seed of the data, the crops and the initialisation", _number(int, 0, 2 ** 62))
    device: str = _field("cpu", "torch device (cpu, cuda, ...)", _device)
    threads: int | None = _field(None, "torch threads per process (None: cores / processes)",
                                 _number(int, 1, 1024))
    plot: str | None = _field(None, "write a PNG of the curves here", _output_path)
    metrics_json: str | None = _field(None, "write the metrics (final, history, config) here",
                                      _output_path)
    save: str | None = _field(None, "checkpoint, written at the end of every epoch: networks, "
                              "center, optimizer, step, random states, config, history", _output_path)
    resume: bool = _field(False, "continue from the --save checkpoint if it exists (same command)")
    progress: bool = _field(True, "the progress bar")
    quiet: bool = _field(False, "no summary at the end")


# the fields that name outputs or how the run is shown: a resumed run may change them
OUTPUT_FIELDS = ("save", "metrics_json", "plot", "progress", "quiet", "threads", "resume")


# named starting points for the CLI (`--preset NAME`); flags given with it still apply
PRESETS = {
    # the paper's Fig. 7 with one network: the CNN whose head has no BatchNorm (like the paper's
    # ViT head: the loss's center is then the only batch-wise centering), a larger head at init,
    # a sharp constant teacher temperature and a slower teacher, so that the recipe's features
    # learn within 30 epochs (docs/fig7.md: what was tried, what mattered)
    "fig7": dict(backbone="cnn", head_bn=False, head_init_std=0.2, teacher_temp=0.0125,
                 warmup_teacher_temp=0.0125, momentum_teacher=0.998, epochs=30),
    # the emerging property on a toy: a tiny ViT on the procedural objects, with fig7's head and
    # loss, each image's colour offset removed at the input, crops that keep more of the object,
    # and more images (docs/attention.md: what was tried, what mattered)
    "vit-attention": dict(backbone="vit", data="objects", vit_input_norm="image", head_bn=False,
                          head_init_std=0.2, teacher_temp=0.03, warmup_teacher_temp=0.03,
                          momentum_teacher=0.998, batch_size=32, local_crops=2, lr=1e-3,
                          global_scale=(0.6, 1.0), local_scale=(0.1, 0.5), train_per_class=1000,
                          epochs=30),
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


class _Parser(argparse.ArgumentParser):
    """ argparse, but a bad value gets one line (flag, value, allowed range), not the usage too """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists every flag)\n")


def make_parser():
    """ the argparse parser: --preset, then one --flag per Config field, each with help, default
    and the check of a typed value """
    parser = _Parser(prog="python -m dino_ref.train", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a named setting; every other flag given still applies. "
                        f"Sets {_preset_help()} (default: %(default)s)")
    defaults = Config()
    for f in dataclasses.fields(Config):
        flag, default = "--" + f.name.replace("_", "-"), getattr(defaults, f.name)
        text = f.metadata["help"] + " (default: %(default)s)"
        check, choices = f.metadata["check"], f.metadata["choices"]
        if isinstance(default, bool):
            action = parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                         default=default, help=text)
        elif isinstance(default, tuple):
            action = parser.add_argument(flag, type=check, nargs=len(default) if f.name.endswith(
                "scale") else "+", default=default, metavar="X", help=text)
        else:
            action = parser.add_argument(flag, type=check or str, choices=choices, default=default,
                                         help=text)
        if action.help.count("default") > 1:                          # argparse added its own
            action.help = f.metadata["help"] + " (default: %(default)s)"
    return parser


def parse_args(argv=None):
    """ a Config from the command line: every field is a --flag; --preset sets new defaults; a
    value out of its range, or flags that do not fit together, exit with status 2 and one line """
    parser = make_parser()
    known, _ = parser.parse_known_args(argv)
    if known.preset is not None:
        parser.set_defaults(**PRESETS[known.preset])
    args = vars(parser.parse_args(argv))
    args.pop("preset")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    config = Config(**values)
    try:
        check_config(config, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as e:
        parser.error(str(e))
    return config


def num_classes(config):
    """ the number of classes of the config's images (--data) """
    return NUM_SHAPES if config.data.startswith("objects") else NUM_CLASSES


def check_config(config, world_size=1):
    """ raise ValueError naming the flags whose values do not fit together """
    classes = num_classes(config)
    n_train = config.train_per_class * classes
    if config.batch_size > n_train:
        raise ValueError(f"--batch-size {config.batch_size} exceeds the train split "
                         f"(--train-per-class {config.train_per_class} x {classes} classes = {n_train})")
    if config.batch_size % world_size:
        raise ValueError(f"--batch-size {config.batch_size} does not split into {world_size} ranks")
    if config.knn_k > n_train:
        raise ValueError(f"--knn-k {config.knn_k} exceeds the train split (--train-per-class "
                         f"{config.train_per_class} x {classes} classes = {n_train})")
    total = config.steps if config.steps is not None else config.epochs * (n_train // config.batch_size)
    if total > 10 ** 7:
        raise ValueError(f"{total} steps (--epochs x steps per epoch) exceed 10^7")
    for name in ("global_scale", "local_scale"):
        low, high = getattr(config, name)
        if not 0 < low <= high <= 1:
            raise ValueError(f"--{name.replace('_', '-')} {low} {high}: allowed: 0 < low <= high <= 1")
    if any(c > 8 and c % 8 for c in config.widths):                   # GroupNorm(min(8, c), c)
        raise ValueError(f"--widths {' '.join(map(str, config.widths))}: each must be <= 8 or a "
                         "multiple of 8")
    if config.backbone == "vit":
        for name in ("global_size", "local_size"):
            if getattr(config, name) % config.patch_size:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)} is not a "
                                 f"multiple of --patch-size {config.patch_size} (--backbone vit)")
        if config.vit_dim % config.vit_heads:
            raise ValueError(f"--vit-dim {config.vit_dim} is not a multiple of --vit-heads "
                             f"{config.vit_heads}")
    if config.resume and not config.save:
        raise ValueError("--resume continues from the --save checkpoint: give --save PATH")
