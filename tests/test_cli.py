"""The command lines: `python -m dino_ref.train` (every Config field a flag, presets, a smoke run)
and `python -m dino_ref` (the demo; --help only prints usage)."""
import dataclasses
import json
import re
import subprocess
import sys

import pytest

from dino_ref.train import PRESETS, Config, parse_args, preset
from tiny_run import TINY_FLAGS, subprocess_env


def argv_for(name, value):
    """ the command-line words that set Config field `name` to `value` """
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    if isinstance(value, tuple):
        return [flag, *map(str, value)]
    return [flag, str(value)]


def another_value(field, value):
    """ a value of the field's type (one of its choices, if it has them) that differs from `value` """
    if field.metadata.get("choices"):
        return next(c for c in field.metadata["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):
        return tuple(2 * v if isinstance(v, int) else v / 2 for v in value)
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, str):
        return value + "x"
    return 3 if "int" in str(field.type) else "out.x"                 # unset: int | None, str | None


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def test_flags_fill_the_config():
    c = parse_args(["--epochs", "3", "--center-momentum", "1.0", "--teacher-temp", "0.1",
                    "--widths", "8", "16", "--local-scale", "0.1", "0.3", "--no-progress"])
    assert (c.epochs, c.center_momentum, c.teacher_temp) == (3, 1.0, 0.1)
    assert c.widths == (8, 16) and c.local_scale == (0.1, 0.3) and c.progress is False
    assert parse_args([]) == Config()


def test_every_config_field_is_a_flag():
    """ --field-name VALUE (--no-field-name for a bool) sets that field and only that one """
    default = Config()
    assert len(FIELDS) > 10
    for name, field in FIELDS.items():
        if name == "device":                 # no other device may exist here: give the default
            assert parse_args(["--device", default.device]) == default
            continue
        value = another_value(field, getattr(default, name))
        assert value != getattr(default, name), name
        if name == "resume":                 # --resume needs the checkpoint path --save names
            argv, expected = ["--resume", "--save", "ckpt.pt"], dict(resume=True, save="ckpt.pt")
        else:
            argv, expected = argv_for(name, value), {name: value}
        assert parse_args(argv) == dataclasses.replace(default, **expected), name


def test_help_names_every_flag_and_exits_0(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    for flag in ["--preset"] + ["--" + name.replace("_", "-") for name in FIELDS]:
        assert re.search(re.escape(flag) + r"(?![\w-])", shown), flag


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sets_its_fields_and_later_flags_still_apply(name):
    c = parse_args(["--preset", name])
    assert c == preset(name)
    assert PRESETS[name]
    for key, value in PRESETS[name].items():
        assert getattr(c, key) == value, key
        other = another_value(FIELDS[key], value)                     # a flag can undo the preset
        undone = parse_args(["--preset", name, *argv_for(key, other)])
        assert undone == dataclasses.replace(c, **{key: other}), key
    assert c.head_bn is False and c.student_temp == 0.1                # tau_s as in the paper
    later = parse_args(["--preset", name, "--center-momentum", "1.0", "--seed", "2"])
    assert later == dataclasses.replace(c, center_momentum=1.0, seed=2)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_cli_smoke_writes_json_and_plot(tmp_path):
    js, png = tmp_path / "m.json", tmp_path / "c.png"
    out = subprocess.run([sys.executable, "-m", "dino_ref.train", "--steps", "3", *TINY_FLAGS,
                          "--metrics-json", str(js), "--plot", str(png)],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "k-NN accuracy" in out.stdout
    m = json.loads(js.read_text())
    assert m["final"]["out_dim"] == 64 and len(m["history"]) == 3
    assert png.stat().st_size > 1000


def test_python_m_dino_ref_runs_the_demo_and_help_does_not():
    demo = subprocess.run([sys.executable, "-m", "dino_ref"], capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr                          # the demo asserts agreement
    shown = subprocess.run([sys.executable, "-m", "dino_ref", "--help"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage:")                          # argparse's help
    demo_lines = {line for line in demo.stdout.splitlines() if line.strip()}
    assert len(demo_lines) >= 5
    assert not demo_lines & set(shown.stdout.splitlines())            # no line of the demo ran
