"""Write the student copies of the notebooks (solutions stubbed out, outputs cleared), with the
data they read; or an nbgrader course folder; or add the nbgrader metadata to the notebooks.

    python tools/make_student_notebooks.py handout                 # every notebooks/NN_*.ipynb
    python tools/make_student_notebooks.py handout 01_multicrop_pairing 03_centering
    python tools/make_student_notebooks.py --course course         # nbgrader: course/source/dino/
    python tools/make_student_notebooks.py --annotate              # notebooks/: nbgrader metadata

The handout folder can be anywhere (outside the repository too): it receives the notebooks, the
markdown files of notebooks/ (NOTATION.md, so the links resolve) and the data the notebooks read,
`results/` (the committed runs of notebooks/results/) and `golden/` (tests/golden/). Each copy then
runs top to bottom with only the package installed; the only errors are the exercises' own
"not implemented yet" until a learner fills in the answers.

In each code cell tagged `solution`, every region from a `### BEGIN SOLUTION` line to the next
`### END SOLUTION` line (markers included) becomes one `raise NotImplementedError` line at the
BEGIN marker's indentation (what `nbgrader generate_assignment` writes with the course folder's
configuration); what lies outside the markers (the `def` line, the checker call) stays. A
`solution` cell without markers becomes `raise NotImplementedError` whole. A marker that is not
alone on its line, a BEGIN without its END and an END without its BEGIN are errors, never a
silent partial copy. Every code cell loses its outputs and execution count.

The exercise convention that the tool relies on: a code cell tagged `exercise` (the task, in
comments, its first line `# Exercise N.M — title`), then a code cell tagged `solution` (the
answer between the markers, then a `check_...(...)` call). `--annotate` adds, after each
solution cell, a locked cell that calls the checker again (the autograded test cell, with its
points), and nbgrader metadata to the three cells: the task read-only, the answer an autograded
answer, the test cell graded. It is idempotent and keeps points set by hand; run it after adding
an exercise, then re-run the notebook (tools/run_notebooks.py).
"""

import argparse
import pathlib
import re
import shutil
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# what the notebooks read, copied into every handout and assignment: (folder here, name there)
DATA = [(NOTEBOOKS / "results", "results"), (ROOT / "tests" / "golden", "golden")]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError"
ASSIGNMENT = "dino"
DEFAULT_POINTS = 2
CHECK_LINE = re.compile(r"^(?:assert\s+)?(?:[\w.]+\.)?check_\w+\(.*\)\s*$")
TITLE = re.compile(r"Exercise\s+(\d+)\.(\d+)")
GRADED_NOTE = "# Autograded, locked ({points} point{s}): runs the checker on your function again"
NBGRADER_CONFIG = f'''c = get_config()  # noqa: F821  (nbgrader's configuration, written by {pathlib.Path(__file__).name})
c.CourseDirectory.root = "."
c.ClearSolutions.code_stub = {{"python": "{STUB}"}}  # as the handout made by the tool
c.Execute.timeout = 600  # seconds per cell, as nbval's
'''


def find(names):
    """ notebook paths for names given as a stem, a file name or a path; all when none given """
    if not names:
        return sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    paths = []
    for name in names:
        stem = pathlib.Path(name).name.removesuffix(".ipynb")
        path = NOTEBOOKS / f"{stem}.ipynb"
        if not path.exists():
            raise FileNotFoundError(f"no notebook {path.name} in notebooks/")
        paths.append(path)
    return paths


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def strip_solution(source):
    """ the source of a solution cell with each marked region replaced by the stub """
    lines = source.splitlines()
    if not any("BEGIN SOLUTION" in line or "END SOLUTION" in line for line in lines):
        return STUB
    out, indent = [], None  # indent: the open region's BEGIN indentation, None outside a region
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if ("BEGIN SOLUTION" in line or "END SOLUTION" in line) and text not in (BEGIN, END):
            raise ValueError(f"line {number}: {line.strip()!r}: a marker must be alone on its line, "
                             f"spelled {BEGIN!r} or {END!r}")
        if text == BEGIN:
            if indent is not None:
                raise ValueError(f"line {number}: {BEGIN!r} inside an open solution region")
            indent = line[:len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif text == END:
            if indent is None:
                raise ValueError(f"line {number}: {END!r} without a {BEGIN!r} before it")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{BEGIN!r} without its {END!r}")
    return "\n".join(out)


def student_copy(nb):
    """ a new notebook: solutions stubbed, outputs and execution counts cleared """
    nb = nbformat.from_dict(nb)  # a deep copy
    for n, cell in enumerate(nb.cells):
        if "solution" in tags(cell):
            if cell.cell_type != "code":
                raise ValueError(f"cell {n}: only code cells can be tagged 'solution'")
            try:
                cell.source = strip_solution(cell.source)
            except ValueError as err:
                raise ValueError(f"cell {n}: {err}") from None
    return cleared(nb)


def cleared(nb):
    """ nb with every code cell's outputs and execution count removed (in place) """
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)  # timings recorded by some front ends
    return nb


# --- nbgrader metadata ---

def nbgrader_meta(grade_id, *, solution=False, grade=False, locked=False, points=None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution}
    if grade:
        meta["points"] = points
    return meta


def is_test_cell(cell):
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def check_lines(source):
    """ the checker calls of a solution cell: top-level lines outside the markers """
    lines = [line for line in strip_solution(source).splitlines() if CHECK_LINE.match(line)]
    if not lines:
        raise ValueError("no top-level check_...(...) line outside the solution markers")
    return lines


