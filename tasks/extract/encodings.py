"""Text encodings: sniffing, and the streaming pass that turns a delimited text source
into clean UTF-8 for polars.

:func:`to_clean_utf8` reads a source in chunks of whole lines and writes UTF-8:

* a BOM (UTF-8/16/32) or a UTF-16 NUL pattern decides the encoding of the whole file;
* otherwise each chunk is tried as UTF-8 (the fast path, no copy of the text); a chunk
  that is not is decoded **line by line**: UTF-8 first, the 8-bit fallback (the HTTP
  charset, else charset-normalizer's guess, Windows code pages preferred) only for the
  lines that are not UTF-8, and those lines are counted for a warning (a CRM export
  appended to by two tools mixes both);
* runs of blank lines outside quoted fields are replaced by one marker line carrying
  their count (:data:`BLANK_MARK`), so a file of 300 MB of line breaks becomes a few
  bytes for the parser while the row numbers of the lines after them stay right;
* blank lines before the header are dropped, classic Mac line ends become ``\\n``.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tasks.extract.sources import fail

__all__ = [
    "BLANK_MARK",
    "MAX_LINE",
    "PART_BYTES",
    "Decoded",
    "bom_encoding",
    "charset_from_content_type",
    "decode_text",
    "first_text_char",
    "nul_pattern_encoding",
    "to_clean_utf8",
]

log = logging.getLogger(__name__)

#: First cell of a line standing for ``n`` blank lines: ``\x1emailsift-blank:<n>``.
BLANK_MARK = "\x1emailsift-blank:"
#: A line (outside quoted fields, counted between line breaks) longer than this is refused.
MAX_LINE = 64 * 1024 * 1024
#: Size of the clean text parts polars parses one at a time.
PART_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
_CHUNK = 4 * 1024 * 1024
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Single-byte code pages tried, in this order, when charset-normalizer's best guess is
# another single-byte page that fits no better (short samples are ambiguous).
_PREFERRED_CODEPAGES = ("cp1252", "cp1250", "cp1251")
_BLANK_RUN = re.compile(rb"(?m)^[ \t\r\n]*\n")  # one class, no per-line group: linear, no backtracking stack
_FORMATS = "CSV/TSV/XLSX/JSON/Parquet"


def charset_from_content_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", content_type, re.IGNORECASE)
    if not match:
        return None
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return None


def bom_encoding(head: bytes) -> str | None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    return None


def nul_pattern_encoding(head: bytes) -> str | None:
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


def first_text_char(head: bytes, encoding: str | None) -> str | None:
    try:
        text = head[:4096].decode(encoding or "utf-8", errors="ignore")
    except LookupError:
        text = head[:4096].decode("latin-1")
    text = text.lstrip("\ufeff \t\r\n")
    return text[0] if text else None


def detect_encoding(sample: bytes) -> str | None:
    """charset-normalizer's best guess for ``sample``; among equally good single-byte
    guesses the Windows code pages win (Excel on Windows writes cp1252)."""
    from charset_normalizer import from_bytes

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


def decode_text(source: str, data: bytes, encoding: str | None, *, hint: str | None = None) -> str:
    """Bytes of a small document (JSON) -> text: the BOM's encoding, else UTF-8, else the
    HTTP charset ``hint``, else a detected one."""
    if encoding is not None:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            if encoding not in ("utf-8", "utf-8-sig"):
                raise fail(source, f"cannot decode as {encoding}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_at = exc.start
    if hint is not None and hint not in ("utf-8", "utf-8-sig"):
        try:
            return data.decode(hint)
        except (UnicodeDecodeError, LookupError):
            pass
    detected = detect_encoding(data[:SNIFF_BYTES] + b"\n" + data[max(0, bad_at - 4096) : bad_at + 16384])
    if detected is None:
        raise fail(source, f"looks binary, not a {_FORMATS} export")
    return data.decode(detected, errors="replace")


@dataclass
class Decoded:
    """What :func:`to_clean_utf8` wrote and saw."""

    parts: list[Path]  #: the clean text, in order; records never span two parts
    encoding: str  #: "utf-8", the BOM's, or "utf-8+<fallback>" for per-line fallback
    fallback_lines: int = 0  #: lines read with the 8-bit fallback
    has_utf8_non_ascii: bool = False  #: some line is non-ASCII UTF-8
    blank_lines: int = 0  #: blank lines outside quotes, collapsed

    def warning(self, shown: str) -> str | None:
        if self.fallback_lines and self.has_utf8_non_ascii:
            fallback = self.encoding.split("+", 1)[-1]
            return (
                f"{shown}: mixed encodings: {self.fallback_lines:,} lines are not UTF-8 and were "
                f"read as {fallback}; the other lines as UTF-8"
            )
        return None


class _Writer:
    """Collapses blank-line runs outside quoted fields while writing UTF-8 lines, into
    part files of about :data:`PART_BYTES` each, cut only between records (outside
    quotes), so each part parses on its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.parts: list[Path] = []
        self.out: BinaryIO | None = None
        self.size = 0
        self.in_quotes = False
        self.started = False  # a non-blank line was written (the header)
        self.blank_lines = 0

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        if self.out is None or (self.size >= PART_BYTES and not self.in_quotes):
            self.close()
            path = self.directory / f"part-{len(self.parts):05d}.csv"
            self.out = path.open("wb")
            self.parts.append(path)
            self.size = 0
        self.out.write(data)
        self.size += len(data)

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None

    def write(self, data: bytes) -> None:
        """``data``: whole lines of UTF-8."""
        pos = 0
        pieces: list[bytes] = []
        for match in _BLANK_RUN.finditer(data):
            start, end = match.span()
            before = data[pos:start]
            if before.count(b'"') % 2:
                self.in_quotes = not self.in_quotes
            pieces.append(before)
            if before:
                self.started = True
            if self.in_quotes:
                pieces.append(data[start:end])
            else:
                n = data.count(b"\n", start, end)
                self.blank_lines += n
                if self.started:
                    pieces.append(f"{BLANK_MARK}{n}\n".encode())
            pos = end
        rest = data[pos:]
        if rest.count(b'"') % 2:
            self.in_quotes = not self.in_quotes
        if rest:
            self.started = True
        pieces.append(rest)
        self._emit(b"".join(pieces))


