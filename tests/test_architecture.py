"""The house's shape, measured: the import graph runs downhill and no module holds two concepts.

``python tests/test_architecture.py`` prints the measurements (import circles, imports that run back
up a layer, the largest modules and pages); the tests hold the limits of docs/ARCHITECTURE.md.
Imports inside functions count: a function-level import is how a circle hides.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_LIMIT = 600  # lines; a larger module usually holds two concepts
PAGE_LIMIT = 300  # lines of one dashboard page (app/views/): pages lay out, they do not compute

# Layers, lowest first. A module may import its own layer or lower ones, never a higher one.
# A module not named here takes the layer of its longest named prefix.
LAYERS: dict[str, int] = {
    "tricl": 0,  # the package's own __init__ (a version string)
    "tricl.io": 0,
    "tricl.catalog": 0,
    "tricl.bases": 0,
    "tricl.imaging": 0,
    "tricl.text.tokenizer": 2,
    "tricl.text.prompts": 2,
    "tricl.text.captions": 2,
    "tricl.text": 2,
    "tricl.data": 2,
    "tricl.distributed": 2,
    "tricl.models": 3,
    # encoders made elsewhere (torchvision, timm, Hugging Face, open_clip): built like backbones
    "tricl.sources": 3,
    "tricl.losses": 3,
    "tricl.heads": 3,
    "tricl.text.encoder": 3,
    "tricl.text.model": 3,
    "tricl.optim": 3,
    "tricl.methods": 4,
    # the run settings: the general ones and every method's options (tricl.methods.option_groups)
    "tricl.config": 5,
    "tricl.runs": 5,
    "tricl.foreign": 5,
    "tricl.train": 6,
    "tricl.align": 6,
    "tricl.analysis": 7,
    "tricl.serve": 8,
    "tricl.jobs": 8,
    "tricl.report": 8,
    "tricl.cli": 9,
    "tricl.dashboard": 9,
    "tricl.experiments": 10,
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((REPO / "tricl").rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The tricl modules ``path`` imports, at any depth of the file (functions included)."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        deps |= {n for n in names if n in known}
    return deps


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = imports(path, known) - {name}
        # a package's own __init__ importing its submodules is how a package exposes them
        own = path.name == "__init__.py"
        graph[name] = {d for d in deps if not (own and d.startswith(name + "."))}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer(name: str) -> int:
    parts = name.split(".")
    for i in range(len(parts), 1 if len(parts) > 1 else 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    return max(LAYERS.values())


def back_up(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} (layer {layer(a)}) -> {b} (layer {layer(b)})"
        for a, deps in graph.items()
        for b in deps
        if layer(b) > layer(a)
    )


def line_counts(folder: str) -> list[tuple[int, str]]:
    files = sorted((REPO / folder).rglob("*.py"))
    return sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(REPO))) for p in files), reverse=True
    )


def basis_string_tests() -> list[str]:
    """Places that branch on a basis by its name instead of asking the Basis object."""
    pat = re.compile(r"""basis\s*[!=]=\s*["']""")
    hits = []
    for folder in ("tricl", "app"):
        for p in sorted((REPO / folder).rglob("*.py")):
            for i, line in enumerate(p.read_text().splitlines(), 1):
                if pat.search(line):
                    hits.append(f"{p.relative_to(REPO)}:{i}")
    return hits


def test_the_import_graph_has_no_circles():
    assert circles(import_graph()) == []


def test_no_import_runs_back_up_a_layer():
    assert back_up(import_graph()) == []


def test_no_module_over_the_limit():
    assert [(n, f) for n, f in line_counts("tricl") + line_counts("app") if n > MODULE_LIMIT] == []


def test_no_page_over_the_limit():
    assert [(n, f) for n, f in line_counts("app/views") if n > PAGE_LIMIT] == []


def test_the_measurement_sees_a_circle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert layer("tricl.analysis.metrics") == LAYERS["tricl.analysis"]
    assert back_up({"tricl.models": {"tricl.methods"}}) != []


if __name__ == "__main__":
    g = import_graph()
    print("import circles:", circles(g) or "none")
    print("imports back up a layer:", back_up(g) or "none")
    print("largest modules:", line_counts("tricl")[:6] + line_counts("app")[:3])
    print("largest pages:", line_counts("app/views")[:3])
    print("basis == '...' tests:", len(basis_string_tests()), basis_string_tests()[:40])
