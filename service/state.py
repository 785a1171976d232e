"""The service's own durable state, in one SQLite file (``<state_dir>/service.sqlite3``).

Why not the warehouse: DuckDB lets one process write a file, and ``mailsift run`` holds
it for a whole run, while the service must record every fresh result, job and webhook
the moment it happens. SQLite (WAL mode) takes many small durable writes from one
process cheaply, so the service writes here first and loads the history into the
warehouse in short transactions (:mod:`service.sharing`). Grain of each table:

``pending_verifications``  one row per fresh result not yet in ``verifications``
``pending_attempts``       one row per webhook attempt not yet in ``webhook_deliveries``
``jobs``                   one row per bulk job
``job_items``              one row per distinct address of a job (its index in the job)
``job_results``            one row per address of a job that has its result
``outbox``                 one row per per-address webhook: the exact signed body and its
                           signature (never the secret), attempts so far, next attempt time
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ServiceState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending_verifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, backend TEXT NOT NULL, row TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, attempt TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, is_test INTEGER NOT NULL,
    status TEXT NOT NULL, total INTEGER NOT NULL, n_submitted INTEGER NOT NULL,
    n_done INTEGER NOT NULL DEFAULT 0, n_cached INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    has_webhook INTEGER NOT NULL, flow_run_id TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, email TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS job_results (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, result TEXT NOT NULL, cached INTEGER NOT NULL,
    status TEXT NOT NULL, PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS outbox (
    delivery_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, idx INTEGER NOT NULL, url TEXT NOT NULL,
    body BLOB NOT NULL, signature TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    last_status INTEGER, last_error TEXT, created_at REAL NOT NULL, delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at);
"""


