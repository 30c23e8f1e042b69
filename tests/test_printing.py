"""fmt refuses to print a number whose rounded digits a tiny perturbation could flip."""

import math

import pytest

from dino_ref.printing import fmt


def test_prints_the_rounded_value():
    assert fmt(4.3768, 2) == "4.38"
    assert fmt(-0.251, 1) == "-0.3"
    assert fmt(3, 0) == "3"


@pytest.mark.parametrize("x, digits", [(0.125, 2), (16.02149, 4), (2.5, 0), (-0.0500001, 1)])
def test_refuses_a_value_near_a_rounding_boundary(x, digits):
    with pytest.raises(ValueError, match="rounding boundary"):
        fmt(x, digits)


def test_every_value_it_accepts_survives_a_relative_perturbation():
    accepted = 0
    for k in range(2000):
        x = math.sin(k) * 10 ** (k % 5)                 # many magnitudes and signs
        try:
            printed = fmt(x, 3)
        except ValueError:
            continue
        accepted += 1
        assert f"{x * (1 + 5e-6):.3f}" == printed == f"{x * (1 - 5e-6):.3f}"
    assert accepted > 500                               # the small magnitudes print


def test_refuses_non_finite():
    with pytest.raises(ValueError, match="finite"):
        fmt(float("nan"), 2)
