"""Read CRM exports (CSV / TSV / XLSX / JSON / NDJSON / Parquet; file, glob or URL).

Every source becomes a polars frame whose original columns are all strings (``Utf8``)
under their original header names (a repeated name gets ``_2``, ``_3``...), plus:

==================  =====================================================================
``__ms_source``     the file path or URL as given / expanded (URL credentials redacted)
``__ms_row``        1-based data row number in that source (header not counted)
``__ms_record_id``  the CRM record id of the row when a record id column exists, else null
``__ms_email_raw``  the email cell exactly as found (null when the cell is empty)
==================  =====================================================================

The format is decided by the content (magic bytes, BOMs, first character), with the file
extension or the HTTP Content-Type as a tie-breaker, so an export whose extension lies is
still read. Text encodings: UTF-8 with or without BOM, UTF-16/32 with BOM, UTF-16 without
BOM, and legacy 8-bit code pages detected with charset-normalizer (cp1252 preferred when
it fits as well as the best guess, as Windows Excel writes it). Delimiters ``, ; TAB |``
are sniffed with the :mod:`csv` module.

Anything that cannot be read raises :class:`~mailsift.errors.InputError` with one line
that starts with the source name: no library exception escapes.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import logging
import os
import re
import tempfile
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import polars as pl

from mailsift.errors import InputError

__all__ = [
    "EMAIL_RAW",
    "MAX_FIRST_LINE",
    "META_COLUMNS",
    "RECORD_ID",
    "ROW",
    "SOURCE",
    "display_source",
    "expand_sources",
    "read_source",
    "read_sources",
]

log = logging.getLogger(__name__)

SOURCE = "__ms_source"
ROW = "__ms_row"
RECORD_ID = "__ms_record_id"
EMAIL_RAW = "__ms_email_raw"
META_COLUMNS: tuple[str, ...] = (SOURCE, ROW, RECORD_ID, EMAIL_RAW)

#: A CSV/TSV whose first line is longer than this is refused before it is parsed.
MAX_FIRST_LINE = 1024 * 1024

_FORMATS = "CSV/TSV/XLSX/JSON/Parquet"
_SNIFF_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
_CONTENT_SAMPLE_ROWS = 2000
_DOWNLOAD_CHUNK = 256 * 1024

# Header names, normalized (case, spaces, punctuation and accents ignored), best first.
_EMAIL_HEADERS: tuple[str, ...] = (
    "email",
    "emailaddress",
    "emailaddr",
    "primaryemail",
    "emailprimary",
    "workemail",
    "businessemail",
    "contactemail",
    "email1",
    "mail",
    "mailaddress",
    "emailadresse",
    "mailadresse",
    "adresseemail",
    "courriel",
    "correo",
    "correoelectronico",
    "epost",
    "personalemail",
    "emails",
    "email2",
    "secondaryemail",
    "otheremail",
)
_RECORD_ID_HEADERS: tuple[str, ...] = (
    "recordid",
    "contactid",
    "hubspotid",
    "hsobjectid",
    "salesforceid",
    "sfid",
    "leadid",
    "customerid",
    "crmid",
    "personid",
    "subscriberid",
    "memberid",
    "id",
    "externalid",
    "userid",
    "vid",
)
# A cell that looks like an address: optional display name / mailto:, one '@', a dot after.
_LOOKS_LIKE_EMAIL = (
    r"(?i)^\s*(?:[^<>@]*<\s*)?(?:mailto:)?[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+\s*>?\s*$"
)
_LOOKS_LIKE_EMAIL_RE = re.compile(_LOOKS_LIKE_EMAIL)

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
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Single-byte code pages tried, in this order, when charset-normalizer's best guess is
# another single-byte page that fits no better (short files are ambiguous).
_PREFERRED_CODEPAGES = ("cp1252", "cp1250", "cp1251")


# --------------------------------------------------------------------------- sources


def _is_url(source: str) -> bool:
    return source[:8].lower().startswith(("http://", "https://"))


def display_source(source: str) -> str:
    """The source as shown in messages and stored in ``__ms_source``.

    Paths are kept as given. URLs lose secrets: a password in the userinfo and the
    values of query parameters that look like tokens or signatures become ``***``.
    """
    if not _is_url(source):
        return source
    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = parts.query
    if query:
        secret = re.compile(r"(?i)token|key|secret|sig|signature|pass|auth|credential|session")
        pairs = [
            (k, "***" if secret.search(k) else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _fail(source: str, problem: object) -> InputError:
    return InputError(f"{display_source(source)}: {_one_line(problem)}")


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Files, globs and http(s) URLs -> a list of sources to read.

    A glob expands to its matching files, sorted; ``~`` is expanded. URLs are kept as
    given. Duplicates (the same file named twice, or by a path and a glob) are dropped,
    the first mention kept. A missing file, a glob matching no file, or a directory
    raises :class:`InputError`.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [os.fspath(sources)]
    out: list[str] = []
    seen: set[str] = set()

    def add(item: str, key: str) -> None:
        if key not in seen:
            seen.add(key)
            out.append(item)

    for raw in sources:
        source = os.fspath(raw).strip()
        if not source:
            continue
        if _is_url(source):
            add(source, source)
            continue
        path = os.path.expanduser(source)
        if glob.has_magic(path):
            matches = sorted(m for m in glob.glob(path, recursive=True) if os.path.isfile(m))
            if not matches:
                raise InputError(f"{source}: no such file (the pattern matches nothing)")
            for match in matches:
                add(match, os.path.realpath(match))
        elif os.path.isdir(path):
            raise InputError(f"{source}: is a directory; give files or a glob like {source}/*.csv")
        elif os.path.isfile(path):
            add(path, os.path.realpath(path))
        else:
            raise InputError(f"{source}: no such file")
    if not out:
        raise InputError("no input: give at least one file, glob or URL")
    return out


# --------------------------------------------------------------------------- reading


def read_source(
    source: str,
    *,
    email_column: str | None = None,
    max_bytes: int | None = None,
    timeout: float = 30.0,
) -> pl.DataFrame:
    """Read one file or http(s) URL into a frame of strings plus the ``__ms_*`` columns.

    ``email_column`` names the column holding the addresses (exact header, or a unique
    case-insensitive match); by default it is found by header, then by content.
    ``max_bytes`` refuses a larger source. ``timeout`` (seconds) bounds each network step
    of a URL download. Fully blank rows are dropped (their row numbers are skipped).
    """
    source = os.fspath(source)
    if _is_url(source):
        path, content_type = _download(source, max_bytes=max_bytes, timeout=timeout)
        try:
            raw = _read_path(
                source,
                path,
                hint_name=urlsplit(source).path,
                content_type=content_type,
                max_bytes=max_bytes,
            )
        finally:
            path.unlink(missing_ok=True)
    else:
        path = Path(os.path.expanduser(source))
        raw = _read_path(source, path, hint_name=path.name, content_type=None, max_bytes=max_bytes)
    return _finish(source, raw, email_column)


def read_sources(
    sources: Sequence[str],
    *,
    email_column: str | None = None,
    max_bytes: int | None = None,
    timeout: float = 30.0,
) -> pl.DataFrame:
    """Expand ``sources`` and read them all, then concatenate (columns unioned, in order).

    Every source is read and validated before anything is returned, so one bad file
    stops the run before any write; the error names the first bad source and counts
    the others.
    """
    frames: list[pl.DataFrame] = []
    errors: list[InputError] = []
    bad: list[str] = []
    for source in expand_sources(sources):
        try:
            frames.append(
                read_source(source, email_column=email_column, max_bytes=max_bytes, timeout=timeout)
            )
        except InputError as exc:
            errors.append(exc)
            bad.append(display_source(source))
    if errors:
        if len(errors) == 1:
            raise errors[0]
        more = ", ".join(bad[1:6]) + (", ..." if len(bad) > 6 else "")
        raise InputError(f"{errors[0]} (and {len(errors) - 1} more bad sources: {more})")
    if len(frames) == 1:
        return frames[0]
    combined = pl.concat(frames, how="diagonal_relaxed")
    meta = list(META_COLUMNS)
    return combined.select([c for c in combined.columns if c not in META_COLUMNS] + meta)


def _download(url: str, *, max_bytes: int | None, timeout: float) -> tuple[Path, str | None]:
    """Stream ``url`` to a temporary file; follow redirects; non-2xx -> InputError."""
    import httpx

    suffix = "".join(Path(urlsplit(url).path).suffixes[-2:])[:20]
    fd, name = tempfile.mkstemp(prefix="mailsift-download-", suffix=suffix)
    path = Path(name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.Client(
                follow_redirects=True,
                timeout=httpx.Timeout(timeout),
                headers={"User-Agent": "mailsift", "Accept": "*/*"},
            ) as client,
            client.stream("GET", url) as response,
        ):
            if not response.is_success:
                raise _fail(url, f"HTTP {response.status_code}")
            size = 0
            for chunk in response.iter_bytes(_DOWNLOAD_CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _fail(url, f"larger than the limit of {max_bytes} bytes")
                out.write(chunk)
            content_type = response.headers.get("content-type")
        return path, content_type
    except InputError:
        path.unlink(missing_ok=True)
        raise
    except httpx.TimeoutException:
        path.unlink(missing_ok=True)
        raise _fail(url, f"download timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        path.unlink(missing_ok=True)
        raise _fail(url, f"download failed: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise _fail(url, f"download failed: {exc.strerror or exc}") from None


def _read_path(
    source: str,
    path: Path,
    *,
    hint_name: str,
    content_type: str | None,
    max_bytes: int | None,
) -> pl.DataFrame:
    """Sniff the format of ``path`` and read it into a frame of strings (no meta columns)."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise _fail(source, "is a directory")
        with path.open("rb") as fh:
            head = fh.read(max(_SNIFF_BYTES, MAX_FIRST_LINE + 1))
    except FileNotFoundError:
        raise _fail(source, "no such file") from None
    except PermissionError:
        raise _fail(source, "permission denied") from None
    except OSError as exc:
        raise _fail(source, f"cannot read: {exc.strerror or exc}") from None
    if max_bytes is not None and size > max_bytes:
        raise _fail(source, f"{size} bytes is larger than the limit of {max_bytes} bytes")
    if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise _fail(source, "empty file")

    ext = Path(hint_name).suffix.lower().lstrip(".")
    ctype = (content_type or "").split(";")[0].strip().lower()
    charset = _charset_from_content_type(content_type)

    if head.startswith(b"PAR1"):
        return _read_parquet(source, path)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _read_zip(source, path, ext)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):  # OLE2: legacy .xls
        return _read_excel(source, path, "XLS")
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            raise _fail(source, f"looks binary ({kind}), not a {_FORMATS} export")

    # A BOM or a UTF-16 NUL pattern is evidence; an HTTP charset is only a hint, used when
    # the bytes are not UTF-8 (servers often declare ISO-8859-1 for UTF-8 files).
    encoding = _bom_encoding(head) or _nul_pattern_encoding(head)
    if encoding is None and b"\x00" in head[:_SNIFF_BYTES]:
        raise _fail(source, f"looks binary, not a {_FORMATS} export")

    first = _first_text_char(head, encoding)
    if first in ("[", "{"):
        data = _read_all(source, path)
        text = _decode(source, data, encoding, hint=charset)
        return _read_json_text(
            source, text, ndjson_hint=ext in ("ndjson", "jsonl") or "ndjson" in ctype
        )
    if ext in ("parquet", "pq") or "parquet" in ctype:
        raise _fail(source, "corrupt Parquet file (no PAR1 header)")

    # Delimited text. Refuse a huge first line before reading the rest.
    _check_first_line(source, head, size)
    data = _read_all(source, path)
    if encoding in (None, "utf-8", "utf-8-sig") and _is_utf8(data):
        payload = data  # polars reads UTF-8 (with or without BOM) as is: no copy
    else:
        payload = _decode(source, data, encoding, hint=charset).encode("utf-8")
    del data
    return _read_delimited(source, payload, tab_hint=ext == "tsv" or "tab-separated" in ctype)


