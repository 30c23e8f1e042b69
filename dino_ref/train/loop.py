"""The toy trainer's loop: `build(config)` makes a run's parts, `train_step` is the one DINO
step (the trainer, notebook 05 and its exercise checker all call it), `train` loops over it and
logs h(P_t), KL(P_t || P_s), the batch entropy and the teacher's k-NN accuracy."""

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

from ..diagnostics import batch_entropy, teacher_entropy
from ..dinov2 import KoLeoLoss
from ..loss import DINOLoss
from .config import OUTPUT_FIELDS, Config, check_config, make_parser, num_classes, parse_args
from .data import make_splits
from .knn import knn_accuracy
from .models import ema_update, make_student, make_teacher
from .multicrop import multicrop
from .objects import make_object_splits

__all__ = ["Run", "build", "train_step", "train", "views", "set_schedules", "cosine_schedule",
           "clip_gradients", "save_checkpoint", "load_checkpoint", "summary", "plot_curves", "main"]


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


def train_step(student, teacher, loss_fn, optimizer, globals_, locals_, epoch, lam, clip_grad,
               freeze_last_layer, koleo_weight=0.0):
    """ one DINO step: the loss, the student's update, the teacher's EMA; -> (loss, P_t)

    globals_ (2, B, 3, G, G) and locals_ (N, B, 3, L, L) are the crops; the student may be
    wrapped in DistributedDataParallel. P_t (2, B, K) are the targets the loss used (for the
    diagnostics: h(P_t), h(P_bar_t)), computed before the call moves the center. With
    koleo_weight > 0 the student also minimises koleo_weight times the KoLeo regulariser of each
    global crop's backbone feature (DINOv2); the returned loss is the DINO loss alone.
    """
    net = getattr(student, "module", student)                        # the network under DDP
    with torch.no_grad():
        teacher_out = teacher(globals_)                              # (2, B, K) global crops only
    if koleo_weight > 0:
        student_out, features = student(globals_, locals_, return_features=True)  # (2 + N, B, C)
    else:
        student_out = student(globals_, locals_)                     # (2 + N, B, K) all crops
    P_t = loss_fn.teacher_targets(teacher_out, epoch)                # before the center moves
    loss = loss_fn(teacher_out, student_out, epoch)                  # H(P_t, P_s); then c moves
    objective = loss
    if koleo_weight > 0:                                             # the spread of the features
        koleo = KoLeoLoss()
        objective = loss + koleo_weight * sum(koleo(features[v]) for v in range(len(globals_)))

    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    if clip_grad > 0:
        clip_gradients(net, clip_grad)
    if epoch < freeze_last_layer:                                    # let the prototypes settle
        net.head.last_layer.v.grad = None
    optimizer.step()
    ema_update(teacher, net, lam)                                    # theta_t <- lam theta_t + (1 - lam) theta_s
    return loss, P_t


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


@dataclass
class Run:
    """ the parts of a run that build(config) makes and train() steps through """
    config: Config
    rank: int
    world: int
    device: torch.device
    started_process_group: bool
    student: torch.nn.Module          # the network (its parameters, the checkpoint)
    student_ddp: torch.nn.Module      # what the step calls: the student, DDP-wrapped on 2+ ranks
    teacher: torch.nn.Module
    loss_fn: DINOLoss
    optimizer: torch.optim.Optimizer
    lr_at: list                       # per step
    weight_decay_at: list             # per step
    momentum_at: list                 # lambda per step
    train_set: tuple                  # (images (N, 3, 32, 32), labels (N,))
    test_set: tuple
    generator: torch.Generator        # batch order and crops
    steps_per_epoch: int
    total_steps: int
    order: torch.Tensor = None        # this epoch's shuffle


