"""Read CRM exports (CSV / TSV / XLSX / JSON / NDJSON / Parquet; file, glob or URL).

Every source becomes a table whose original columns are all strings (``Utf8``) under
their original header names (a repeated name gets ``_2``, ``_3``...), plus:

==================  =====================================================================
``__ms_source``     the file path or URL as given / expanded (URL credentials redacted)
``__ms_row``        1-based data row number in that source (header not counted)
``__ms_record_id``  the CRM record id of the row when a record id column exists, else null
``__ms_email_raw``  the email cell exactly as found (null when the cell is empty)
==================  =====================================================================

The format is decided by the content (magic bytes, BOMs, first character), with the file
extension or the HTTP Content-Type as a tie-breaker, so an export whose extension lies is
still read. Text encodings: UTF-8 with or without BOM, UTF-16/32 with BOM, UTF-16 without
BOM, and legacy 8-bit code pages (detected with charset-normalizer, cp1252 preferred when
it fits as well as the best guess), decided **per line**: a file mixing UTF-8 and cp1252
lines keeps both right, with a warning counting the fallback lines. Delimiters
``, ; TAB |`` are sniffed with the :mod:`csv` module.

Sources are streamed (memory grows with the batch size, not the file), within per-source
budgets (:class:`Limits`: ``MAILSIFT_MAX_SOURCE_BYTES``, ``MAILSIFT_MAX_SOURCE_ROWS``, the
download deadline and stall timeout); XLSX files are checked for their inflated size
before they are opened, downloads for their decoded size.

Anything that cannot be read raises :class:`~mailsift.errors.InputError` with one line
that starts with the source name: no library exception escapes.

Modules: :mod:`~tasks.extract.sources` (expanding, showing, limits, downloads),
:mod:`~tasks.extract.encodings`, :mod:`~tasks.extract.formats`,
:mod:`~tasks.extract.columns` (meta columns, email / record id detection) and
:mod:`~tasks.extract.reader` (putting them together).
"""

from tasks.extract.columns import EMAIL_RAW, META_COLUMNS, RECORD_ID, ROW, SOURCE
from tasks.extract.reader import (
    MAX_FIRST_LINE,
    Extracted,
    check_sources,
    extract_source,
    extract_sources,
    read_source,
    read_sources,
)
from tasks.extract.sources import Limits, display_source, expand_sources

__all__ = [
    "EMAIL_RAW",
    "MAX_FIRST_LINE",
    "META_COLUMNS",
    "RECORD_ID",
    "ROW",
    "SOURCE",
    "Extracted",
    "Limits",
    "check_sources",
    "display_source",
    "expand_sources",
    "extract_source",
    "extract_sources",
    "read_source",
    "read_sources",
]
