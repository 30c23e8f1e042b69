"""tools/make_student_notebooks.py: solutions become stubs, exercises stay, outputs go.

Checked on a small notebook written here (every case of the marker rules) and on the real
notebooks (no solution line survives, every stubbed cell compiles, nothing else changes)."""
import importlib.util
import pathlib
import subprocess
import sys

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "make_student_notebooks.py"
spec = importlib.util.spec_from_file_location("make_student_notebooks", TOOL)
msn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(msn)

EXERCISE = ("# Exercise 1.1 — Count the pairs\n"
            "# Write pair_count(T, S) returning the number of (i, v) terms with v != i.")
SOLUTION = ("def pair_count(T, S):\n"
            "    \"\"\" the number of pairs \"\"\"\n"
            "    ### BEGIN SOLUTION\n"
            "    secret_answer = T * S - min(T, S)\n"
            "    return secret_answer\n"
            "    ### END SOLUTION\n"
            "\n"
            "check_pair_count(pair_count)")
SOLUTION_STUB = ("def pair_count(T, S):\n"
                 "    \"\"\" the number of pairs \"\"\"\n"
                 "    raise NotImplementedError\n"
                 "\n"
                 "check_pair_count(pair_count)")
TWO_REGIONS = ("### BEGIN SOLUTION\n"
               "secret_table = {1: 0}\n"
               "### END SOLUTION\n"
               "class Center:\n"
               "    def update(self, rows):\n"
               "        for row in rows:\n"
               "            ### BEGIN SOLUTION\n"
               "            secret_sum = row\n"
               "            ### END SOLUTION\n"
               "check_center(Center)")
TWO_REGIONS_STUB = ("raise NotImplementedError\n"
                    "class Center:\n"
                    "    def update(self, rows):\n"
                    "        for row in rows:\n"
                    "            raise NotImplementedError\n"
                    "check_center(Center)")


def code(source, tags=(), outputs=True):
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})
    if outputs:
        cell.execution_count = 7
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="secret output\n")]
    return cell


def synthetic_notebook():
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A notebook\n$x$"),
        code("%matplotlib inline\nimport numpy as np\nprint(np.pi)"),
        nbformat.v4.new_markdown_cell("## Exercises"),
        code(EXERCISE, tags=["exercise"], outputs=False),
        code(SOLUTION, tags=["solution"]),
        code("# Exercise 1.2 — the center", tags=["exercise"], outputs=False),
        code(TWO_REGIONS, tags=["solution", "other-tag"]),
        code("# Exercise 1.3", tags=["exercise"], outputs=False),
        code("secret_whole_cell = 42\ncheck_whole(secret_whole_cell)", tags=["solution"]),
    ])


def compiles(source):
    """ compile() the cell as IPython would run it (magics turned into calls first) """
    compile(TransformerManager().transform_cell(source), "<cell>", "exec")
    return True


def test_solution_regions_become_stubs_at_the_marker_indentation():
    student = msn.student_copy(synthetic_notebook())
    assert student.cells[4].source == SOLUTION_STUB
    assert student.cells[6].source == TWO_REGIONS_STUB
    assert student.cells[8].source == "raise NotImplementedError"  # no markers: the whole cell


def test_other_cells_kept_and_outputs_cleared():
    original = synthetic_notebook()
    student = msn.student_copy(original)
    assert len(student.cells) == len(original.cells)
    for before, after in zip(original.cells, student.cells):
        assert after.cell_type == before.cell_type and after.metadata == before.metadata
        if "solution" not in before.metadata.get("tags", []):
            assert after.source == before.source  # exercises and ordinary cells verbatim
        if after.cell_type == "code":
            assert after.outputs == [] and after.execution_count is None
    assert original.cells[4].source == SOLUTION and original.cells[1].outputs  # input untouched
    nbformat.validate(student)


def test_no_solution_text_survives_and_stubs_compile():
    student = msn.student_copy(synthetic_notebook())
    text = nbformat.writes(student)
    assert "secret" not in text and "SOLUTION" not in text
    assert all(compiles(cell.source) for cell in student.cells if cell.cell_type == "code")


def test_a_stubbed_solution_fails_its_checker_as_not_implemented():
    student = msn.student_copy(synthetic_notebook())
    seen = []

    def check_pair_count(fn):
        with pytest.raises(NotImplementedError):
            fn(2, 10)
        seen.append(fn.__name__)

    exec(student.cells[4].source, {"check_pair_count": check_pair_count})
    assert seen == ["pair_count"]


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "without its"),
    ("x = 1\n### END SOLUTION", "without a"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "inside an open"),
    ("x = 1  ### BEGIN SOLUTION\n### END SOLUTION", "alone on its line"),
    ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", "alone on its line"),
])
def test_malformed_markers_are_errors(source, message):
    nb = nbformat.v4.new_notebook(cells=[code(source, tags=["solution"])])
    with pytest.raises(ValueError, match=message):
        msn.student_copy(nb)


def test_a_markdown_solution_cell_is_an_error():
    cell = nbformat.v4.new_markdown_cell("the answer", metadata={"tags": ["solution"]})
    with pytest.raises(ValueError, match="only code cells"):
        msn.student_copy(nbformat.v4.new_notebook(cells=[cell]))


