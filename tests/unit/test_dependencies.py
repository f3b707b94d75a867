"""The package fences, read from the source (AST): no module has to be imported to check them.

Services depend on shared pieces (schemas, services.engine, services.runtime), not on each other; the
embedded node and the CLI are the exceptions, being the places that wire the services together. The
pure cores import nothing that does I/O, neither directly nor through the project modules they use.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import services

ROOT = Path(services.__file__).resolve().parents[1]
"""Where the packages are imported from: the checkout, or an installed wheel (its sources ship too)."""
PROJECT = ("schemas", "services")

FENCES = {
    "schemas": ("services",),
    "services.engine": (
        "services.tagger",
        "services.ingest",
        "services.notifier",
        "services.sync",
        "services.embedded",
    ),
    "services.runtime": (
        "services.tagger",
        "services.ingest",
        "services.notifier",
        "services.sync",
        "services.embedded",
    ),
    "services.ingest": ("services.tagger", "services.notifier", "services.sync", "services.embedded"),
    "services.notifier": ("services.tagger", "services.ingest", "services.sync", "services.embedded"),
    "services.tagger": ("services.ingest", "services.notifier", "services.sync", "services.embedded"),
    "services.sync": ("services.tagger", "services.ingest", "services.notifier", "services.embedded"),
}
"""Package -> the packages no module in it may import. services.embedded and services.cli may import
anything: the embedded node is the tagger, ingest and notifier in one process."""

PURE = ("services.engine", "services.notifier.policy", "services.sync.plan")

IO_MODULES = (
    "aiohttp",
    "aiokafka",
    "asyncio",
    "faust",
    "fastapi",
    "glob",
    "http",
    "httpx",
    "importlib.resources",
    "io",
    "kafka",
    "logging",
    "mode",
    "os",
    "pathlib",
    "redis",
    "selectors",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "starlette",
    "subprocess",
    "tempfile",
    "time",
    "urllib",
    "uvicorn",
)
"""Top-level modules (and their submodules) that open files, sockets or processes, or read the wall
clock: a pure module reaching any of them could do I/O behind its caller's back."""

IO_BUILTINS = frozenset({"open", "input", "print", "breakpoint"})


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _modules_under(package: str) -> list[str]:
    """The package's modules, or the module itself when `package` names one file (services.sync.plan)."""
    folder = ROOT.joinpath(*package.split("."))
    if folder.with_suffix(".py").is_file():
        return [package]
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_runtime(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that runs, leaving out `if TYPE_CHECKING:` blocks (imports for annotations only)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (node for orelse in child.orelse for node in [orelse, *_walk_runtime(orelse)])
            continue
        yield child
        yield from _walk_runtime(child)


def _imports(module: str) -> list[str]:
    path = _module_file(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), package)


def _imports_in(tree: ast.AST, package: str) -> list[str]:
    """The modules a module of `package` imports at run time, absolute and dotted (`from a import b`
    gives a.b as well when b is a module of the project)."""
    found = []
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if _module_file(f"{base}.{alias.name}"))
    return found


def _io_calls(module: str) -> list[str]:
    path = _module_file(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{module}:{node.lineno} calls {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS
    ]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _project_closure(start: str) -> dict[str, list[str]]:
    """Every project module that importing `start` runs (parent packages included), with its imports."""
    seen: dict[str, list[str]] = {}
    pending = [start]
    while pending:
        module = pending.pop()
        if module in seen or _module_file(module) is None:
            continue
        seen[module] = _imports(module)
        parents = [".".join(module.split(".")[:depth]) for depth in range(1, module.count(".") + 1)]
        pending.extend(name for name in [*seen[module], *parents] if _within(name, PROJECT))
    return seen


def test_no_service_imports_another_service() -> None:
    crossings = [
        f"{module} imports {imported}"
        for package, forbidden in FENCES.items()
        for module in _modules_under(package)
        for imported in _imports(module)
        if _within(imported, forbidden)
    ]
    assert not crossings, "move what two services share to schemas/, services/engine or services/runtime:\n" + (
        "\n".join(crossings)
    )


@pytest.mark.parametrize("package", PURE)
def test_the_pure_cores_reach_no_module_that_does_io(package: str) -> None:
    reached = {}
    for start in _modules_under(package):
        reached.update(_project_closure(start))
    problems = [
        f"{module} imports {imported}"
        for module, imports in sorted(reached.items())
        for imported in imports
        if _within(imported, IO_MODULES)
    ]
    problems += [call for module in sorted(reached) for call in _io_calls(module)]
    assert not problems, f"{package} must stay pure (take data and 'now' as arguments):\n" + "\n".join(problems)


def test_the_scan_sees_every_kind_of_runtime_import_and_skips_annotation_only_ones() -> None:
    # the fences are only as good as the scanner: a plain import, a from-import, a function-local
    # import and relative ones count; imports under `if TYPE_CHECKING:` never run
    source = (
        "from __future__ import annotations\n"
        "import socket\n"
        "from redis.asyncio import Redis\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import faust\n"
        "def later():\n"
        "    import aiokafka\n"
        "from .rulebook import RuleBook\n"
        "from .. import tagger\n"
    )
    found = _imports_in(ast.parse(source), "services.engine")
    assert found == [
        "__future__",
        "socket",
        "redis.asyncio",
        "typing",
        "aiokafka",
        "services.engine.rulebook",
        "services",
        "services.tagger",
    ]
    assert [name for name in found if _within(name, IO_MODULES)] == ["socket", "redis.asyncio", "aiokafka"]
    assert [name for name in found if _within(name, FENCES["services.engine"])] == ["services.tagger"]
