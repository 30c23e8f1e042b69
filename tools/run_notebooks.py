"""Execute the notebooks in place and rewrite their committed outputs.

    python tools/run_notebooks.py                      # every notebooks/*.ipynb
    python tools/run_notebooks.py 03_centering         # only some (name, stem or path)

Each notebook runs top to bottom in a fresh kernel that uses *this* Python (the same one that
`pytest --nbval --nbval-current-env` uses), with the notebooks/ folder as working directory,
so relative paths such as ../tests/golden resolve the same way under nbval. Prints the wall
time, the file size and the slowest code cell (number as in the execution counts, and its time)
of each notebook: nbval's cell timeout is 600 s, so a cell stays under 150 s on a quiet machine
to pass on a machine that runs 2x slower. Run it before committing a change to a notebook or to
library behaviour that a notebook shows, then `pytest` checks the outputs against a fresh run.
"""

import argparse
import os
import pathlib
import sys
import time

import ipykernel.kernelspec
import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from make_student_notebooks import find  # noqa: E402  (tools/ is on sys.path when run as a script)

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
MAX_BYTES = 1_000_000
MAX_CELL_SECONDS = 150


class CurrentEnvSpecs(KernelSpecManager):
    """ every kernel name resolves to ipykernel running under sys.executable """

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                      **ipykernel.kernelspec.get_kernel_dict())


def merge_streams(outputs):
    """ join consecutive stdout (or stderr) chunks: how print() output was split depends on timing """
    merged = []
    for out in outputs:
        if (out.output_type == "stream" and merged and merged[-1].output_type == "stream"
                and merged[-1].name == out.name):
            merged[-1].text += out.text
        else:
            merged.append(out)
    return merged


class CellTimer:
    """ nbclient hooks that time each code cell (record_timing=False keeps timings out of the file) """

    def __init__(self):
        self.started, self.seconds = {}, {}  # cell index -> perf_counter at start, duration

    def on_cell_execute(self, cell, cell_index):
        self.started[cell_index] = time.perf_counter()

    def on_cell_executed(self, cell, cell_index, execute_reply):
        self.seconds[cell_index] = time.perf_counter() - self.started.pop(cell_index)

    def slowest(self, nb):
        """ (code cell number counted from 1, seconds) of the slowest cell; (0, 0.0) if none ran """
        numbers = {index: k for k, index in
                   enumerate((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), start=1)}
        if not self.seconds:
            return 0, 0.0
        index = max(self.seconds, key=self.seconds.get)
        return numbers[index], self.seconds[index]


def execute(path, timeout):
    """ run one notebook in place; returns (seconds, bytes, (slowest code cell, its seconds)) """
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvSpecs())
    timer = CellTimer()
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}},
                            on_cell_execute=timer.on_cell_execute,
                            on_cell_executed=timer.on_cell_executed)
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
    # keep the metadata free of this machine's details: only the language name and version
    nb.metadata["language_info"] = {"name": "python",
                                    "version": ".".join(map(str, sys.version_info[:3]))}
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return seconds, path.stat().st_size, timer.slowest(nb)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    args = parser.parse_args()
    import matplotlib.font_manager  # noqa: F401  build the font cache here, not on a kernel's stderr
    # kernels inherit it: torch threads that spin-wait are 5x slower on shared cores (notebooks/conftest.py)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    failed = False
    try:
        paths = find(args.names)
    except FileNotFoundError as e:
        sys.exit(str(e))
    for path in paths:
        seconds, size, (cell, cell_seconds) = execute(path, args.timeout)
        flag = "" if size <= MAX_BYTES else "  (over 1 MB!)"
        if cell_seconds > MAX_CELL_SECONDS:
            flag += f"  (a cell over {MAX_CELL_SECONDS} s: too close to nbval's 600 s on a slow machine)"
        failed |= size > MAX_BYTES
        print(f"{path.name:32s} {seconds:6.1f} s {size / 1000:8.1f} kB   slowest: cell {cell:2d} "
              f"{cell_seconds:6.1f} s{flag}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