def build(config):
    """ everything a run needs, made in a fixed order from the config's seed: the process group,
    the data, the student and its EMA teacher, the loss, AdamW with its parameter groups, the
    schedules """
    rank, world, device, started = _setup_distributed(config)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    elif world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    check_config(config, world)

    # data: the same on every rank, labels only for the k-NN evaluation
    torch.manual_seed(config.seed)
    if config.data.startswith("objects"):                            # the masks are not needed here
        background = "textures" if config.data == "objects-on-textures" else "clutter"
        (x, _, y), (x_test, _, y_test) = make_object_splits(
            config.train_per_class, config.test_per_class, config.global_size, config.seed,
            background)
        train_set, test_set = (x, y), (x_test, y_test)
    else:
        train_set, test_set = make_splits(config.train_per_class, config.test_per_class,
                                          config.global_size, config.seed)
    train_set = tuple(t.to(device) for t in train_set)
    test_set = tuple(t.to(device) for t in test_set)
    steps_per_epoch = len(train_set[0]) // config.batch_size
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(config.seed + 1)

    # networks: the teacher starts equal to the student and follows it by EMA
    student = make_student(config).to(device)
    teacher = make_teacher(student)
    student_ddp = student
    if world > 1:
        student_ddp = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None)
    if config.koleo > 0 and config.batch_size // world < 2:
        raise ValueError(f"koleo {config.koleo} needs at least 2 images per rank (the nearest other "
                         f"one), got batch_size {config.batch_size} on {world} rank(s)")
    loss_fn = DINOLoss(config.out_dim, config.warmup_teacher_temp, config.teacher_temp,
                       config.warmup_teacher_temp_epochs, config.student_temp,
                       config.center_momentum, centering=config.centering).to(device)
    optimizer = torch.optim.AdamW(_param_groups(student), lr=0.0)
    warmup = min(config.warmup_epochs * steps_per_epoch, total // 2)
    return Run(config, rank, world, device, started, student, student_ddp, teacher, loss_fn,
               optimizer,
               lr_at=cosine_schedule(config.lr, config.min_lr, total, warmup),
               weight_decay_at=cosine_schedule(config.weight_decay, config.weight_decay_end, total),
               momentum_at=cosine_schedule(config.momentum_teacher, 1.0, total),
               train_set=train_set, test_set=test_set, generator=generator,
               steps_per_epoch=steps_per_epoch, total_steps=total)


def set_schedules(run, step):
    """ the learning rate (all groups) and the weight decay (the decayed group) of this step """
    for group in run.optimizer.param_groups:
        group["lr"] = run.lr_at[step]
    run.optimizer.param_groups[0]["weight_decay"] = run.weight_decay_at[step]


def views(run, step):
    """ this rank's crops of the step's batch: (2, b, 3, G, G), (N, b, 3, L, L); a new shuffle at
    the start of every epoch; every rank crops the whole global batch (the same generator), then
    keeps its shard """
    config, i = run.config, step % run.steps_per_epoch
    images = run.train_set[0]                                        # (N, 3, 32, 32)
    if i == 0:
        run.order = torch.randperm(len(images), generator=run.generator)
    batch = images[run.order[i * config.batch_size:(i + 1) * config.batch_size].to(run.device)]
    globals_, locals_ = multicrop(batch, run.generator, config.local_crops, config.global_size,
                                  config.local_size, config.global_scale, config.local_scale)
    b = config.batch_size // run.world                               # this rank's share
    shard = slice(run.rank * b, (run.rank + 1) * b)
    return globals_[:, shard], locals_[:, shard]


def train(config=None, **overrides):
    """ run DINO on the procedural textures; returns {"final": {...}, "history": [...]}

    With `save`, a checkpoint is written at the end of every epoch; with `resume` too, the run
    continues from that checkpoint if it exists (and ends as the uninterrupted run would). """
    config = dataclasses.replace(config or Config(), **overrides)
    checkpoint = load_checkpoint(config)                             # None unless resuming
    run = build(config)
    total, steps_per_epoch = run.total_steps, run.steps_per_epoch
    show = config.progress and run.rank == 0
    classes = num_classes(config)
    knn_steps = {0, total} | set(range(0, total, config.knn_every * steps_per_epoch))

    def evaluate():
        return knn_accuracy(run.teacher.backbone, run.train_set, run.test_set, classes,
                            config.knn_k)

    if checkpoint is None:
        start, history, wall_before = 0, [], 0.0
        knn_random_init = evaluate() if run.rank == 0 else None      # teacher = student at init
    else:
        start, history, knn_random_init, wall_before = restore(run, checkpoint)
    start_time = time.perf_counter()
    # tqdm.std (plain text), not tqdm.auto: in a Jupyter kernel without ipywidgets tqdm.auto warns
    # on stderr at import, which strict nbval reports as a changed output; notebooks pass
    # progress=False
    bar = tqdm(range(start, total), initial=start, total=total, disable=not show, desc="DINO",
               dynamic_ncols=True)
    for step in bar:
        epoch = step / steps_per_epoch                               # fractional: per-step warmup
        set_schedules(run, step)
        globals_, locals_ = views(run, step)
        loss, P_t = train_step(run.student_ddp, run.teacher, run.loss_fn, run.optimizer, globals_,
                               locals_, epoch, run.momentum_at[step], config.clip_grad,
                               config.freeze_last_layer, config.koleo)

        stats = torch.stack([loss.detach(), teacher_entropy(P_t), batch_entropy(P_t)]).float()
        if run.world > 1:                                            # rank means of equal shards
            dist.all_reduce(stats)
            stats /= run.world
        loss_v, h_v, hb_v = stats.tolist()
        record = {"step": step + 1, "epoch": (step + 1) / steps_per_epoch, "loss": loss_v,
                  "teacher_entropy": h_v, "batch_entropy": hb_v, "kl": loss_v - h_v,
                  "lr": run.lr_at[step], "momentum": run.momentum_at[step],
                  "teacher_temp": run.loss_fn.teacher_temperature(epoch)}
        if step + 1 in knn_steps and run.rank == 0:
            record["knn_accuracy"] = evaluate()
        history.append(record)
        if show:
            bar.set_postfix(loss=f"{loss_v:.3f}", h=f"{h_v:.2f}", kl=f"{loss_v - h_v:.3f}",
                            knn=f"{_last_knn(history, knn_random_init):.2f}")
        end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total
        if config.save and end_of_epoch and run.rank == 0:
            save_checkpoint(run, config.save, step + 1, history, knn_random_init,
                            wall_before + time.perf_counter() - start_time)
    bar.close()
    wall = wall_before + time.perf_counter() - start_time

    last = history[-min(steps_per_epoch, len(history)):]             # the final epoch, averaged
    mean = lambda key: sum(r[key] for r in last) / len(last)         # noqa: E731
    final = {"loss": mean("loss"), "teacher_entropy": mean("teacher_entropy"),
             "batch_entropy": mean("batch_entropy"), "kl": mean("kl"),
             "knn_accuracy": _last_knn(history, knn_random_init),
             "knn_accuracy_random_init": knn_random_init, "chance": 1.0 / classes,
             "log_K": math.log(config.out_dim), "out_dim": config.out_dim,
             "num_classes": classes, "steps": total, "epochs": total / steps_per_epoch,
             "world_size": run.world, "wall_time_s": wall}
    metrics = {"final": final, "history": history, "config": dataclasses.asdict(config)}

    if run.rank == 0:
        if config.metrics_json:
            with open(config.metrics_json, "w") as f:
                json.dump(metrics, f, indent=1)
        if config.plot:
            plot_curves(metrics, config.plot)
    if run.started_process_group:
        # Every rank has finished its collectives. The group that train() started is left for
        # main() to end with the process: tearing a gloo group down can deadlock (its destructor
        # joins a worker thread that still waits for the GIL to drop a tensor, while holding the
        # GIL itself; seen with torch 2.13 on loaded CPUs, one rank hanging after training).
        dist.barrier()
    return metrics


def save_checkpoint(run, path, step, history, knn_random_init, wall_time_s):
    """ everything the run needs to continue after `step` steps, written atomically: a kill
    mid-write leaves the previous checkpoint whole (a temporary file, then a rename) """
    state = {"student": run.student.state_dict(), "teacher": run.teacher.state_dict(),
             "dino_loss": run.loss_fn.state_dict(),                  # the center
             "optimizer": run.optimizer.state_dict(),                # AdamW moments, step counts
             "step": step,                                           # the schedules' position
             # every generator the run draws from (it draws from no Python or NumPy one)
             "rng": {"torch": torch.get_rng_state(), "generator": run.generator.get_state(),
                     "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
             "order": run.order,                                     # this epoch's shuffle
             "history": history, "knn_accuracy_random_init": knn_random_init,
             "wall_time_s": wall_time_s, "config": dataclasses.asdict(run.config)}
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(config):
    """ the checkpoint at config.save when config.resume is set and the file exists, else None;
    ValueError if it comes from a run with another configuration (output fields aside) """
    if not (config.resume and config.save and os.path.exists(config.save)):
        return None
    checkpoint = torch.load(config.save, map_location="cpu", weights_only=True)
    saved, now = checkpoint["config"], dataclasses.asdict(config)
    differ = [k for k in now if k not in OUTPUT_FIELDS and saved.get(k) != now[k]]
    if differ:
        flags = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} (now {now[k]})" for k in differ)
        raise ValueError(f"the checkpoint {config.save} comes from another configuration: {flags}; "
                         "resume with the command that wrote it")
    return checkpoint


def restore(run, checkpoint):
    """ load a checkpoint into a freshly built run; -> (next step, history, k-NN at init, wall s) """
    run.student.load_state_dict(checkpoint["student"])
    run.teacher.load_state_dict(checkpoint["teacher"])
    run.loss_fn.load_state_dict(checkpoint["dino_loss"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    rng = checkpoint["rng"]
    torch.set_rng_state(rng["torch"])
    run.generator.set_state(rng["generator"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    run.order = checkpoint["order"]
    return (checkpoint["step"], checkpoint["history"], checkpoint["knn_accuracy_random_init"],
            checkpoint["wall_time_s"])


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


def main(argv=None):
    """ the command line entry point: every value checked before any data is made, the summary
    printed at the end (--quiet: not) """
    config = parse_args(argv)
    try:
        load_checkpoint(config)                                      # refuse before any data
    except ValueError as e:
        make_parser().error(str(e))
    metrics = train(config)
    if not config.quiet and (not dist.is_initialized() or dist.get_rank() == 0):
        print(summary(metrics))
    if dist.is_initialized():  # started by train() under torchrun: end without tearing it down
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
