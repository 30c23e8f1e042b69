"""Packaging: pyproject.toml (pip) and environment.yml (conda) declare the same dependencies, every
subpackage is installed, and the NumPy reference imports without torch."""
import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def requirement_name(spec):
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower()


def test_pip_and_conda_declare_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = project["dependencies"] + [s for group in project["optional-dependencies"].values() for s in group]
    pip_names = {requirement_name(s) for s in pip_specs}

    conda_names = set()
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"^  - [A-Za-z]", line):  # top-level conda entries
            name = requirement_name(line[4:])
            conda_names.add(CONDA_NAMES.get(name, name))
        elif in_deps and re.match(r'^      - "?[A-Za-z]', line):  # pip entries (with markers)
            conda_names.add(requirement_name(line.strip()[2:].strip('"')))
    conda_names -= {"python", "pip", "pip:"}
    assert pip_names == conda_names, f"only pip: {pip_names - conda_names}, only conda: {conda_names - pip_names}"


def test_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = {requirement_name(s): s.replace(" ", "") for s in project["dependencies"]}
    assert pip_specs
    env = (ROOT / "environment.yml").read_text()
    for name, spec in pip_specs.items():
        conda = {v: k for k, v in CONDA_NAMES.items()}.get(name, name)
        assert f"  - {conda}{spec[len(name):]}" in env, f"{name}: pip says {spec}"


def test_every_subpackage_is_installed():
    """ setuptools installs only the packages listed: a subpackage missing from the list works
    in an editable install and is absent from a wheel """
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dino_ref").rglob("__init__.py")}
    assert listed == found, f"pyproject lists {sorted(listed)}, the tree has {sorted(found)}"


def test_numpy_ref_imports_no_torch():
    code = "import sys; from dino_ref import numpy_ref; numpy_ref.DINOLoss(4); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
