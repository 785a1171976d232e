"""Numbered schema migrations, recorded in ``schema_migrations(version, name, applied_at)``.

:data:`MIGRATIONS` is the ordered list of ``(version, name, step)``; a step is SQL text or
a callable taking the duckdb connection. Each migration runs in its own transaction
together with its ``schema_migrations`` row, so it is applied completely or not at all,
and applying is idempotent: a version already recorded is never run again.

Rules for a new migration:

- Append it with the next version; never edit or renumber an applied one.
- :mod:`warehouse.schema` always describes the *current* shape, and ``001_initial``
  creates tables from it. A later migration that changes a table therefore also changes
  ``schema.py`` and must be a no-op on a fresh database, e.g.
  ``ALTER TABLE t ADD COLUMN IF NOT EXISTS c VARCHAR``.
- Views are replaced with ``CREATE OR REPLACE VIEW`` from :data:`warehouse.schema.VIEWS`.

The same migrations run on a PostgreSQL warehouse (:mod:`warehouse.postgres`): there
``con`` is a small adapter with the duckdb connection's ``execute``/``begin``/``commit``/
``rollback`` and ``dialect = "postgresql"``; a step that writes DDL asks
:func:`dialect_of` which spelling to use (:mod:`warehouse.schema` compiles for both).

Opening a database refuses (:class:`~mailsift.errors.WarehouseError`) when its recorded
version is newer than :data:`LATEST_VERSION`, when its history differs from ours, or when it
holds tables but no ``schema_migrations`` (it was not made by mailsift).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import duckdb

from mailsift.errors import WarehouseError

from . import schema

__all__ = [
    "LATEST_VERSION",
    "MIGRATIONS",
    "Migration",
    "applied_migrations",
    "check_schema",
    "dialect_of",
    "migrate",
]

Step = str | Callable[[duckdb.DuckDBPyConnection], None]


class Migration(NamedTuple):
    version: int
    name: str
    step: Step

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"


def dialect_of(con: object) -> str:
    """``duckdb`` for a duckdb connection, else the adapter's ``dialect`` (``postgresql``)."""
    return str(getattr(con, "dialect", "duckdb"))


def _initial(con: duckdb.DuckDBPyConnection) -> None:
    """Every table of :mod:`warehouse.schema` (schema_migrations exists already)."""
    for statement in schema.create_table_statements(dialect=dialect_of(con)):
        con.execute(statement)


def _views(con: duckdb.DuckDBPyConnection) -> None:
    for name in schema.VIEWS:
        for statement in schema.view_ddl(name, dialect=dialect_of(con)):
            con.execute(statement)


def _api_keys(con: duckdb.DuckDBPyConnection) -> None:
    """The keys of ``mailsift serve`` (a no-op on a fresh database: 001 made it)."""
    for statement in schema.table_ddl(schema.api_keys, if_not_exists=True, dialect=dialect_of(con)):
        con.execute(statement)


def _latest_contact_sources(con: duckdb.DuckDBPyConnection) -> None:
    """The view of each source's newest rows (already there on a fresh database: 002)."""
    for statement in schema.view_ddl("latest_contact_sources", dialect=dialect_of(con)):
        con.execute(statement)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _initial),
    Migration(2, "views", _views),
    Migration(3, "api_keys", _api_keys),
    Migration(4, "latest_contact_sources", _latest_contact_sources),
]

LATEST_VERSION: int = MIGRATIONS[-1].version


def _user_relations(con: duckdb.DuckDBPyConnection) -> list[str]:
    if dialect_of(con) == "postgresql":
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY 1"
        ).fetchall()
        return [name for (name,) in rows]
    rows = con.execute(
        """
        SELECT table_name FROM duckdb_tables()
        WHERE database_name = current_database() AND NOT temporary
        UNION ALL
        SELECT view_name FROM duckdb_views()
        WHERE database_name = current_database() AND NOT internal AND NOT temporary
        ORDER BY 1
        """
    ).fetchall()
    return [name for (name,) in rows]


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str]] | None:
    """``[(version, name), ...]`` as recorded, or ``None`` without a schema_migrations table."""
    if "schema_migrations" not in _user_relations(con):
        return None
    rows = con.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    return [(int(v), str(n)) for v, n in rows]


def check_schema(
    con: duckdb.DuckDBPyConnection, where: str, migrations: list[Migration] = MIGRATIONS
) -> list[Migration]:
    """The migrations still to apply; raise :class:`WarehouseError` for a database we must
    not touch. ``where`` names the database in messages."""
    applied = applied_migrations(con)
    if applied is None:
        others = _user_relations(con)
        if others:
            shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
            raise WarehouseError(
                f"{where} has tables ({shown}) but no schema_migrations table, so it is not "
                "a mailsift warehouse (or was made by hand); point MAILSIFT_DB at a new file"
            )
        return list(migrations)
    known = {m.version: m for m in migrations}
    latest = migrations[-1].version if migrations else 0
    newest = max((v for v, _ in applied), default=0)
    if newest > latest:
        raise WarehouseError(
            f"{where} has schema version {newest}, newer than this mailsift knows "
            f"({latest}); upgrade mailsift to use it"
        )
    for version, name in applied:
        mine = known.get(version)
        if mine is None or mine.name != name:
            expected = mine.label if mine else "nothing"
            raise WarehouseError(
                f"{where} records migration {version:03d}_{name}, but this mailsift has "
                f"{expected} at version {version}: the schema history differs"
            )
    done = {v for v, _ in applied}
    return [m for m in migrations if m.version not in done]


def migrate(
    con: duckdb.DuckDBPyConnection, where: str, migrations: list[Migration] = MIGRATIONS
) -> list[Migration]:
    """Apply every pending migration in order, each in its own transaction; return those
    applied (empty when up to date)."""
    pending = check_schema(con, where, migrations)
    if not pending:
        return []
    for migration in pending:
        con.begin()
        try:
            for statement in schema.table_ddl(
                schema.schema_migrations, if_not_exists=True, dialect=dialect_of(con)
            ):
                con.execute(statement)
            if isinstance(migration.step, str):
                con.execute(migration.step)
            else:
                migration.step(con)
            con.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())",
                [migration.version, migration.name],
            )
            con.commit()
        except Exception as exc:
            con.rollback()
            raise WarehouseError(f"migration {migration.label} failed on {where}: {exc}") from exc
    return pending
