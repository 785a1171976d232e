"""``Warehouse``: the thin API the flows use over one DuckDB file.

One writer: DuckDB lets one process hold a database file read-write. Only the flow
process writes (never concurrent task workers in other processes); inside that process
one :class:`Warehouse` may be shared by threads, as every call holds its lock. Readers in
other processes (the CI quality gate, a notebook) open it with ``read_only=True`` while no
flow is writing.

Bulk data goes through Arrow: a polars frame is registered with DuckDB and moved with one
``INSERT ... SELECT`` (2-4 s per million verification rows on a busy 2-core machine,
see benchmarks/bench_warehouse.py), never ``executemany``. Every
result is fetched completely (``fetchall``, ``.pl()``, ``.df()``): in DuckDB 2.0 a partly
read result blocks its connection, and results have no ``fetchone()``.

Times: the connection's ``TimeZone`` is UTC, so every ``TIMESTAMPTZ`` comes back as a UTC
``datetime`` / ``Datetime("us", "UTC")``. A naive ``datetime`` given to any method is
taken as UTC (as :meth:`VerificationResult.from_dict` does); ISO 8601 text is accepted
too.

Errors: every failure of the database itself surfaces as
:class:`~mailsift.errors.WarehouseError` naming the operation and the file; a frame with
missing or mistyped columns, or a bad argument, is a ``ValueError``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import duckdb
import polars as pl

from mailsift.errors import WarehouseError
from mailsift.settings import is_database_url
from pipeline.settings import DEFAULTS

from .frames import (
    HISTORY_COLUMNS,
    HISTORY_SCHEMA,
    RESULT_COLUMNS,
    coerce_contact_rows,
    coerce_results,
)
from .migrations import check_schema, migrate
from .redaction import redact_url
from .schema import QUALITY_SCOPES, RUN_COUNT_COLUMNS, RUN_STATUSES, newest_verifications_sql

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_LOCK_TIMEOUT", "Warehouse"]

#: Seconds :meth:`Warehouse.open` waits for another process's lock to go away.
DEFAULT_LOCK_TIMEOUT = 5.0
_LOCK_POLL = 0.05

_HISTORY_SELECT = ", ".join(
    "CAST(verification_id AS VARCHAR) AS verification_id" if name == "verification_id" else name
    for name in HISTORY_COLUMNS
)
_RESULT_LIST = ", ".join(RESULT_COLUMNS)
_FINISHED_STATUSES = tuple(s for s in RUN_STATUSES if s != "running")
_WEBHOOK_COLUMNS = (
    "delivery_id, run_id, url, batch_index, n_results, attempt, attempted_at, "
    "status_code, error, is_delivered, payload"
)


def _utc(value: datetime | str | None) -> datetime:
    """UTC ``datetime`` from a datetime or ISO 8601 text; ``None`` is now; naive is UTC."""
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from exc
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _json(value: Any) -> str | None:
    """JSON text for a JSON column: a ``str`` is checked and kept, anything else dumped."""
    if value is None:
        return None
    if isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not JSON text: {exc}") from exc
        return text
    return json.dumps(value, default=str, ensure_ascii=False)


def _email_frame(emails: Sequence[str] | pl.Series) -> pl.DataFrame:
    if isinstance(emails, pl.Series):
        series = emails.cast(pl.String).rename("email")
    else:
        series = pl.Series("email", list(emails), dtype=pl.String)
    return series.drop_nulls().unique().to_frame()


def _never_verified_sql(include: bool) -> str:
    """The ``UNION ALL`` branch of :meth:`Warehouse.stale_emails` that adds the contacts
    with no verification at all, as ``(email, NULL)`` rows (SQL both DuckDB and
    PostgreSQL take); empty when not ``include``."""
    if not include:
        return ""
    return """
            UNION ALL
            SELECT c.email, NULL FROM contacts AS c
            WHERE NOT EXISTS (SELECT 1 FROM verifications AS v WHERE v.email = c.email)
            """


def _stale_picks(statuses: Sequence[str], domains: Sequence[str], sources: Sequence[str],
                emails: Sequence[str]) -> dict[str, list[str]]:
    """The narrowing lists of :meth:`Warehouse.stale_emails`, normalized as they are
    compared: statuses, domains (no trailing dot) and emails lower-cased, sources trimmed."""
    return {
        "statuses": [v.strip().lower() for v in statuses],
        "domains": [v.strip().lower().rstrip(".") for v in domains],
        "sources": [v.strip() for v in sources],
        "emails": [v.strip().lower() for v in emails],
    }


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


class Warehouse:
    """The mailsift warehouse in one DuckDB file. Make one with :meth:`open`.

    :meth:`open` with a ``postgresql://`` URL gives a
    :class:`~warehouse.postgres.PostgresWarehouse` instead: the same methods and tables in
    a database several processes write at once (several probe hosts, two runs)."""

    #: ``duckdb`` here, ``postgresql`` for :class:`~warehouse.postgres.PostgresWarehouse`.
    dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self._lock = threading.RLock()
        self.path = path
        self.read_only = read_only

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        read_only: bool = False,
        lock_timeout: float | None = None,
    ) -> Warehouse:
        """Open the warehouse at ``path`` and bring its schema up to date.

        While another process holds the file (``mailsift serve`` writes in short
        transactions), opening is retried for up to ``lock_timeout`` seconds (default
        ``MAILSIFT_DB_LOCK_TIMEOUT``, else :data:`DEFAULT_LOCK_TIMEOUT`); then it fails.

        - A ``postgresql://`` URL: the shared warehouse in that database
          (:mod:`warehouse.postgres`; ``lock_timeout`` does not apply, writers do not
          block each other there).
        - Missing file: with ``create=True`` (and not ``read_only``) the file and its parent
          directories are made and every migration applied; otherwise
          ``WarehouseError("no warehouse at PATH ...")``.
        - Existing file, read-write: pending migrations are applied.
        - ``read_only=True``: nothing is written; a schema older than this code knows is a
          ``WarehouseError`` (open it read-write once to migrate).
        - A file that is not a DuckDB database, is locked by another process, has a schema
          version newer than this code knows, or has tables but no ``schema_migrations``:
          ``WarehouseError`` naming the file.
        """
        if isinstance(path, str) and is_database_url(path):
            from .postgres import PostgresWarehouse

            return PostgresWarehouse.open_url(path, create=create, read_only=read_only)
        where = str(path)
        in_memory = where == ":memory:"
        if not in_memory:
            file = Path(path).expanduser()
            where = str(file)
            if file.is_dir():
                raise WarehouseError(f"{where} is a directory, not a warehouse file")
            if not file.exists():
                if read_only or not create:
                    raise WarehouseError(
                        f"no warehouse at {where} (set MAILSIFT_DB to an existing file, "
                        "or run a flow, which creates it)"
                    )
                file.parent.mkdir(parents=True, exist_ok=True)
        con = _connect(where, read_only=read_only and not in_memory, lock_timeout=lock_timeout)
        try:
            con.execute("SET TimeZone = 'UTC'")
            if not in_memory and not _is_database_file(con):
                # DuckDB 2.0 opens an existing CSV/Parquet file as an in-memory database
                # with views over it: writes would vanish.
                raise WarehouseError(
                    f"{where} is not a DuckDB database file (it looks like a data file; "
                    "MAILSIFT_DB must name the warehouse, e.g. mailsift.duckdb)"
                )
            if read_only:
                pending = check_schema(con, where)
                if pending:
                    have = pending[0].version - 1
                    state = f"schema version {have}" if have else "no mailsift schema yet"
                    raise WarehouseError(
                        f"{where} has {state}, older than this mailsift "
                        f"({pending[-1].version}); open it read-write once (any flow run does) "
                        "to migrate"
                    )
            else:
                migrate(con, where)
        except BaseException as exc:
            con.close()
            if isinstance(exc, duckdb.Error):
                raise WarehouseError(f"cannot read the schema of {where}: {exc}") from exc
            raise
        return cls(con, where, read_only=read_only)

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise ``WarehouseError``."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @contextmanager
    def threads_limited(self, threads: int) -> Iterator[None]:
        """DuckDB runs this connection's statements on at most ``threads`` threads inside
        the block (``SET threads``; the setting before it is restored). A flow's verify
        step appends one batch at a time: a thousand rows gain nothing from parallel
        execution, and on a small machine its threads took CPU from the engine (on two
        cores, the verify step was 0.50 s longer than the engine alone with DuckDB's
        default of a thread per core, 0.16 s with one; medians of 8 paired runs)."""
        with self._using("threads_limited") as con:
            ((before,),) = con.execute("SELECT current_setting('threads')").fetchall()
            con.execute(f"SET threads = {max(1, int(threads))}")
        try:
            yield
        finally:
            if self._con is not None:
                with self._using("threads_limited") as con:
                    con.execute(f"SET threads = {int(before)}")

    def checkpoint(self) -> None:
        """Write the write-ahead log into the database file now (DuckDB's ``CHECKPOINT``),
        as closing the connection would; a flow does it while its quality gate runs in
        another process, so that its close at the end has little left to write."""
        with self._using("checkpoint", write=True) as con:
            con.execute("CHECKPOINT")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        state = "closed" if self._con is None else mode
        return f"Warehouse({self.path!r}, {state})"

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _using(self, what: str, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            if self._con is None:
                raise WarehouseError(f"{what}: the warehouse {self.path} is closed")
            if write and self.read_only:
                raise WarehouseError(f"{what}: {self.path} is open read-only")
            try:
                yield self._con
            except duckdb.Error as exc:
                raise WarehouseError(f"{what} failed on {self.path}: {exc}") from exc

    @staticmethod
    @contextmanager
    def _staged(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[None]:
        """``frame`` visible to SQL as ``name`` (an Arrow scan, no copy into the file)."""
        con.register(name, frame.to_arrow(compat_level=pl.CompatLevel.newest()))
        try:
            yield
        finally:
            con.unregister(name)

    @staticmethod
    @contextmanager
    def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        con.begin()
        try:
            yield
        except BaseException:
            con.rollback()
            raise
        con.commit()

    @staticmethod
    def _history(relation: duckdb.DuckDBPyRelation) -> pl.DataFrame:
        return relation.pl().cast(HISTORY_SCHEMA)

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Run one SQL statement and return its whole result as a polars frame (an empty
        frame for a statement that returns nothing). For ad hoc reads, tests and demos."""
        with self._using("query") as con:
            relation = con.sql(sql, params=params)
            return pl.DataFrame() if relation is None else relation.pl()

    def schema_version(self) -> int:
        """The highest applied migration version (see :mod:`warehouse.migrations`)."""
        with self._using("schema_version") as con:
            ((version,),) = con.execute("SELECT max(version) FROM schema_migrations").fetchall()
            return int(version or 0)

    # ------------------------------------------------------------------ contacts

    def upsert_contacts(
        self, rows: pl.DataFrame, *, run_id: str, seen_at: datetime | str | None = None
    ) -> int:
        """Record the source rows of a run and merge them into ``contacts``.

        ``rows`` has columns ``source``, ``row_number``, ``record_id`` (nullable),
        ``email`` (nullable: no usable address) and optionally ``domain`` (derived from
        the email when absent or null). Emails are trimmed and lower-cased (the identity
        of a contact). In one transaction:

        - each row becomes a ``contact_sources`` row (``loaded_at = seen_at``), unless
          ``(run_id, source, row_number)`` is already there, so a retried task adds
          nothing twice; duplicate rows inside ``rows`` count once;
        - every email among the new rows is upserted into ``contacts``: ``first_seen_at``
          kept (the earliest wins), ``last_seen_at`` the latest, ``sources`` merged
          (distinct, sorted), ``n_source_rows`` increased by its new rows.

        Returns the number of ``contact_sources`` rows inserted. ``seen_at`` defaults to now.
        """
        run_id = _text("run_id", run_id)
        frame = coerce_contact_rows(rows)
        seen = _utc(seen_at)
        if frame.is_empty():
            return 0
        key = ["source", "row_number"]
        if frame.select(pl.struct(key).is_duplicated().any()).item():
            frame = frame.unique(subset=key, keep="first", maintain_order=True)
        with (
            self._using("upsert_contacts", write=True) as con,
            self._staged(con, "_mailsift_contact_rows", frame),
            self._transaction(con),
        ):
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE _mailsift_new_sources AS
                SELECT
                    CAST($run_id AS VARCHAR) AS run_id, s.source, s.row_number, s.record_id,
                    s.email,
                    lower(coalesce(nullif(trim(s.domain), ''), string_split(s.email, '@')[-1]))
                        AS domain,
                    CAST($seen AS TIMESTAMPTZ) AS loaded_at
                FROM (
                    SELECT source, row_number, record_id,
                           nullif(lower(trim(email)), '') AS email, domain
                    FROM _mailsift_contact_rows
                ) AS s
                WHERE NOT EXISTS (
                    SELECT 1 FROM contact_sources AS cs
                    WHERE cs.run_id = $run_id
                      AND cs.source = s.source AND cs.row_number = s.row_number
                )
                """,
                {"run_id": run_id, "seen": seen},
            )
            ((inserted,),) = con.execute(
                """
                INSERT INTO contact_sources (run_id, source, row_number, record_id, email, loaded_at)
                SELECT run_id, source, row_number, record_id, email, loaded_at
                FROM _mailsift_new_sources
                """
            ).fetchall()
            # No ON CONFLICT: it needs an index on contacts, and with one DuckDB rewrites
            # the list column row by row (200 s instead of 6 s per million contacts).
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE _mailsift_seen AS
                SELECT email, min(domain) AS domain, min(loaded_at) AS first_seen_at,
                       max(loaded_at) AS last_seen_at,
                       list_sort(list(DISTINCT source)) AS sources, count(*) AS n_source_rows
                FROM _mailsift_new_sources
                WHERE email IS NOT NULL
                GROUP BY email
                """
            )
            con.execute(
                """
                UPDATE contacts AS c SET
                    domain = s.domain,
                    first_seen_at = least(c.first_seen_at, s.first_seen_at),
                    last_seen_at = greatest(c.last_seen_at, s.last_seen_at),
                    n_source_rows = c.n_source_rows + s.n_source_rows
                FROM _mailsift_seen AS s
                WHERE c.email = s.email
                """
            ).fetchall()
            con.execute(
                """
                UPDATE contacts AS c SET
                    sources = list_sort(list_distinct(list_concat(c.sources, s.sources)))
                FROM _mailsift_seen AS s
                WHERE c.email = s.email AND NOT list_has_all(c.sources, s.sources)
                """
            ).fetchall()
            con.execute(
                """
                INSERT INTO contacts
                    (email, domain, first_seen_at, last_seen_at, sources, n_source_rows)
                SELECT email, domain, first_seen_at, last_seen_at, sources, n_source_rows
                FROM _mailsift_seen AS s
                WHERE NOT EXISTS (SELECT 1 FROM contacts AS c WHERE c.email = s.email)
                """
            ).fetchall()
            con.execute("DROP TABLE _mailsift_seen")
            con.execute("DROP TABLE _mailsift_new_sources")
        return int(inserted)

    # ------------------------------------------------------------------ verifications

    def append_verifications(self, results: pl.DataFrame, *, run_id: str, backend: str) -> int:
        """Append results to the ``verifications`` history; return the rows inserted.

        ``results`` is a results frame (:func:`warehouse.frames.results_frame`, columns
        :data:`~warehouse.frames.RESULT_COLUMNS`; extra columns ignored; ``verified_at``
        tz-aware, naive taken as UTC). Idempotent: a row whose ``(email, verified_at,
        run_id)`` is already stored, or repeated inside ``results``, is not inserted
        again, so a retried task never duplicates history. One statement: all rows or none.
        """
        run_id = _text("run_id", run_id)
        backend = _text("backend", backend)
        frame = coerce_results(results)
        if frame.is_empty():
            return 0
        key = ["email", "verified_at"]
        if frame.select(pl.struct(key).is_duplicated().any()).item():  # cheaper than in SQL
            frame = frame.unique(subset=key, keep="first", maintain_order=True)
        with (
            self._using("append_verifications", write=True) as con,
            self._staged(con, "_mailsift_results", frame),
        ):
            ((inserted,),) = con.execute(
                f"""
                INSERT INTO verifications (run_id, backend, {_RESULT_LIST})
                SELECT $run_id, $backend, {_RESULT_LIST}
                FROM _mailsift_results AS s
                WHERE NOT EXISTS (
                    SELECT 1 FROM verifications AS v
                    WHERE v.run_id = $run_id
                      AND v.email = s.email AND v.verified_at = s.verified_at
                )
                """,
                {"run_id": run_id, "backend": backend},
            ).fetchall()
        return int(inserted)

    def fresh_results(
        self,
        emails: Sequence[str] | pl.Series,
        *,
        max_age_days: float = DEFAULTS.max_age_days,
        retry_unknown_after_minutes: float = DEFAULTS.retry_unknown_after_minutes,
        now: datetime | str | None = None,
    ) -> pl.DataFrame:
        """The newest verification of each of ``emails`` that is still fresh.

        Fresh: younger than ``max_age_days`` (``verified_at > now - max_age_days``); an
        ``unknown`` result only while younger than ``retry_unknown_after_minutes``, so
        outages are retried soon. Emails never verified or whose newest result is stale
        are absent: they need a check. Emails match exactly as stored (the pipeline
        lower-cases them). The emails are joined as a registered Arrow table, so a million
        of them is one hash join.

        Returns a history frame (:data:`~warehouse.frames.HISTORY_SCHEMA`: the results
        columns, then ``run_id``, ``backend``, ``verification_id``), one row per fresh
        email, in no particular order.
        """
        if max_age_days < 0 or retry_unknown_after_minutes < 0:
            raise ValueError("max_age_days and retry_unknown_after_minutes must be >= 0")
        at = _utc(now)
        wanted = _email_frame(emails)
        with (
            self._using("fresh_results") as con,
            self._staged(con, "_mailsift_emails", wanted),
        ):
            relation = con.sql(
                newest_verifications_sql(
                    where="verified_at > $age_cutoff "
                    "AND email IN (SELECT email FROM _mailsift_emails)",
                    then="status <> 'unknown' OR verified_at > $unknown_cutoff",
                    columns=_HISTORY_SELECT,
                ),
                params={
                    "age_cutoff": at - timedelta(days=max_age_days),
                    "unknown_cutoff": at - timedelta(minutes=retry_unknown_after_minutes),
                },
            )
            return self._history(relation)

    def stale_emails(
        self,
        *,
        max_age_days: float = DEFAULTS.max_age_days,
        limit: int | None = None,
        now: datetime | str | None = None,
        include_never_verified: bool = False,
        statuses: Sequence[str] = (),
        domains: Sequence[str] = (),
        sources: Sequence[str] = (),
        emails: Sequence[str] = (),
    ) -> list[str]:
        """Emails whose newest verification is ``max_age_days`` old or older, oldest first
        (ties by email), at most ``limit`` of them.

        Only age counts by default: an ``unknown`` younger than ``max_age_days`` is not
        stale (the next run retries it through :meth:`fresh_results`' shorter window). With
        ``include_never_verified`` the contacts that have no verification at all come
        first (the ``stale_contacts`` view always includes them).

        Narrowed further (each given list must match; values compared case-insensitively):
        ``statuses`` of the newest verification, ``domains`` of the address, ``sources``
        holding it now (``latest_contact_sources``; a source matches by its full text or
        by its last path component, e.g. ``crm_export.csv``), and ``emails`` themselves.
        """
        if max_age_days < 0:
            raise ValueError("max_age_days must be >= 0")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        never = _never_verified_sql(include_never_verified)
        lists = _stale_picks(statuses, domains, sources, emails)
        filters = []
        if lists["statuses"]:
            filters.append("list_contains($statuses, l.status)")
        if lists["domains"]:
            filters.append("list_contains($domains, lower(regexp_extract(l.email, '@([^@]*)$', 1)))")
        if lists["sources"]:
            filters.append(
                """EXISTS (
                    SELECT 1 FROM latest_contact_sources AS s, unnest($sources) AS t(wanted)
                    WHERE s.email = l.email
                      AND (s.source = t.wanted OR ends_with(s.source, '/' || t.wanted))
                )"""
            )
        if lists["emails"]:
            filters.append("list_contains($emails, l.email)")
        if filters:
            selected = (
                "SELECT l.email, l.verified_at AS last_verified_at FROM latest_verifications AS l "
                "WHERE l.verified_at <= $cutoff AND " + " AND ".join(filters)
            )
            params = {k: v for k, v in lists.items() if v}
        else:
            selected = (
                "SELECT email, max(verified_at) AS last_verified_at FROM verifications "
                "GROUP BY email HAVING max(verified_at) <= $cutoff"
            )
            params = {}
        with self._using("stale_emails") as con:
            rows = con.execute(
                f"""
                SELECT email FROM (
                    {selected}
                    {never}
                )
                ORDER BY last_verified_at ASC NULLS FIRST, email
                LIMIT $limit
                """,
                {"cutoff": _utc(now) - timedelta(days=max_age_days), "limit": limit, **params},
            ).fetchall()
        return [email for (email,) in rows]

    def latest(self, emails: Sequence[str] | pl.Series | None = None) -> pl.DataFrame:
        """The newest verification of every email (``None``) or of the given ones, as a
        history frame (:data:`~warehouse.frames.HISTORY_SCHEMA`), in no particular order."""
        with self._using("latest") as con:
            if emails is None:
                return self._history(con.sql(f"SELECT {_HISTORY_SELECT} FROM latest_verifications"))
            with self._staged(con, "_mailsift_emails", _email_frame(emails)):
                relation = con.sql(
                    newest_verifications_sql(
                        where="email IN (SELECT email FROM _mailsift_emails)",
                        columns=_HISTORY_SELECT,
                    )
                )
                return self._history(relation)

    def source_rows(self, emails: Sequence[str] | pl.Series) -> pl.DataFrame:
        """The source rows holding ``emails`` now (``latest_contact_sources``): columns
        ``source``, ``row_number``, ``record_id``, ``email``, ordered by source and row;
        an address no source holds gets one row with null source fields, at the end."""
        with self._using("source_rows") as con:
            with self._staged(con, "_mailsift_emails", _email_frame(emails)):
                return con.sql(
                    """
                    SELECT s.source, s.row_number, s.record_id, e.email
                    FROM _mailsift_emails AS e
                    LEFT JOIN latest_contact_sources AS s ON s.email = e.email
                    ORDER BY s.source NULLS LAST, s.row_number, e.email
                    """
                ).pl()

    def latest_pandas(self) -> pd.DataFrame:
        """``latest_verifications`` as a pandas frame (DuckDB ``.df()``), for the Great
        Expectations gate, which rejects polars. Same columns as :meth:`latest`."""
        with self._using("latest_pandas") as con:
            return con.sql(f"SELECT {_HISTORY_SELECT} FROM latest_verifications").df()

    def age_verifications(
        self, days: float, emails: Sequence[str] | pl.Series | None = None
    ) -> int:
        """Shift ``verified_at`` of every verification (or of the given emails') ``days``
        into the past; return the rows changed. For tests, benchmarks and demos only: it
        rewrites history so that re-verification has something to do."""
        micros = round(days * 86_400_000_000)
        with self._using("age_verifications", write=True) as con:
            if emails is None:
                ((changed,),) = con.execute(
                    "UPDATE verifications SET verified_at = verified_at - to_microseconds($us)",
                    {"us": micros},
                ).fetchall()
            else:
                with self._staged(con, "_mailsift_emails", _email_frame(emails)):
                    ((changed,),) = con.execute(
                        """
                        UPDATE verifications SET verified_at = verified_at - to_microseconds($us)
                        WHERE email IN (SELECT email FROM _mailsift_emails)
                        """,
                        {"us": micros},
                    ).fetchall()
        return int(changed)

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        run_id: str,
        flow_name: str,
        backend: str | None,
        started_at: datetime | str | None = None,
        *,
        owner: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a flow run as ``running``. Starting a known ``run_id`` again (a retried
        flow run) sets it back to ``running`` and keeps its first ``started_at``.

        ``owner`` (pid, host, process start time: :func:`mailsift.scratch.owner`) is kept
        in ``summary`` until the run finishes, so :meth:`interrupt_dead_runs` can tell a
        run whose process was killed from one still going."""
        with self._using("start_run", write=True) as con:
            con.execute(
                """
                INSERT INTO runs (run_id, flow_name, backend, started_at, status, summary)
                VALUES ($run_id, $flow_name, $backend, $started_at, 'running', $summary)
                ON CONFLICT (run_id) DO UPDATE SET
                    flow_name = excluded.flow_name, backend = excluded.backend,
                    status = 'running', finished_at = NULL,
                    summary = coalesce(excluded.summary, runs.summary)
                """,
                {
                    "run_id": _text("run_id", run_id),
                    "flow_name": _text("flow_name", flow_name),
                    "backend": backend,
                    "started_at": _utc(started_at),
                    "summary": _json({"owner": dict(owner)} if owner else None),
                },
            ).fetchall()

    def running_runs(self) -> list[tuple[str, str | None]]:
        """``(run_id, summary JSON)`` of the runs whose status is ``running``."""
        with self._using("running_runs") as con:
            return [
                (str(r), None if s is None else str(s))
                for r, s in con.execute("SELECT run_id, summary FROM runs WHERE status = 'running'").fetchall()
            ]

    def interrupt_dead_runs(
        self, is_alive: Callable[[dict[str, Any]], bool | None], finished_at: datetime | str | None = None
    ) -> list[str]:
        """Mark ``failed`` every ``running`` run whose recorded owner ``is_alive`` says is
        gone (``False``; ``None``, e.g. another host, leaves it alone); the summary says
        it was interrupted. Returns their run ids."""
        dead = []
        for run_id, summary in self.running_runs():
            try:
                owner = (json.loads(summary) or {}).get("owner") if summary else None
            except (ValueError, AttributeError):
                owner = None
            if isinstance(owner, dict) and is_alive(owner) is False:
                dead.append((run_id, owner))
        for run_id, owner in dead:
            self.finish_run(
                run_id,
                status="failed",
                finished_at=finished_at,
                summary={
                    "error": f"interrupted: its process (pid {owner.get('pid')} on "
                    f"{owner.get('host')}) ended without finishing the run",
                    "is_interrupted": True,
                    "owner": owner,
                },
            )
        return [run_id for run_id, _ in dead]

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime | str | None = None,
        *,
        summary: Mapping[str, Any] | str | None = None,
        **counts: int | None,
    ) -> None:
        """Close a run: ``status`` is ``completed``, ``failed`` or ``gate_failed``;
        ``counts`` any of ``n_source_rows``, ``n_without_email``, ``n_unique``,
        ``n_from_warehouse``, ``n_verified`` (others keep their value); ``summary`` a dict
        (stored as JSON). A ``run_id`` never started is a ``WarehouseError``."""
        if status not in _FINISHED_STATUSES:
            raise ValueError(f"status must be one of {_FINISHED_STATUSES}, got {status!r}")
        unknown = sorted(set(counts) - set(RUN_COUNT_COLUMNS))
        if unknown:
            raise TypeError(f"finish_run() got unknown count(s) {unknown}; use {RUN_COUNT_COLUMNS}")
        params: dict[str, Any] = {
            "run_id": run_id,
            "status": status,
            "finished_at": _utc(finished_at),
            "summary": _json(summary),
        }
        sets = ["status = $status", "finished_at = $finished_at", "summary = $summary"]
        for name, value in counts.items():
            sets.append(f"{name} = ${name}")
            params[name] = None if value is None else int(value)
        with self._using("finish_run", write=True) as con:
            ((changed,),) = con.execute(
                f"UPDATE runs SET {', '.join(sets)} WHERE run_id = $run_id", params
            ).fetchall()
        if not changed:
            raise WarehouseError(
                f"finish_run: no run {run_id!r} in {self.path}; call start_run first"
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The ``runs`` row as a dict (``summary`` decoded from JSON), or ``None``."""
        with self._using("get_run") as con:
            rows = con.sql("SELECT * FROM runs WHERE run_id = $id", params={"id": run_id}).pl()
        if rows.is_empty():
            return None
        row = rows.to_dicts()[0]
        row["summary"] = None if row["summary"] is None else json.loads(row["summary"])
        return row

    # ------------------------------------------------------------------ quality gate

    def record_quality_run(
        self,
        *,
        scope: str,
        is_passed: bool,
        n_rows: int,
        run_id: str | None = None,
        unknown_share: float | None = None,
        max_unknown_share: float | None = None,
        failed_expectations: Sequence[str] = (),
        details: Mapping[str, Any] | str | None = None,
        checked_at: datetime | str | None = None,
    ) -> str:
        """Record one gate evaluation; return its ``quality_run_id``. ``scope`` is ``run``
        (needs ``run_id``) or ``warehouse`` (the CI gate; ``run_id`` usually ``None``);
        ``details`` a dict stored as JSON."""
        if scope not in QUALITY_SCOPES:
            raise ValueError(f"scope must be one of {QUALITY_SCOPES}, got {scope!r}")
        if scope == "run" and not run_id:
            raise ValueError("a quality run with scope 'run' needs its run_id")
        with self._using("record_quality_run", write=True) as con:
            ((quality_run_id,),) = con.execute(
                """
                INSERT INTO quality_runs (run_id, scope, checked_at, is_passed, n_rows,
                    unknown_share, max_unknown_share, failed_expectations, details)
                VALUES ($run_id, $scope, $checked_at, $is_passed, $n_rows, $unknown_share,
                    $max_unknown_share, $failed, $details)
                RETURNING CAST(quality_run_id AS VARCHAR)
                """,
                {
                    "run_id": run_id,
                    "scope": scope,
                    "checked_at": _utc(checked_at),
                    "is_passed": bool(is_passed),
                    "n_rows": int(n_rows),
                    "unknown_share": None if unknown_share is None else float(unknown_share),
                    "max_unknown_share": (
                        None if max_unknown_share is None else float(max_unknown_share)
                    ),
                    "failed": [str(name) for name in failed_expectations],
                    "details": _json(details),
                },
            ).fetchall()
        return str(quality_run_id)

    def quality_runs(self, run_id: str | None = None) -> pl.DataFrame:
        """``quality_runs`` rows (all, or of one run), oldest first; ``quality_run_id`` as
        text, ``details`` as JSON text."""
        where = "" if run_id is None else "WHERE run_id = $run_id"
        params = {} if run_id is None else {"run_id": run_id}
        with self._using("quality_runs") as con:
            return con.sql(
                f"""
                SELECT * REPLACE (CAST(quality_run_id AS VARCHAR) AS quality_run_id)
                FROM quality_runs {where} ORDER BY checked_at, quality_run_id
                """,
                params=params,
            ).pl()

    # ------------------------------------------------------------------ webhooks

    def record_webhook_attempt(
        self,
        *,
        delivery_id: str,
        run_id: str,
        url: str,
        batch_index: int,
        n_results: int,
        attempt: int,
        is_delivered: bool,
        payload: Mapping[str, Any] | Sequence[Any] | str,
        status_code: int | None = None,
        error: str | None = None,
        attempted_at: datetime | str | None = None,
    ) -> None:
        """Record one delivery attempt of one batch (``delivery_id``: one per batch,
        ``attempt`` from 1). Recording the same ``(delivery_id, attempt)`` again replaces
        it. The URL is stored with user info and secret-looking query values redacted
        (:func:`warehouse.redaction.redact_url`), also inside ``error``; ``payload`` is the
        JSON body (a dict/list is dumped), which must hold results only, never secrets."""
        safe_url = redact_url(_text("url", url))
        if error is not None:
            error = str(error).replace(url, safe_url)[:2000]
        with self._using("record_webhook_attempt", write=True) as con:
            con.execute(
                f"""
                INSERT OR REPLACE INTO webhook_deliveries ({_WEBHOOK_COLUMNS})
                VALUES ($delivery_id, $run_id, $url, $batch_index, $n_results, $attempt,
                        $attempted_at, $status_code, $error, $is_delivered, $payload)
                """,
                {
                    "delivery_id": _text("delivery_id", delivery_id),
                    "run_id": _text("run_id", run_id),
                    "url": safe_url,
                    "batch_index": int(batch_index),
                    "n_results": int(n_results),
                    "attempt": int(attempt),
                    "attempted_at": _utc(attempted_at),
                    "status_code": None if status_code is None else int(status_code),
                    "error": error,
                    "is_delivered": bool(is_delivered),
                    "payload": _json(payload),
                },
            ).fetchall()

    def failed_webhook_deliveries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Deliveries (all, or of one run) that no attempt delivered, each as the dict of
        its latest attempt (the ``webhook_deliveries`` columns; ``payload`` as JSON text,
        ready to send again), ordered by run, batch index, delivery id. A delivery that
        succeeded once is done, even if a later replay failed."""
        where = "" if run_id is None else "WHERE run_id = $run_id"
        params = {} if run_id is None else {"run_id": run_id}
        with self._using("failed_webhook_deliveries") as con:
            frame = con.sql(
                f"""
                SELECT {_WEBHOOK_COLUMNS} FROM (
                    SELECT *, bool_or(is_delivered) OVER (PARTITION BY delivery_id) AS done
                    FROM webhook_deliveries {where}
                    QUALIFY row_number() OVER (
                        PARTITION BY delivery_id ORDER BY attempt DESC, attempted_at DESC
                    ) = 1
                )
                WHERE NOT done
                ORDER BY run_id, batch_index, delivery_id
                """,
                params=params,
            ).pl()
        return frame.to_dicts()

    # ------------------------------------------------------------------ API keys

    def add_api_key(
        self,
        *,
        key_id: str,
        name: str,
        is_test: bool,
        key_hash: str,
        key_hint: str,
        rate_limit_per_minute: int | None = None,
        created_at: datetime | str | None = None,
    ) -> None:
        """Store a new key of ``mailsift serve`` by its hash (the key itself never comes here)."""
        if len(key_hash) != 64 or any(c not in "0123456789abcdef" for c in key_hash):
            raise ValueError("key_hash must be a lower-case hex SHA-256")
        with self._using("add_api_key", write=True) as con:
            con.execute(
                """
                INSERT INTO api_keys (key_id, name, is_test, key_hash, key_hint,
                    rate_limit_per_minute, created_at)
                VALUES ($key_id, $name, $is_test, $key_hash, $key_hint, $rpm, $created_at)
                """,
                {
                    "key_id": _text("key_id", key_id),
                    "name": _text("name", name),
                    "is_test": bool(is_test),
                    "key_hash": key_hash,
                    "key_hint": key_hint,
                    "rpm": None if rate_limit_per_minute is None else int(rate_limit_per_minute),
                    "created_at": _utc(created_at),
                },
            ).fetchall()

    def api_keys(self, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Every key row (hash included: for the service's check), oldest first."""
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        with self._using("api_keys") as con:
            return con.sql(f"SELECT * FROM api_keys {where} ORDER BY created_at, key_id").pl().to_dicts()

    def revoke_api_key(self, key_id_or_name: str, revoked_at: datetime | str | None = None) -> int:
        """Revoke the active keys whose id or name is ``key_id_or_name``; return how many."""
        with self._using("revoke_api_key", write=True) as con:
            ((changed,),) = con.execute(
                """
                UPDATE api_keys SET revoked_at = $at
                WHERE revoked_at IS NULL AND (key_id = $k OR name = $k)
                """,
                {"k": _text("key", key_id_or_name), "at": _utc(revoked_at)},
            ).fetchall()
        return int(changed)