@contextlib.contextmanager
def _closing(writer: _Writer) -> Iterator[None]:
    try:
        yield
    finally:
        writer.close()


def to_clean_utf8(
    source: str,
    path: Path,
    directory: Path,
    *,
    encoding: str | None,
    hint: str | None,
    limit: int | None = None,
) -> Decoded:
    """Stream ``path`` (a delimited text source) into part files in ``directory`` as clean
    UTF-8 (module doc). ``limit``: read only about that many bytes (a sniff)."""
    result = Decoded([], encoding or "utf-8")
    fallback: str | None = None
    mac: bool | None = None
    decoder = codecs.getincrementaldecoder(encoding)("strict") if encoding and encoding not in (
        "utf-8", "utf-8-sig") else None
    writer = _Writer(directory)
    with path.open("rb") as src, _closing(writer):
        carry = b""
        first = True
        while True:
            # a sniff stops between records: past the limit, outside a quoted field
            early = limit is not None and src.tell() >= limit and not writer.in_quotes
            block = b"" if early else src.read(_CHUNK)
            final = not block
            if decoder is not None:
                try:
                    text = decoder.decode(block, final=final)
                except UnicodeDecodeError as exc:
                    raise fail(source, f"cannot decode as {encoding}: {exc.reason} at byte {exc.start}") from None
                block = text.encode("utf-8")
            if first:
                block = block.removeprefix(b"\xef\xbb\xbf")
                first = False
            data = carry + block
            if mac is None and (len(data) >= SNIFF_BYTES or final):
                mac = b"\n" not in data[:SNIFF_BYTES] and b"\r" in data[:SNIFF_BYTES]
            if mac:
                data = data.replace(b"\r", b"\n")
            if final:
                lines, carry = (b"" if early else data), b""  # early: drop the cut line
                if lines and not lines.endswith(b"\n"):
                    lines += b"\n"
            else:
                cut = data.rfind(b"\n") + 1
                if cut == 0 and mac is None:
                    carry = data
                    continue
                lines, carry = data[:cut], data[cut:]
                if len(carry) > MAX_LINE:
                    raise fail(source, f"a line longer than {MAX_LINE // 2**20} MB, not a {_FORMATS} export")
            if lines:
                if decoder is None:
                    lines, fallback = _utf8_lines(source, lines, result, fallback, hint)
                writer.write(lines)
            if final:
                break
    result.parts = writer.parts
    result.blank_lines = writer.blank_lines
    if fallback:
        result.encoding = f"utf-8+{fallback}"
    return result


def _utf8_lines(
    source: str, lines: bytes, result: Decoded, fallback: str | None, hint: str | None
) -> tuple[bytes, str | None]:
    """UTF-8 bytes for whole ``lines``: as they are when valid, else line by line."""
    if lines.isascii():
        return lines, fallback
    try:
        lines.decode("utf-8")
        result.has_utf8_non_ascii = True
        return lines, fallback
    except UnicodeDecodeError:
        pass
    split = lines.split(b"\n")
    bad = []
    for line in split:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(line)
    if fallback is None:
        if hint is not None and hint not in ("utf-8", "utf-8-sig"):
            fallback = hint
        else:
            fallback = detect_encoding(b"\n".join(bad)[:SNIFF_BYTES]) or "cp1252"
            if fallback.replace("_", "-") in ("utf-8", "utf-8-sig", "ascii"):
                fallback = "cp1252"
        log.info("%s: lines that are not UTF-8 are read as %s", source, fallback)
    out = []
    for line in split:
        try:
            line.decode("utf-8")
            out.append(line)
            if not line.isascii():
                result.has_utf8_non_ascii = True
        except UnicodeDecodeError:
            result.fallback_lines += 1
            out.append(line.decode(fallback, errors="replace").encode("utf-8"))
    return b"\n".join(out), fallback
