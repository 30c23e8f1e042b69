"""The DINO loss as a vectorized, device-agnostic torch module (API of nidl.losses.DINOLoss).

Shapes: T teacher (global) views, S >= T student views (the first T are the teacher's crops,
in order), batch B, output dimension D.
"""

import math
import numbers
import os

import torch
import torch.distributed as dist
from torch import nn

from .common import as_number, check_epoch, check_hyperparameters, check_views, teacher_temperature
from .batch_stats import compute_dtype, global_batch_mean
from .dinov2 import sinkhorn_knopp
from .fused import dino_cross_entropy, needs_autograd_form
from .readable import teacher_targets

__all__ = ["DINOLoss", "compute_dtype", "global_batch_mean"]


class DINOLoss(nn.Module):
    """ the DINO self-distillation loss with a moving-average center and teacher-temperature warmup

    loss_fn(teacher_out, student_out, epoch=None, update_center=True) -> 0-dim tensor
        teacher_out (T, B, D), student_out (S, B, D), or lists of (B, D) views.
    The loss uses the center from before the call; the center update follows it.
    The center stays float32 (or float64) when the module is cast to half or bfloat16.
    backend: "auto" (Triton kernels for CUDA tensors when triton imports, except float64;
    the eager path otherwise), "eager", or "triton" (`dino_ref/triton_kernels.py`).
    centering: "center" (the moving average above) or "sinkhorn" (DINOv2: targets by
    `dino_ref.dinov2.sinkhorn_knopp` over all T*B teacher rows; the center is neither used nor
    updated, and the state dict then holds a `sinkhorn_centering` flag, so a checkpoint records it).
    """

    def __init__(self, output_dim=4096, warmup_teacher_temp=0.04, teacher_temp=0.07,
                 warmup_teacher_temp_epochs=30, student_temp=0.1, center_momentum=0.9,
                 backend="auto", centering="center"):
        super().__init__()
        # 0-dim tensors and NumPy scalars (as nidl accepts) become Python numbers, once
        output_dim, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, student_temp, \
            center_momentum = map(as_number, (output_dim, warmup_teacher_temp, teacher_temp,
                                              warmup_teacher_temp_epochs, student_temp, center_momentum))
        check_hyperparameters(output_dim, warmup_teacher_temp, teacher_temp,
                              warmup_teacher_temp_epochs, student_temp, center_momentum)
        if centering not in ("center", "sinkhorn"):
            raise ValueError(f'centering must be "center" or "sinkhorn", got {centering!r}')
        if centering == "sinkhorn" and backend == "triton":
            raise ValueError('backend="triton" fuses the moving-average center into its kernels; '
                             'centering="sinkhorn" runs with backend="auto" or "eager"')
        self.backend = check_backend(backend)
        self.centering = centering
        if centering == "sinkhorn":                                  # recorded in the state dict
            self.register_buffer("sinkhorn_centering", torch.tensor(True))
        self.output_dim = output_dim
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, 1, output_dim))  # c, (1, 1, D)
        # the warmup ramp, fixed here as nidl fixes its teacher_temp_schedule: (tau_warm, tau_final,
        # its number of points); assigning teacher_temp later changes the temperature after the
        # warmup only, as in nidl. The ramp is evaluated in Python floats (teacher_temperature).
        self._ramp = (float(warmup_teacher_temp), float(teacher_temp), warmup_teacher_temp_epochs)
        self._schedule = None   # a teacher_temp_schedule assigned after construction: (tensor, floats)

    # nidl reads teacher_temp, warmup_teacher_temp_epochs and teacher_temp_schedule at call time,
    # so code written for it may assign them between calls: the same assignments work here
    @property
    def teacher_temp(self):
        """ tau_t after the warmup (and for epoch=None) """
        return self._teacher_temp

    @teacher_temp.setter
    def teacher_temp(self, value):
        self._teacher_temp = _check_temperature("teacher_temp", value)

    @property
    def warmup_teacher_temp_epochs(self):
        """ W: epochs e < W take tau_t from the warmup schedule """
        return self._warmup_epochs

    @warmup_teacher_temp_epochs.setter
    def warmup_teacher_temp_epochs(self, value):
        value = as_number(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"warmup_teacher_temp_epochs must be an integer >= 0, got {value!r}")
        self._warmup_epochs = int(value)

    @property
    def warmup_teacher_temp(self):
        """ tau_warm, the first point of the warmup ramp built at construction """
        return self._ramp[0] if self._schedule is None else self._schedule[1][0]

    @warmup_teacher_temp.setter
    def warmup_teacher_temp(self, value):
        raise AttributeError(
            "warmup_teacher_temp is fixed at construction (nidl has no such attribute: its warmup is "
            "teacher_temp_schedule, built once); assign loss_fn.teacher_temp_schedule = "
            "torch.linspace(tau_warm, tau_final, W) to change the warmup")

    @property
    def teacher_temp_schedule(self):
        """ tau_t of each warmup epoch, as nidl.losses.DINOLoss exposes it: linspace(tau_warm,
        tau_final, W) in float32, or the schedule assigned since """
        if self._schedule is not None:
            return self._schedule[0]
        warm, final, W = self._ramp
        return torch.linspace(warm, final, W)

    @teacher_temp_schedule.setter
    def teacher_temp_schedule(self, value):
        values = torch.as_tensor(value, dtype=torch.float64)           # exact for float32 too
        if values.ndim != 1 or not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError("teacher_temp_schedule must be a 1-D sequence of finite temperatures "
                             f">= 0, got {value!r}")
        self._schedule = (value, [float(x) for x in values.tolist()])

    def extra_repr(self):
        return (f"output_dim={self.output_dim}, warmup_teacher_temp={self.warmup_teacher_temp}, "
                f"teacher_temp={self.teacher_temp}, "
                f"warmup_teacher_temp_epochs={self.warmup_teacher_temp_epochs}, "
                f"student_temp={self.student_temp}, center_momentum={self.center_momentum}, "
                f"centering={self.centering!r}")

    def teacher_temperature(self, epoch=None):
        """ tau_t for this epoch (a Python float; None gives teacher_temp)

        Epochs e < warmup_teacher_temp_epochs read the warmup schedule (nidl: schedule[e]), a
        fractional e between its points linearly; later epochs give teacher_temp. An epoch past
        the schedule's end but inside the warmup (possible after assigning a larger W) raises,
        as nidl's indexing does.
        """
        epoch = as_number(epoch)
        if epoch is None:
            return self.teacher_temp
        check_epoch(epoch)
        if epoch >= self.warmup_teacher_temp_epochs:
            return self.teacher_temp
        if self._schedule is None:                                    # the construction ramp
            warm, final, points = self._ramp
            values = None
        else:
            values = self._schedule[1]
            points = len(values)
        if epoch >= points:
            raise ValueError(
                f"epoch {epoch} lies inside the warmup (warmup_teacher_temp_epochs = "
                f"{self.warmup_teacher_temp_epochs}) but teacher_temp_schedule has only {points} "
                "entries: assign a schedule of warmup_teacher_temp_epochs entries")
        if values is None:
            return teacher_temperature(epoch, warm, final, points)
        i = min(int(epoch), points - 1)                               # schedule[i] .. schedule[i + 1]
        if i == points - 1:
            return values[i]
        return values[i] + (values[i + 1] - values[i]) * (epoch - i)

    def teacher_targets(self, teacher_out, epoch=None):
        """ P_t = softmax((t - c) / tau_t) with the current center (Sinkhorn-Knopp targets with
        centering="sinkhorn"), no gradient; (T, B, D) """
        teacher = _as_views(teacher_out, "teacher_out")
        if teacher.ndim != 3 or teacher.shape[2] != self.output_dim:
            raise ValueError(f"teacher_out must be (n_globals, B, {self.output_dim}), "
                             f"got {tuple(teacher.shape)}")
        check_epoch(epoch)
        self._check_center_device(teacher)
        dtype = compute_dtype(teacher)
        return self._targets(teacher.to(dtype), self.teacher_temperature(epoch))

    def forward(self, teacher_out, student_out, epoch=None, update_center=True):
        teacher = _as_views(teacher_out, "teacher_out")              # (T, B, D)
        student = _as_views(student_out, "student_out")              # (S, B, D)
        check_views(teacher.shape, student.shape, self.output_dim)
        check_epoch(epoch)
        if teacher.device != student.device:
            raise ValueError(f"teacher_out is on {teacher.device} but student_out on {student.device}")
        self._check_center_device(teacher)
        dtype = compute_dtype(teacher, student)
        tau_t = self.teacher_temperature(epoch)
        # hard targets (tau_t = 0) run eagerly under "auto"; an explicit "triton" refuses them
        if self.centering == "center" and use_triton(self.backend, student, dtype) \
                and (tau_t > 0 or self.backend == "triton"):
            from .triton_kernels import dino_loss
            if student.device.type == "cpu":
                # CPU tensors run under Triton's interpreter, which torch.compile cannot trace
                # (its fake tensors meet the interpreter's uint64 pointers): run this call eagerly
                dino_loss = _interpreted_dino_loss
            distributed = dist.is_available() and dist.is_initialized()
            fused_center = update_center and not distributed
            loss = dino_loss(teacher, student, self.center, tau_t,
                             self.student_temp, self.center_momentum if fused_center else None)
            if update_center and distributed:                        # all-reduced row sums
                self._update_center(teacher)
            return loss
        P_t = self._targets(teacher.to(dtype), tau_t)                # stop-gradient
        loss = dino_cross_entropy(P_t, student.to(dtype), self.student_temp)
        if update_center and self.centering == "center":
            self._update_center(teacher)
        return loss

    def update_center(self, teacher_out):
        """ c <- m c + (1 - m) mean(t) over all T*B teacher rows of all ranks

        Call it once per optimizer step, on the teacher outputs of all its micro-batches
        (concatenated along the batch axis), after forward(..., update_center=False).
        With centering="sinkhorn" it checks the shape and leaves the (unused) center as it is.
        """
        teacher = _as_views(teacher_out, "teacher_out")
        if teacher.ndim != 3 or teacher.shape[1] < 1 or teacher.shape[2] != self.output_dim:
            raise ValueError(f"teacher_out must be (n_globals, B >= 1, {self.output_dim}), "
                             f"got {tuple(teacher.shape)}")
        self._check_center_device(teacher)
        if self.centering == "center":
            self._update_center(teacher)

    def _targets(self, teacher, tau_t):
        """ P_t of the centering in use; teacher (T, B, D) in the compute dtype """
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher, tau_t)                    # all T*B rows are the samples
        return teacher_targets(teacher, self.center.to(teacher.dtype), tau_t)

    @torch.no_grad()
    def _update_center(self, teacher):
        dtype = compute_dtype(teacher, self.center)                   # at least the center's precision
        mean = global_batch_mean(teacher.detach().to(dtype))         # (1, 1, D)
        m = self.center_momentum
        new = m * self.center.to(dtype) + (1.0 - m) * mean
        # a non-finite batch (an fp16 overflow step) leaves c as it was, per dimension,
        # decided on the device: no host synchronisation
        self.center.copy_(torch.where(torch.isfinite(mean), new, self.center.to(dtype)))

    def _check_center_device(self, teacher):
        if self.center.device != teacher.device:
            raise ValueError(f"the center is on {self.center.device} but teacher_out on "
                             f"{teacher.device}: call loss_fn.to(\"{teacher.device}\") once, as for a model")

    def _apply(self, fn, recurse=True):
        """ .to(), .cuda(), .half(), ...: the center moves with the module, but a cast to half or
        bfloat16 leaves it in its float32/float64 (a moving average with momentum 0.999 stalls in
        8 or 11 mantissa bits: (1 - m) x vanishes next to c) """
        center = self.center
        super()._apply(fn, recurse)
        if self.center.dtype not in (torch.float32, torch.float64):
            self.center = center.to(self.center.device)               # the new device, the old dtype
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """ also loads a facebookresearch/dino checkpoint, whose center is (1, D) """
        center = state_dict.get(prefix + "center")
        if isinstance(center, torch.Tensor) and center.ndim == 2 and center.shape[0] == 1:
            state_dict[prefix + "center"] = center.reshape(1, 1, -1)  # (1, D) -> (1, 1, D)
        saved = "sinkhorn" if prefix + "sinkhorn_centering" in state_dict else "center"
        if saved != self.centering:
            raise ValueError(f'the state dict was saved with centering="{saved}", this loss has '
                             f'centering="{self.centering}": construct it with centering="{saved}"')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@torch.compiler.disable(recursive=True)