def _read_all(source: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _fail(source, f"cannot read: {exc.strerror or exc}") from None
    except MemoryError:
        raise _fail(source, "too large to read into memory") from None


def _charset_from_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None


def _bom_encoding(head: bytes) -> str | None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def _nul_pattern_encoding(head: bytes) -> str | None:
    """UTF-16 without BOM: ASCII text with every other byte NUL."""
    sample = head[:4096]
    if len(sample) < 8 or b"\x00" not in sample:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.9 * len(odd) and even.count(0) < 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) < 0.1 * len(odd):
        return "utf-16-be"
    return None


def _first_text_char(head: bytes, encoding: str | None) -> str | None:
    try:
        text = head[:4096].decode(encoding or "utf-8", errors="ignore")
    except LookupError:
        text = head[:4096].decode("latin-1")
    text = text.lstrip("\ufeff \t\r\n")
    return text[0] if text else None


def _check_first_line(source: str, head: bytes, size: int) -> None:
    window = head[: MAX_FIRST_LINE + 2]  # +2: a UTF-16 line break is two bytes
    if b"\n" in window or b"\r" in window:
        return
    if size > MAX_FIRST_LINE:
        raise _fail(
            source,
            f"first line longer than {MAX_FIRST_LINE // (1024 * 1024)} MB "
            f"(no line break), not a {_FORMATS} export",
        )


