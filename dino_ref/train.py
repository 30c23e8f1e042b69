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
"""

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.std import tqdm

from .data import NUM_CLASSES, make_splits
from .knn import knn_accuracy
from .loss import DINOLoss, global_batch_mean, teacher_entropy
from .models import ema_update, make_student, make_teacher
from .multicrop import multicrop


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
    # learn within 30 epochs (README, "the collapse study": what was tried, what mattered)
    "fig7": dict(backbone="cnn", head_bn=False, head_init_std=0.2, teacher_temp=0.0125,
                 warmup_teacher_temp=0.0125, momentum_teacher=0.998, epochs=30),
}


def preset(name, **overrides):
    """ the Config of `--preset name`, with overrides (what `--preset name --flag value` gives) """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return Config(**{**PRESETS[name], **overrides})


def batch_entropy(P_t):
    """ h(P_bar_t): entropy of the teacher distribution averaged over all rows (of all ranks)

    ~0 when every image puts its mass on the same dimension, ~log K when the batch spreads
    over all dimensions (both for uniform rows and for sharp rows on different dimensions)
    """
    with torch.no_grad():
        P_bar = global_batch_mean(P_t).flatten()                      # (K,)
        return -torch.special.xlogy(P_bar, P_bar).sum()


def cosine_schedule(base, final, total_steps, warmup_steps=0, start=0.0):
    """ a linear warmup from `start` to `base`, then a half cosine from `base` to `final` """
    values = []
    for i in range(total_steps):
        if i < warmup_steps:
            values.append(start + (base - start) * i / warmup_steps)
        else:
            t = (i - warmup_steps) / max(1, total_steps - warmup_steps)
            values.append(final + 0.5 * (base - final) * (1 + math.cos(math.pi * t)))
    return values


def clip_gradients(model, clip):
    """ rescale every parameter's gradient to norm <= clip (per parameter, as in DINO) """
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.norm()
            p.grad.mul_(torch.clamp(clip / (norm + 1e-6), max=1.0))


def _setup_distributed(config):
    """ (rank, world_size, device, whether we started the process group) """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(config.device)
    started = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started = True
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), device, started
    return 0, 1, device, started


