"""How ``mailsift serve`` shares the DuckDB warehouse with ``mailsift run``, ``reverify``
and ``gate``.

DuckDB lets one process hold a database file read-write, and no other process may even
read it meanwhile. So the service never keeps the file open:

- every fresh result is first written to the service's own state (:mod:`service.state`,
  SQLite: durable at once), then loaded into ``verifications`` by :meth:`flush`, every
  ``MAILSIFT_SERVE_FLUSH_INTERVAL`` seconds, in one short transaction (milliseconds);
  rows are removed from the spool only after the warehouse committed them, and
  :meth:`warehouse.Warehouse.append_verifications` skips a row already stored, so a crash
  between the two loses nothing and writes nothing twice;
- lookups open the file read-only for one query;
- every open waits for another process's lock for a bounded time
  (:meth:`warehouse.Warehouse.open`'s ``lock_timeout``); ``mailsift run`` and ``gate``
  wait the same way (``MAILSIFT_DB_LOCK_TIMEOUT``, 5 s by default) for the service's
  short transactions, so they succeed while the service serves.

While a pipeline run holds the file (minutes), lookups find nothing in the warehouse
(they verify fresh), keys are served from memory and loads wait in the spool until the
run ends. Within the service every open is serialized (DuckDB refuses to open one file
in two modes in one process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from mailsift.errors import WarehouseError
from mailsift.result import VerificationResult
from service.state import ServiceState
from warehouse import RESULT_SCHEMA, Warehouse
from warehouse.frames import results_from_frame
from warehouse.redaction import redact_url

__all__ = ["SharedWarehouse"]

log = logging.getLogger("mailsift.serve")
T = TypeVar("T")


class SharedWarehouse:
    """Short, serialized, lock-patient access to one warehouse file."""

    def __init__(
        self, db: Path | str, state: ServiceState, *, read_wait: float = 0.25, write_wait: float = 2.0
    ) -> None:
        self.db = db
        self.name = str(db) if isinstance(db, Path) else redact_url(db)  # for messages
        self.state = state
        self.read_wait = read_wait
        self.write_wait = write_wait
        self._lock = threading.Lock()

    def prepare(self, wait: float = 30.0) -> None:
        """Create or migrate the warehouse (at start-up)."""
        with self._lock, Warehouse.open(self.db, lock_timeout=wait):
            pass

    def read(self, fn: Callable[[Warehouse], T], *, wait: float | None = None) -> T:
        """``fn(warehouse)`` on a read-only connection opened for this call only; waits at
        most ``wait`` seconds for the file (a load of ours in progress, another process)."""
        wait = self.read_wait if wait is None else wait
        started = time.monotonic()
        if not self._lock.acquire(timeout=wait):
            raise WarehouseError(f"{self.name} is busy (a load into it is in progress)")
        try:
            left = max(0.0, wait - (time.monotonic() - started))
            with Warehouse.open(self.db, create=False, read_only=True, lock_timeout=left) as wh:
                return fn(wh)
        finally:
            self._lock.release()

    def write(self, fn: Callable[[Warehouse], T], *, wait: float | None = None) -> T:
        with self._lock, Warehouse.open(
            self.db, lock_timeout=self.write_wait if wait is None else wait
        ) as wh:
            return fn(wh)

    # -- reads ------------------------------------------------------------------------------

    def fresh(
        self, emails: Sequence[str], *, max_age_days: float, retry_unknown_after_minutes: float
    ) -> dict[str, VerificationResult]:
        """Stored results still fresh, by email (empty when the warehouse is busy)."""
        if not emails:
            return {}

        def query(wh: Warehouse) -> pl.DataFrame:
            return wh.fresh_results(
                list(emails),
                max_age_days=max_age_days,
                retry_unknown_after_minutes=retry_unknown_after_minutes,
            )

        try:
            frame = self.read(query)
        except WarehouseError as exc:
            log.info("warehouse not readable now, verifying fresh: %s", exc)
            return {}
        return {r.email: r for r in results_from_frame(frame)}

    def keys(self) -> list[dict[str, Any]]:
        return self.read(lambda wh: wh.api_keys(), wait=1.0)

    # -- loads ------------------------------------------------------------------------------

    def flush(self) -> int:
        """Load spooled results and webhook attempts into the warehouse; return the
        results loaded (0 when nothing waited or the warehouse stayed locked)."""
        pending = self.state.pending_results()
        attempts = self.state.pending_attempts()
        if not pending and not attempts:
            return 0
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _id, run_id, backend, row in pending:
            row = dict(row)
            row["verified_at"] = datetime.fromisoformat(row["verified_at"])
            groups.setdefault((run_id, backend), []).append(row)

        def load(wh: Warehouse) -> int:
            n = 0
            for (run_id, backend), rows in groups.items():
                frame = pl.DataFrame(rows, schema=RESULT_SCHEMA)
                n += wh.append_verifications(frame, run_id=run_id, backend=backend)
            for _id, attempt in attempts:
                wh.record_webhook_attempt(**attempt)
            return n

        try:
            loaded = self.write(load)
        except WarehouseError as exc:
            log.info("warehouse busy, %d results wait in the spool: %s", len(pending), exc)
            return 0
        self.state.drop_pending_results([p[0] for p in pending])
        self.state.drop_pending_attempts([a[0] for a in attempts])
        return loaded