def _is_utf8(data: bytes) -> bool:
    """Validate in slices, so a large file is never held as text as well."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1 << 22
    try:
        for start in range(0, len(data), step):
            decoder.decode(data[start : start + step])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _decode(source: str, data: bytes, encoding: str | None, *, hint: str | None = None) -> str:
    """Bytes -> text: the encoding a BOM showed, else UTF-8, else the HTTP charset
    ``hint``, else one detected by charset-normalizer."""
    if encoding is not None:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            if encoding not in ("utf-8", "utf-8-sig"):
                raise _fail(source, f"cannot decode as {encoding}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_at = exc.start
    if hint is not None and hint not in ("utf-8", "utf-8-sig"):
        try:
            return data.decode(hint)
        except (UnicodeDecodeError, LookupError):
            pass
    detected = _detect_encoding(data, bad_at)
    if detected is None:
        raise _fail(source, f"looks binary, not a {_FORMATS} export")
    text = data.decode(detected, errors="replace")
    if "\ufffd" in text:
        log.warning("%s: some bytes are not valid %s; replaced", display_source(source), detected)
    else:
        log.info("%s: read as %s", display_source(source), detected)
    return text


def _detect_encoding(data: bytes, bad_at: int) -> str | None:
    """charset-normalizer on the start of the file plus the region of the first non-UTF-8
    byte; among equally good single-byte guesses the Windows code pages win."""
    from charset_normalizer import from_bytes

    sample = data[:_SNIFF_BYTES]
    if bad_at >= _SNIFF_BYTES:
        sample += b"\n" + data[max(0, bad_at - 4096) : bad_at + 16384]
    best = from_bytes(sample).best()
    if best is None:
        return None
    try:
        single_byte = len("é".encode(best.encoding)) == 1
    except (UnicodeEncodeError, LookupError):
        single_byte = False
    if single_byte and best.encoding not in _PREFERRED_CODEPAGES:
        for codepage in _PREFERRED_CODEPAGES:
            alt = from_bytes(sample, cp_isolation=[codepage]).best()
            if alt is not None and alt.chaos <= best.chaos + 0.01:
                return codepage
    return best.encoding


# --------------------------------------------------------------------------- delimited


def _read_delimited(source: str, payload: bytes, *, tab_hint: bool) -> pl.DataFrame:
    """Delimited text (``payload`` is UTF-8) -> frame of strings under the header's names."""
    head = payload[:_SNIFF_BYTES]
    if b"\n" not in head and b"\r" in head:
        payload = payload.replace(b"\r", b"\n")  # classic Mac line ends
        head = payload[:_SNIFF_BYTES]
    sample = head.decode("utf-8", errors="ignore").removeprefix("\ufeff")
    if not sample.strip():
        raise _fail(source, "empty file")
    control = sum(1 for ch in sample[:4096] if ch < " " and ch not in "\t\r\n\f\v")
    if control > 0.01 * min(len(sample), 4096) + 2:
        raise _fail(source, f"looks binary, not a {_FORMATS} export")
    if len(payload) > _SNIFF_BYTES and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]  # the last line may be cut

    skip = 0
    excel_hint = re.match(r"sep=(.)\r?\n", sample)  # Excel's "sep=;" first line
    if excel_hint:
        skip, sample = 1, sample[excel_hint.end() :]
    delimiter = excel_hint.group(1) if excel_hint else _sniff_delimiter(sample, tab_hint=tab_hint)
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar='"'), [])
    except csv.Error as exc:
        raise _fail(source, f"cannot parse the header: {exc}") from None
    if not any(cell.strip() for cell in header):
        raise _fail(source, "the first line (header) is empty")

    headerless = any(_LOOKS_LIKE_EMAIL_RE.match(cell) for cell in header)
    if headerless:
        names = (
            ["email"] if len(header) == 1 else [f"column_{i}" for i in range(1, len(header) + 1)]
        )
    else:
        names = _dedupe_names(header)
    separator = delimiter if len(header) > 1 else "\x1f"
    try:
        df = pl.read_csv(
            payload,
            skip_rows=skip,
            separator=separator,
            quote_char='"',
            has_header=not headerless,
            new_columns=names,
            infer_schema=False,
            truncate_ragged_lines=True,
            raise_if_empty=False,
            encoding="utf8-lossy",
        )
    except Exception as exc:  # noqa: BLE001 - polars raises several types; all mean unreadable
        raise _fail(source, f"cannot parse as CSV: {_first_line(exc)}") from None
    if df.width != len(names):  # header row parsed differently from the sniffed sample
        df = df.select(df.columns[: len(names)])
        df.columns = names[: df.width]
    return df


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
    order = [
        d for d in ([guess] if guess else []) + (["\t"] if tab_hint else []) + list(_DELIMITERS)
    ]
    best, best_score = ",", (-1.0, 0)
    for delimiter in dict.fromkeys(order):
        try:
            rows = [
                r
                for _, r in zip(range(200), csv.reader(io.StringIO(sample), delimiter=delimiter), strict=False)
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


def _dedupe_names(header: Iterable[str]) -> list[str]:
    """Original header names, empty ones named ``column_N``, repeats suffixed ``_2``..."""
    names: list[str] = []
    taken: set[str] = set(META_COLUMNS)
    for i, raw in enumerate(header, start=1):
        name = raw if raw.strip() else f"column_{i}"
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}_{n}"
        taken.add(candidate)
        names.append(candidate)
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- JSON


