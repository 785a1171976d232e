"""Normalize and deduplicate the email cells of extracted rows (polars expressions only).

Columns added by :func:`normalize`:

================  ==========================================================================
``__ms_email``    the cleaned address: local part kept as written, domain lower-cased
``__ms_key``      ``__ms_email`` fully lower-cased: the identity for dedupe and the warehouse
``__ms_domain``   the domain part of ``__ms_key`` (after the last ``@``), or null
================  ==========================================================================

Normalization only cleans what CRM exports wrap around an address; it does not judge
syntax (the engine does). A value without ``@`` is kept: it is a row whose email is bad.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from pipeline.settings import DEFAULTS
from tasks.extract import EMAIL_RAW, RECORD_ID, ROW, SOURCE

__all__ = [
    "DOMAIN",
    "EMAIL",
    "KEY",
    "batches_by_domain",
    "count_without_email",
    "dedupe",
    "normalize",
    "normalize_files",
]

EMAIL = "__ms_email"
KEY = "__ms_key"
DOMAIN = "__ms_domain"

# Invisible characters pasted along with addresses: zero-width space/joiners, word
# joiner, BOM, soft hyphen. Removed anywhere in the value.
_INVISIBLE = "\u200b-\u200d\u2060\ufeff\u00ad"
# Step 1: invisible characters anywhere; whitespace (Unicode \s, so NBSP too) and list
# punctuation ``,`` ``;`` at the edges.
_EDGES = rf"[{_INVISIBLE}]|^[\s,;{_INVISIBLE}]+|[\s,;{_INVISIBLE}]+$"
# Step 2, one pass, the first that matches of:
#   "Jane Doe <jane@x.com>"          RFC 5322 name-addr: the angle-addr holding an '@'
#   "mailto:jane@x.com?subject=Hi"  RFC 6068: drop the scheme and the header fields
#   "'jane@x.com'"                  surrounding quotes (a quoted local part is kept)
#   "jane@x.com (Jane Doe)"         a trailing RFC 5322 comment
_QUOTES = "\"'\u201c\u201d\u2018\u2019"
_UNWRAP = (
    r"^(?:[^<>]*<\s*(?i:mailto:)?\s*([^<>]*@[^<>]*?)\s*>.*"
    r"|(?i:mailto:)\s*([^?]*)(?:\?.*)?"
    rf"|[{_QUOTES}]([^{_QUOTES}]*)[{_QUOTES}]"
    r"|(.*?)\s*\([^()]*\))$"
)
_UNWRAPPED = "${1}${2}${3}${4}"
# Step 3: the edges again, also a sentence's final '.', a stray ':' or half an angle bracket.
_EDGES_AFTER = r"^[\s,;:<]+|[\s,;:.>]+$"
# A value none of the steps would change: printable ASCII without the characters they act
# on, a lower-case domain ending in a letter or digit. Most cells of a real list are so.
_ALREADY_CLEAN = r"^[A-Za-z0-9!#$%&*+/=?^_`{|}~.'-]+@[a-z0-9.-]*[a-z0-9]$"
_NON_ASCII = r"[^\x00-\x7f]"


def normalize(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``__ms_email``, ``__ms_key`` and ``__ms_domain`` from ``__ms_email_raw``.

    Steps, in order: remove invisible characters; trim whitespace (incl. NBSP) and
    ``,`` ``;`` at the edges; take the ``<...>`` part of ``Name <addr>``, or drop a
    ``mailto:`` prefix with its ``?subject=...``, or unwrap surrounding quotes, or drop
    a trailing ``(comment)``; trim again (also a final ``.``); Unicode NFC; lower-case
    the domain, the part after the last ``@``; empty -> null.

    Only the cells that need it go through the steps (most cells are already clean);
    everything is polars expressions and Series operations, no per-row Python.
    """
    raw = df.get_column(EMAIL_RAW).cast(pl.String)
    dirty = (~raw.str.contains(_ALREADY_CLEAN)).fill_null(False)
    email = raw
    if dirty.any():
        at = dirty.arg_true()
        email = raw.scatter(at, _clean(raw.gather(at)))
    key = email.str.to_lowercase().alias(KEY)
    domain = key.str.extract(r"@([^@]*)$", 1)
    domain = pl.select(pl.when(domain.str.len_bytes() > 0).then(domain)).to_series()
    key, domain = _a_label_domains(key, domain)
    return df.with_columns(email.alias(EMAIL), key.alias(KEY), domain.alias(DOMAIN))


