"""The engine package stays readable: its modules rarely pass 400 lines, and one that does says why at
its top. (That every module compiled code imports is compiled too: tests/deploy/test_compiled_engine.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "services" / "engine"
MAX_LINES = 400
REASON = "Over 400 lines:"
"""How a longer module's docstring starts the sentence that says why."""


def test_no_engine_module_passes_400_lines_without_saying_why_at_its_top():
    long = {}
    for path in sorted(ENGINE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and REASON not in docstring:
            long[path.name] = lines
    assert not long, f"engine modules over {MAX_LINES} lines with no {REASON!r} in their docstring: {long}"
