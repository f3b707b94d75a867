"""The engine package stays readable and its per-event path stays compiled: modules rarely pass 400
lines (one that does says why at its top), and every engine module the compiled ones import is in
setup.py's compiled list, or named here as deliberately left out."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "services" / "tagger" / "engine"
MAX_LINES = 400
REASON = "Over 400 lines:"
"""How a longer module's docstring starts the sentence that says why."""
NOT_COMPILED = {
    # read once per definition change or command, never per event: nothing to gain from compiling
    "services.tagger.engine.errors",
    "services.tagger.engine.fingerprint",
}


def _compiled_modules() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "COMPILED_MODULES" for target in node.targets
        ):
            paths: list[str] = ast.literal_eval(node.value)
            return {path.removesuffix(".py").replace("/", ".") for path in paths}
    raise AssertionError("setup.py has no COMPILED_MODULES")


def _engine_imports(module: str) -> set[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services.tagger.engine.")
    }


def test_no_engine_module_passes_400_lines_without_saying_why_at_its_top():
    long = {}
    for path in sorted(ENGINE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and REASON not in docstring:
            long[path.name] = lines
    assert not long, f"engine modules over {MAX_LINES} lines with no {REASON!r} in their docstring: {long}"


def test_every_engine_module_the_compiled_ones_import_is_compiled_too():
    compiled = _compiled_modules()
    assert compiled, "setup.py compiles nothing"
    missing = set()
    for module in compiled:
        missing |= _engine_imports(module) - compiled - NOT_COMPILED
    # a module left out here runs as Python under compiled callers: every call into it a generic one
    assert not missing, f"imported by compiled engine modules but not compiled (add them to setup.py): {missing}"
