"""The repository's own docs say what the code does: docs/contract.md names every status,
reason and score band of mailsift.result; docs/warehouse.md every table, view and column
of the warehouse schema. A fresh clone needs nothing outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from mailsift.result import REASONS, SCORE_BANDS, STATUSES
from warehouse.schema import VIEWS, metadata

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()
WAREHOUSE = (ROOT / "docs" / "warehouse.md").read_text()


def test_contract_lists_every_reason_under_its_status() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| (valid|invalid|risky|unknown) \|", CONTRACT, flags=re.M))
    assert rows == REASONS


def test_contract_states_the_score_bands() -> None:
    for status, (low, high) in SCORE_BANDS.items():
        top = "<=" if status == "valid" else "<"
        assert f"| `{status}` | {low} <= score {top} {high} |" in CONTRACT
    assert set(SCORE_BANDS) == set(STATUSES)


def test_warehouse_doc_names_every_table_view_and_column() -> None:
    for table in metadata.sorted_tables:
        assert f"### `{table.name}`" in WAREHOUSE, table.name
        section = WAREHOUSE.split(f"### `{table.name}`", 1)[1].split("\n### ", 1)[0]
        for column in table.columns:
            assert f"`{column.name}`" in section, (table.name, column.name)
    for view in VIEWS:
        assert f"### `{view}`" in WAREHOUSE, view


def test_no_code_sends_the_reader_outside_the_repository() -> None:
    for folder in ("mailsift", "pipeline", "flows", "tasks", "warehouse", "deployments", "service", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            text = path.read_text()
            assert "DESIGN.md" not in text and "../shared" not in text, path
