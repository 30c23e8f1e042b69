"""The package's shape: the loss library loads nothing of the trainer or the checkers, and no
module of dino_ref imports, directly or through others, a module that imports it back."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dino_ref"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path):
    """ the dino_ref modules a file imports anywhere in it (functions included) """
    name = module_name(path)
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:                               # `from . import x` may be a module
                candidates = [f"{base}.{alias.name}", base]
                found.add(next(c for c in candidates if c in MODULES or c == base))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in MODULES and m != name}


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in FILES}


def test_the_import_graph_has_no_cycle():
    graph = {module_name(p): imports_of(p) for p in FILES}
    assert graph["dino_ref.loss"] and graph["dino_ref.train.loop"]   # the walk finds imports
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_loss_library_loads_no_trainer_or_checker_module():
    code = ("import sys, dino_ref; dino_ref.DINOLoss; dino_ref.batch_entropy; dino_ref.sinkhorn_knopp; "
            "from dino_ref import numpy_ref, numpy_dinov2, readable, fused, diagnostics; "
            "print(sorted(m for m in sys.modules if m.startswith('dino_ref.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = eval(loaded.stdout)
    assert "dino_ref.loss" in modules
    assert not [m for m in modules if m.startswith(("dino_ref.train", "dino_ref.exercises"))]


def test_no_trainer_module_sits_beside_the_loss_modules():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top and not top & {"train", "models", "data", "multicrop", "knn", "config", "loop"}
