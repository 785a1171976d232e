"""``mailsift sql``: one SQL statement over the warehouse, opened read-only.

The file is opened the way every mailsift reader opens it (:meth:`warehouse.Warehouse.open`
with ``read_only=True``): it must exist, be a mailsift warehouse of a schema this code
knows, and nothing in it can change (DuckDB refuses INSERT, UPDATE, DDL...). Timestamps
come back in UTC. Results print as a table (rich), CSV (formula cells neutralized, as in
every CSV mailsift writes) or JSON (an array of objects).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, TextIO

import polars as pl

from mailsift.errors import WarehouseError
from warehouse import Warehouse

__all__ = ["OutputFormat", "print_result", "run_query"]

OutputFormat = Literal["table", "csv", "json"]


def run_query(db: Path, sql: str) -> pl.DataFrame:
    """The result of ``sql`` over the warehouse at ``db``, opened read-only.

    Raises :class:`WarehouseError` with a readable message (no file, not a warehouse,
    a write attempted, a SQL error)."""
    with Warehouse.open(db, create=False, read_only=True) as wh:
        try:
            return wh.query(sql)
        except WarehouseError as exc:
            raise WarehouseError(_one_line(str(exc))) from None


def _one_line(message: str) -> str:
    """DuckDB's message without its caret drawing: the lines before ``LINE n:``."""
    lines = []
    for line in message.splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


def _json_value(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested values (lists, structs) as JSON text, for CSV and the table."""
    nested = [n for n, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return frame
    return frame.with_columns(
        pl.Series(n, [None if v is None else json.dumps(v, default=str) for v in frame[n].to_list()],
                  dtype=pl.String)
        for n in nested
    )


def print_result(frame: pl.DataFrame, fmt: OutputFormat, *, max_rows: int = 1000,
                 out: TextIO | None = None) -> None:
    """Print ``frame`` as a rich table (at most ``max_rows`` rows), CSV or JSON."""
    out = out or sys.stdout
    if fmt == "json":
        rows = frame.to_dicts()
        out.write(json.dumps(rows, default=_json_value, ensure_ascii=False) + "\n")
        return
    flat = _flat(frame)
    if fmt == "csv":
        from tasks.export import neutralize_formulas

        text = neutralize_formulas(flat.with_columns(pl.col(pl.Datetime).dt.to_string()))
        out.write(text.write_csv())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, dtype in flat.schema.items():
        table.add_column(name, justify="right" if dtype.is_numeric() else "left", overflow="fold")
    for row in flat.head(max_rows).iter_rows():
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console(file=out)
    if not console.is_terminal:
        console.width = 200
    console.print(table)
    more = flat.height - max_rows
    footer = f"{flat.height:,} row{'s' if flat.height != 1 else ''}"
    if more > 0:
        footer += f" ({more:,} not shown; --format csv or json prints them all)"
    console.print(footer, style="dim")
