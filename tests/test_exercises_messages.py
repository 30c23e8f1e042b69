"""A failing checker names every input (by the learner's parameter names, with array shapes) and
shows expected vs got."""
import numpy as np
import pytest

from dino_ref.exercises import ExerciseFailed, check_function, check_pooled_mean, check_teacher_grad


def test_inputs_are_named_by_the_learners_parameters():
    def teacher_grad(teacher_logits, student_logits, center, tau_t, tau_s):
        return np.zeros(teacher_logits.shape)
    with pytest.raises(ExerciseFailed) as err:
        check_teacher_grad(teacher_grad)
    message = str(err.value)
    assert "teacher_logits (2, 3, 8), student_logits (6, 3, 8), center (8,), tau_t = " in message
    assert "expected: shape (2, 3, 8), values [" in message
    assert "got:      shape (2, 3, 8), values [0., 0., 0., 0.] ..." in message


def test_inputs_without_names_are_numbered():
    with pytest.raises(ExerciseFailed, match=r"inputs:   argument 0 \(3,\), argument 1 = 2"):
        check_function("f", lambda *a: 0.0, lambda x, k: 1.0, [(np.zeros(3), 2)], hint="h")


def test_a_wrapped_answer_is_described_by_the_checker_inputs():
    with pytest.raises(ExerciseFailed, match=r"inputs:   argument 0 \(2, 28, 6\)"):
        check_pooled_mean(lambda shards: np.zeros(6))
