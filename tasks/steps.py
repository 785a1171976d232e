"""The Prefect tasks of the pipeline: thin wrappers over the pure modules beside them.

Between tasks travel file paths and small summaries, never big frames (Prefect hashes and
caps parameters). Verification is never cached (``NO_CACHE``): a re-verification must
reach the network. Warehouse writes happen in the flow's own process and thread
(``load_results`` is called directly by the flow, not mapped).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import socket
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from mailsift.errors import BackendAuthError, InputError, resource_error
from tasks import export, extract, normalize
from tasks.domain_costs import batch_costs, batch_domains, domain_counters
from tasks.limits import domain_slots
from tasks.verify import settings_with, verify_batch_sync

__all__ = ["extract_contacts", "gate_report", "gate_worker_ready", "quality_gate", "start_gate_worker", "stop_gate_worker", "verify_batch", "write_exports", "publish_exports", "discard_exports"]

ROWS_FILE = "rows.parquet"
UNIQUE_FILE = "unique.parquet"


@task(name="extract-and-normalize", cache_policy=NO_CACHE)
def extract_contacts(sources: list[str], email_column: str | None, work_dir: str) -> Any:
    """Read every source (all before any write), normalize and dedupe.

    Returns ``{"rows": path, "unique": path, "n_rows": .., "n_without_email": .., "n_unique": ..}``,
    or a Failed state naming the source when one cannot be read (no traceback: a broken
    file is the user's input, not our bug).
    """
    logger = get_run_logger()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        parts = extract.extract_sources(sources, work / "sources", email_column=email_column)
        for part in parts:
            for warning in part.warnings:
                logger.warning("%s", warning)
        n_rows = normalize.normalize_files([p.path for p in parts], work / ROWS_FILE)
        for part in parts:
            part.path.unlink(missing_ok=True)
        rows = pl.scan_parquet(work / ROWS_FILE)
        unique = normalize.dedupe(rows)
        unique.write_parquet(work / UNIQUE_FILE)
    except InputError as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc), data=exc)
    except (OSError, MemoryError) as exc:  # the disk filled up: the host's problem, one line
        error = resource_error(exc)
        logger.error("%s", error)
        return Failed(message=str(error), data=error)
    summary = {
        "rows": str(work / ROWS_FILE),
        "unique": str(work / UNIQUE_FILE),
        "n_rows": n_rows,
        "n_without_email": normalize.count_without_email(rows),
        "n_unique": unique.height,
        "n_sources": len(parts),
    }
    logger.info(
        "read %d rows from %d source(s): %d unique addresses, %d rows without an email",
        summary["n_rows"], summary["n_sources"], summary["n_unique"], summary["n_without_email"],
    )
    return summary


def _retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a batch on crashes and transient faults, never on a refused API key."""
    try:
        state.result()
    except BackendAuthError:
        return False
    except Exception:
        return True
    return False


@task(
    name="verify-batch",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_retryable,
)
def verify_batch(
    emails: list[str], overrides: dict[str, Any], shared_domains: list[str] | None = None,
    report_costs: bool = False,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Verify one batch (a few domains' addresses) concurrently through the engine.

    ``shared_domains``: the batch's domains that other batches (maybe on other probe
    hosts) hold too; with ``MAILSIFT_DOMAIN_LIMIT_ACROSS_HOSTS`` the batch holds their
    global concurrency slots while it runs (:mod:`tasks.limits`).

    Returns the result rows; with ``report_costs`` ``{"rows": [...], "costs": {...}}``,
    the costs being what the batch's domains had cost the engine that ran it (in this
    process, maybe a probe host's) at its start and end (:mod:`tasks.domain_costs`)."""
    settings = settings_with(overrides)
    get_run_logger().info(
        "batch of %d on %s (source address %s)", len(emails), socket.gethostname(),
        settings.source_address or "default",
    )
    if report_costs:
        domains = batch_domains(emails)
        before = domain_counters(settings, domains)
    with domain_slots(shared_domains or [], settings):
        results = verify_batch_sync(emails, settings=settings)
    # stored under the key that was sent, so the warehouse joins back to the source rows
    rows = [{**r.to_row(), "email": email} for email, r in zip(emails, results, strict=True)]
    if not report_costs:
        return rows
    return {"rows": rows, "costs": batch_costs(settings, before, domain_counters(settings, domains))}


@task(name="export", cache_policy=NO_CACHE)
def write_exports(rows_path: str, results_path: str, out_dir: str, excel: bool = False,
                  publish: bool = True) -> Any:
    """Write valid/risky/invalid/unknown/no_email CSVs and results.parquet (every source
    row, original columns, formulas neutralized), replacing ``out_dir`` as a whole.
    ``publish=False``: written beside ``out_dir`` only, and ``{"staging": dir}`` returned,
    for :func:`publish_exports` (or :func:`discard_exports`) once the gate has spoken.

    A full disk or an unwritable ``out_dir`` is a Failed state carrying a
    :class:`~mailsift.errors.ResourceError` (one line, no traceback in the logs); the
    previous exports stay whole."""
    try:
        # the source rows stream from their Parquet file in batches; of the results (one
        # row per address) only the key and what the exports write are read, once (all
        # their columns, for a million results, were ~400 MB held for the whole export)
        staging = export.stage_by_status(rows_path, results_path, Path(out_dir), excel=excel)
        if not publish:
            return {"staging": str(staging)}
        return publish_exports({"staging": str(staging)}, out_dir)
    except (OSError, MemoryError) as exc:
        error = resource_error(exc)
        get_run_logger().error("export failed: %s", error)
        return Failed(message=str(error), data=error)


def publish_exports(staged: dict[str, str], out_dir: str) -> dict[str, str]:
    """The exports :func:`write_exports` staged (``publish=False``) take ``out_dir``'s place."""
    paths = export.publish_staged(Path(staged["staging"]), Path(out_dir))
    get_run_logger().info("exported to %s", out_dir)
    return {status: str(path) for status, path in paths.items()}


def discard_exports(staged: dict[str, str]) -> None:
    """Remove exports :func:`write_exports` staged: the gate failed, nothing gets out."""
    export.discard_staged(Path(staged["staging"]))


# -- the quality gate, in a process of its own when a flow started one ----------------------
#
# Importing Great Expectations costs seconds of CPU, and an import holds the GIL: done in
# the flow's process while the engine verifies, it slows the engine as much as it saves.
# So a flow starts a worker process at its start (start_gate_worker), which imports it on
# the other core while the addresses are verified; the gate then runs there.

_GATE_WORKER: ProcessPoolExecutor | None = None


def _exit_with_parent(parent: int) -> None:
    """End this worker when the flow's process is gone (a SIGKILLed `mailsift run` cannot
    shut its pool down: without this the worker, ~360 MB, would live on as an orphan)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="mailsift-gate-parent-watch", daemon=True).start()


def _import_gate_modules() -> None:
    from tasks.quality import _import_gx

    _import_gx()
    import great_expectations.expectations  # noqa: F401


#: Made-up rows of the warm-up gate (:func:`_warm_up_gate`).
WARM_UP_ROWS = 10_000


def _warm_up_gate() -> None:
    """One gate, as :func:`gate_report` runs it (a Parquet file read into pandas), over
    :data:`WARM_UP_ROWS` made-up results, paid here at idle priority instead of at the end
    of the run. Great Expectations' first validation in a process costs 0.2-0.3 s more
    than the next ones (what it loads and registers on first use: 0.31-0.42 s cold,
    0.11-0.16 s after a warm-up, measured); and the first over thousands of rows costs
    another 20-30 ms that two rows do not warm up (pandas' and Arrow's paths for larger
    arrays): through a new worker, the first gate over 10,000 results took 96-117 ms
    after a two-row warm-up, 80-91 ms after this one, the next ones ~80 ms either way
    (three processes each)."""
    import tempfile
    from datetime import UTC, datetime

    n = WARM_UP_ROWS
    statuses = ("valid", "invalid", "risky", "unknown")
    frame = pl.DataFrame({
        "email": [f"user{i}@domain{i % 97}.example" for i in range(n)],
        "status": [statuses[i % 4] for i in range(n)],
        "score": [(0.95, 0.05, 0.6, 0.3)[i % 4] for i in range(n)],
        "reason": [("accepted", "mailbox_not_found", "catch_all", "smtp_timeout")[i % 4] for i in range(n)],
        "syntax_valid": [True] * n,
        "disposable": [i % 50 == 0 and i % 4 != 0 for i in range(n)],
        "verified_at": [datetime.now(UTC)] * n,
    })
    with tempfile.TemporaryDirectory(prefix="mailsift-gate-warm-up-") as tmp:
        path = str(Path(tmp) / "results.parquet")
        frame.write_parquet(path)
        gate_report(path, max_unknown_share=1.0, max_age_days=30)


def _import_when_idle() -> None:
    """Import Great Expectations in this thread at the lowest priority (nice 19: on
    Linux a thread has its own), so the import takes only CPU the flow's process leaves
    idle. On two cores it otherwise took a core from the engine and the Prefect API server
    for the whole verify step."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not allowed: import at normal priority
        pass
    try:
        _import_gate_modules()
        _warm_up_gate()
    except Exception:  # the gate imports again when it runs, and reports what fails then
        pass


_IMPORTING: threading.Thread | None = None  # in the worker: the import's thread


def _warm_gate(parent: int) -> None:
    global _IMPORTING
    _exit_with_parent(parent)
    # the gate itself runs in this process's main thread, at normal priority; it waits
    # for this import (Python's import lock) if it has not finished by then
    _IMPORTING = threading.Thread(target=_import_when_idle, name="mailsift-gate-import", daemon=True)
    _IMPORTING.start()


def _imported(timeout: float) -> bool:
    """In the worker: wait up to ``timeout`` s for the import; True once it is done."""
    if _IMPORTING is not None:
        _IMPORTING.join(timeout)
        return not _IMPORTING.is_alive()
    return True


def start_gate_worker() -> None:
    """Start the gate's worker process now (it imports Great Expectations meanwhile)."""
    global _GATE_WORKER
    if _GATE_WORKER is not None:
        return
    worker = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_warm_gate,
        initargs=(os.getpid(),),
    )
    worker.submit(int)  # the process starts now, not at the first gate
    atexit.register(worker.shutdown, wait=False, cancel_futures=True)
    _GATE_WORKER = worker


def gate_worker_ready(timeout: float = 60.0) -> bool:
    """Wait up to ``timeout`` s for the gate's worker to have imported Great Expectations
    (False when it has not, or no worker runs)."""
    if _GATE_WORKER is None:
        return False
    try:
        return bool(_GATE_WORKER.submit(_imported, timeout).result(timeout + 30))
    except Exception:  # a dead worker: the gate runs in the flow's process
        return False


def stop_gate_worker() -> None:
    """Stop the gate's worker process (the next :func:`start_gate_worker` starts a new
    one, importing Great Expectations afresh: what a new ``mailsift run`` pays)."""
    global _GATE_WORKER
    worker, _GATE_WORKER = _GATE_WORKER, None
    if worker is not None:
        worker.shutdown(wait=True, cancel_futures=True)


def gate_report(results_path: str, max_unknown_share: float, max_age_days: int | None) -> dict[str, Any]:
    """The gate's report over a results file (pure; runs in the worker or here)."""
    if _IMPORTING is not None and _IMPORTING is not threading.current_thread():
        _IMPORTING.join()  # in the worker: its warm-up gate first (never two at once)
    from tasks.quality import REQUIRED_COLUMNS, GateConfig, run_gate

    # only what the gate reads: the text columns it does not (SMTP messages, MX hosts,
    # suggestions) were most of the frame's memory in pandas (1,000,000 results)
    present = pl.read_parquet_schema(results_path)
    frame = pl.read_parquet(
        results_path, columns=[c for c in REQUIRED_COLUMNS if c in present]
    ).to_pandas()
    config = GateConfig(max_unknown_share=max_unknown_share, max_age_days=max_age_days)
    return run_gate(frame, config).to_dict()


@task(name="quality-gate", cache_policy=NO_CACHE)
def quality_gate(results_path: str, max_unknown_share: float, max_age_days: int | None) -> dict[str, Any]:
    """Great Expectations over the results: in the gate's worker process when the flow
    started one (:func:`start_gate_worker`), else here (imported here only: it is heavy)."""
    global _GATE_WORKER
    report: dict[str, Any] | None = None
    if _GATE_WORKER is not None:
        try:
            report = _GATE_WORKER.submit(
                gate_report, results_path, max_unknown_share, max_age_days
            ).result()
        except BrokenProcessPool:  # the worker died (killed, out of memory): run it here
            _GATE_WORKER = None
    if report is None:
        report = gate_report(results_path, max_unknown_share, max_age_days)
    logger = get_run_logger()
    if report["is_passed"]:
        logger.info("quality gate passed (%d rows, unknown share %.1f%%)",
                    report["n_rows"], 100 * report["unknown_share"])
    else:
        failed = [r["name"] for r in report["results"] if not r["success"]]
        logger.error("quality gate failed: %s", ", ".join(failed))
    return report
