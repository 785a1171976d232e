"""Formats: each reader returns the header names and an iterator of batches
``(frame of strings under those names, 1-based row numbers)``, so no source is ever
held whole in memory (except a JSON document in UTF-16/32, capped at
:data:`MAX_JSON_DOCUMENT`, and an XLSX sheet, whose size is checked in the ZIP directory before it is inflated).
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from tasks.extract.columns import LOOKS_LIKE_EMAIL_RE, dedupe_names
from tasks.extract.encodings import BLANK_MARK, SNIFF_BYTES
from tasks.extract.sources import MAX_INFLATE_RATIO, Limits, fail

__all__ = [
    "BATCH_ROWS",
    "FORMATS",
    "MAX_JSON_DOCUMENT",
    "Batches",
    "check_zip",
    "delimited_batches",
    "excel_batches",
    "json_batches",
    "json_stream_batches",
    "parquet_batches",
]

Batches = tuple[list[str], Iterator[tuple[pl.DataFrame, pl.Series]]]

FORMATS = "CSV/TSV/XLSX/JSON/Parquet"
BATCH_ROWS = 100_000
#: A JSON document (not NDJSON) is parsed whole: ~20x its size in memory.
MAX_JSON_DOCUMENT = 48 * 1024 * 1024
#: JSON objects nested deeper than this stay one JSON text cell.
_MAX_FLATTEN_DEPTH = 16
_DELIMITERS = (",", ";", "\t", "|")
_MARK_LINE = re.compile(rf"(?m)^{re.escape(BLANK_MARK)}\d+\n")
#: Uncompressed bytes above which an XLSX is refused before parsing (a sheet XML of 2 GB
#: is far past Excel's 1,048,576-row limit for a contact list).
MAX_XLSX_INFLATED = 2 * 1024**3
_ZIP_GRACE = 1024 * 1024


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- delimited


def delimited_batches(source: str, parts: list[Path], *, tab_hint: bool) -> Batches:
    """Delimited UTF-8 text, already cleaned and cut into parts between records by
    :func:`~tasks.extract.encodings.to_clean_utf8`; each part is parsed on its own."""
    if not parts:
        raise fail(source, "empty file")
    with parts[0].open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    sample = head.decode("utf-8", errors="ignore")
    if not sample.strip():
        raise fail(source, "empty file")
    control = sum(1 for ch in sample[:4096] if ch < " " and ch not in "\t\r\n\f\v\x1e")
    if control > 0.01 * min(len(sample), 4096) + 2:
        raise fail(source, f"looks binary, not a {FORMATS} export")
    if len(head) >= SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # the last line may be cut
    sample = _MARK_LINE.sub("", sample)

    skip = 0
    excel_hint = re.match(r"sep=(.)\r?\n", sample)  # Excel's "sep=;" first line
    if excel_hint:
        skip, sample = 1, sample[excel_hint.end() :]
    delimiter = excel_hint.group(1) if excel_hint else _sniff_delimiter(sample, tab_hint=tab_hint)
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar='"'), [])
    except csv.Error as exc:
        raise fail(source, f"cannot parse the header: {exc}") from None
    if not any(cell.strip() for cell in header):
        raise fail(source, "the first line (header) is empty")

    headerless = any(LOOKS_LIKE_EMAIL_RE.match(cell) for cell in header)
    if headerless:
        names = ["email"] if len(header) == 1 else [f"column_{i}" for i in range(1, len(header) + 1)]
    else:
        names = dedupe_names(header)
    separator = delimiter if len(header) > 1 else "\x1f"
    return names, _csv_batches(source, parts, names, separator=separator, skip=skip, headerless=headerless)


def _csv_batches(
    source: str, parts: list[Path], names: list[str], *, separator: str, skip: int, headerless: bool
) -> Iterator[tuple[pl.DataFrame, pl.Series]]:
    offset = 0  # rows (records, blank ones included) before this part
    schema = {name: pl.String for name in names}
    for n, part in enumerate(parts):
        try:
            raw = pl.read_csv(
                part,
                skip_rows=skip + (0 if headerless else 1) if n == 0 else 0,  # records, not lines
                separator=separator,
                quote_char='"',
                has_header=False,
                schema=schema,
                missing_columns="insert",  # a short first row does not narrow the schema
                extra_columns="ignore",
                truncate_ragged_lines=True,
                raise_if_empty=False,
                encoding="utf8-lossy",
            )
        except Exception as exc:  # noqa: BLE001 - polars raises several types; all mean unreadable
            raise fail(source, f"cannot parse as CSV: {_first_line(exc)}") from None
        part.unlink(missing_ok=True)  # parsed: its disk space back
        index = pl.int_range(offset + 1, offset + raw.height + 1, eager=True, dtype=pl.Int64)
        offset += raw.height
        first = raw.get_column(names[0])
        is_mark = first.str.starts_with(BLANK_MARK).fill_null(False)
        if is_mark.any():
            extra = pl.select(
                pl.when(is_mark)
                .then(first.str.slice(len(BLANK_MARK)).cast(pl.Int64, strict=False).fill_null(1) - 1)
                .otherwise(0)
            ).to_series()
            rows = index + extra.cum_sum()
            offset += int(extra.sum())
            raw, rows = raw.filter(~is_mark), rows.filter(~is_mark)
        else:
            rows = index
        for start in range(0, max(raw.height, 1), BATCH_ROWS):
            yield raw.slice(start, BATCH_ROWS), rows.slice(start, BATCH_ROWS)


def _sniff_delimiter(sample: str, *, tab_hint: bool) -> str:
    """The delimiter that splits the sample into the most columns, consistently.

    :class:`csv.Sniffer` gives the first guess; every candidate is then checked with
    :func:`csv.reader` (which handles quoting and embedded line breaks): the header must
    have more than one field and most rows as many fields as the header.
    """
    try:
        guess = csv.Sniffer().sniff(sample[:16384], delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        guess = None
    order = [d for d in ([guess] if guess else []) + (["\t"] if tab_hint else []) + list(_DELIMITERS)]
    best, best_score = ",", (-1.0, 0)
    for delimiter in dict.fromkeys(order):
        try:
            rows = [
                r
                for _, r in zip(
                    range(200), csv.reader(io.StringIO(sample), delimiter=delimiter), strict=False
                )
                if r
            ]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        body = rows[1:-1] if len(rows) > 2 else rows[1:]
        consistent = sum(1 for r in body if len(r) == width) / len(body) if body else 1.0
        score = (consistent, width)
        if consistent >= 0.8 and score > best_score:
            best, best_score = delimiter, score
    return best


# --------------------------------------------------------------------------- JSON


_RECORD_KEYS = ("data", "results", "contacts", "records", "items", "rows", "members", "leads")


def json_batches(source: str, path: Path, text: str | None, *, ndjson_hint: bool) -> Batches:
    """JSON (``[...]``, ``{"data": [...]}``, one object) or NDJSON. ``text`` is the decoded
    document when it is small enough to parse whole; ``None`` streams NDJSON from ``path``
    (UTF-8) line by line."""
    if text is None:
        return _ndjson_stream(source, path)
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise fail(source, "empty file")
    records: Any
    try:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            if not (exc.msg == "Extra data" or ndjson_hint):
                raise fail(
                    source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
                ) from None
            records = _parse_ndjson(source, text)
    except RecursionError:
        raise fail(source, "JSON nested too deeply to read") from None
    del text
    if isinstance(records, dict):
        records = _records_in_object(source, records)
    if not isinstance(records, list):
        raise fail(source, 'JSON holds no list of records (expected [...] or {"data": [...]})')
    if not records:
        raise fail(source, "empty file (no records)")
    if all(isinstance(r, str) or r is None for r in records):
        names = ["email"]
        frame = pl.DataFrame({"email": records}, schema={"email": pl.String})
        return names, iter([(frame, pl.int_range(1, frame.height + 1, eager=True).cast(pl.Int64))])
    if not all(isinstance(r, dict) for r in records):
        raise fail(source, "JSON records must be objects (one per contact)")
    return _record_batches(source, lambda: iter(records))


def _record_batches(source: str, records: Any) -> Batches:
    """``records()`` yields dicts (twice: once for the keys, once for the values)."""
    try:
        keys: dict[str, None] = {}
        for record in records():
            keys.update(dict.fromkeys(_flatten(record)))
    except RecursionError:
        raise fail(source, "JSON nested too deeply to read") from None
    names = dedupe_names(keys)
    schema = {name: pl.String for name in names}

    def batches() -> Iterator[tuple[pl.DataFrame, pl.Series]]:
        buffer: list[dict[str, str | None]] = []
        row = 0
        for record in records():
            buffer.append(_flatten(record))
            if len(buffer) >= BATCH_ROWS:
                yield _frame(buffer, keys, names, schema), pl.int_range(row + 1, row + len(buffer) + 1, eager=True)
                row += len(buffer)
                buffer = []
        if buffer:
            yield _frame(buffer, keys, names, schema), pl.int_range(row + 1, row + len(buffer) + 1, eager=True)

    return names, batches()


def _frame(flat: list[dict[str, str | None]], keys: dict[str, None], names: list[str],
           schema: dict[str, Any]) -> pl.DataFrame:
    data = {name: [row.get(key) for row in flat] for name, key in zip(names, keys, strict=False)}
    return pl.DataFrame(data, schema=schema)


def json_stream_batches(source: str, path: Path) -> Batches:
    """A UTF-8 JSON or NDJSON file of any size, streamed with ijson (yajl): records are
    read one at a time, twice (once for the column names, once for the values), so
    memory holds one batch, not the document. The shapes are those of
    :func:`json_batches`: ``[...]``, ``{"data": [...]}`` (or another key holding the one
    list of objects), a single object, or one object a line."""
    import ijson

    def events():  # -> Iterator[tuple[str, Any]]
        with path.open("rb") as fh:
            yield from ijson.basic_parse(fh, multiple_values=True, use_float=True)

    try:
        prefix, records_prefix = _json_shape(source, events())
    except ijson.JSONError as exc:
        raise fail(source, f"invalid JSON: {_first_line(exc)}") from None

    def records() -> Iterator[Any]:
        with path.open("rb") as fh:
            try:
                yield from ijson.items(fh, records_prefix, multiple_values=True, use_float=True)
            except ijson.JSONError as exc:
                raise fail(source, f"invalid JSON: {_first_line(exc)}") from None

    first = next(iter(records()), _NOTHING)
    if first is _NOTHING:
        raise fail(source, "empty file (no records)")
    if isinstance(first, str) or first is None:
        def emails() -> Iterator[tuple[pl.DataFrame, pl.Series]]:
            buffer: list[Any] = []
            row = 0
            for value in records():
                if not (isinstance(value, str) or value is None):
                    raise fail(source, "JSON records must be all addresses or all objects")
                buffer.append(value)
                if len(buffer) >= BATCH_ROWS:
                    yield pl.DataFrame({"email": buffer}, schema={"email": pl.String}), pl.int_range(
                        row + 1, row + len(buffer) + 1, eager=True)
                    row, buffer = row + len(buffer), []
            if buffer:
                yield pl.DataFrame({"email": buffer}, schema={"email": pl.String}), pl.int_range(
                    row + 1, row + len(buffer) + 1, eager=True)

        return ["email"], emails()

    def objects() -> Iterator[dict[str, Any]]:
        for value in records():
            if not isinstance(value, dict):
                raise fail(source, "JSON records must be objects (one per contact)")
            yield value

    return _record_batches(source, objects)


_NOTHING = object()


#: Nesting deeper than this is refused before any record is built (a CRM export nests
#: a few levels; 100,000-deep documents exist only to crash parsers).
MAX_JSON_DEPTH = 256


def _json_shape(source: str, events: Iterator[tuple[str, Any]]) -> tuple[str, str]:
    """Where the records are: ``(kind, ijson prefix)``, from one pass over ijson's
    basic events (no prefixes: their cost grows with the depth)."""
    top_values = 0
    first_kind = None
    stack: list[str] = []  # "map" / "array"
    key = None  # the current top-level key
    arrays: dict[str, bool] = {}  # top-level key holding an array -> its first item is an object
    first_item: dict[str, bool] = {}
    keys: list[str] = []
    scalars_only = True
    for event, value in events:
        depth = len(stack)
        if event in ("start_map", "start_array", "string", "number", "boolean", "null") and depth == 0:
            top_values += 1
            if top_values == 1:
                first_kind = event
            else:  # NDJSON: one record a line
                return "ndjson", ""
        if top_values == 1 and first_kind == "start_map":
            if depth == 1 and event == "map_key":
                key = value
                keys.append(value)
            elif depth == 1 and event in ("start_map", "start_array"):
                scalars_only = False
                if event == "start_array":
                    arrays.setdefault(key, False)
                    first_item[key] = True
            elif depth == 2 and stack[-1] == "array" and key in first_item:
                if first_item.pop(key) and event == "start_map":
                    arrays[key] = True
        if event in ("start_map", "start_array"):
            stack.append("map" if event == "start_map" else "array")
            if len(stack) > MAX_JSON_DEPTH:
                raise fail(source, f"JSON nested too deeply to read (more than {MAX_JSON_DEPTH} levels)")
        elif event in ("end_map", "end_array"):
            stack.pop()
    if top_values == 0:
        raise fail(source, "empty file")
    if first_kind == "start_array":
        return "array", "item"
    if first_kind != "start_map":
        raise fail(source, 'JSON holds no list of records (expected [...] or {"data": [...]})')
    for candidate in _RECORD_KEYS:
        if candidate in arrays:
            return "object", f"{candidate}.item"
    with_objects = [k for k, has in arrays.items() if has]
    if len(with_objects) == 1:
        return "object", f"{with_objects[0]}.item"
    if keys and scalars_only:
        return "record", ""
    shown = ", ".join(keys[:10])
    raise fail(source, f"JSON object has no list of records under data/results/contacts (keys: {shown})")


def _ndjson_stream(source: str, path: Path) -> Batches:
    def records() -> Iterator[dict[str, Any]]:
        with path.open("rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise fail(
                        source, f"invalid NDJSON at line {lineno} column {exc.colno}: {exc.msg}"
                    ) from None
                except RecursionError:
                    raise fail(source, f"JSON at line {lineno} nested too deeply to read") from None
                if not isinstance(value, dict):
                    raise fail(source, "NDJSON records must be objects (one per contact)")
                yield value

    return _record_batches(source, records)


def _parse_ndjson(source: str, text: str) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise fail(source, f"invalid NDJSON at line {lineno} column {exc.colno}: {exc.msg}") from None
    return records


def _records_in_object(source: str, obj: dict[str, Any]) -> Any:
    for key in _RECORD_KEYS:
        if isinstance(obj.get(key), list):
            return obj[key]
    lists = [v for v in obj.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if len(lists) == 1:
        return lists[0]
    if obj and all(not isinstance(v, (dict, list)) for v in obj.values()):
        return [obj]  # a single record
    keys = ", ".join(list(obj)[:10])
    raise fail(source, f"JSON object has no list of records under data/results/contacts (keys: {keys})")


def _flatten(record: dict[str, Any], prefix: str = "", depth: int = 0) -> dict[str, str | None]:
    """Nested objects become dotted columns (``properties.email``); lists stay JSON text."""
    out: dict[str, str | None] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth < _MAX_FLATTEN_DEPTH:
            out.update(_flatten(value, prefix=f"{name}.", depth=depth + 1))
        else:
            out[name] = json_cell(value)
    return out


def json_cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------- ZIP / XLSX


def check_zip(source: str, path: Path, ext: str, limits: Limits) -> None:
    """Refuse a ZIP that is not a workbook, or whose members would inflate past the
    limits, before anything is inflated (sizes from the central directory; a member
    that lies about its size is cut by the reader's own CRC/size checks)."""
    kind = "XLSX" if ext in ("xlsx", "xlsm", "xls") else "ZIP"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise fail(source, f"corrupt {kind} file ({_first_line(exc)})") from None
    names = {m.filename for m in members}
    if "xl/workbook.xml" not in names and "xl/workbook.bin" not in names:
        raise fail(source, f"a ZIP archive, not an XLSX workbook; unzip it and give the {FORMATS} inside")
    total = sum(m.file_size for m in members)
    if problem := limits.bytes_problem(total):
        raise fail(source, f"unzips to {total:,} bytes, {problem}")
    if total > MAX_XLSX_INFLATED:
        raise fail(source, f"unzips to {total:,} bytes: refused as a zip bomb")
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _ZIP_GRACE and ratio > MAX_INFLATE_RATIO:
            raise fail(
                source,
                f"{member.filename} inflates {ratio:.0f}x ({member.compress_size:,} -> "
                f"{member.file_size:,} bytes): refused as a zip bomb",
            )


def excel_batches(source: str, path: Path, kind: str, limits: Limits) -> Batches:
    """First sheet; the first row is the header; every cell as text (calamine/fastexcel)."""
    read_options: dict[str, Any] = {}
    if limits.max_rows is not None:
        read_options["n_rows"] = limits.max_rows + 2  # header + one past the limit
    try:
        grid = pl.read_excel(
            path,
            sheet_id=1,
            engine="calamine",
            has_header=False,
            infer_schema_length=0,
            drop_empty_rows=False,
            raise_if_empty=False,
            read_options=read_options,
        )
    except Exception as exc:  # noqa: BLE001 - fastexcel has its own types for corrupt files
        raise fail(source, f"corrupt or unreadable {kind} file ({_first_line(exc)})") from None
    if grid.height == 0 or grid.width == 0:
        raise fail(source, "empty file (the first sheet has no cells)")
    grid = grid.select(pl.all().cast(pl.String))
    header = ["" if v is None else str(v) for v in grid.row(0)]
    names = dedupe_names(header)
    body = grid.slice(1)
    body.columns = names
    rows = pl.int_range(1, body.height + 1, eager=True).cast(pl.Int64)
    return names, iter([(body, rows)])


# --------------------------------------------------------------------------- Parquet


def parquet_batches(source: str, path: Path, limits: Limits) -> Batches:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
        n_rows = meta.metadata.num_rows
        original = list(meta.schema_arrow.names)
    except Exception as exc:  # noqa: BLE001 - arrow raises several types
        raise fail(source, f"corrupt Parquet file ({_first_line(exc)})") from None
    if problem := limits.rows_problem(n_rows):
        raise fail(source, problem)
    names = dedupe_names(original)

    def batches() -> Iterator[tuple[pl.DataFrame, pl.Series]]:
        row = 0
        try:
            for record_batch in meta.iter_batches(batch_size=BATCH_ROWS):
                df = pl.from_arrow(record_batch)
                assert isinstance(df, pl.DataFrame)
                df.columns = names
                frame = _parquet_as_text(df)
                yield frame, pl.int_range(row + 1, row + frame.height + 1, eager=True)
                row += frame.height
        except Exception as exc:  # noqa: BLE001 - any conversion failure means unreadable
            if isinstance(exc, ValueError) and str(exc).startswith(source):
                raise
            raise fail(source, f"cannot read the Parquet columns as text ({_first_line(exc)})") from None

    return names, batches()


def _parquet_as_text(df: pl.DataFrame) -> pl.DataFrame:
    columns = []
    for name, dtype in df.schema.items():
        column = df.get_column(name)
        if dtype == pl.String:
            columns.append(column)
        elif isinstance(dtype, pl.Struct):
            columns.append(column.struct.json_encode())
        elif dtype.is_nested() or dtype == pl.Object or dtype == pl.Binary:
            cells = [json_cell(v) for v in column.to_list()]
            columns.append(pl.Series(name, cells, dtype=pl.String))
        else:
            columns.append(column.cast(pl.String, strict=False))
    return pl.DataFrame(columns)