def _param_groups(model):
    """ weight decay on weight matrices and kernels only, not on biases and norm scales """
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(config=None, **overrides):
    """ run DINO on the procedural textures; returns {"final": {...}, "history": [...]} """
    config = dataclasses.replace(config or Config(), **overrides)
    rank, world, device, started = _setup_distributed(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split into {world} ranks")
    b = config.batch_size // world                                   # this rank's share
    shard = slice(rank * b, (rank + 1) * b)
    show = config.progress and rank == 0

    # data: the same on every rank, labels only for the k-NN evaluation
    torch.manual_seed(config.seed)
    train_set, test_set = make_splits(config.train_per_class, config.test_per_class,
                                      config.global_size, config.seed)
    train_set = tuple(t.to(device) for t in train_set)
    test_set = tuple(t.to(device) for t in test_set)
    images = train_set[0]                                            # (N, 3, 32, 32)
    steps_per_epoch = len(images) // config.batch_size
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(config.seed + 1)             # batches and crops

    # networks: the teacher starts equal to the student and follows it by EMA
    vit = dict(image_size=config.global_size, patch_size=config.patch_size, dim=config.vit_dim,
               depth=config.vit_depth, heads=config.vit_heads, pool=config.vit_pool)
    student = make_student(config.out_dim, config.widths, config.hidden_dim, config.bottleneck_dim,
                           config.head_bn, config.backbone, vit, config.head_layers,
                           config.head_init_std).to(device)
    teacher = make_teacher(student)
    student_ddp = student
    if world > 1:
        student_ddp = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = DINOLoss(config.out_dim, config.warmup_teacher_temp, config.teacher_temp,
                       config.warmup_teacher_temp_epochs, config.student_temp,
                       config.center_momentum).to(device)
    optimizer = torch.optim.AdamW(_param_groups(student), lr=0.0)
    warmup = min(config.warmup_epochs * steps_per_epoch, total // 2)
    lr_at = cosine_schedule(config.lr, config.min_lr, total, warmup)
    wd_at = cosine_schedule(config.weight_decay, config.weight_decay_end, total)
    momentum_at = cosine_schedule(config.momentum_teacher, 1.0, total)
    knn_steps = {0, total} | set(range(0, total, config.knn_every * steps_per_epoch))

    def evaluate():
        return knn_accuracy(teacher.backbone, train_set, test_set, NUM_CLASSES, config.knn_k)

    history, order = [], torch.empty(0, dtype=torch.long)
    knn_random_init = evaluate() if rank == 0 else None              # teacher = student at init
    start_time = time.perf_counter()
    # tqdm.std (plain text), not tqdm.auto: in a Jupyter kernel without ipywidgets tqdm.auto warns
    # on stderr at import, which strict nbval reports as a changed output; notebooks pass
    # progress=False
    bar = tqdm(range(total), disable=not show, desc="DINO", dynamic_ncols=True)
    for step in bar:
        epoch = step / steps_per_epoch                               # fractional: per-step warmup
        i = step % steps_per_epoch
        if i == 0:
            order = torch.randperm(len(images), generator=gen)
        for group in optimizer.param_groups:
            group["lr"] = lr_at[step]
        optimizer.param_groups[0]["weight_decay"] = wd_at[step]

        # views: every rank crops the whole global batch (same generator), then keeps its shard
        batch = images[order[i * config.batch_size:(i + 1) * config.batch_size].to(device)]
        globals_, locals_ = multicrop(batch, gen, config.local_crops, config.global_size,
                                      config.local_size, config.global_scale, config.local_scale)
        globals_, locals_ = globals_[:, shard], locals_[:, shard]    # (2, b, 3, G, G), (N, b, 3, L, L)

        with torch.no_grad():
            teacher_out = teacher(globals_)                          # (2, b, K) global crops only
        student_out = student_ddp(globals_, locals_)                 # (2 + N, b, K) all crops
        P_t = loss_fn.teacher_probs(teacher_out, epoch)              # the targets the loss will use
        h = teacher_entropy(P_t)                                     # h(P_t)
        h_batch = batch_entropy(P_t)                                 # h(P_bar_t)
        loss = loss_fn(teacher_out, student_out, epoch)              # = h(P_t) + KL(P_t || P_s)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.clip_grad > 0:
            clip_gradients(student, config.clip_grad)
        if epoch < config.freeze_last_layer:                         # let the prototypes settle
            student.head.last_layer.v.grad = None
        optimizer.step()
        ema_update(teacher, student, momentum_at[step])

        stats = torch.stack([loss.detach(), h, h_batch]).float()     # rank means of equal shards
        if world > 1:
            dist.all_reduce(stats)
            stats /= world
        loss_v, h_v, hb_v = stats.tolist()
        record = {"step": step + 1, "epoch": (step + 1) / steps_per_epoch, "loss": loss_v,
                  "teacher_entropy": h_v, "batch_entropy": hb_v, "kl": loss_v - h_v,
                  "lr": lr_at[step],
                  "momentum": momentum_at[step], "teacher_temp": loss_fn.teacher_temperature(epoch)}
        if step + 1 in knn_steps and rank == 0:
            record["knn_accuracy"] = evaluate()
        history.append(record)
        if show:
            bar.set_postfix(loss=f"{loss_v:.3f}", h=f"{h_v:.2f}", kl=f"{loss_v - h_v:.3f}",
                            knn=f"{_last_knn(history, knn_random_init):.2f}")
    bar.close()
    wall = time.perf_counter() - start_time

    last = history[-min(steps_per_epoch, len(history)):]             # the final epoch, averaged
    mean = lambda key: sum(r[key] for r in last) / len(last)         # noqa: E731
    final = {"loss": mean("loss"), "teacher_entropy": mean("teacher_entropy"),
             "batch_entropy": mean("batch_entropy"), "kl": mean("kl"),
             "knn_accuracy": _last_knn(history, knn_random_init),
             "knn_accuracy_random_init": knn_random_init, "chance": 1.0 / NUM_CLASSES,
             "log_K": math.log(config.out_dim), "out_dim": config.out_dim,
             "num_classes": NUM_CLASSES, "steps": total, "epochs": total / steps_per_epoch,
             "world_size": world, "wall_time_s": wall}
    metrics = {"final": final, "history": history, "config": dataclasses.asdict(config)}

    if rank == 0:
        if config.metrics_json:
            with open(config.metrics_json, "w") as f:
                json.dump(metrics, f, indent=1)
        if config.plot:
            plot_curves(metrics, config.plot)
        if config.save:
            torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(),
                        "dino_loss": loss_fn.state_dict(), "config": dataclasses.asdict(config)},
                       config.save)
        if show:
            print(summary(metrics))
    if started:
        # Every rank has finished its collectives. The group that train() started is left for
        # main() to end with the process: tearing a gloo group down can deadlock (its destructor
        # joins a worker thread that still waits for the GIL to drop a tensor, while holding the
        # GIL itself; seen with torch 2.13 on loaded CPUs, one rank hanging after training).
        dist.barrier()
    return metrics