def test_writes_copies_with_their_data_and_refuses_to_overwrite_the_notebooks(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    source = repo / "notebooks"
    (source / "results").mkdir(parents=True)
    nbformat.write(synthetic_notebook(), source / "01_demo.ipynb")
    (source / "NOTATION.md").write_text("| symbol |\n")
    (source / "results" / "run.json").write_text("{}")
    monkeypatch.setattr(msn, "NOTEBOOKS", source)
    monkeypatch.setattr(msn, "DATA", [(source / "results", "results"), (repo / "missing", "golden")])
    written = msn.write_student_notebooks(tmp_path / "student")
    assert [p.name for p in written] == ["01_demo.ipynb"]
    assert (tmp_path / "student" / "NOTATION.md").read_text() == "| symbol |\n"
    assert (tmp_path / "student" / "results" / "run.json").read_text() == "{}"
    assert nbformat.read(written[0], as_version=4).cells[4].source == SOLUTION_STUB
    for inside in (source, repo):
        with pytest.raises(ValueError, match="overwrite"):
            msn.write_student_notebooks(inside)
    with pytest.raises(FileNotFoundError):
        msn.write_student_notebooks(tmp_path / "student", ["02_missing"])


def test_a_course_folder_holds_the_solutions_without_outputs(tmp_path, monkeypatch):
    source = tmp_path / "notebooks"
    source.mkdir()
    nbformat.write(synthetic_notebook(), source / "01_demo.ipynb")
    monkeypatch.setattr(msn, "NOTEBOOKS", source)
    monkeypatch.setattr(msn, "DATA", [])
    [path] = msn.write_course(tmp_path / "course")
    assert path == tmp_path / "course" / "source" / msn.ASSIGNMENT / "01_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[4].source == SOLUTION and not nb.cells[4].outputs
    config = (tmp_path / "course" / "nbgrader_config.py").read_text()
    assert repr(msn.STUB).strip("'") in config


def two_exercises():
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Exercises"),
        code(EXERCISE, tags=["exercise"], outputs=False),
        code(SOLUTION, tags=["solution"]),
        code("# Exercise 1.2 — the center", tags=["exercise"], outputs=False),
        code(TWO_REGIONS, tags=["solution"]),
    ])


def test_annotate_adds_locked_test_cells_and_nbgrader_metadata():
    nb = two_exercises()
    assert msn.annotate(nb) == 2
    kinds = [(c.metadata.get("tags", []), c.metadata.get("nbgrader", {})) for c in nb.cells]
    assert len(nb.cells) == 7
    task, answer, test = (kinds[k][1] for k in (1, 2, 3))
    assert task == {"grade": False, "grade_id": "ex_1_1_task", "locked": True, "schema_version": 3,
                    "solution": False}
    assert answer["solution"] and not answer["locked"] and answer["grade_id"] == "ex_1_1_answer"
    assert test["grade"] and test["locked"] and test["points"] == msn.DEFAULT_POINTS
    assert nb.cells[3].source.splitlines()[1:] == ["check_pair_count(pair_count)"]
    assert nb.cells[6].source.splitlines()[1:] == ["check_center(Center)"]
    assert "secret" not in nb.cells[3].source
    assert nb.cells[3].source.startswith("# Autograded, locked (2 points)")
    nb.cells[3].metadata["nbgrader"]["points"] = 1                 # set by hand: kept, and shown
    again = msn.annotated(nb)
    assert msn.points(again) == {"ex_1_1_check": 1, "ex_1_2_check": 2}
    assert again.cells[3].source.startswith("# Autograded, locked (1 point)")
    assert msn.annotated(again) == again
    nbformat.validate(nb)


def test_annotate_refuses_a_solution_without_a_checker():
    nb = two_exercises()
    nb.cells[2].source = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"
    with pytest.raises(ValueError, match="check_"):
        msn.annotate(nb)


def solution_lines(source):
    """ the non-blank lines strictly inside the marked regions (the whole cell without markers) """
    lines, inside = [], "BEGIN SOLUTION" not in source
    for line in source.splitlines():
        if line.strip() in (msn.BEGIN, msn.END):
            inside = line.strip() == msn.BEGIN
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def test_the_real_notebooks(tmp_path):
    """ the command line on the real notebooks: one copy each, no solution line left in its
    cell, every code cell compiles, outputs cleared, every other cell unchanged """
    out = tmp_path / "student"
    run = subprocess.run([sys.executable, str(TOOL), str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    originals = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert originals and sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in originals]
    for path in originals:
        nb, student = nbformat.read(path, as_version=4), nbformat.read(out / path.name, as_version=4)
        assert len(student.cells) == len(nb.cells), path.name
        for n, (before, after) in enumerate(zip(nb.cells, student.cells)):
            where = f"{path.name}, cell {n}"
            if "solution" in before.metadata.get("tags", []):
                left = [line for line in solution_lines(before.source)
                        if line in {x.strip() for x in after.source.splitlines()}
                        and line != "raise NotImplementedError"]
                assert not left, f"{where}: solution lines survive: {left}"
                assert "SOLUTION" not in after.source, where
            else:
                assert after.source == before.source, where
            if after.cell_type == "code":
                assert after.outputs == [] and after.execution_count is None, where
                assert compiles(after.source), where
