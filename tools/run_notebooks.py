"""Execute the notebooks in place and rewrite their committed outputs.

    python tools/run_notebooks.py                      # every notebooks/*.ipynb
    python tools/run_notebooks.py 03_centering         # only some (name, stem or path)

Each notebook runs top to bottom in a fresh kernel that uses *this* Python (the same one that
`pytest --nbval --nbval-current-env` uses), with the notebooks/ folder as working directory,
so relative paths such as ../tests/golden resolve the same way under nbval. Prints the wall
time and the file size of each notebook. Run it before committing a change to a notebook or to
library behaviour that a notebook shows, then `pytest` checks the outputs against a fresh run.
"""

import argparse
import pathlib
import sys
import time

import ipykernel.kernelspec
import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
MAX_BYTES = 1_000_000


class CurrentEnvSpecs(KernelSpecManager):
    """ every kernel name resolves to ipykernel running under sys.executable """

    def get_kernel_spec(self, kernel_name):
        return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                      **ipykernel.kernelspec.get_kernel_dict())


def find(names):
    """ notebook paths for names given as a stem, a file name or a path; all when none given """
    if not names:
        return sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
    paths = []
    for name in names:
        stem = pathlib.Path(name).name.removesuffix(".ipynb")
        path = NOTEBOOKS / f"{stem}.ipynb"
        if not path.exists():
            sys.exit(f"no notebook {path.name} in notebooks/")
        paths.append(path)
    return paths


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


def execute(path, timeout):
    """ run one notebook in place; returns (seconds, bytes) """
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=CurrentEnvSpecs())
    client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
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
    return seconds, path.stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    args = parser.parse_args()
    import matplotlib.font_manager  # noqa: F401  build the font cache here, not on a kernel's stderr
    failed = False
    for path in find(args.names):
        seconds, size = execute(path, args.timeout)
        flag = "" if size <= MAX_BYTES else "  (over 1 MB!)"
        failed |= size > MAX_BYTES
        print(f"{path.name:32s} {seconds:6.1f} s {size / 1000:8.1f} kB{flag}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
