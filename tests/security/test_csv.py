"""Finding 6: an audience export cannot smuggle a formula into the spreadsheet a marketer opens it in."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from services.ingest.api.reads import csv_cell
from tests.security.apps import AS_ADMIN, AS_OPERATOR, embedded_node

HOSTILE_IDS = ["=1+1", "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", '=HYPERLINK("http://evil.example","x")']
"""Customer ids a shop's systems might well hold (they are the merchant's own strings)."""

GROUP = {"id": "vip", "name": "VIP", "mode": "multi", "tagging": "manual", "tags": [{"id": "yes", "name": "是"}]}


async def test_the_audience_export_writes_formula_like_ids_as_text(tmp_path: Path) -> None:
    async with embedded_node(tmp_path / "data") as http:
        assert (await http.post("/v1/groups", json=GROUP, headers=AS_ADMIN)).status_code == 201
        tagged = {"group_id": "vip", "tag_id": "yes", "action": "add", "customer_ids": [*HOSTILE_IDS, "c1"]}
        assert (await http.post("/v1/manual-tags", json=tagged, headers=AS_OPERATOR)).status_code == 202
        export = await http.post("/v1/audiences/export", json={"any_of": ["vip/yes"]}, headers=AS_ADMIN)
    assert export.status_code == 200
    rows = list(csv.reader(io.StringIO(export.text, newline="")))
    assert rows[0] == ["customer_id"]
    cells = [row[0] for row in rows[1:]]
    assert sorted(cells) == sorted(["'" + hostile for hostile in HOSTILE_IDS] + ["c1"])
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]


@pytest.mark.parametrize("value", ["=1+1", "+1", "-1", "@A1", "\t=1+1", "\r=1+1"])
def test_every_cell_starting_as_owasp_lists_gets_a_leading_quote(value: str) -> None:
    read_back = next(csv.reader(io.StringIO(csv_cell(value) + "\r\n", newline="")))
    assert read_back == ["'" + value]


@pytest.mark.parametrize("value", ["c1", "李雷", "1+1", "a=b", "a,b"])
def test_ordinary_ids_are_written_unchanged(value: str) -> None:
    assert next(csv.reader(io.StringIO(csv_cell(value) + "\r\n", newline=""))) == [value]