def _a_label_domains(key: pl.Series, domain: pl.Series) -> tuple[pl.Series, pl.Series]:
    """IDNA-encode internationalized domains in the key (``bücher.de`` -> ``xn--bcher-kva.de``),
    as the engine stores them; once per distinct domain, not per row."""
    unicode_domains = domain.filter(domain.str.contains(_NON_ASCII).fill_null(False)).unique()
    if unicode_domains.len() == 0:
        return key, domain
    mapping = {d: _a_label(d) for d in unicode_domains.to_list()}
    domain = domain.replace(mapping)
    local = key.str.replace(r"@[^@]*$", "")
    key = pl.select(
        pl.when(domain.is_not_null()).then(pl.concat_str([local, pl.lit("@"), domain])).otherwise(key)
    ).to_series()
    return key, domain


def _a_label(domain: str) -> str:
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain  # not a valid IDN: the engine will say invalid/syntax


def _clean(values: pl.Series) -> pl.Series:
    """The full normalization of some cells (a Series of strings)."""
    s = values.str.replace_all(_EDGES, "").str.replace(_UNWRAP, _UNWRAPPED)
    s = s.str.replace_all(_EDGES_AFTER, "")
    non_ascii = s.str.contains(_NON_ASCII).fill_null(False)
    if non_ascii.any():
        at = non_ascii.arg_true()
        s = s.scatter(at, s.gather(at).str.normalize("NFC"))
    domain = s.str.extract(r"@([^@]*)$", 1).str.to_lowercase()  # null when there is no '@'
    local = s.str.replace(r"@[^@]*$", "")
    frame = pl.DataFrame({"s": s, "local": local, "domain": domain})
    email = (
        pl.when(pl.col("domain").is_not_null())
        .then(pl.concat_str([pl.col("local"), pl.lit("@"), pl.col("domain")]))
        .otherwise(pl.col("s"))
    )
    return frame.select(pl.when(email.str.len_bytes() > 0).then(email).alias(EMAIL)).to_series()


