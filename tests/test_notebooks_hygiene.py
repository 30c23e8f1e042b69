"""Notebook hygiene: what a careless commit of a notebook gets wrong, checked without running it.

nbval (pytest --nbval --nbval-current-env) re-runs the notebooks and compares outputs; this file
checks the committed files themselves: run once top to bottom, no errors or stderr, nothing
machine-specific in the outputs, small enough to render on GitHub. Fix a failure by running
`python tools/run_notebooks.py` and committing the result.

It also checks the exercise convention: at least two code cells tagged
`exercise` (comment lines only), each followed by a code cell tagged `solution` whose answer lies
between `### BEGIN SOLUTION` and `### END SOLUTION` with a `check_...(...)` call outside the
markers, and a student copy (tools/make_student_notebooks.py) that keeps none of the answer.
These checks are themselves tested below on small notebooks written here.
"""
import importlib.util
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
MIN_EXERCISES = 2
CHECK_CALL = re.compile(r"(?<![\w.])(?:[\w.]+\.)?check_\w+\(")

_spec = importlib.util.spec_from_file_location(
    "make_student_notebooks", NOTEBOOK_DIR.parent / "tools" / "make_student_notebooks.py")
make_student = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_student)

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


# --- exercises: each check returns a list of problems, so that it can be tested on its own ---