def annotate(nb):
    """ nb (in place) with a test cell after each solution and nbgrader metadata on the task, the
    answer and the test cell; returns the number of exercises """
    n, k = 0, 0
    while n < len(nb.cells):
        cell = nb.cells[n]
        if "exercise" not in tags(cell):
            n += 1
            continue
        k += 1
        if n + 1 >= len(nb.cells) or "solution" not in tags(nb.cells[n + 1]):
            raise ValueError(f"cell {n}: an 'exercise' cell must be followed by its 'solution' cell")
        title = TITLE.search(cell.source)
        base = f"ex_{title[1]}_{title[2]}" if title else f"ex_{k}"
        answer = nb.cells[n + 1]
        cell.metadata["nbgrader"] = nbgrader_meta(f"{base}_task", locked=True)
        answer.metadata["nbgrader"] = nbgrader_meta(f"{base}_answer", solution=True)
        try:
            checks = check_lines(answer.source)
        except ValueError as err:
            raise ValueError(f"cell {n + 1}: {err}") from None
        if n + 2 < len(nb.cells) and is_test_cell(nb.cells[n + 2]):
            test = nb.cells[n + 2]
            points = test.metadata["nbgrader"].get("points", DEFAULT_POINTS)
        else:
            test = nbformat.v4.new_code_cell()
            test.id = f"{base}_check".replace("_", "-")
            nb.cells.insert(n + 2, test)
            points = DEFAULT_POINTS
        note = GRADED_NOTE.format(points=points, s="" if points == 1 else "s")
        test.source = "\n".join([note, *checks])
        test.metadata["nbgrader"] = nbgrader_meta(f"{base}_check", grade=True, locked=True,
                                                  points=points)
        n += 3
    return k


def annotated(nb):
    """ a copy of nb with its nbgrader metadata and test cells as --annotate writes them """
    nb = nbformat.from_dict(nb)
    annotate(nb)
    return nb


def points(nb):
    """ {grade_id of each test cell: points} """
    return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
            for c in nb.cells if is_test_cell(c)}


# --- writing ---

def copy_data(outdir):
    """ the markdown files of notebooks/ and the data folders the notebooks read, into outdir """
    for doc in sorted(NOTEBOOKS.glob("*.md")):
        shutil.copyfile(doc, outdir / doc.name)
    for folder, name in DATA:
        if folder.is_dir():
            shutil.copytree(folder, outdir / name, dirs_exist_ok=True)


def _check_outdir(outdir):
    if outdir == NOTEBOOKS.resolve() or NOTEBOOKS.resolve().is_relative_to(outdir):
        raise ValueError(f"{outdir} is or holds notebooks/: that would overwrite the solutions")


def write_student_notebooks(outdir, names=()):
    """ write the copies and their data into outdir (created if needed); returns the paths written """
    outdir = pathlib.Path(outdir).resolve()
    _check_outdir(outdir)
    paths = find(names)
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        try:
            nb = student_copy(nbformat.read(path, as_version=4))
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from None
        nbformat.validate(nb)
        target = outdir / path.name
        nbformat.write(nb, target)
        written.append(target)
    copy_data(outdir)
    return written


def write_course(course, names=(), assignment=ASSIGNMENT):
    """ an nbgrader course folder: nbgrader_config.py and source/<assignment>/ (the notebooks with
    their solutions, outputs cleared, and their data); returns the notebooks written """
    course = pathlib.Path(course).resolve()
    _check_outdir(course)
    source = course / "source" / assignment
    source.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(NBGRADER_CONFIG)
    written = []
    for path in find(names):
        nb = cleared(nbformat.read(path, as_version=4))
        nbformat.write(nb, source / path.name)
        written.append(source / path.name)
    copy_data(source)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", help="folder for the student copies (created if needed)")
    parser.add_argument("names", nargs="*", help="notebooks (default: all)")
    parser.add_argument("--course", metavar="DIR", help="write an nbgrader course folder instead")
    parser.add_argument("--annotate", action="store_true",
                        help="add the test cells and nbgrader metadata to notebooks/ in place")
    args = parser.parse_args()
    names = ([args.outdir] if args.outdir else []) + args.names if (args.course or args.annotate) \
        else args.names
    try:
        if args.annotate:
            for path in find(names):
                nb = nbformat.read(path, as_version=4)
                new = annotated(nb)
                if new != nb:
                    nbformat.write(new, path)
                    print(f"{path.name}: annotated (re-run it: python tools/run_notebooks.py {path.stem})")
            return 0
        if args.course:
            written = write_course(args.course, names)
            print(f"nbgrader course folder {pathlib.Path(args.course)}: {len(written)} notebooks in "
                  f"source/{ASSIGNMENT}/; next: cd {args.course} && nbgrader generate_assignment {ASSIGNMENT}")
            return 0
        if not args.outdir:
            parser.error("give OUTDIR, --course DIR or --annotate")
        written = write_student_notebooks(args.outdir, names)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"make_student_notebooks: {err}")
    for target in written:
        nb = nbformat.read(target, as_version=4)
        stubs = sum(1 for cell in nb.cells if "solution" in tags(cell))
        print(f"{target}  ({stubs} solution cell{'s' if stubs != 1 else ''} stubbed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
