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

import polars as pl

from tasks.extract import EMAIL_RAW, ROW, SOURCE

__all__ = [
    "DOMAIN",
    "EMAIL",
    "KEY",
    "batches_by_domain",
    "count_without_email",
    "dedupe",
    "email_expr",
    "normalize",
]

EMAIL = "__ms_email"
KEY = "__ms_key"
DOMAIN = "__ms_domain"

# Invisible characters pasted along with addresses: zero-width space/joiners, word
# joiner, BOM, soft hyphen. Removed anywhere in the value.
_INVISIBLE = r"[\u200B-\u200D\u2060\uFEFF\u00AD]"
# Leading / trailing whitespace (Unicode, so NBSP too) and list punctuation.
_EDGES = r"^[\s,;]+|[\s,;]+$"
# After unwrapping: also a sentence's final '.', a stray ':' or half an angle bracket.
_EDGES_AFTER = r"^[\s,;:<]+|[\s,;:.>]+$"
# "Jane Doe <jane@x.com>" (RFC 5322 name-addr): the angle-addr holding an '@'.
_ANGLE_ADDR = r"<\s*([^<>]*@[^<>]*?)\s*>"
# "mailto:jane@x.com?subject=Hi" (RFC 6068): drop the scheme and the header fields.
_MAILTO = r"(?i)^mailto:\s*([^?]*)(?:\?.*)?$"
# "jane@x.com (Jane Doe)": a trailing RFC 5322 comment.
_TRAILING_COMMENT = r"\s*\([^()]*\)$"
_QUOTED = (r'^"([^"]*)"$', r"^'([^']*)'$", r"^[“”]([^“”]*)[“”]$", r"^[‘’]([^‘’]*)[‘’]$")


def email_expr(raw: pl.Expr) -> pl.Expr:
    """The cleaned address from a raw cell (string expression); empty -> null.

    Steps, in order: remove invisible characters; trim whitespace (incl. NBSP) and
    ``,`` ``;`` at the edges; take the ``<...>`` part of ``Name <addr>``; drop a
    ``mailto:`` prefix and its ``?subject=...``; drop a trailing ``(comment)``; unwrap
    surrounding quotes; trim again (also a final ``.``); Unicode NFC; lower-case the
    domain, the part after the last ``@``.
    """
    s = raw.str.replace_all(_INVISIBLE, "").str.replace_all(_EDGES, "")
    s = pl.coalesce(s.str.extract(_ANGLE_ADDR, 1), s)
    s = s.str.replace(_MAILTO, "${1}").str.replace(_TRAILING_COMMENT, "")
    s = s.str.strip_chars()
    for pattern in _QUOTED:
        s = s.str.replace(pattern, "${1}")
    s = s.str.replace_all(_EDGES_AFTER, "").str.normalize("NFC")
    local = s.str.replace(r"@[^@]*$", "")
    domain = s.str.extract(r"@([^@]*)$", 1).str.to_lowercase()
    email = (
        pl.when(s.str.contains("@", literal=True))
        .then(pl.concat_str([local, pl.lit("@"), domain]))
        .otherwise(s)
    )
    return pl.when(email.str.len_bytes() > 0).then(email).otherwise(None)


def normalize(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``__ms_email``, ``__ms_key`` and ``__ms_domain`` from ``__ms_email_raw``."""
    key = pl.col(EMAIL).str.to_lowercase()
    domain = pl.col(KEY).str.extract(r"@([^@]*)$", 1)
    return (
        df.lazy()
        .with_columns(email_expr(pl.col(EMAIL_RAW).cast(pl.String)).alias(EMAIL))
        .with_columns(key.alias(KEY))
        .with_columns(pl.when(domain.str.len_bytes() > 0).then(domain).otherwise(None).alias(DOMAIN))
        .collect()
    )


def dedupe(df: pl.DataFrame) -> pl.DataFrame:
    """One row per non-null ``__ms_key``, sorted by domain then email.

    Columns: ``email`` (the key), ``domain``, ``n_rows`` (source rows carrying it),
    ``first_source`` and ``first_row`` (where it first appears, in input order).
    """
    if KEY not in df.columns:
        df = normalize(df)
    return (
        df.lazy()
        .filter(pl.col(KEY).is_not_null())
        .with_row_index("__ms_order")
        .group_by(KEY)
        .agg(
            pl.col(DOMAIN).first().alias("domain"),
            pl.len().cast(pl.Int64).alias("n_rows"),
            pl.col(SOURCE).sort_by("__ms_order").first().alias("first_source"),
            pl.col(ROW).sort_by("__ms_order").first().alias("first_row"),
        )
        .rename({KEY: "email"})
        .sort(["domain", "email"], nulls_last=True)
        .select("email", "domain", "n_rows", "first_source", "first_row")
        .collect()
    )


def count_without_email(df: pl.DataFrame) -> int:
    """Rows whose email cell is missing or blank (after normalization)."""
    if KEY not in df.columns:
        df = normalize(df)
    return int(df.get_column(KEY).null_count())


def batches_by_domain(unique: pl.DataFrame, batch_size: int = 500) -> list[list[str]]:
    """Pack the addresses of :func:`dedupe` into batches of at most ``batch_size``.

    A domain with ``n`` addresses lands in exactly ``ceil(n / batch_size)`` batches (so
    one SMTP connection per batch and domain is the minimum): full batches of a large
    domain first, then its remainder and the small domains are packed together,
    best-fit decreasing. Within a batch, addresses are grouped by domain and sorted.
    Every address appears exactly once. Addresses without a domain are packed as one
    more "domain".
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if unique.height == 0:
        return []
    groups = (
        unique.lazy()
        .select("email", "domain")
        .unique("email", keep="first")
        .sort(["domain", "email"], nulls_last=True)
        .group_by("domain", maintain_order=True)
        .agg(pl.col("email"))
        .collect()
    )
    batches: list[list[str]] = []
    pieces: list[tuple[str | None, list[str]]] = []  # (domain, < batch_size addresses)
    for domain, emails in groups.iter_rows():
        full = len(emails) - len(emails) % batch_size
        batches.extend(emails[i : i + batch_size] for i in range(0, full, batch_size))
        if full < len(emails):
            pieces.append((domain, emails[full:]))
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
        [email for _, emails in sorted(b, key=lambda p: (p[0] is None, p[0] or "")) for email in emails]
        for b in bins
    ]
