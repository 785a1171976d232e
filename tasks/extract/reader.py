"""Reading sources: sniff the format, stream it in batches into a Parquet file of strings
plus the ``__ms_*`` columns, within the source's byte and row budgets.

Memory grows with the batch size (:data:`~tasks.extract.formats.BATCH_ROWS`), not with
the file: a delimited source is first streamed into clean UTF-8 (blank-line runs
collapsed), then parsed by polars' streaming CSV reader batch by batch; Parquet is read
by row groups; NDJSON line by line; a ZIP (XLSX) is checked for its inflated size before
it is opened.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl

from mailsift import scratch
from mailsift.errors import InputError
from tasks.extract import columns as cols
from tasks.extract import encodings, formats
from tasks.extract.sources import Limits, display_source, download, expand_sources, fail, is_url

__all__ = [
    "MAX_FIRST_LINE",
    "Extracted",
    "check_sources",
    "extract_source",
    "extract_sources",
    "read_source",
    "read_sources",
]

log = logging.getLogger(__name__)

#: A CSV/TSV whose first line is longer than this is refused before it is parsed.
MAX_FIRST_LINE = 1024 * 1024

_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"%PDF", "PDF document"),
    (b"\x1f\x8b", "gzip archive; decompress it first"),
    (b"BZh", "bzip2 archive; decompress it first"),
    (b"\xfd7zXZ", "xz archive; decompress it first"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"Rar!", "RAR archive"),
    (b"\x7fELF", "executable"),
    (b"MZ", "executable"),
    (b"SQLite format 3", "SQLite database"),
)


@dataclass
class Extracted:
    """One source written to ``path`` (Parquet: original columns as strings + ``__ms_*``)."""

    source: str  #: as shown (URL credentials redacted)
    path: Path
    n_rows: int
    columns: list[str]  #: original column names, in order
    warnings: list[str] = field(default_factory=list)


def _limits(limits: Limits | None, max_bytes: int | None, timeout: float | None) -> Limits:
    base = limits or Limits.from_settings()
    changes = {}
    if max_bytes is not None:
        changes["max_bytes"] = max_bytes
    if timeout is not None:
        changes["stall_timeout"] = timeout
    if changes:
        from dataclasses import replace

        base = replace(base, **changes)
    return base


def read_source(
    source: str,
    *,
    email_column: str | None = None,
    max_bytes: int | None = None,
    timeout: float | None = None,
    limits: Limits | None = None,
) -> pl.DataFrame:
    """Read one file or http(s) URL into a frame of strings plus the ``__ms_*`` columns.

    ``email_column`` names the column holding the addresses (exact header, or a unique
    case-insensitive match); by default it is found by header, then by content.
    ``max_bytes`` / ``limits`` bound the source (default: the settings); ``timeout``
    (seconds) bounds each network step of a download. Fully blank rows are dropped (their
    row numbers are skipped).
    """
    work = scratch.make_dir("extract")
    try:
        out = extract_source(os.fspath(source), Path(work), email_column=email_column,
                             limits=_limits(limits, max_bytes, timeout))
        return pl.read_parquet(out.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_sources(
    sources: Sequence[str],
    *,
    email_column: str | None = None,
    max_bytes: int | None = None,
    timeout: float | None = None,
    limits: Limits | None = None,
) -> pl.DataFrame:
    """Expand ``sources`` and read them all, then concatenate (columns unioned, in order).

    Every source is read and validated before anything is returned, so one bad file
    stops the run before any write; the error names the first bad source and counts
    the others. (For big inputs use :func:`extract_sources`, which stays on disk.)
    """
    work = scratch.make_dir("extract")
    try:
        parts = extract_sources(sources, Path(work), email_column=email_column,
                                limits=_limits(limits, max_bytes, timeout))
        frames = [pl.read_parquet(p.path) for p in parts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(frames) == 1:
        return frames[0]
    combined = pl.concat(frames, how="diagonal_relaxed")
    meta = list(cols.META_COLUMNS)
    return combined.select([c for c in combined.columns if c not in cols.META_COLUMNS] + meta)


def extract_sources(
    sources: Sequence[str],
    work_dir: Path,
    *,
    email_column: str | None = None,
    limits: Limits | None = None,
) -> list[Extracted]:
    """Expand ``sources`` and extract each into ``work_dir`` (all before any is used:
    the error names the first bad source and counts the others)."""
    limits = limits or Limits.from_settings()
    work_dir.mkdir(parents=True, exist_ok=True)
    done: list[Extracted] = []
    errors: list[InputError] = []
    bad: list[str] = []
    for n, source in enumerate(expand_sources(sources)):
        try:
            done.append(
                extract_source(source, work_dir, email_column=email_column, limits=limits, name=f"source-{n:04d}")
            )
        except InputError as exc:
            errors.append(exc)
            bad.append(display_source(source))
    if errors:
        if len(errors) == 1:
            raise errors[0]
        more = ", ".join(bad[1:6]) + (", ..." if len(bad) > 6 else "")
        raise InputError(f"{errors[0]} (and {len(errors) - 1} more bad sources: {more})")
    return done


def check_sources(sources: Sequence[str], *, email_column: str | None = None,
                  limits: Limits | None = None) -> None:
    """The quick pre-flight of local sources: they exist, are within the byte limit, have
    a readable format and an email column (sniffed from their first rows only)."""
    limits = limits or Limits.from_settings()
    work = Path(scratch.make_dir("check"))
    try:
        for source in expand_sources(sources):
            if is_url(source):
                continue
            path = Path(os.path.expanduser(source))
            names, batches = _batches(source, path, work, hint_name=path.name, content_type=None,
                                      limits=limits, warnings=[], sniff=True)
            sample, _ = _sample(batches, names)
            cols.find_columns(source, sample, email_column)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def extract_source(
    source: str,
    work_dir: Path,
    *,
    email_column: str | None = None,
    limits: Limits,
    name: str = "source",
) -> Extracted:
    """Read one source into ``work_dir/<name>.parquet`` (module doc); the download and
    the cleaned text are removed once it is written."""
    import pyarrow.parquet as pq

    work_dir.mkdir(parents=True, exist_ok=True)
    scratch_dir = Path(scratch.make_dir("source", parent=work_dir))
    out_path = work_dir / f"{name}.parquet"
    warnings: list[str] = []
    try:
        if is_url(source):
            path, content_type = download(source, scratch_dir, limits)
            hint_name = urlsplit(source).path
        else:
            path, content_type, hint_name = Path(os.path.expanduser(source)), None, Path(source).name
        names, batches = _batches(source, path, scratch_dir, hint_name=hint_name,
                                  content_type=content_type, limits=limits, warnings=warnings)
        sample, batches = _sample(batches, names)
        chosen = cols.find_columns(source, sample, email_column)
        log.info("%s: email column %r (by %s), record id column %r",
                 display_source(source), chosen.email, chosen.how, chosen.record_id)
        n_rows = 0
        writer: pq.ParquetWriter | None = None
        schema = None
        try:
            for raw, rows in batches:
                finished = cols.finish_batch(source, raw, chosen, rows)
                n_rows += finished.height
                if problem := limits.rows_problem(n_rows):
                    raise fail(source, problem)
                table = finished.to_arrow()
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(out_path, schema)
                writer.write_table(table.cast(schema))
            if writer is None:  # no rows: still the columns
                empty = cols.finish_batch(
                    source, pl.DataFrame(schema={n: pl.String for n in names}), chosen,
                    pl.Series([], dtype=pl.Int64),
                )
                empty.write_parquet(out_path)
        finally:
            if writer is not None:
                writer.close()
        return Extracted(display_source(source), out_path, n_rows, names, warnings)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _sample(
    batches: Iterator[tuple[pl.DataFrame, pl.Series]], names: list[str]
) -> tuple[pl.DataFrame, Iterator[tuple[pl.DataFrame, pl.Series]]]:
    """The first non-blank rows (for column detection) and the batches, none lost."""
    taken: list[tuple[pl.DataFrame, pl.Series]] = []
    seen = 0
    for raw, rows in batches:
        taken.append((raw, rows))
        seen += raw.height
        if seen >= 2000:
            break
    frames = [raw for raw, _ in taken]
    if frames:
        sample = pl.concat(frames, how="vertical_relaxed")
        blank = pl.all_horizontal(
            [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in sample.columns]
        )
        sample = sample.filter(~blank).head(2000)
    else:
        sample = pl.DataFrame(schema={n: pl.String for n in names})

    def chained() -> Iterator[tuple[pl.DataFrame, pl.Series]]:
        yield from taken
        yield from batches

    return sample, chained()


def _batches(
    source: str,
    path: Path,
    scratch_dir: Path,
    *,
    hint_name: str,
    content_type: str | None,
    limits: Limits,
    warnings: list[str],
    sniff: bool = False,
) -> formats.Batches:
    """Sniff the format of ``path`` and return its reader's batches (``sniff``: of a
    delimited text, only the first part is prepared: enough for the columns)."""
    try:
        if path.is_dir():
            raise fail(source, "is a directory")
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(max(encodings.SNIFF_BYTES, MAX_FIRST_LINE + 1))
    except FileNotFoundError:
        raise fail(source, "no such file") from None
    except PermissionError:
        raise fail(source, "permission denied") from None
    except IsADirectoryError:
        raise fail(source, "is a directory") from None
    if problem := limits.bytes_problem(size):
        raise fail(source, f"{size:,} bytes is {problem}")
    if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise fail(source, "empty file")

    ext = Path(hint_name).suffix.lower().lstrip(".")
    ctype = (content_type or "").split(";")[0].strip().lower()
    charset = encodings.charset_from_content_type(content_type)

    if head.startswith(b"PAR1"):
        return formats.parquet_batches(source, path, limits)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        formats.check_zip(source, path, ext, limits)
        return formats.excel_batches(source, path, "XLSX", limits)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: legacy .xls
        return formats.excel_batches(source, path, "XLS", limits)
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            raise fail(source, f"looks binary ({kind}), not a {formats.FORMATS} export")

    # A BOM or a UTF-16 NUL pattern is evidence; an HTTP charset is only a hint, used for
    # the lines that are not UTF-8 (servers often declare ISO-8859-1 for UTF-8 files).
    encoding = encodings.bom_encoding(head) or encodings.nul_pattern_encoding(head)
    if encoding is None and b"\x00" in head[: encodings.SNIFF_BYTES]:
        raise fail(source, f"looks binary, not a {formats.FORMATS} export")

    first = encodings.first_text_char(head, encoding)
    if first in ("[", "{"):
        ndjson_hint = ext in ("ndjson", "jsonl") or "ndjson" in ctype
        if encoding in (None, "utf-8", "utf-8-sig") and _is_utf8_head(head):
            return formats.json_stream_batches(source, path)
        if size > formats.MAX_JSON_DOCUMENT:
            raise fail(
                source,
                f"a {encoding or '8-bit'} JSON document larger than {formats.MAX_JSON_DOCUMENT // 2**20} MB; "
                "export it as UTF-8, NDJSON or CSV",
            )
        text = encodings.decode_text(source, path.read_bytes(), encoding, hint=charset)
        return formats.json_batches(source, path, text, ndjson_hint=ndjson_hint)
    if ext in ("parquet", "pq") or "parquet" in ctype:
        raise fail(source, "corrupt Parquet file (no PAR1 header)")

    # Delimited text. Refuse a huge first line before reading the rest.
    window = head[: MAX_FIRST_LINE + 2]  # +2: a UTF-16 line break is two bytes
    if b"\n" not in window and b"\r" not in window and size > MAX_FIRST_LINE:
        raise fail(
            source,
            f"first line longer than {MAX_FIRST_LINE // (1024 * 1024)} MB "
            f"(no line break), not a {formats.FORMATS} export",
        )
    if encoding is None and not _looks_like_text(head):
        raise fail(source, f"looks binary, not a {formats.FORMATS} export")
    clean_dir = scratch_dir / "clean"
    clean_dir.mkdir(exist_ok=True)
    clean = encodings.to_clean_utf8(source, path, clean_dir, encoding=encoding, hint=charset,
                                    limit=encodings.PART_BYTES if sniff else None)
    if clean.encoding.startswith("utf-8+"):
        log.info("%s: lines that are not UTF-8 read as %s", display_source(source), clean.encoding[6:])
    if warning := clean.warning(display_source(source)):
        log.warning("%s", warning)
        warnings.append(warning)
    return formats.delimited_batches(source, clean.parts, tab_hint=ext == "tsv" or "tab-separated" in ctype)


def _is_utf8_head(head: bytes) -> bool:
    try:
        head[: encodings.SNIFF_BYTES].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > encodings.SNIFF_BYTES - 4  # a character cut at the end
    return True


def _looks_like_text(head: bytes) -> bool:
    """Noise (random bytes with no encoding) is refused before the streaming pass:
    the sample must decode as UTF-8 or as something charset-normalizer recognises."""
    sample = head[: encodings.SNIFF_BYTES]
    try:
        sample.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        if exc.start > len(sample) - 4:
            return True  # a character cut at the end of the sample
    return encodings.detect_encoding(sample) is not None
