"""The layout's boundaries, read from the code's own import statements (module-level and
inside functions alike): the domain core imports no shell, app or orchestration library;
each deployable keeps to its own folder; first-party modules import each other without a
circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("trading", "serving", "flows", "hmmtrader")
SHELL_ONLY = ("typer", "click", "rich")
APP_LIBRARIES = ("fastapi", "starlette", "uvicorn")
ORCHESTRATION = ("prefect", "prefect_dask")
# package (or module prefix) -> what it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "trading": ("flows", "serving", "hmmtrader", *SHELL_ONLY, *APP_LIBRARIES, *ORCHESTRATION),
    "flows": ("serving", "hmmtrader", *SHELL_ONLY, *APP_LIBRARIES),
    # (the ops API starts retrain runs through Prefect's client: no flow code)
    "serving": ("flows", "hmmtrader", *SHELL_ONLY),
    "serving.inference": ("serving.ops",),
    "serving.ops": ("serving.inference",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party() -> dict[str, Path]:
    return {
        module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
    }


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """Every absolute import in the file, with its line (a `from a.b import c` yields a.b
    and a.b.c: c may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_every_package_is_read() -> None:
    modules = first_party()
    for package in PACKAGES:
        assert any(_within(m, package) for m in modules), package
    # command lines, benchmarks and quickcheck live in the shell only
    assert "hmmtrader.cli" in modules and "hmmtrader.bench" in modules
    shell_names = ("cli", "bench", "quickcheck", "ops_cli")
    misplaced = [
        m
        for m in modules
        if not _within(m, "hmmtrader") and m.rpartition(".")[2].startswith(shell_names)
    ]
    assert not misplaced


@pytest.mark.parametrize("owner", sorted(FORBIDDEN))
def test_forbidden_imports(owner: str) -> None:
    found = []
    for name, path in first_party().items():
        if not _within(name, owner):
            continue
        for target, line in imports_of(path):
            for banned in FORBIDDEN[owner]:
                if _within(target, banned):
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not found, "\n".join(found)


def test_no_import_circle() -> None:
    modules = first_party()

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in imports_of(path):
            found = resolve(target)
            if found is not None and found != name:
                graph[name].add(found)
    # Tarjan's strongly connected components: any with two or more modules is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, circles
    # the check itself sees edges (it could fail)
    assert "trading.data.lake" in graph["trading.data.window"]


def test_the_checks_catch_a_violation(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    import typer\n    from serving.ops.app import x\n")
    found = [t for t, _ in imports_of(source)]
    assert "typer" in found and "serving.ops.app.x" in found
    assert _within("serving.ops.app.x", "serving.ops") and not _within("servingx", "serving")
