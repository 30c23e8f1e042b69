"""The course as handed out: nbgrader metadata on every exercise, the points that docs/course.md
lists, and (with the `course` extra, i.e. nbgrader) the whole nbgrader round trip.

The round trip is the one an instructor makes (docs/course.md): `tools/make_student_notebooks.py
--course` writes the course folder, `nbgrader generate_assignment` strips the solutions, and
`nbgrader autograde` grades two submissions in a fresh folder outside the repository:

* "blank": the student copies written by `tools/make_student_notebooks.py OUTDIR` (the handout),
  as a learner who answered nothing would hand them in. They run top to bottom with their data
  (results/, golden/); every error is an exercise's own "not implemented yet", and the score is 0.
* "solved": the notebooks with their solutions: no error anywhere, full points.

This is the one extra execution of the notebooks, twice (blank and solved, in parallel); it takes
a few minutes and CI runs it once, in its minimal venv with the `course` extra. Without nbgrader
it is skipped.
"""
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "make_student_notebooks.py"
spec = importlib.util.spec_from_file_location("make_student_notebooks", TOOL)
msn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(msn)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
GUIDE = ROOT / "docs" / "course.md"


def nbgrader_cells(nb):
    return [c for c in nb.cells if "nbgrader" in c.metadata]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_carries_nbgrader_metadata(path):
    nb = nbformat.read(path, as_version=4)
    assert msn.annotated(nb) == nb, (f"{path.name} lacks its test cells or nbgrader metadata: run "
                                     f"python tools/make_student_notebooks.py --annotate {path.stem}, "
                                     f"then python tools/run_notebooks.py {path.stem}")
    for cell in nb.cells:
        if {"exercise", "solution"} & set(msn.tags(cell)):
            assert cell.metadata["nbgrader"]["schema_version"] == 3
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nbgrader_cells(nb)]
    assert len(ids) == len(set(ids)), "grade ids must be unique in a notebook"
    assert all(re.fullmatch(r"[\w-]+", i) for i in ids)


def guide_points():
    """ {(notebook stem, grade id): points} from the table of docs/course.md """
    table = re.findall(r"^\|\s*`?(\d\d_\w+)`?\s*\|\s*(\d+\.\d+)[^|]*\|\s*(\d+)\s*\|", GUIDE.read_text(),
                       flags=re.M)
    return {(stem, "ex_" + number.replace(".", "_") + "_check"): int(p) for stem, number, p in table}


def test_the_guide_lists_every_exercise_with_its_points():
    listed = guide_points()
    actual = {(p.stem, grade_id): points for p in NOTEBOOKS
              for grade_id, points in msn.points(nbformat.read(p, as_version=4)).items()}
    assert listed == actual, "docs/course.md's table of points and the notebooks' test cells differ"


# --- the nbgrader round trip ---

def nbgrader(course, *args, timeout=1800):
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               PATH=os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]))
    # (nbgrader calls the `alembic` command of its environment: on PATH even when the venv is not active)
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return run


def errors(nb):
    """ (cell index, ename, evalue) of every error output of an executed notebook """
    return [(n, out.ename, out.evalue) for n, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"]


NOT_IMPLEMENTED = re.compile(r"not implemented yet")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """ the course folder after generate_assignment, and after autograding each submission """
    pytest.importorskip("nbgrader", reason="the nbgrader round trip needs the `course` extra")
    base = tmp_path_factory.mktemp("course")
    assert not base.resolve().is_relative_to(ROOT), "the course folder must lie outside the repository"
    course = base / "instructor"
    msn.write_course(course)
    nbgrader(course, "generate_assignment", msn.ASSIGNMENT, "--force")
    release = course / "release" / msn.ASSIGNMENT
    handout = base / "handout"                                  # what a learner is given
    msn.write_student_notebooks(handout)

    courses = {}
    for student in ("blank", "solved"):                         # one course folder each: in parallel
        courses[student] = base / f"grading_{student}"
        shutil.copytree(course, courses[student])
        submitted = courses[student] / "submitted" / student / msn.ASSIGNMENT
        shutil.copytree(handout, submitted)
        if student == "solved":
            for path in (course / "source" / msn.ASSIGNMENT).glob("*.ipynb"):
                shutil.copyfile(path, submitted / path.name)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: nbgrader(courses[s], "autograde", msn.ASSIGNMENT, "--student", s,
                                         "--force"), courses))
    return course, release, handout, courses


def test_the_handout_is_what_nbgrader_releases(graded):
    """ the tool's student copies and nbgrader's release: the same cells, the same files """
    _, release, handout, _ = graded
    names = sorted(p.name for p in handout.rglob("*") if p.is_file())
    assert names == sorted(p.name for p in release.rglob("*") if p.is_file())
    for path in sorted(handout.glob("*.ipynb")):
        ours, theirs = nbformat.read(path, as_version=4), nbformat.read(release / path.name, as_version=4)
        assert [c.source for c in ours.cells] == [c.source for c in theirs.cells], path.name


def scores(course, student):
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission(msn.ASSIGNMENT, student)
        return {nb.name: (nb.score, nb.max_score) for nb in submission.notebooks}


def test_a_blank_submission_runs_and_scores_zero(graded):
    """ the student copies run outside the repository: the only errors are the exercises' own
    "not implemented yet", in the answer and test cells; every test cell scores 0 """
    *_, courses = graded
    totals = scores(courses["blank"], "blank")
    assert set(totals) == {p.stem for p in NOTEBOOKS}
    assert all(score == 0 and top > 0 for score, top in totals.values()), totals
    for path in sorted((courses["blank"] / "autograded" / "blank" / msn.ASSIGNMENT).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        found = errors(nb)
        graded_cells = {n for n, c in enumerate(nb.cells) if "nbgrader" in c.metadata}
        assert found, f"{path.name}: no exercise reported 'not implemented yet'"
        for n, ename, evalue in found:
            assert n in graded_cells and (ename == "NotImplementedError" or NOT_IMPLEMENTED.search(evalue)), \
                f"{path.name}, cell {n}: {ename}: {evalue}"


def test_a_solved_submission_runs_and_scores_full(graded):
    *_, courses = graded
    totals = scores(courses["solved"], "solved")
    assert set(totals) == {p.stem for p in NOTEBOOKS}
    assert all(score == top > 0 for score, top in totals.values()), totals
    for path in sorted((courses["solved"] / "autograded" / "solved" / msn.ASSIGNMENT).glob("*.ipynb")):
        assert not errors(nbformat.read(path, as_version=4)), path.name
