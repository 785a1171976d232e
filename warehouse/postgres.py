"""``PostgresWarehouse``: the same warehouse in PostgreSQL, for several writing processes.

``MAILSIFT_DB=postgresql://host/db`` (or ``postgres://``; the password from ``PGPASSWORD``
or ``~/.pgpass`` rather than the URL) makes :meth:`warehouse.Warehouse.open` return one
of these. Same tables, columns, views, migrations and method contracts as the DuckDB
file; what differs is how several writers stay correct:

- **Keys declared.** ``contacts (email)``, ``contact_sources (run_id, source,
  row_number)`` and ``verifications (email, verified_at, run_id)`` are unique indexes
  (:data:`warehouse.schema.POSTGRES_INDEXES`), and every load is ``INSERT ... ON
  CONFLICT DO NOTHING`` (contacts: ``DO UPDATE``), so a batch loaded twice, by a retry or
  by two processes, is stored once, and history stays append-only.
- **Bulk through Arrow and COPY.** Frames go in with ADBC's ``adbc_ingest`` (the
  PostgreSQL binary ``COPY`` protocol) into a temporary table, then one ``INSERT ...
  SELECT``; results come back as Arrow (``fetch_arrow_table``), never row by row.
- **One transaction per call**, retried on a deadlock or serialization failure (two runs
  upserting the same contacts at once).
- **Migrations under an advisory lock**, so processes that start together migrate once.

Analysts keep DuckDB's SQL: :meth:`PostgresWarehouse.query` (``mailsift sql``, the
list-health report) runs the statement in an in-memory DuckDB over a consistent snapshot
of the tables it names, created with the DuckDB DDL of :mod:`warehouse.schema` (same
types) and the DuckDB views. It is read-only: writes go through the methods. DuckDB's
own ``postgres`` extension would avoid the copy, but its PyPI build pins DuckDB 1.5.5
and mailsift runs DuckDB 2.0 (see the README, "Scaling out").
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl
import pyarrow as pa

from mailsift.errors import WarehouseError
from pipeline.settings import DEFAULTS

from . import schema
from .frames import (
    HISTORY_COLUMNS,
    HISTORY_SCHEMA,
    RESULT_COLUMNS,
    coerce_contact_rows,
    coerce_results,
)
from .migrations import check_schema, migrate
from .redaction import redact_url
from .schema import QUALITY_SCOPES, RUN_COUNT_COLUMNS, RUN_STATUSES
from .store import (
    Warehouse,
    _email_frame,
    _json,
    _never_verified_sql,
    _stale_picks,
    _text,
    _utc,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PostgresWarehouse", "Snapshot", "libpq_url"]

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
#: pg_advisory_lock key held while migrating ("mailsift" in ASCII, as a bigint).
_MIGRATION_LOCK = 0x6D61696C73696674
#: SQLSTATEs worth one more try of the whole call: deadlock, serialization failure.
_RETRY_STATES = ("40P01", "40001")
_RETRIES = 5
_READ_ONLY_START = re.compile(
    r"^\s*(\(|select|with|from|values|table|describe|show|summarize|pivot|unpivot|explain)\b",
    re.IGNORECASE,
)


def libpq_url(url: str) -> str:
    """``url`` as libpq takes it: ``postgres://`` and ``postgresql+driver://`` (SQLAlchemy
    style) become ``postgresql://``."""
    scheme, _, rest = url.strip().partition("://")
    return f"postgresql://{rest}" if scheme.split("+", 1)[0].lower() in ("postgres", "postgresql") else url


def _select_list(table: Any, *, as_text: tuple[str, ...] = ()) -> str:
    """The table's columns, UUID and JSON ones cast to text (Arrow has no such types)."""
    out = []
    for column in table.columns:
        if column.name in as_text or isinstance(column.type, sa_text_types()):
            out.append(f"CAST({column.name} AS TEXT) AS {column.name}")
        else:
            out.append(column.name)
    return ", ".join(out)


def sa_text_types() -> tuple[type, ...]:
    import sqlalchemy as sa

    return (sa.Uuid, sa.JSON)


