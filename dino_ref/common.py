"""Pure-Python pieces shared by the NumPy reference and the torch module: the
teacher-temperature schedule, the (teacher view, student view) pairs, and input checks.

Nothing here imports NumPy or torch, so both versions use the very same rules.
"""

import math
import numbers


def as_number(x):
    """ a 0-dim torch tensor or NumPy array as a Python number (.item()); anything else as is """
    if x is None or isinstance(x, numbers.Number):  # (no attribute lookup: torch.compile traces it)
        return x
    if getattr(x, "ndim", None) == 0 and hasattr(x, "item"):
        return x.item()
    return x


def teacher_temperature(epoch, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs):
    """ tau_t at `epoch`: a linear ramp of W points (both ends included), then flat """
    epoch = as_number(epoch)
    if epoch is None:
        return float(teacher_temp)
    check_epoch(epoch)
    W = warmup_teacher_temp_epochs
    if epoch >= W:  # after the warmup (W = 0: no warmup at all)
        return float(teacher_temp)
    if W == 1:  # a single ramp point: epoch 0 uses the warmup temperature
        return float(warmup_teacher_temp)
    # tau_warm + (tau_t - tau_warm) * e / (W - 1); a fractional e in (W-1, W) stays at tau_t
    frac = min(float(epoch) / (W - 1), 1.0)
    return float(warmup_teacher_temp) + (float(teacher_temp) - float(warmup_teacher_temp)) * frac


def view_pairs(n_teacher, n_student):
    """ every (teacher view i, student view v) with v != i: the terms of the loss """
    return [(i, v) for i in range(n_teacher) for v in range(n_student) if v != i]


def num_pairs(n_teacher, n_student):
    """ n = T*S - min(T, S): the number of (i, v) terms, without listing them """
    return n_teacher * n_student - min(n_teacher, n_student)


def check_epoch(epoch):
    """ epoch must be None or a finite number >= 0 (int, or float for per-iteration warmup; a
    NumPy scalar or a 0-dim tensor too) """
    epoch = as_number(epoch)
    if epoch is None:
        return
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real):
        raise ValueError(f"epoch must be None or a number >= 0, got {epoch!r} ({type(epoch).__name__})")
    if not 0 <= epoch < math.inf:  # also False for NaN; no float() call: torch.compile traces it
        raise ValueError(f"epoch must be None or a finite number >= 0, got {epoch!r}")


def check_hyperparameters(output_dim, warmup_teacher_temp, teacher_temp,
                          warmup_teacher_temp_epochs, student_temp, center_momentum):
    """ raise ValueError naming the first constructor argument that is out of range """
    if isinstance(output_dim, bool) or not isinstance(output_dim, numbers.Integral) or output_dim < 1:
        raise ValueError(f"output_dim must be an integer >= 1, got {output_dim!r}")
    if (isinstance(warmup_teacher_temp_epochs, bool)
            or not isinstance(warmup_teacher_temp_epochs, numbers.Integral)
            or warmup_teacher_temp_epochs < 0):
        raise ValueError(
            f"warmup_teacher_temp_epochs must be an integer >= 0, got {warmup_teacher_temp_epochs!r}")
    for name, value in [("warmup_teacher_temp", warmup_teacher_temp), ("teacher_temp", teacher_temp)]:
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0 (0: hard targets), got {value!r}")
    if not isinstance(student_temp, numbers.Real) or not math.isfinite(student_temp) or student_temp <= 0:
        raise ValueError(f"student_temp must be a finite number > 0, got {student_temp!r}")
    if not isinstance(center_momentum, numbers.Real) or not 0.0 <= center_momentum <= 1.0:
        raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum!r}")


def check_views(teacher_shape, student_shape, output_dim):
    """ shapes (T, B, D) and (S, B, D) with D == output_dim, S >= T and at least one pair """
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if len(teacher_shape) != 3 or len(student_shape) != 3:
        raise ValueError(
            "teacher_out must be (n_globals, B, D) and student_out (n_tot, B, D) (or lists of "
            f"(B, D) views); got teacher {teacher_shape} and student {student_shape}")
    (T, B, D), (S, B_s, D_s) = teacher_shape, student_shape
    if T < 1 or B < 1:
        raise ValueError(f"teacher_out {teacher_shape} needs at least one view and one batch row")
    if (B, D) != (B_s, D_s):
        raise ValueError(
            f"teacher_out {teacher_shape} and student_out {student_shape} disagree in batch size "
            "or feature dimension (the last two axes must match)"
            + _layout_hint(teacher_shape, student_shape))
    if D != output_dim:
        raise ValueError(f"feature dimension D = {D} of teacher_out {teacher_shape} "
                         f"differs from output_dim = {output_dim}")
    if S < T:
        raise ValueError(f"student_out {student_shape} has fewer views than teacher_out "
                         f"{teacher_shape}: the first n_globals student views must be the teacher's crops "
                         "(did you swap them? the call is loss_fn(teacher_out, student_out); "
                         "facebookresearch/dino's is (student, teacher))")
    if num_pairs(T, S) == 0:
        raise ValueError(f"teacher_out {teacher_shape} and student_out {student_shape} leave no "
                         "(teacher view, other student view) pair: give at least 2 student views")


def _layout_hint(teacher_shape, student_shape):
    """ a hint for (B, V, D) given where (V, B, D) is expected; '' when no transpose explains it """
    (T, B, _), (S, B_s, _) = teacher_shape, student_shape
    if T == S:      # the same leading size, different second ones: both may be (B, V, D)
        which = "teacher_out.transpose(0, 1) and student_out.transpose(0, 1)"
    elif S == B:    # student (B, S, D)
        which = "student_out.transpose(0, 1)"
    elif T == B_s:  # teacher (B, T, D)
        which = "teacher_out.transpose(0, 1)"
    else:
        return ""
    return f"; if you passed (B, V, D), did you mean {which}? The layout is (V, B, D)"
