"""``mailsift serve`` and ``mailsift keys``: mounted on the ``mailsift`` command, imported
only when one of them runs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["keys_app", "serve"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

keys_app = typer.Typer(
    help="API keys of mailsift serve (stored hashed in the warehouse).", no_args_is_help=True
)

DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", help="Warehouse: a DuckDB file or a postgresql:// URL [env MAILSIFT_DB, default ./mailsift.duckdb]."),
]


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"mailsift: {message}", err=True)
    return typer.Exit(code)


def _db(db: str | None) -> Path | str:
    """The warehouse location: a file ``Path`` or a ``postgresql://`` URL."""
    from pydantic import ValidationError

    from mailsift.settings import Settings, db_location

    if db is not None:
        try:
            return db_location(db)
        except ValueError as exc:  # a malformed URL, shown without its password
            raise _fail(f"--db {exc}") from None
    try:
        return db_location(Settings().db)
    except ValidationError as exc:
        raise _fail(f"bad settings: {exc.errors()[0]['msg']}") from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    test: Annotated[bool, typer.Option("--test", help="A test key: sandbox answers, no network.")] = False,
    rate_limit: Annotated[
        Optional[int], typer.Option("--rate-limit", min=0, help="Requests per minute, 0 unlimited (default: the service's).")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Create a key and print it once (only its SHA-256 is stored)."""
    from mailsift.errors import WarehouseError
    from service.keys import new_key
    from warehouse import Warehouse

    name = name.strip()
    if not name or any(ord(c) < 32 for c in name):
        raise _fail("--name must be a non-empty name without control characters")
    key, key_id, key_hash, hint = new_key(test=test)
    try:
        with Warehouse.open(_db(db)) as wh:
            wh.add_api_key(key_id=key_id, name=name, is_test=test, key_hash=key_hash,
                           key_hint=hint, rate_limit_per_minute=rate_limit)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    typer.echo(key)
    typer.echo(f"key id {key_id} ({'test' if test else 'live'}, name {name!r}): store the key now, "
               "it is not shown again", err=True)


@keys_app.command("list")
def keys_list(
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per key.")] = False,
) -> None:
    """List keys (id, name, kind, hint, created, revoked); never the keys themselves."""
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    try:
        with Warehouse.open(_db(db), create=False, read_only=True) as wh:
            rows = wh.api_keys()
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    for row in rows:
        row.pop("key_hash")
        if as_json:
            typer.echo(json.dumps(row, default=str))
        else:
            state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            kind = "test" if row["is_test"] else "live"
            typer.echo(f"{row['key_id']}  {kind}  {row['key_hint']}  {row['name']}  "
                       f"created {row['created_at']:%Y-%m-%d %H:%M}  {state}")
    if not rows and not as_json:
        typer.echo("no keys yet: mailsift keys create --name NAME", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key id (keys list) or the name.")],
    db: DbOpt = None,
) -> None:
    """Revoke a key: the service refuses it within MAILSIFT_SERVE_KEYS_REFRESH_SECONDS (5 s)."""
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    try:
        with Warehouse.open(_db(db), create=False) as wh:
            n = wh.revoke_api_key(key)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    if not n:
        raise _fail(f"no active key with id or name {key!r}", EXIT_FAILED)
    typer.echo(f"revoked {n} key(s)")


def _shown(where: Path | str) -> str:
    """The warehouse for a message: a URL without its password."""
    if isinstance(where, Path):
        return str(where)
    from warehouse.redaction import redact_url

    return redact_url(where)


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="[env MAILSIFT_SERVE_HOST, 127.0.0.1]")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="[env MAILSIFT_SERVE_PORT, 8080]")] = None,
    db: DbOpt = None,
    proxy_headers: Annotated[
        bool, typer.Option("--proxy-headers/--no-proxy-headers", help="Trust X-Forwarded-* from --forwarded-allow-ips.")
    ] = False,
    forwarded_allow_ips: Annotated[Optional[str], typer.Option("--forwarded-allow-ips")] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Serve the verification API (OpenAPI at /docs). Stops cleanly on Ctrl-C / SIGTERM."""
    import os

    from pydantic import ValidationError

    from mailsift.settings import Settings
    from service.settings import ServeSettings

    for key, value in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
        os.environ.setdefault(key, value)
    try:
        engine = Settings(**({"db": db} if db else {}))
        where = _db(db)
        given = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        serve_settings = ServeSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise _fail(f"bad settings: {problems}") from None
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    try:  # create or migrate it now: a bad path is one line, not a start-up traceback
        Warehouse.open(where, lock_timeout=30).close()
    except WarehouseError as exc:
        raise _fail(str(exc)) from None
    import uvicorn

    from service.app import create_app

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="mailsift: %(levelname)s: %(message)s", stream=sys.stderr)
    app = create_app(engine, serve_settings)
    typer.echo(f"mailsift serve: http://{serve_settings.host}:{serve_settings.port}/docs "
               f"(warehouse {_shown(where)})", err=True)
    uvicorn.run(
        app,
        host=serve_settings.host,
        port=serve_settings.port,
        log_level=log_level,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        access_log=False,  # keys travel in headers, never in the log; counts are in /health
        timeout_graceful_shutdown=10,
    )