class _PgCon:
    """The duckdb-connection surface :mod:`warehouse.migrations` uses, over ADBC:
    ``execute(sql, params)`` with ``?`` placeholders, ``fetchall``, ``begin``/``commit``/
    ``rollback``."""

    dialect = "postgresql"

    def __init__(self, con: Any) -> None:
        self.con = con
        self.cur = con.cursor()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> _PgCon:
        if params:
            counter = iter(range(1, len(params) + 1))
            sql = re.sub(r"\?", lambda _: f"${next(counter)}", sql)
            self.cur.execute(sql, tuple(params))
        else:
            self.cur.execute(sql)
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.cur.fetchall()

    def begin(self) -> None:  # ADBC opens a transaction by itself when autocommit is off
        pass

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()


class PostgresWarehouse(Warehouse):
    """The mailsift warehouse in a PostgreSQL database. Make one with
    :meth:`warehouse.Warehouse.open` and a ``postgresql://`` URL."""

    dialect = "postgresql"

    def __init__(self, con: Any, url: str, *, read_only: bool) -> None:
        super().__init__(None, redact_url(url), read_only=read_only)  # type: ignore[arg-type]
        self._pg = con
        self._cur = con.cursor()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_url(cls, url: str, *, create: bool = True, read_only: bool = False) -> PostgresWarehouse:
        """Connect, check the schema and (read-write) migrate it under an advisory lock.
        See :meth:`warehouse.Warehouse.open` for the rules; "no file" here is "no
        mailsift schema in that database"."""
        shown = redact_url(url)
        try:
            import adbc_driver_postgresql.dbapi as pg
        except ImportError as exc:  # pragma: no cover - a dependency of mailsift
            raise WarehouseError(
                f"{shown} is a PostgreSQL URL, but adbc-driver-postgresql is not installed"
            ) from exc
        try:
            con = pg.connect(libpq_url(url))
        except Exception as exc:
            raise WarehouseError(f"cannot connect to the warehouse {shown}: {_short(exc)}") from exc
        adapter = _PgCon(con)
        try:
            adapter.execute("SET TIME ZONE 'UTC'")
            adapter.commit()
            pending = check_schema(adapter, shown)
            if pending and pending[0].version == 1 and (read_only or not create):
                raise WarehouseError(
                    f"no warehouse at {shown} (the database has no mailsift schema yet; "
                    "run a flow against it, which creates it)"
                )
            if read_only and pending:
                have = pending[0].version - 1
                raise WarehouseError(
                    f"{shown} has schema version {have}, older than this mailsift "
                    f"({pending[-1].version}); open it read-write once (any flow run does) to migrate"
                )
            if not read_only and pending:
                adapter.execute("SELECT pg_advisory_lock(?)", [_MIGRATION_LOCK]).fetchall()
                adapter.commit()
                try:
                    migrate(adapter, shown)  # checks again: another process may have migrated
                finally:
                    adapter.execute("SELECT pg_advisory_unlock(?)", [_MIGRATION_LOCK]).fetchall()
                    adapter.commit()
            if read_only:
                adapter.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                adapter.commit()
        except BaseException as exc:
            try:
                con.rollback()
            finally:
                con.close()
            if isinstance(exc, WarehouseError):
                raise
            if isinstance(exc, Exception):
                raise WarehouseError(f"cannot read the schema of {shown}: {_short(exc)}") from exc
            raise
        return cls(con, url, read_only=read_only)

    def close(self) -> None:
        with self._lock:
            if self._pg is not None:
                try:
                    self._pg.rollback()
                finally:
                    self._pg.close()
                self._pg = None

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL writes its log out itself, and closing costs nothing."""

    @contextmanager
    def threads_limited(self, threads: int) -> Iterator[None]:
        """Nothing to limit: the statements run in the PostgreSQL server's processes."""
        yield

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"PostgresWarehouse({self.path!r}, {'closed' if self._pg is None else mode})"

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _using(self, what: str, *, write: bool = False) -> Iterator[Any]:  # type: ignore[override]
        raise WarehouseError(f"{what} is not implemented for a PostgreSQL warehouse ({self.path})")
        yield  # pragma: no cover

    @contextmanager
    def _tx(self, what: str, *, write: bool = False) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on error."""
        with self._lock:
            if self._pg is None:
                raise WarehouseError(f"{what}: the warehouse {self.path} is closed")
            if write and self.read_only:
                raise WarehouseError(f"{what}: {self.path} is open read-only")
            try:
                yield self._cur
                self._pg.commit()
            except BaseException as exc:
                self._pg.rollback()
                if isinstance(exc, WarehouseError | ValueError | TypeError):
                    raise
                if isinstance(exc, Exception):
                    raise WarehouseError(f"{what} failed on {self.path}: {_short(exc)}") from exc
                raise

    def _retrying(self, what: str, fn: Any) -> Any:
        """``fn(cursor)`` in a write transaction, tried again after a deadlock or a
        serialization failure (another writer touched the same rows)."""
        for attempt in range(_RETRIES):
            try:
                with self._tx(what, write=True) as cur:
                    return fn(cur)
            except WarehouseError as exc:
                cause = exc.__cause__
                state = str(getattr(cause, "sqlstate", "") or "")
                if state not in _RETRY_STATES or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _stage(cur: Any, name: str, frame: pl.DataFrame) -> None:
        """``frame`` as a temporary table ``name`` (binary COPY through ADBC); dropped at
        the end of the transaction's caller by ``_unstage``."""
        table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        cur.adbc_ingest(name, table, mode="replace", temporary=True)
        cur.execute(f"ANALYZE {name}")

    @staticmethod
    def _arrow(cur: Any, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        if params:
            cur.execute(sql, tuple(params))
        else:
            cur.execute(sql)
        return cur.fetch_arrow_table()

    @classmethod
    def _frame(cls, cur: Any, sql: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        table = cls._arrow(cur, sql, params)
        return pl.from_arrow(table.replace_schema_metadata(None))  # type: ignore[return-value]

    @staticmethod
    def _scalar(cur: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
        if params:
            cur.execute(sql, tuple(params))
        else:
            cur.execute(sql)
        rows = cur.fetchall()
        return rows[0][0] if rows else None

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """Run one **DuckDB** SQL statement over a snapshot of the warehouse and return
        its whole result (an empty frame for a statement that returns nothing).

        Every table and view exists in the snapshot with its DuckDB types and comments;
        the tables the statement names (directly or through a view) hold their rows, read
        in one PostgreSQL transaction. Read-only: a statement that would write is a
        ``WarehouseError``. Several statements over one snapshot: :meth:`snapshot`."""
        with self.snapshot([sql]) as snap:
            return snap.query(sql, params)

    @contextmanager
    def snapshot(self, sqls: Sequence[str]) -> Iterator[Snapshot]:
        """One snapshot for several read-only DuckDB statements: the tables any of
        ``sqls`` names are copied once, in one PostgreSQL transaction, and every
        :meth:`Snapshot.query` reads that copy (the list-health report's dozen queries
        over a million verifications copied them a dozen times: 19 s)."""
        for sql in sqls:
            if not _READ_ONLY_START.match(sql):
                raise WarehouseError(
                    f"query() on the PostgreSQL warehouse {self.path} runs DuckDB SQL over a "
                    "snapshot and is read-only; write through the Warehouse methods"
                )
        needed: set[str] = set()
        for sql in sqls:
            needed |= _tables_named(sql)
        snap = duckdb.connect(":memory:")
        try:
            snap.execute("SET TimeZone = 'UTC'")
            for table in schema.metadata.sorted_tables:
                for statement in schema.table_ddl(table):
                    snap.execute(statement)
            with self._tx("query") as cur:  # one snapshot for every table read
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            with self._tx("query") as cur:
                for table in schema.metadata.sorted_tables:
                    if table.name not in needed:
                        continue
                    data = self._arrow(cur, f"SELECT {_select_list(table)} FROM {table.name}")
                    snap.register("_mailsift_snapshot", data)
                    try:
                        snap.execute(f"INSERT INTO {table.name} SELECT * FROM _mailsift_snapshot")
                    finally:
                        snap.unregister("_mailsift_snapshot")
                    del data
            with self._tx("query") as cur:
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
            for name in schema.VIEWS:
                for statement in schema.view_ddl(name):
                    snap.execute(statement)
            yield Snapshot(self.path, snap)
        finally:
            snap.close()

    def schema_version(self) -> int:
        with self._tx("schema_version") as cur:
            return int(self._scalar(cur, "SELECT max(version) FROM schema_migrations") or 0)

    # ------------------------------------------------------------------ contacts

    def upsert_contacts(
        self, rows: pl.DataFrame, *, run_id: str, seen_at: datetime | str | None = None
    ) -> int:
        run_id = _text("run_id", run_id)
        frame = coerce_contact_rows(rows)
        seen = _utc(seen_at)
        if frame.is_empty():
            return 0
        key = ["source", "row_number"]
        if frame.select(pl.struct(key).is_duplicated().any()).item():
            frame = frame.unique(subset=key, keep="first", maintain_order=True)
        frame = frame.with_columns(
            pl.lit(run_id, pl.String).alias("run_id"),
            pl.lit(seen, pl.Datetime("us", "UTC")).alias("loaded_at"),
        )

        def load(cur: Any) -> int:
            self._stage(cur, "_mailsift_contact_rows", frame)
            # Contacts are upserted in email order so that two runs lock shared rows in
            # the same order (no deadlock between them; one that happens is retried).
            inserted = self._scalar(
                cur,
                """
                WITH src AS (
                    SELECT run_id, source, row_number, record_id, email,
                           lower(coalesce(nullif(trim(domain), ''), split_part(email, '@', -1)))
                               AS domain,
                           loaded_at
                    FROM (
                        SELECT run_id, source, row_number, record_id,
                               nullif(lower(trim(email)), '') AS email, domain, loaded_at
                        FROM _mailsift_contact_rows
                    ) AS s
                ), ins AS (
                    INSERT INTO contact_sources
                        (run_id, source, row_number, record_id, email, loaded_at)
                    SELECT run_id, source, row_number, record_id, email, loaded_at FROM src
                    ON CONFLICT (run_id, source, row_number) DO NOTHING
                    RETURNING source, row_number, email, loaded_at
                ), seen AS (
                    SELECT i.email, min(s.domain) AS domain, min(i.loaded_at) AS first_seen_at,
                           max(i.loaded_at) AS last_seen_at,
                           array_agg(DISTINCT i.source COLLATE "C" ORDER BY i.source COLLATE "C")
                               AS sources,
                           count(*) AS n_source_rows
                    FROM ins AS i JOIN src AS s USING (source, row_number)
                    WHERE i.email IS NOT NULL
                    GROUP BY i.email
                ), up AS (
                    INSERT INTO contacts
                        (email, domain, first_seen_at, last_seen_at, sources, n_source_rows)
                    SELECT email, domain, first_seen_at, last_seen_at, sources, n_source_rows
                    FROM seen ORDER BY email COLLATE "C"
                    ON CONFLICT (email) DO UPDATE SET
                        domain = excluded.domain,
                        first_seen_at = least(contacts.first_seen_at, excluded.first_seen_at),
                        last_seen_at = greatest(contacts.last_seen_at, excluded.last_seen_at),
                        sources = ARRAY(
                            SELECT DISTINCT x COLLATE "C"
                            FROM unnest(contacts.sources || excluded.sources) AS x
                            ORDER BY 1
                        ),
                        n_source_rows = contacts.n_source_rows + excluded.n_source_rows
                    RETURNING 1
                )
                SELECT (SELECT count(*) FROM ins) + 0 * (SELECT count(*) FROM up)
                """,
            )
            cur.execute("DROP TABLE _mailsift_contact_rows")
            return int(inserted)

        return self._retrying("upsert_contacts", load)

    # ------------------------------------------------------------------ verifications

    def append_verifications(self, results: pl.DataFrame, *, run_id: str, backend: str) -> int:
        run_id = _text("run_id", run_id)
        backend = _text("backend", backend)
        frame = coerce_results(results)
        if frame.is_empty():
            return 0
        key = ["email", "verified_at"]
        if frame.select(pl.struct(key).is_duplicated().any()).item():
            frame = frame.unique(subset=key, keep="first", maintain_order=True)
        frame = frame.select(
            pl.lit(run_id, pl.String).alias("run_id"),
            pl.lit(backend, pl.String).alias("backend"),
            *RESULT_COLUMNS,
        )

        def load(cur: Any) -> int:
            self._stage(cur, "_mailsift_results", frame)
            inserted = self._scalar(
                cur,
                f"""
                WITH ins AS (
                    INSERT INTO verifications (run_id, backend, {_RESULT_LIST})
                    SELECT run_id, backend, {_RESULT_LIST} FROM _mailsift_results
                    ON CONFLICT (email, verified_at, run_id) DO NOTHING
                    RETURNING 1
                )
                SELECT count(*) FROM ins
                """,
            )
            cur.execute("DROP TABLE _mailsift_results")
            return int(inserted)

        return self._retrying("append_verifications", load)

    def _newest(self, cur: Any, where: str, then: str, params: Sequence[Any]) -> pl.DataFrame:
        frame = self._frame(
            cur,
            f"""
            SELECT {_HISTORY_SELECT} FROM (
                SELECT DISTINCT ON (email) * FROM verifications
                WHERE {where}
                ORDER BY email, verified_at DESC, verification_id DESC
            ) AS newest
            WHERE {then}
            """,
            params,
        )
        return frame.cast(HISTORY_SCHEMA) if frame.width else pl.DataFrame(schema=HISTORY_SCHEMA)

    def fresh_results(
        self,
        emails: Sequence[str] | pl.Series,
        *,
        max_age_days: float = DEFAULTS.max_age_days,
        retry_unknown_after_minutes: float = DEFAULTS.retry_unknown_after_minutes,
        now: datetime | str | None = None,
    ) -> pl.DataFrame:
        if max_age_days < 0 or retry_unknown_after_minutes < 0:
            raise ValueError("max_age_days and retry_unknown_after_minutes must be >= 0")
        at = _utc(now)
        wanted = _email_frame(emails)
        with self._tx("fresh_results") as cur:
            self._stage(cur, "_mailsift_emails", wanted)
            frame = self._newest(
                cur,
                "verified_at > $1::timestamptz AND email IN (SELECT email FROM _mailsift_emails)",
                "status <> 'unknown' OR verified_at > $2::timestamptz",
                (at - timedelta(days=max_age_days), at - timedelta(minutes=retry_unknown_after_minutes)),
            )
            cur.execute("DROP TABLE _mailsift_emails")
        return frame

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
        if max_age_days < 0:
            raise ValueError("max_age_days must be >= 0")
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0 or None")
        picks = _stale_picks(statuses, domains, sources, emails)
        if any(picks.values()):
            return self._stale_picked(max_age_days, limit, now, include_never_verified, picks)
        never = _never_verified_sql(include_never_verified)
        with self._tx("stale_emails") as cur:
            cur.execute(
                f"""
                SELECT email FROM (
                    SELECT email, max(verified_at) AS last_verified_at
                    FROM verifications GROUP BY email
                    HAVING max(verified_at) <= $1::timestamptz
                    {never}
                ) AS s
                ORDER BY last_verified_at ASC NULLS FIRST, email COLLATE "C"
                LIMIT $2::bigint
                """,
                (_utc(now) - timedelta(days=max_age_days), limit),
            )
            rows = cur.fetchall()
        return [email for (email,) in rows]

    def _stale_picked(self, max_age_days: float, limit: int | None, now: datetime | str | None,
                      include_never_verified: bool, picks: dict[str, list[str]]) -> list[str]:
        """:meth:`stale_emails` narrowed by status, domain, source or address (the values
        staged as a temporary table, one row per (kind, value))."""
        conditions = {
            "statuses": "l.status IN (SELECT value FROM _mailsift_pick WHERE kind = 'statuses')",
            "domains": "lower(substring(l.email from '@([^@]*)$')) IN "
                       "(SELECT value FROM _mailsift_pick WHERE kind = 'domains')",
            "sources": """EXISTS (
                SELECT 1 FROM latest_contact_sources AS s JOIN _mailsift_pick AS p
                  ON p.kind = 'sources'
                 AND (s.source = p.value OR right(s.source, length(p.value) + 1) = '/' || p.value)
                WHERE s.email = l.email)""",
            "emails": "l.email IN (SELECT value FROM _mailsift_pick WHERE kind = 'emails')",
        }
        rows = [(kind, value) for kind, values in picks.items() for value in values]
        frame = pl.DataFrame(rows, schema={"kind": pl.String, "value": pl.String}, orient="row")
        where = " AND ".join(conditions[kind] for kind, values in picks.items() if values)
        never = _never_verified_sql(include_never_verified)
        with self._tx("stale_emails") as cur:
            self._stage(cur, "_mailsift_pick", frame)
            cur.execute(
                f"""
                SELECT email FROM (
                    SELECT l.email, l.verified_at AS last_verified_at
                    FROM latest_verifications AS l
                    WHERE l.verified_at <= $1::timestamptz AND {where}
                    {never}
                ) AS s
                ORDER BY last_verified_at ASC NULLS FIRST, email COLLATE "C"
                LIMIT $2::bigint
                """,
                (_utc(now) - timedelta(days=max_age_days), limit),
            )
            found = cur.fetchall()
            cur.execute("DROP TABLE _mailsift_pick")
        return [email for (email,) in found]

    def source_rows(self, emails: Sequence[str] | pl.Series) -> pl.DataFrame:
        with self._tx("source_rows") as cur:
            self._stage(cur, "_mailsift_emails", _email_frame(emails))
            frame = self._frame(
                cur,
                """
                SELECT s.source, s.row_number, s.record_id, e.email
                FROM _mailsift_emails AS e
                LEFT JOIN latest_contact_sources AS s ON s.email = e.email
                ORDER BY s.source COLLATE "C" NULLS LAST, s.row_number, e.email COLLATE "C"
                """,
            )
            cur.execute("DROP TABLE _mailsift_emails")
            return frame

    def latest(self, emails: Sequence[str] | pl.Series | None = None) -> pl.DataFrame:
        with self._tx("latest") as cur:
            if emails is None:
                return self._newest(cur, "TRUE", "TRUE", ())
            self._stage(cur, "_mailsift_emails", _email_frame(emails))
            frame = self._newest(cur, "email IN (SELECT email FROM _mailsift_emails)", "TRUE", ())
            cur.execute("DROP TABLE _mailsift_emails")
            return frame

    def latest_pandas(self) -> pd.DataFrame:
        """``latest_verifications`` as pandas (for the Great Expectations gate): read as
        Arrow from the PostgreSQL view, then converted, as DuckDB's ``.df()`` would."""
        with self._tx("latest_pandas") as cur:
            table = self._arrow(cur, f"SELECT {_HISTORY_SELECT} FROM latest_verifications")
        snap = duckdb.connect(":memory:")
        try:
            snap.execute("SET TimeZone = 'UTC'")
            snap.register("latest", table.replace_schema_metadata(None))
            return snap.sql("SELECT * FROM latest").df()
        finally:
            snap.close()

    def age_verifications(
        self, days: float, emails: Sequence[str] | pl.Series | None = None
    ) -> int:
        micros = round(days * 86_400_000_000)

        def shift(cur: Any) -> int:
            where = ""
            if emails is not None:
                self._stage(cur, "_mailsift_emails", _email_frame(emails))
                where = "WHERE email IN (SELECT email FROM _mailsift_emails)"
            changed = self._scalar(
                cur,
                f"""
                WITH up AS (
                    UPDATE verifications
                    SET verified_at = verified_at - $1::bigint * INTERVAL '1 microsecond'
                    {where} RETURNING 1
                )
                SELECT count(*) FROM up
                """,
                (micros,),
            )
            if emails is not None:
                cur.execute("DROP TABLE _mailsift_emails")
            return int(changed)

        return self._retrying("age_verifications", shift)

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
        params = (
            _text("run_id", run_id), _text("flow_name", flow_name), backend, _utc(started_at),
            _json({"owner": dict(owner)} if owner else None),
        )
        with self._tx("start_run", write=True) as cur:
            cur.execute(
                """
                INSERT INTO runs (run_id, flow_name, backend, started_at, status, summary)
                VALUES ($1::text, $2::text, $3::text, $4::timestamptz, 'running', $5::json)
                ON CONFLICT (run_id) DO UPDATE SET
                    flow_name = excluded.flow_name, backend = excluded.backend,
                    status = 'running', finished_at = NULL,
                    summary = coalesce(excluded.summary, runs.summary)
                """,
                params,
            )

    def running_runs(self) -> list[tuple[str, str | None]]:
        with self._tx("running_runs") as cur:
            cur.execute("SELECT run_id, summary::text FROM runs WHERE status = 'running'")
            return [(str(r), None if s is None else str(s)) for r, s in cur.fetchall()]

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime | str | None = None,
        *,
        summary: Mapping[str, Any] | str | None = None,
        **counts: int | None,
    ) -> None:
        if status not in _FINISHED_STATUSES:
            raise ValueError(f"status must be one of {_FINISHED_STATUSES}, got {status!r}")
        unknown = sorted(set(counts) - set(RUN_COUNT_COLUMNS))
        if unknown:
            raise TypeError(f"finish_run() got unknown count(s) {unknown}; use {RUN_COUNT_COLUMNS}")
        params: list[Any] = [run_id, status, _utc(finished_at), _json(summary)]
        sets = ["status = $2::text", "finished_at = $3::timestamptz", "summary = $4::json"]
        for name, value in counts.items():
            params.append(None if value is None else int(value))
            sets.append(f"{name} = ${len(params)}::bigint")
        with self._tx("finish_run", write=True) as cur:
            changed = self._scalar(
                cur,
                f"""
                WITH up AS (UPDATE runs SET {', '.join(sets)} WHERE run_id = $1::text RETURNING 1)
                SELECT count(*) FROM up
                """,
                params,
            )
        if not changed:
            raise WarehouseError(
                f"finish_run: no run {run_id!r} in {self.path}; call start_run first"
            )

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._tx("get_run") as cur:
            rows = self._frame(
                cur, f"SELECT {_select_list(schema.runs)} FROM runs WHERE run_id = $1::text", (run_id,)
            )
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
        if scope not in QUALITY_SCOPES:
            raise ValueError(f"scope must be one of {QUALITY_SCOPES}, got {scope!r}")
        if scope == "run" and not run_id:
            raise ValueError("a quality run with scope 'run' needs its run_id")
        params = (
            run_id,
            scope,
            _utc(checked_at),
            bool(is_passed),
            int(n_rows),
            None if unknown_share is None else float(unknown_share),
            None if max_unknown_share is None else float(max_unknown_share),
            [str(name) for name in failed_expectations],
            _json(details),
        )
        with self._tx("record_quality_run", write=True) as cur:
            quality_run_id = self._scalar(
                cur,
                """
                INSERT INTO quality_runs (run_id, scope, checked_at, is_passed, n_rows,
                    unknown_share, max_unknown_share, failed_expectations, details)
                VALUES ($1::text, $2::text, $3::timestamptz, $4::boolean, $5::bigint,
                    $6::float8, $7::float8, $8::text[], $9::json)
                RETURNING CAST(quality_run_id AS TEXT)
                """,
                params,
            )
        return str(quality_run_id)

    def quality_runs(self, run_id: str | None = None) -> pl.DataFrame:
        where = "" if run_id is None else "WHERE run_id = $1::text"
        with self._tx("quality_runs") as cur:
            return self._frame(
                cur,
                f"SELECT {_select_list(schema.quality_runs)} FROM quality_runs {where} "
                "ORDER BY checked_at, quality_run_id",
                () if run_id is None else (run_id,),
            )

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
        safe_url = redact_url(_text("url", url))
        if error is not None:
            error = str(error).replace(url, safe_url)[:2000]
        params = (
            _text("delivery_id", delivery_id),
            _text("run_id", run_id),
            safe_url,
            int(batch_index),
            int(n_results),
            int(attempt),
            _utc(attempted_at),
            None if status_code is None else int(status_code),
            error,
            bool(is_delivered),
            _json(payload),
        )
        with self._tx("record_webhook_attempt", write=True) as cur:
            cur.execute(
                f"""
                INSERT INTO webhook_deliveries ({_WEBHOOK_COLUMNS})
                VALUES ($1::text, $2::text, $3::text, $4::integer, $5::integer, $6::integer,
                        $7::timestamptz, $8::integer, $9::text, $10::boolean, $11::json)
                ON CONFLICT (delivery_id, attempt) DO UPDATE SET
                    run_id = excluded.run_id, url = excluded.url,
                    batch_index = excluded.batch_index, n_results = excluded.n_results,
                    attempted_at = excluded.attempted_at, status_code = excluded.status_code,
                    error = excluded.error, is_delivered = excluded.is_delivered,
                    payload = excluded.payload
                """,
                params,
            )

    def failed_webhook_deliveries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        where = "" if run_id is None else "WHERE run_id = $1::text"
        columns = _WEBHOOK_COLUMNS.replace("payload", "CAST(payload AS TEXT) AS payload")
        with self._tx("failed_webhook_deliveries") as cur:
            frame = self._frame(
                cur,
                f"""
                SELECT {columns} FROM (
                    SELECT *,
                        bool_or(is_delivered) OVER (PARTITION BY delivery_id) AS done,
                        row_number() OVER (
                            PARTITION BY delivery_id ORDER BY attempt DESC, attempted_at DESC
                        ) AS k
                    FROM webhook_deliveries {where}
                ) AS w
                WHERE k = 1 AND NOT done
                ORDER BY run_id COLLATE "C", batch_index, delivery_id COLLATE "C"
                """,
                () if run_id is None else (run_id,),
            )
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
        if len(key_hash) != 64 or any(c not in "0123456789abcdef" for c in key_hash):
            raise ValueError("key_hash must be a lower-case hex SHA-256")
        params = (
            _text("key_id", key_id),
            _text("name", name),
            bool(is_test),
            key_hash,
            key_hint,
            None if rate_limit_per_minute is None else int(rate_limit_per_minute),
            _utc(created_at),
        )
        with self._tx("add_api_key", write=True) as cur:
            cur.execute(
                """
                INSERT INTO api_keys (key_id, name, is_test, key_hash, key_hint,
                    rate_limit_per_minute, created_at)
                VALUES ($1::text, $2::text, $3::boolean, $4::text, $5::text, $6::integer,
                    $7::timestamptz)
                """,
                params,
            )

    def api_keys(self, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        with self._tx("api_keys") as cur:
            return self._frame(
                cur, f"SELECT * FROM api_keys {where} ORDER BY created_at, key_id COLLATE \"C\""
            ).to_dicts()

    def revoke_api_key(self, key_id_or_name: str, revoked_at: datetime | str | None = None) -> int:
        with self._tx("revoke_api_key", write=True) as cur:
            changed = self._scalar(
                cur,
                """
                WITH up AS (
                    UPDATE api_keys SET revoked_at = $2::timestamptz
                    WHERE revoked_at IS NULL AND (key_id = $1::text OR name = $1::text)
                    RETURNING 1
                )
                SELECT count(*) FROM up
                """,
                (_text("key", key_id_or_name), _utc(revoked_at)),
            )
        return int(changed)


class Snapshot:
    """Read-only DuckDB SQL over a copy of the PostgreSQL warehouse's tables
    (:meth:`PostgresWarehouse.snapshot`); valid inside its ``with`` block."""

    def __init__(self, path: str, con: duckdb.DuckDBPyConnection) -> None:
        self.path = path
        self._con = con

    def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pl.DataFrame:
        """One statement's whole result (an empty frame when it returns nothing)."""
        if not _READ_ONLY_START.match(sql):
            raise WarehouseError(f"a snapshot of {self.path} is read-only")
        try:
            relation = self._con.sql(sql, params=params)
            return pl.DataFrame() if relation is None else relation.pl()
        except duckdb.Error as exc:
            raise WarehouseError(f"query failed on {self.path}: {exc}") from exc


def _tables_named(sql: str) -> set[str]:
    """The warehouse tables ``sql`` reads, directly or through a view (by name; a
    catalog function such as ``duckdb_tables()`` needs no rows)."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    names = {t.name for t in schema.metadata.sorted_tables}
    needed = words & names
    seen: set[str] = set()
    todo = [v for v in schema.VIEWS if v in words]
    while todo:
        view = todo.pop()
        if view in seen:
            continue
        seen.add(view)
        body = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", schema.VIEWS[view])}
        needed |= body & names
        todo.extend(v for v in schema.VIEWS if v in body and v not in seen)
    return needed


def _short(exc: BaseException) -> str:
    """The first line of a driver error (ADBC appends the whole query)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
