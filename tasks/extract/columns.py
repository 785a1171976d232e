"""Columns: the ``__ms_*`` meta columns, header names, and finding the email and record
id columns (by header, then by content)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

import polars as pl

from tasks.extract.sources import display_source, fail, one_line

__all__ = [
    "EMAIL_RAW",
    "META_COLUMNS",
    "RECORD_ID",
    "ROW",
    "SOURCE",
    "Columns",
    "LOOKS_LIKE_EMAIL_RE",
    "dedupe_names",
    "find_columns",
    "finish_batch",
]

SOURCE = "__ms_source"
ROW = "__ms_row"
RECORD_ID = "__ms_record_id"
EMAIL_RAW = "__ms_email_raw"
META_COLUMNS: tuple[str, ...] = (SOURCE, ROW, RECORD_ID, EMAIL_RAW)

_CONTENT_SAMPLE_ROWS = 2000

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
LOOKS_LIKE_EMAIL_RE = re.compile(_LOOKS_LIKE_EMAIL)


def dedupe_names(header: Iterable[str]) -> list[str]:
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
        raise fail(source, f"no column named {requested!r}; columns: {_list_columns(columns)}")
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
    raise fail(
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
    shown = ", ".join(one_line(c, 40) or "''" for c in columns[:limit])
    return (
        shown + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")
        if columns
        else "(none)"
    )


class Columns:
    """The email and record id columns chosen for one source, and how."""

    __slots__ = ("email", "how", "names", "record_id")

    def __init__(self, names: list[str], email: str, how: str, record_id: str | None) -> None:
        self.names, self.email, self.how, self.record_id = names, email, how, record_id


def find_columns(source: str, sample: pl.DataFrame, email_column: str | None) -> Columns:
    """Choose the columns from a sample of the source's first (non-blank) rows."""
    if sample.width == 0:
        raise fail(source, "empty file (no columns)")
    email, how = _find_email_column(source, sample, email_column)
    return Columns(sample.columns, email, how, _find_record_id_column(sample, email))


def finish_batch(source: str, raw: pl.DataFrame, columns: Columns, rows: pl.Series) -> pl.DataFrame:
    """Add the ``__ms_*`` columns to one batch (``rows``: the 1-based row numbers) and
    drop its fully blank rows."""

    def cleaned(name: str) -> pl.Expr:
        value = pl.col(name).str.strip_chars()
        return pl.when(value.str.len_bytes() > 0).then(value).otherwise(None)

    blank = pl.all_horizontal(
        [pl.col(c).is_null() | (pl.col(c).str.strip_chars() == "") for c in raw.columns]
    )
    email_raw = pl.col(columns.email)
    return raw.with_columns(
        pl.lit(display_source(source), dtype=pl.String).alias(SOURCE),
        rows.cast(pl.Int64).alias(ROW),
        (cleaned(columns.record_id) if columns.record_id else pl.lit(None, dtype=pl.String)).alias(
            RECORD_ID
        ),
        pl.when(email_raw.str.strip_chars().str.len_bytes() > 0)
        .then(email_raw)
        .otherwise(None)
        .alias(EMAIL_RAW),
    ).filter(~blank)
