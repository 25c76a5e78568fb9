"""The package layout: every module sits in a declared layer, no import circle, stable import paths kept."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import grimp
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import mepo_lab

ROOT = Path(__file__).resolve().parent.parent


def declared_layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [[m.strip() for m in layer.split("|")] for layer in contract["layers"]]


def test_every_top_level_module_is_in_a_layer():
    declared = {m for layer in declared_layers() for m in layer}
    present = {f"mepo_lab.{info.name}" for info in pkgutil.iter_modules(mepo_lab.__path__)} - {"mepo_lab.resources"}
    assert present - declared == set(), "add new modules to [tool.importlinter] in pyproject.toml"
    assert declared - present == set(), "the contract names modules that do not exist"


def test_readme_module_map_names_every_module():
    """The README's map of the package lists every subpackage and module that exists (and no ghost)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("\nmepo_lab/\n", 1)[1].split("```", 1)[0]
    words = set(block.translate(str.maketrans(",():;", "     ")).split())
    missing = []
    for info in pkgutil.iter_modules(mepo_lab.__path__):
        if info.name in ("resources", "streams", "metrics", "covariance"):  # data files; re-export modules
            continue
        if not ({info.name, info.name + ".py", info.name + "/"} & words):
            missing.append(info.name)
        if info.ispkg:
            sub = importlib.import_module(f"mepo_lab.{info.name}")
            missing += [f"{info.name}.{m.name}" for m in pkgutil.iter_modules(sub.__path__)
                        if info.name != "viz" and not ({m.name, m.name + ".py"} & words)]
    assert missing == [], "describe these modules in the README's module map"


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the import circles are the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                found.append(component)
    return [c for c in found if len(c) > 1]


def test_no_import_circle():
    graph = grimp.build_graph("mepo_lab")
    assert strongly_connected(graph) == []


def test_circle_detection_finds_a_circle():
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert strongly_connected(graph) == [{"p.a", "p.b", "p.c"}]


def import_map() -> str:
    """Markdown rows "module | imports from: other (count), ..." of the direct imports between top-level modules."""
    import collections

    graph = grimp.build_graph("mepo_lab")
    edges = collections.Counter()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = (".".join(m.split(".")[:2]) for m in (module, imported))
            if a != b:
                edges[a.removeprefix("mepo_lab."), b.removeprefix("mepo_lab.")] += 1
    rows = collections.defaultdict(list)
    for (a, b), count in sorted(edges.items()):
        rows[a].append(f"{b} ({count})")
    lines = ["| module | imports from |", "| --- | --- |"]
    lines += [f"| `{a}` | {', '.join(rows[a])} |" for a in sorted(rows)]
    return "\n".join(lines)


def test_architecture_page_shows_the_current_import_map():
    page = (ROOT / "docs" / "architecture.md").read_text()
    shown = page.split("<!-- import-map -->")[1].split("<!-- /import-map -->")[0].strip()
    assert shown == import_map(), "regenerate the table with: python -m tests.test_layers"


@pytest.mark.parametrize("path, names", [
    ("mepo_lab.streams", ["si_blurry", "Stream"]),
    ("mepo_lab.metrics", ["a_auc", "a_last", "a_avg", "f_last", "forgetting_max", "bwt", "accuracy_matrix"]),
    ("mepo_lab.covariance", ["meta_covariance", "whiten_color", "align_features", "validate_covariance"]),
    ("mepo_lab.backbones", ["save_mepo_backbone", "load_mepo_backbone"]),
    ("mepo_lab.mepo.refine", ["MetaRefiner"]),
])
def test_documented_import_paths_stay(path, names):
    """The README's and the design's public names stay importable where users learnt them."""
    home = {"mepo_lab.streams": "mepo_lab.protocols.streams", "mepo_lab.metrics": "mepo_lab.protocols.metrics",
            "mepo_lab.covariance": None, "mepo_lab.backbones": "mepo_lab.backbones.base",
            "mepo_lab.mepo.refine": "mepo_lab.mepo.refine"}[path]
    module = importlib.import_module(path)
    for name in names:
        obj = getattr(module, name)
        if home is not None:
            assert obj is getattr(importlib.import_module(home), name)


if __name__ == "__main__":
    print(import_map())
