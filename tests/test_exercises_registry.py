"""The exercise modules together: one checker per name (a name exported by two notebooks'
modules would silently shadow one of them in `dino_ref.exercises`), each a documented function."""

import importlib
from pathlib import Path

import dino_ref.exercises as exercises

MODULES = ["pairing", "sharpening", "centering", "loss", "training", "collapse", "ablations",
           "dinov2", "engineering", "attention"]


def test_every_exercise_module_is_listed():
    listed = {m.__name__.rsplit(".", 1)[-1] for m in map(importlib.import_module,
              (f"dino_ref.exercises.{n}" for n in MODULES))}
    on_disk = {p.stem for p in Path(exercises.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert listed == on_disk


def test_no_checker_name_is_exported_twice():
    owners = {}
    for name in MODULES:
        module = importlib.import_module(f"dino_ref.exercises.{name}")
        for checker in module.__all__:
            owners.setdefault(checker, []).append(name)
    clashes = {checker: where for checker, where in owners.items() if len(where) > 1}
    assert not clashes, f"checkers exported by more than one notebook's module: {clashes}"


def test_every_export_is_reexported_and_documented():
    for name in MODULES:
        module = importlib.import_module(f"dino_ref.exercises.{name}")
        for exported in module.__all__:
            obj = getattr(module, exported)
            assert getattr(exercises, exported) is obj
            assert not callable(obj) or obj.__doc__, f"{name}.{exported} has no docstring"
        assert any(exported.startswith("check_") for exported in module.__all__), name
