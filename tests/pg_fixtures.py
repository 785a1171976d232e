"""A real PostgreSQL server for the shared-warehouse tests, started by the tests.

``pgserver`` (PyPI, a dev dependency) ships PostgreSQL's binaries and starts a server on
a Unix socket inside a temporary directory in well under a second; each test gets a
database of its own. Without pgserver, or where PostgreSQL cannot start, the PostgreSQL
tests are skipped with the reason (the DuckDB ones still run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["new_database", "pg_server", "pg_url"]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One PostgreSQL server for the test session (stopped and deleted at its end)."""
    try:
        import pgserver
    except ImportError:
        pytest.skip("PostgreSQL tests need pgserver (pip install -e '.[dev]')")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("xdg")))
    # Not under pytest's 0700 tmp dir: run as root, pgserver runs PostgreSQL as its own
    # unprivileged user, which must reach the data directory.
    parent = Path(tempfile.mkdtemp(prefix="mailsift-pg-"))
    parent.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            server = pgserver.get_server(parent / "data", cleanup_mode="delete")
        except Exception as exc:  # no shared memory, no writable tmp, ...
            shutil.rmtree(parent, ignore_errors=True)
            pytest.skip(f"PostgreSQL could not be started here: {exc}")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


def new_database(server: object) -> str:
    """A new, empty schema on ``server`` (as good as a database for mailsift, and ten
    times faster to make); return the URL that uses it (``options=-csearch_path=...``)."""
    name = f"mailsift_{uuid.uuid4().hex[:12]}"
    server.psql(f"CREATE SCHEMA {name};")  # type: ignore[attr-defined]
    return f"{server.get_uri()}&options=-csearch_path%3D{name}"  # type: ignore[attr-defined]


@pytest.fixture
def pg_url(pg_server: object) -> str:
    """The URL of a new, empty warehouse (MAILSIFT_DB for a shared warehouse)."""
    return new_database(pg_server)
