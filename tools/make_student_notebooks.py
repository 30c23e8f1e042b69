"""Write the student copies of the notebooks: solutions stubbed out, outputs cleared.

    python tools/make_student_notebooks.py student                 # every notebooks/NN_*.ipynb
    python tools/make_student_notebooks.py student 01_multicrop_pairing 03_centering

In each code cell tagged `solution`, every region from a `### BEGIN SOLUTION` line to the next
`### END SOLUTION` line (markers included) becomes one `raise NotImplementedError` line at the
BEGIN marker's indentation; what lies outside the markers (the `def` line, the checker call)
stays. A `solution` cell without markers becomes `raise NotImplementedError` whole. Cells tagged
`exercise` and all other cells are kept as they are. Every code cell loses its outputs and
execution count, so the copy is what an instructor hands out; a learner's run then reports
"not implemented yet" from each checker until the stub is replaced.

The markdown files of notebooks/ (NOTATION.md) are copied along, so the links still resolve.
Put OUTDIR one level below the repository root (e.g. `student/`): a notebook may read data
relative to notebooks/ (04 reads ../tests/golden). A marker that is not alone on its line, a
BEGIN without its END and an END without its BEGIN are errors, never a silent partial copy.
"""

import argparse
import pathlib
import shutil
import sys

import nbformat

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError"


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
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)  # timings recorded by some front ends
    return nb


def write_student_notebooks(outdir, names=()):
    """ write the copies into outdir (created if needed); returns the paths written """
    outdir = pathlib.Path(outdir).resolve()
    if outdir == NOTEBOOKS.resolve():
        raise ValueError("OUTDIR is notebooks/ itself: that would overwrite the solutions")
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
    for doc in sorted(NOTEBOOKS.glob("*.md")):
        shutil.copyfile(doc, outdir / doc.name)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", help="folder for the student copies (created if needed)")
    parser.add_argument("names", nargs="*", help="notebooks to copy (default: all)")
    args = parser.parse_args()
    try:
        written = write_student_notebooks(args.outdir, args.names)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"make_student_notebooks: {err}")
    for target in written:
        nb = nbformat.read(target, as_version=4)
        stubs = sum(1 for cell in nb.cells if "solution" in tags(cell))
        print(f"{target}  ({stubs} solution cell{'s' if stubs != 1 else ''} stubbed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