_RECORD_KEYS = ("data", "results", "contacts", "records", "items", "rows", "members", "leads")


def _read_json_text(source: str, text: str, *, ndjson_hint: bool) -> pl.DataFrame:
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise _fail(source, "empty file")
    records: Any
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        if not (exc.msg == "Extra data" or ndjson_hint):
            raise _fail(
                source, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        records = _parse_ndjson(source, text)
    if isinstance(records, dict):
        records = _records_in_object(source, records)
    if not isinstance(records, list):
        raise _fail(source, 'JSON holds no list of records (expected [...] or {"data": [...]})')
    if not records:
        raise _fail(source, "empty file (no records)")
    if all(isinstance(r, str) or r is None for r in records):
        return pl.DataFrame({"email": records}, schema={"email": pl.String})
    if not all(isinstance(r, dict) for r in records):
        raise _fail(source, "JSON records must be objects (one per contact)")
    flat = [_flatten(r) for r in records]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    names = _dedupe_names(columns)
    data = {name: [row.get(key) for row in flat] for name, key in zip(names, columns, strict=False)}
    return pl.DataFrame(data, schema={name: pl.String for name in names})


def _parse_ndjson(source: str, text: str) -> list[Any]:
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise _fail(
                source, f"invalid NDJSON at line {lineno} column {exc.colno}: {exc.msg}"
            ) from None
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
    raise _fail(
        source, f"JSON object has no list of records under data/results/contacts (keys: {keys})"
    )


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, str | None]:
    """Nested objects become dotted columns (``properties.email``); lists stay JSON text."""
    out: dict[str, str | None] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, prefix=f"{name}."))
        else:
            out[name] = _json_cell(value)
    return out


