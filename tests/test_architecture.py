"""The package's import graph (every `import` statement, at the top of a module or inside a
function) has no circle, and every import points down the layers ARCHITECTURE.md lists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daydream"
LAYER_LINE = re.compile(r"^(\d+)\. \*\*(?P<name>[^*]+)\*\*[^:]*: (?P<body>.*)$")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (`daydream.batch` is batch/__init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The package's modules `name` imports, each with the line of its first import. An import
    names its module: `from daydream.batch import ledger` is daydream.batch.ledger, and
    `from daydream.providers import OFFLINE_ROUTE` is daydream.providers."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                edges.setdefault(target, node.lineno)
    return edges


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def layers_of_the_map() -> list[tuple[str, list[str]]]:
    """The layers of ARCHITECTURE.md's "Layers" section, top to bottom: (name, the backticked
    names of the package's modules in it). File names (`rules/*.smk`, `Snakefile`) and what is
    said in parentheses are skipped."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for line in section.splitlines():
        match = LAYER_LINE.match(line)
        if match:
            body = re.sub(r"\([^)]*\)", "", match["body"])
            names = [n for n in re.findall(r"`([^`]+)`", body) if re.fullmatch(r"[a-z_][a-z_.]*", n)]
            found.append((match["name"], names))
    return found


def layer_index() -> dict[str, int]:
    """The layer of every module: the longest name of the map that is the module or a package
    holding it. A name of the map that is no module of the package fails here."""
    named: dict[str, int] = {}
    known = modules()
    for index, (layer, names) in enumerate(layers_of_the_map()):
        for short in names:
            full = f"daydream.{short}"
            assert full in known, f"ARCHITECTURE.md, layer {layer!r}: `{short}` is no module of daydream/"
            assert full not in named, f"ARCHITECTURE.md names `{short}` in two layers"
            named[full] = index
    placed = {}
    for module in known:
        owners = [n for n in named if module == n or module.startswith(n + ".")]
        if owners:
            placed[module] = named[max(owners, key=len)]
    return placed


def find_circle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle as a path of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], _ = 1, path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(edges):
        if module not in state and (circle := visit(module)):
            return circle
    return None


def test_the_map_has_the_layers_in_order():
    names = [name for name, _ in layers_of_the_map()]
    assert names == ["Rules and scripts", "Jobs", "Run orchestration", "Ledger and providers",
                     "Store, paths, definitions, registries"]


def test_no_import_circle_in_the_package_function_level_imports_included():
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_every_module_has_its_place_in_the_layers():
    unplaced = sorted(set(modules()) - set(layer_index()) - {"daydream"})
    assert not unplaced, f"modules missing from ARCHITECTURE.md's layers: {unplaced}"


def test_every_import_points_down_the_layers():
    where, names = layer_index(), [name for name, _ in layers_of_the_map()]
    upward = [f"{modules()[m].relative_to(ROOT)}:{line}: {m} ({names[where[m]]}) imports {t} ({names[where[t]]})"
              for m, targets in graph().items() for t, line in targets.items()
              if m in where and t in where and where[t] < where[m]]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_checks_see_function_level_imports_and_circles():
    """The graph holds an import made inside a function, and a circle through one is found."""
    edges = graph()
    assert "daydream.reports.cross" in edges["daydream.reports"], "reports imports cross inside a function"
    assert find_circle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b": 1}, "b": {}}) is None