def _lock_timeout(value: float | None) -> float:
    if value is not None:
        return max(0.0, float(value))
    text = os.environ.get("MAILSIFT_DB_LOCK_TIMEOUT", "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


def _connect(where: str, *, read_only: bool, lock_timeout: float | None) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, retried while another process holds the file's lock."""
    deadline = time.monotonic() + _lock_timeout(lock_timeout)
    while True:
        try:
            return duckdb.connect(where, read_only=read_only)
        except duckdb.Error as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise WarehouseError(_open_failure(where, exc)) from exc
        time.sleep(_LOCK_POLL)


def _is_database_file(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return bool(rows and rows[0][0])


def _open_failure(where: str, exc: duckdb.Error) -> str:
    text = str(exc)
    if "lock" in text.lower():
        return (
            f"{where} is locked by another process: DuckDB allows one writer, and readers "
            f"only while nobody writes (wait for the running flow to finish). {text}"
        )
    if "different configuration" in text:
        return (
            f"{where} is already open in this process in the other mode (read-only vs "
            f"read-write); reuse that Warehouse. {text}"
        )
    if "not a valid DuckDB database" in text:
        return f"{where} is not a DuckDB database file (MAILSIFT_DB points at something else)"
    return f"cannot open the warehouse {where}: {text}"
