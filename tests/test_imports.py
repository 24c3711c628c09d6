"""The import graph of orchestrator/ and trainables/: no circles, and trainables/ never imports
orchestrator/. Read from the source with ast (every import: top-level, inside functions, under
TYPE_CHECKING, relative), so a lazy import cannot hide an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "trainables")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (a package is its
    __init__.py)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules `name` imports. `from X import Y` is an arrow to X.Y when that is a
    module (a submodule, not the package's face), else to X."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a non-module attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one
    circle through its modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_circle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One closed path a -> ... -> a inside a strongly connected component."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & component)
        back = [n for n in nxt if n == start]
        if back and len(path) > 1:
            return [*path, start]
        fresh = [n for n in nxt if n not in seen]
        if not fresh:
            return [*path, nxt[0]]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_walker_sees_lazy_relative_and_type_checking_imports(tmp_path: Path) -> None:
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\n"
            "def f():\n    import pkg.c\n    from pkg import d\n")
    (tmp_path / "a.py").write_text(code)
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    assert imports_of("pkg.a", tmp_path / "a.py", modules) == {"pkg.b", "pkg.c", "pkg.d"}
    assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z", "x"]]


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_trainables_never_import_orchestrator() -> None:
    bad = sorted(f"{name} -> {target}" for name, targets in import_graph().items()
                 if name.startswith("trainables") for target in targets
                 if target.split(".")[0] == "orchestrator")
    assert not bad, "trainables/ imports orchestrator/:\n" + "\n".join(bad)