def _json_cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------- binary formats


def _read_zip(source: str, path: Path, ext: str) -> pl.DataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        kind = "XLSX" if ext in ("xlsx", "xlsm", "xls") else "ZIP"
        raise _fail(source, f"corrupt {kind} file ({_first_line(exc)})") from None
    if "xl/workbook.xml" in names or "xl/workbook.bin" in names:
        return _read_excel(source, path, "XLSX")
    raise _fail(
        source, f"a ZIP archive, not an XLSX workbook; unzip it and give the {_FORMATS} inside"
    )


def _read_excel(source: str, path: Path, kind: str) -> pl.DataFrame:
    """First sheet; the first row is the header; every cell as text (calamine/fastexcel)."""
    try:
        grid = pl.read_excel(
            path,
            sheet_id=1,
            engine="calamine",
            has_header=False,
            infer_schema_length=0,
            drop_empty_rows=False,
            raise_if_empty=False,
        )
    except Exception as exc:  # noqa: BLE001 - fastexcel has its own types for corrupt files
        raise _fail(source, f"corrupt or unreadable {kind} file ({_first_line(exc)})") from None
    if grid.height == 0 or grid.width == 0:
        raise _fail(source, "empty file (the first sheet has no cells)")
    grid = grid.select(pl.all().cast(pl.String))
    header = ["" if v is None else str(v) for v in grid.row(0)]
    names = _dedupe_names(header)
    body = grid.slice(1)
    body.columns = names
    return body