def _last_knn(history, default):
    """ the latest k-NN accuracy in the history (default before the first evaluation) """
    for r in reversed(history):
        if "knn_accuracy" in r:
            return r["knn_accuracy"]
    return default


def summary(metrics):
    """ a few readable lines: the final entropy, KL and k-NN accuracy against their references """
    f = metrics["final"]
    return "\n".join([
        f"DINO: {f['steps']} steps ({f['epochs']:.1f} epochs) in {f['wall_time_s']:.0f} s "
        f"on {f['world_size']} process(es)",
        f"  teacher entropy h(P_t) = {f['teacher_entropy']:.3f}  "
        f"({f['teacher_entropy'] / f['log_K']:.2f} log K, log K = {f['log_K']:.3f})",
        f"  batch entropy h(P_bar) = {f['batch_entropy']:.3f}  "
        f"({f['batch_entropy'] / f['log_K']:.2f} log K)",
        f"  KL(P_t || P_s)         = {f['kl']:.4f}   loss = h + KL = {f['loss']:.3f}",
        f"  k-NN accuracy          = {f['knn_accuracy']:.3f}  "
        f"(random init {f['knn_accuracy_random_init']:.3f}, chance {f['chance']:.3f})"])


def plot_curves(metrics, path):
    """ PNG with h(P_t), KL and the loss against steps, and the k-NN accuracy """
    # a bare Figure, not pyplot: nothing global changes, so a notebook that calls this keeps its
    # inline backend (matplotlib.use("Agg") here made its later plt.show() show nothing)
    from matplotlib.figure import Figure
    hist, f = metrics["history"], metrics["final"]
    steps = [r["step"] for r in hist]
    fig = Figure(figsize=(13, 3.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(steps, [r["teacher_entropy"] for r in hist], label="h(P_t)")
    ax1.plot(steps, [r["loss"] for r in hist], label="loss = h + KL", alpha=0.7)
    ax1.axhline(f["log_K"], color="grey", ls="--", lw=1, label="log K (uniform)")
    ax1.set(xlabel="step", title="teacher entropy and loss")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [r["kl"] for r in hist], color="C3")
    ax2.set(xlabel="step", title="KL(P_t || P_s)")
    knn = [(0, f["knn_accuracy_random_init"])] + [(r["step"], r["knn_accuracy"])
                                                  for r in hist if "knn_accuracy" in r]
    ax3.plot(*zip(*knn), "o-", label="teacher k-NN")
    ax3.axhline(f["knn_accuracy_random_init"], color="grey", ls="--", lw=1, label="random init")
    ax3.axhline(f["chance"], color="grey", ls=":", lw=1, label="chance")
    ax3.set(xlabel="step", ylim=(0, 1), title="k-NN accuracy (test split)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


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


def main(argv=None):
    """ the command line entry point """
    train(parse_args(argv))
    if dist.is_initialized():  # started by train() under torchrun: end without tearing it down
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