class ServiceState:
    """Thread-safe access to the state file; every method is one short transaction."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "service.sqlite3"
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.execute("PRAGMA busy_timeout=5000")
        self._con.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.executemany(sql, rows)
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    # -- results and attempts waiting for the warehouse --------------------------------

    def spool_results(self, run_id: str, backend: str, rows: Iterable[dict[str, Any]]) -> None:
        self._write(
            "INSERT INTO pending_verifications (run_id, backend, row) VALUES (?, ?, ?)",
            ((run_id, backend, json.dumps(r, default=str)) for r in rows),
        )

    def pending_results(self, limit: int = 50_000) -> list[tuple[int, str, str, dict[str, Any]]]:
        rows = self._read(
            "SELECT id, run_id, backend, row FROM pending_verifications ORDER BY id LIMIT ?", (limit,)
        )
        return [(i, run, backend, json.loads(row)) for i, run, backend, row in rows]

    def count_pending_results(self) -> int:
        return int(self._read("SELECT count(*) FROM pending_verifications")[0][0])

    def drop_pending_results(self, ids: Sequence[int]) -> None:
        self._write("DELETE FROM pending_verifications WHERE id = ?", ((i,) for i in ids))

    def spool_attempt(self, attempt: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO pending_attempts (attempt) VALUES (?)",
            [(json.dumps(attempt, default=str),)],
        )

    def pending_attempts(self, limit: int = 50_000) -> list[tuple[int, dict[str, Any]]]:
        rows = self._read("SELECT id, attempt FROM pending_attempts ORDER BY id LIMIT ?", (limit,))
        return [(i, json.loads(a)) for i, a in rows]

    def drop_pending_attempts(self, ids: Sequence[int]) -> None:
        self._write("DELETE FROM pending_attempts WHERE id = ?", ((i,) for i in ids))

    # -- jobs -----------------------------------------------------------------------------

    def create_job(
        self, job_id: str, *, key_id: str, is_test: bool, emails: Sequence[str],
        n_submitted: int, has_webhook: bool,
    ) -> None:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                self._con.execute(
                    "INSERT INTO jobs (job_id, key_id, is_test, status, total, n_submitted, "
                    "created_at, has_webhook) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                    (job_id, key_id, int(is_test), len(emails), n_submitted, time.time(),
                     int(has_webhook)),
                )
                self._con.executemany(
                    "INSERT INTO job_items (job_id, idx, email) VALUES (?, ?, ?)",
                    ((job_id, i, e) for i, e in enumerate(emails)),
                )
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def update_job(self, job_id: str, **fields: Any) -> None:
        allowed = {"status", "started_at", "finished_at", "flow_run_id", "error"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"update_job takes {sorted(allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"UPDATE jobs SET {sets} WHERE job_id = ?", [(*fields.values(), job_id)])

    def job(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._con.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return None if row is None else dict(zip(names, row, strict=True))

    def jobs_with_status(self, *statuses: str) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._read(f"SELECT job_id FROM jobs WHERE status IN ({marks}) ORDER BY created_at", statuses)
        return [r[0] for r in rows]

    def job_items(self, job_id: str, *, missing_only: bool = False) -> list[tuple[int, str]]:
        extra = (
            " AND idx NOT IN (SELECT idx FROM job_results WHERE job_id = ?)" if missing_only else ""
        )
        params = (job_id, job_id) if missing_only else (job_id,)
        return [
            (int(i), e)
            for i, e in self._read(f"SELECT idx, email FROM job_items WHERE job_id = ?{extra} ORDER BY idx", params)
        ]

    def add_job_results(
        self, job_id: str, results: Sequence[tuple[int, dict[str, Any], bool]],
        deliveries: Sequence[tuple[str, str, bytes, str]] = (),
    ) -> int:
        """Record results ``(idx, contract dict, cached)`` and their webhooks
        ``(delivery_id, url, body, signature)`` in one transaction; an index already
        recorded is skipped with its webhook (so nothing is sent twice). Returns the new ones."""
        now = time.time()
        added = 0
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                known = {
                    r[0]
                    for r in self._con.execute("SELECT idx FROM job_results WHERE job_id = ?", (job_id,))
                } if results else set()
                fresh_idx = set()
                for idx, result, cached in results:
                    if idx in known or idx in fresh_idx:
                        continue
                    fresh_idx.add(idx)
                    self._con.execute(
                        "INSERT INTO job_results (job_id, idx, result, cached, status) VALUES (?, ?, ?, ?, ?)",
                        (job_id, idx, json.dumps(result, default=str), int(cached), result["status"]),
                    )
                    added += 1
                if deliveries:
                    self._con.executemany(
                        "INSERT OR IGNORE INTO outbox (delivery_id, job_id, idx, url, body, "
                        "signature, next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            (did, job_id, idx, url, body, sig, now, now)
                            for (did, url, body, sig), (idx, _r, _c) in zip(deliveries, results, strict=True)
                            if idx in fresh_idx
                        ),
                    )
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")
        return added

    def job_counts(self, job_id: str) -> dict[str, int]:
        rows = self._read(
            "SELECT status, count(*), sum(cached) FROM job_results WHERE job_id = ? GROUP BY status",
            (job_id,),
        )
        counts = {"done": 0, "cached": 0, "by_status": {}}
        for status, n, cached in rows:
            counts["by_status"][status] = int(n)
            counts["done"] += int(n)
            counts["cached"] += int(cached or 0)
        return counts

    def job_results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT result, cached FROM job_results WHERE job_id = ? ORDER BY idx LIMIT ? OFFSET ?",
            (job_id, limit, offset),
        )
        return [{**json.loads(r), "cached": bool(c)} for r, c in rows]

    # -- webhook outbox -------------------------------------------------------------------

    def due_deliveries(self, now: float, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._con.execute(
                "SELECT * FROM outbox WHERE state = 'pending' AND next_at <= ? "
                "ORDER BY next_at LIMIT ?",
                (now, limit),
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def next_due(self) -> float | None:
        rows = self._read("SELECT min(next_at) FROM outbox WHERE state = 'pending'")
        return rows[0][0] if rows and rows[0][0] is not None else None

    def record_delivery(
        self, delivery_id: str, *, attempts: int, state: str, next_at: float,
        status: int | None, error: str | None,
    ) -> None:
        delivered_at = time.time() if state == "delivered" else None
        self._write(
            "UPDATE outbox SET attempts = ?, state = ?, next_at = ?, last_status = ?, "
            "last_error = ?, delivered_at = ? WHERE delivery_id = ?",
            [(attempts, state, next_at, status, error, delivered_at, delivery_id)],
        )

    def outbox_counts(self, job_id: str | None = None) -> dict[str, int]:
        where, params = ("WHERE job_id = ?", (job_id,)) if job_id else ("", ())
        rows = self._read(f"SELECT state, count(*) FROM outbox {where} GROUP BY state", params)
        return {state: int(n) for state, n in rows}