def tagged(nb, tag):
    return [n for n, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def exercise_count_problems(nb):
    problems = []
    for tag in ("exercise", "solution"):
        cells = tagged(nb, tag)
        if len(cells) < MIN_EXERCISES:
            problems.append(f"{len(cells)} cells tagged {tag!r}, want at least {MIN_EXERCISES}")
        problems += [f"cell {n} is tagged {tag!r} but is not a code cell"
                     for n in cells if nb.cells[n].cell_type != "code"]
    return problems


def exercise_order_problems(nb):
    """ every exercise cell is followed by a solution cell, every solution follows an exercise """
    exercises, solutions = set(tagged(nb, "exercise")), set(tagged(nb, "solution"))
    problems = [f"cell {n} is tagged both 'exercise' and 'solution'" for n in exercises & solutions]
    problems += [f"exercise cell {n} is not followed by a cell tagged 'solution'"
                 for n in sorted(exercises) if n + 1 not in solutions]
    problems += [f"solution cell {n} does not follow a cell tagged 'exercise'"
                 for n in sorted(solutions) if n - 1 not in exercises]
    return problems


def exercise_text_problems(nb):
    """ an exercise cell states the task in comment lines only (it runs, and does nothing) """
    return [f"exercise cell {n}, line {k}: not a comment: {line.strip()!r}"
            for n in tagged(nb, "exercise")
            for k, line in enumerate(nb.cells[n].source.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def solution_problems(nb):
    """ markers present and well formed, and a checker call outside them """
    problems = []
    for n in tagged(nb, "solution"):
        source = nb.cells[n].source
        if not any(line.strip() == make_student.BEGIN for line in source.splitlines()):
            problems.append(f"solution cell {n} has no {make_student.BEGIN!r} line")
            continue
        try:
            outside = make_student.strip_solution(source)
        except ValueError as err:
            problems.append(f"solution cell {n}: {err}")
            continue
        if not CHECK_CALL.search(outside):
            problems.append(f"solution cell {n} calls no check_...() outside the markers")
    return problems


def student_copy_problems(nb):
    """ the student copy: no line of any answer left in its cell, no marker, no output """
    try:
        student = make_student.student_copy(nb)
    except ValueError as err:
        return [f"no student copy: {err}"]
    problems = []
    for n in tagged(nb, "solution"):
        answer, inside = [], False
        for line in nb.cells[n].source.splitlines():
            if line.strip() in (make_student.BEGIN, make_student.END):
                inside = line.strip() == make_student.BEGIN
            elif inside and line.strip():
                answer.append(line.strip())
        kept = {line.strip() for line in student.cells[n].source.splitlines()}
        left = [line for line in answer if line in kept]
        if left or "SOLUTION" in student.cells[n].source:
            problems.append(f"student copy of solution cell {n} keeps {left or 'a marker'}")
    problems += [f"student copy of cell {n} keeps its outputs"
                 for n, cell in enumerate(student.cells)
                 if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    return problems


EXERCISE_CHECKS = [exercise_count_problems, exercise_order_problems, exercise_text_problems,
                   solution_problems, student_copy_problems]


@pytest.mark.parametrize("check", EXERCISE_CHECKS, ids=[c.__name__ for c in EXERCISE_CHECKS])
def test_exercises(notebook, check):
    path, nb = notebook
    problems = check(nb)
    assert not problems, f"{path.name}: " + "; ".join(problems)


def _cell(kind, source, tag=None):
    new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return new(source, metadata={"tags": [tag]} if tag else {})


def _exercise_pair(k, solution=None):
    return [_cell("code", f"# Exercise {k}\n# Write f{k}(x). Graded by check_f{k}.", "exercise"),
            _cell("code", solution or (f"def f{k}(x):\n    ### BEGIN SOLUTION\n    return x + {k}\n"
                                       f"    ### END SOLUTION\n\ncheck_f{k}(f{k})"), "solution")]


def _notebook(*cells):
    return nbformat.v4.new_notebook(cells=[_cell("markdown", "## Exercises"), *cells])


def test_exercise_checks_accept_the_convention():
    nb = _notebook(*_exercise_pair(1), *_exercise_pair(2, "def f2(x):\n    ### BEGIN SOLUTION\n"
                                      "    return x\n    ### END SOLUTION\nexercises.check_f2(f2)"))
    assert [check(nb) for check in EXERCISE_CHECKS] == [[]] * len(EXERCISE_CHECKS)


@pytest.mark.parametrize("cells, check, message", [
    (_exercise_pair(1), exercise_count_problems, "want at least 2"),
    ([*_exercise_pair(1), _cell("markdown", "x", "exercise"), _exercise_pair(2)[1]],
     exercise_count_problems, "not a code cell"),
    ([*_exercise_pair(1), _exercise_pair(2)[0], _cell("markdown", "hint"), _exercise_pair(2)[1]],
     exercise_order_problems, "not followed"),
    ([*_exercise_pair(1), *_exercise_pair(2), _exercise_pair(3)[1]],
     exercise_order_problems, "does not follow"),
    ([_cell("code", "# Exercise 1\nf = None", "exercise"), _exercise_pair(1)[1], *_exercise_pair(2)],
     exercise_text_problems, "not a comment"),
    ([*_exercise_pair(1), *_exercise_pair(2, "def f2(x):\n    return x\ncheck_f2(f2)")],
     solution_problems, "has no"),
    ([*_exercise_pair(1), *_exercise_pair(2, "### BEGIN SOLUTION\nx = 2\ncheck_f2(x)")],
     solution_problems, "without its"),
    ([*_exercise_pair(1), *_exercise_pair(2, "def f2(x):\n    ### BEGIN SOLUTION\n    return x\n"
                                             "    check_f2(f2)\n    ### END SOLUTION")],
     solution_problems, "calls no check_"),
    ([*_exercise_pair(1), *_exercise_pair(2, "def f2(x):\n    ### BEGIN SOLUTION\n    return x\n"
                                             "    ### END SOLUTION\nmycheck_f2(f2)")],
     solution_problems, "calls no check_"),
])
def test_exercise_checks_find_each_mistake(cells, check, message):
    problems = check(_notebook(*cells))
    assert any(message in p for p in problems), problems


def test_student_copy_check_finds_a_leak(monkeypatch):
    """ a stubbing tool that forgot to drop the answer is caught """
    nb = _notebook(*_exercise_pair(1), *_exercise_pair(2))
    monkeypatch.setattr(make_student, "strip_solution", lambda source: source)
    assert any("keeps" in p for p in student_copy_problems(nb))