def _read_parquet(source: str, path: Path) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars/arrow raise several types
        raise _fail(source, f"corrupt Parquet file ({_first_line(exc)})") from None
    names = _dedupe_names(df.columns)
    df.columns = names
    try:
        columns = []
        for name, dtype in df.schema.items():
            column = df.get_column(name)
            if dtype == pl.String:
                columns.append(column)
            elif isinstance(dtype, pl.Struct):
                columns.append(column.struct.json_encode())
            elif dtype.is_nested() or dtype == pl.Object or dtype == pl.Binary:
                cells = [_json_cell(v) for v in column.to_list()]
                columns.append(pl.Series(name, cells, dtype=pl.String))
            else:
                columns.append(column.cast(pl.String, strict=False))
        return pl.DataFrame(columns)
    except Exception as exc:  # noqa: BLE001 - any conversion failure means unreadable
        raise _fail(
            source, f"cannot convert Parquet columns to text ({_first_line(exc)})"
        ) from None


# --------------------------------------------------------------------------- columns


def _norm_header(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return re.sub(r"[\W_]+", "", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def _header_rank(name: str, wanted: tuple[str, ...]) -> int | None:
    """Rank of ``name`` among ``wanted`` (full name, or the last dotted segment of a
    flattened JSON key such as ``properties.email``)."""
    ranks = []
    for candidate in {_norm_header(name), _norm_header(name.rsplit(".", 1)[-1])}:
        if candidate in wanted:
            ranks.append(wanted.index(candidate))
    return min(ranks) if ranks else None


def _email_scores(df: pl.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Share of the non-empty sampled values of each column that look like addresses."""
    if not columns or df.height == 0:
        return {c: 0.0 for c in columns}
    sample = df.head(_CONTENT_SAMPLE_ROWS)
    exprs = []
    for i, c in enumerate(columns):
        values = pl.col(c).str.strip_chars()
        filled = values.str.len_bytes().gt(0).sum()
        hits = values.str.contains(_LOOKS_LIKE_EMAIL).sum()
        exprs.append(pl.when(filled > 0).then(hits / filled).otherwise(0.0).alias(f"s{i}"))
    row = sample.select(exprs).row(0)
    return {c: float(v or 0.0) for c, v in zip(columns, row, strict=False)}


def _find_email_column(source: str, df: pl.DataFrame, requested: str | None) -> tuple[str, str]:
    columns = df.columns
    if requested is not None:
        if requested in columns:
            return requested, "given"
        folded = [c for c in columns if c.casefold() == requested.casefold()]
        if len(folded) == 1:
            return folded[0], "given"
        raise _fail(source, f"no column named {requested!r}; columns: {_list_columns(columns)}")
    ranked = sorted(
        (rank, i, c)
        for i, c in enumerate(columns)
        if (rank := _header_rank(c, _EMAIL_HEADERS)) is not None
    )
    scores = _email_scores(df, columns)
    if ranked:
        # The best-named column, unless it holds no address while another named one does
        # (an export with an empty "Email" next to a filled "E-mail Address").
        with_content = [c for _, _, c in ranked if scores[c] > 0]
        return (with_content or [ranked[0][2]])[0], "header"
    mailish = [c for c in columns if "mail" in _norm_header(c) or "courriel" in _norm_header(c)]
    for pool in (mailish, columns):
        best = max(pool, key=lambda c: scores[c], default=None)
        if best is not None and scores[best] >= 0.5:
            return best, "content"
    raise _fail(
        source, f"no email column found; columns: {_list_columns(columns)}; use --email-column"
    )


def _find_record_id_column(df: pl.DataFrame, email: str) -> str | None:
    ranked = sorted(
        (rank, i, c)
        for i, c in enumerate(df.columns)
        if c != email and (rank := _header_rank(c, _RECORD_ID_HEADERS)) is not None
    )
    return ranked[0][2] if ranked else None


def _list_columns(columns: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(_one_line(c, 40) or "''" for c in columns[:limit])
    return (
        shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")
        if columns
        else "(none)"
    )


def _finish(source: str, raw: pl.DataFrame, email_column: str | None) -> pl.DataFrame:
    """Add the ``__ms_*`` columns, number the rows, drop fully blank rows."""
    if raw.width == 0:
        raise _fail(source, "empty file (no columns)")
    email, how = _find_email_column(source, raw, email_column)
    record_id = _find_record_id_column(raw, email)
    log.info(
        "%s: email column %r (by %s), record id column %r",
        display_source(source),
        email,
        how,
        record_id,
    )

    def cleaned(name: str) -> pl.Expr:
        value = pl.col(name).str.strip_chars()
        return pl.when(value.str.len_bytes() > 0).then(value).otherwise(None)

    originals = raw.columns
    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in originals]
    )
    email_raw = pl.col(email)
    return raw.with_columns(
        pl.lit(display_source(source), dtype=pl.String).alias(SOURCE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW),
        (cleaned(record_id) if record_id else pl.lit(None, dtype=pl.String)).alias(RECORD_ID),
        pl.when(email_raw.str.strip_chars().str.len_bytes() > 0)
        .then(email_raw)
        .otherwise(None)
        .alias(EMAIL_RAW),
    ).filter(~blank)