def dedupe(df: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per non-null ``__ms_key``, sorted by domain then email.

    Columns: ``email`` (the key), ``domain``, ``n_rows`` (source rows carrying it),
    ``first_source`` and ``first_row`` (where it first appears, in input order).
    A LazyFrame (e.g. ``pl.scan_parquet`` of normalized rows) is aggregated by polars'
    streaming engine: memory grows with the unique addresses, not with the rows.
    """
    if isinstance(df, pl.DataFrame) and KEY not in df.columns:
        df = normalize(df)
    seq = "__ms_seq"
    rows = df.lazy().select(KEY, DOMAIN, SOURCE, ROW).with_row_index(seq)
    keys = (
        rows.select(KEY, DOMAIN, seq)
        .filter(pl.col(KEY).is_not_null())
        .group_by(KEY)
        .agg(
            pl.col(DOMAIN).first().alias("domain"),
            pl.len().cast(pl.Int64).alias("n_rows"),
            pl.col(seq).min(),  # the first row carrying it, in input order
        )
        .collect(engine="streaming")
    )
    firsts = (
        rows.select(seq, SOURCE, ROW)
        .filter(pl.col(seq).is_in(keys.get_column(seq).implode()))
        .collect(engine="streaming")
    )
    return (
        keys.join(firsts, on=seq, how="left")
        .rename({KEY: "email", SOURCE: "first_source", ROW: "first_row"})
        .sort(["domain", "email"], nulls_last=True)
        .select("email", "domain", "n_rows", "first_source", "first_row")
    )


def normalize_files(parts: Sequence[str | Path], out: str | Path, *, batch_rows: int = 100_000) -> int:
    """Normalize extracted Parquet files (one per source, columns may differ) into one
    Parquet file ``out``, batch by batch: original columns unioned in order of
    appearance, then the ``__ms_*`` columns. Returns the number of rows written."""
    import pyarrow.parquet as pq

    files = [pq.ParquetFile(p) for p in parts]
    names: dict[str, None] = {}
    for f in files:
        names.update(dict.fromkeys(n for n in f.schema_arrow.names if not n.startswith("__ms_")))
    order = list(names)
    writer: pq.ParquetWriter | None = None
    total = 0
    try:
        for path, f in zip(parts, files, strict=True):
            # polars slices of a scan read only the row groups they need (pyarrow's
            # iter_batches held 2-3 times the memory for the same batches)
            scan = pl.scan_parquet(path)
            for offset in range(0, f.metadata.num_rows, batch_rows):
                frame = scan.slice(offset, batch_rows).collect()
                missing = [n for n in order if n not in frame.columns]
                if missing:
                    frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(n) for n in missing)
                meta = [c for c in frame.columns if c.startswith("__ms_")]
                frame = normalize(frame.select(order + meta))
                table = frame.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(str(out), table.schema)
                writer.write_table(table.cast(writer.schema))
                total += frame.height
        if writer is None:  # no rows at all
            empty = pl.DataFrame(schema={**{n: pl.String for n in order}, SOURCE: pl.String,
                                         ROW: pl.Int64, RECORD_ID: pl.String, EMAIL_RAW: pl.String})
            normalize(empty).write_parquet(out)
    finally:
        if writer is not None:
            writer.close()
    return total


def count_without_email(df: pl.DataFrame | pl.LazyFrame) -> int:
    """Rows whose email cell is missing or blank (after normalization)."""
    if isinstance(df, pl.LazyFrame):
        return int(df.select(pl.col(KEY).null_count()).collect(engine="streaming").item())
    if KEY not in df.columns:
        df = normalize(df)
    return int(df.get_column(KEY).null_count())


def batches_by_domain(unique: pl.DataFrame, batch_size: int = DEFAULTS.batch_size) -> list[list[str]]:
    """Pack the addresses of :func:`dedupe` into batches of at most ``batch_size``.

    A domain with ``n`` addresses lands in exactly ``ceil(n / batch_size)`` batches (so
    one SMTP connection per batch and domain is the minimum): full batches of a large
    domain first, then its remainder and the small domains are packed together,
    best-fit decreasing. Within a batch, addresses are grouped by domain, in the order of
    ``unique`` (which :func:`dedupe` sorts); an unsorted frame is grouped first. Every
    row of ``unique`` appears exactly once. Addresses without a domain are packed as one
    more "domain".
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if unique.height == 0:
        return []
    emails, domains = unique.get_column("email"), unique.get_column("domain")
    runs = domains.rle()
    if runs.len() != domains.n_unique():  # a domain in several places: group them (stable)
        grouped = unique.select("email", "domain").sort(
            "domain", nulls_last=True, maintain_order=True
        )
        emails, domains = grouped.get_column("email"), grouped.get_column("domain")
        runs = domains.rle()
    all_emails: list[str] = emails.to_list()
    batches: list[list[str]] = []
    pieces: list[tuple[str | None, list[str]]] = []  # (domain, < batch_size addresses)
    start = 0
    for length, domain in runs.struct.unnest().iter_rows():
        group = all_emails[start : start + length]
        start += length
        full = length - length % batch_size
        batches.extend(group[i : i + batch_size] for i in range(0, full, batch_size))
        if full < length:
            pieces.append((domain, group[full:]))
    batches.extend(_best_fit_decreasing(pieces, batch_size))
    return batches


def _best_fit_decreasing(
    pieces: Sequence[tuple[str | None, list[str]]], capacity: int
) -> list[list[str]]:
    """Bin packing: each piece goes whole into the fullest batch it fits, else a new one.
    Inside a batch the pieces are ordered by domain."""
    bins: list[list[tuple[str | None, list[str]]]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), kept sorted
    for domain, emails in sorted(pieces, key=lambda p: -len(p[1])):
        at = bisect.bisect_left(free, (len(emails), -1))
        if at < len(free):
            room, index = free.pop(at)
            bins[index].append((domain, emails))
            room -= len(emails)
        else:
            index, room = len(bins), capacity - len(emails)
            bins.append([(domain, emails)])
        if room > 0:
            bisect.insort(free, (room, index))
    return [
        [
            email
            for _, emails in sorted(b, key=lambda p: (p[0] is None, p[0] or ""))
            for email in emails
        ]
        for b in bins
    ]
