"""Notebook hygiene: what a careless commit of a notebook gets wrong, checked without running it.

nbval (pytest --nbval --nbval-current-env) re-runs the notebooks and compares outputs; this file
checks the committed files themselves: run once top to bottom, no errors or stderr, nothing
machine-specific in the outputs, small enough to render on GitHub. Fix a failure by running
`python tools/run_notebooks.py` and committing the result.
"""
import json
import pathlib
import re

import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_BYTES = 1_000_000
MACHINE_PATH = re.compile(r"(?<![\w.])/(root|tmp|home|work|Users|private|var/folders)(/|\b)"
                          r"|[A-Za-z]:\\\\?(Users|Windows)")
HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
SEEDS = ["random.seed(", "np.random.seed(", "torch.manual_seed("]

pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks")


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def output_texts(nb):
    """ (cell number, text) of every textual output; base64 images are skipped (any byte string
    can appear in them) """
    for n, cell in enumerate(code_cells(nb), start=1):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                yield n, out.text
            elif out.output_type in ("execute_result", "display_data"):
                for mime, value in out.get("data", {}).items():
                    if not mime.startswith("image/") or mime == "image/svg+xml":
                        yield n, value if isinstance(value, str) else json.dumps(value)
            elif out.output_type == "error":
                yield n, "\n".join(out.get("traceback", []))


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def notebook(request):
    path = request.param
    with open(path, encoding="utf-8") as f:
        json.load(f)  # valid JSON, with a readable error if not
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return path, nb


def test_name_is_numbered(notebook):
    path, _ = notebook
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), f"{path.name}: use NN_snake_case.ipynb"


def test_size_at_most_1_mb(notebook):
    path, _ = notebook
    size = path.stat().st_size
    assert size <= MAX_BYTES, f"{path.name} is {size / 1e6:.2f} MB: fewer or smaller (lower dpi) figures"


def test_kernelspec_is_python3(notebook):
    path, nb = notebook
    spec = nb.metadata.get("kernelspec", {})
    assert spec.get("name") == "python3" and spec.get("language") == "python", \
        f"{path.name}: kernelspec {spec!r}, expected name 'python3'"


def test_executed_once_top_to_bottom(notebook):
    path, nb = notebook
    counts = [cell.execution_count for cell in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), \
        f"{path.name}: execution counts {counts}; rerun it with tools/run_notebooks.py"


def test_no_errors_and_no_stderr(notebook):
    path, nb = notebook
    for n, cell in enumerate(code_cells(nb), start=1):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}, code cell {n}: {out.ename}: {out.evalue}"
            assert not (out.output_type == "stream" and out.name == "stderr"), \
                f"{path.name}, code cell {n} wrote to stderr: {out.text[:300]!r}"


def test_no_machine_paths_or_addresses_in_outputs(notebook):
    path, nb = notebook
    for n, text in output_texts(nb):
        for pattern, what in [(MACHINE_PATH, "a machine path"), (HEX_ADDRESS, "a memory address")]:
            match = pattern.search(text)
            assert match is None, f"{path.name}, code cell {n}: output shows {what}: {match.group(0)!r}"


def test_figures_are_png(notebook):
    path, nb = notebook
    for n, cell in enumerate(code_cells(nb), start=1):
        for out in cell.get("outputs", []):
            mimes = set(out.get("data", {}))
            assert not mimes & {"image/svg+xml", "application/pdf", "text/html", "application/javascript"}, \
                f"{path.name}, code cell {n}: output types {sorted(mimes)}; only PNG figures and text"


def test_has_an_equation(notebook):
    path, nb = notebook
    markdown = [cell.source for cell in nb.cells if cell.cell_type == "markdown"]
    assert any("$" in source for source in markdown), f"{path.name}: no markdown cell with LaTeX"


def test_first_code_cell_seeds(notebook):
    path, nb = notebook
    cells = code_cells(nb)
    assert cells, f"{path.name} has no code"
    first = cells[0].source
    missing = [seed for seed in SEEDS if seed not in first]
    assert not missing, f"{path.name}: the first code cell does not call {missing}"


def test_relative_links_resolve(notebook):
    """ links to other notebooks may point ahead (a notebook still to be written), but only to a
    numbered notebook name; links to files must exist """
    path, nb = notebook
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for target in re.findall(r"\]\(([^)\s#]+)[^)]*\)", cell.source):
            if "://" in target:
                continue
            if target.endswith(".ipynb"):
                assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", target), f"{path.name}: link {target}"
            else:
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
