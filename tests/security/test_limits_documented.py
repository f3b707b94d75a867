"""docs/ingest.md's Limits table names every bound of schemas/limits.py (outside tests/unit: it reads the docs)."""

from __future__ import annotations

from pathlib import Path

from schemas import limits

DOC = Path(__file__).parents[2] / "docs" / "ingest.md"


def test_every_bound_in_schemas_limits_is_named_in_the_limits_table() -> None:
    table = DOC.read_text(encoding="utf-8").split("## Limits", 1)[1].split("\n## ", 1)[0]
    bounds = [name for name in vars(limits) if name.isupper() and name != "UTC"]
    assert len(bounds) > 20
    assert [name for name in bounds if f"`{name}`" not in table] == []