def _interpreted_dino_loss(*args):
    """ triton_kernels.dino_loss, run eagerly even inside torch.compile (a graph break) """
    from .triton_kernels import dino_loss
    return dino_loss(*args)


def _check_temperature(name, value):
    """ a finite number >= 0 (0: hard targets), as a Python float """
    value = as_number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0 (0: hard targets), got {value!r}")
    return float(value)


def check_backend(backend):
    """ "auto", "eager" or "triton"; "triton" needs triton importable """
    if backend not in ("auto", "eager", "triton"):
        raise ValueError(f'backend must be "auto", "eager" or "triton", got {backend!r}')
    if backend == "triton" and not triton_available():
        raise ValueError('backend="triton" needs the triton package (pip install "dino_ref[gpu]")')
    return backend


def triton_available():
    """ whether triton imports (looked up once) """
    global _TRITON
    if _TRITON is None:
        try:
            import triton  # noqa: F401
            _TRITON = True
        except ImportError:
            _TRITON = False
    return _TRITON


_TRITON = None


def use_triton(backend, student, dtype):
    """ the backend rule: "auto" takes Triton for CUDA tensors below float64 when triton
    imports; "triton" runs on CUDA, or on CPU tensors under Triton's interpreter only; under a
    functorch transform or forward-mode AD both take the eager (readable autograd) form """
    if backend == "eager" or needs_autograd_form(student):  # torch.func / forward-mode AD: eager
        return False
    if backend == "auto":
        return student.is_cuda and dtype != torch.float64 and triton_available()
    if student.is_cuda or (student.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"):
        return True
    raise ValueError(f'backend="triton" runs on CUDA tensors (CPU tensors only under '
                     f'TRITON_INTERPRET=1); student_out is on {student.device}: use backend="auto"')


def _as_views(x, name):
    """ a (V, B, D) tensor, or a list/tuple of V tensors (B, D), as one floating tensor """
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError(f"{name} is an empty list: give at least one (B, D) view")
        kinds = sorted({type(v).__name__ for v in x if not isinstance(v, torch.Tensor)})
        if kinds:
            raise ValueError(f"{name} must be a list of torch.Tensor views, got {', '.join(kinds)} "
                             "(convert with torch.as_tensor)")
        shapes = [tuple(v.shape) for v in x]
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"the views of {name} differ in shape: {shapes}")
        x = torch.stack(list(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or a list of them, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype} (shape {tuple(x.shape)})")
    return x
