"""Pipeline steps both flows share: verify in mapped batches and load as they complete,
gate the results, push webhooks, finish the run (its list-health report and its summary
artifact)."""

from __future__ import annotations

import contextvars
import json
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.utilities.annotations import quote

from flows.summary import md_text, summary_markdown
from mailsift import scratch
from mailsift.diagnosis import PathDiagnostics
from mailsift.errors import BackendAuthError, MailsiftError, QualityGateFailed, resource_error
from mailsift.result import utcnow
from mailsift.settings import BackendName, db_location
from tasks.domain_costs import DomainCosts
from tasks.limits import split_domains
from tasks.normalize import batches_by_domain
from tasks.placement import BatchPlacer
from tasks.steps import (
    discard_exports,
    publish_exports,
    quality_gate,
    start_gate_worker,
    verify_batch,
    write_exports,
)
from tasks.verify import prepare_engine, resolver_health_sync, settings_with
from warehouse import RESULT_SCHEMA, Warehouse
from warehouse.redaction import redact_url

if TYPE_CHECKING:
    from warehouse.report import Prefetched

__all__ = [
    "BackendChoice",
    "RunContext",
    "run_context",
    "RunCounters", "VERIFY_WORKERS", "batch_failure", "gate_and_export", "mark_lost", "preload_engine", "preload_gate", "verify_and_load", "gate_results", "summarize", "complete_run", "push_webhooks",
    "fail_run",
    "begin_run",
    "contact_chunks",
    "refuse_bad_urls",
    "prefetch_run_report",
]

#: The ``backend`` parameter: a select in the Prefect run form. ``default`` is the worker's
#: MAILSIFT_BACKEND, else ``local``.
BackendChoice = Literal["default", BackendName]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (0.0 where unknown)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0.0
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)  # Linux: KiB


@dataclass
class RunCounters:
    n_source_rows: int = 0
    n_without_email: int = 0
    n_unique: int = 0
    n_from_warehouse: int = 0
    n_verified: int = 0
    n_failed_batches: int = 0
    #: Addresses of the failed batches: nothing of them is stored, the next run checks them.
    n_unverified: int = 0
    smtp_note: str | None = None
    #: Causes the run's failures share (see mailsift.diagnosis), as dicts.
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: What the largest domains cost the engine in this run (connections, RCPTs, window
    #: reached, 421s, seconds; see mailsift.smtp.pacing.DomainStats).
    domains: list[dict[str, Any]] = field(default_factory=list)

    #: The peak RSS of the flow's process (MB) by the end of each step: where memory goes.
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    def timed(self, step: str, started: float) -> None:
        """Record ``step``'s seconds since ``started`` (``time.perf_counter``) and the
        process's peak RSS so far."""
        self.timings[f"{step}_s"] = round(time.perf_counter() - started, 3)
        self.peak_rss_mb[step] = peak_rss_mb()

    def as_counts(self) -> dict[str, int]:
        """The counts the ``runs`` table keeps."""
        return {
            "n_source_rows": self.n_source_rows,
            "n_without_email": self.n_without_email,
            "n_unique": self.n_unique,
            "n_from_warehouse": self.n_from_warehouse,
            "n_verified": self.n_verified,
        }


@dataclass(frozen=True)
class RunContext:
    """What every flow run starts from: its id, backend, warehouse path and a scratch dir."""

    run_id: str
    backend: str
    db_path: Path | str  # a DuckDB file, or a postgresql:// URL (mailsift.settings.db_location)
    work_dir: str

    @property
    def warehouse_name(self) -> str:
        """The warehouse as shown to people: the file's absolute path, or the URL with
        its credentials redacted."""
        if isinstance(self.db_path, Path):
            return str(self.db_path.resolve())
        return redact_url(self.db_path)

    @property
    def overrides(self) -> dict[str, Any]:
        """Settings the verify tasks apply over the environment (never a secret)."""
        return {"backend": self.backend}


#: Verify batches in flight at once. They all feed ONE engine (tasks/verify.py), whose
#: scheduler orders SMTP work by critical path over every batch it holds; a thread per
#: batch mostly waits, so a batch of small domains never queues behind a large domain's.
VERIFY_WORKERS = 32

def preload_gate() -> None:
    """Start the quality gate's worker process when a flow starts: it imports Great
    Expectations (seconds of CPU) on another core while the addresses are verified, so
    the gate at the end finds it loaded and the engine never waits for the import."""
    start_gate_worker()


def preload_engine(ctx: RunContext) -> None:
    """When this process verifies the batches (not probe hosts): build its engine and
    read the reputation data in a background thread as the flow starts, beside the
    extract and the warehouse load, instead of in the first batch
    (:func:`tasks.verify.prepare_engine`)."""
    if _batches_run_here():
        prepare_engine(ctx.overrides)


def _batches_run_here() -> bool:
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    return runner is None or isinstance(runner, ThreadPoolTaskRunner) or not hasattr(runner, "client")


def probe_hosts() -> dict[str, int] | None:
    """The Dask workers (probe hosts) the flow's task runner sends batches to, each with
    its threads, or ``None`` when the batches run in this process (Prefect's thread pool)."""
    from prefect.context import FlowRunContext

    if _batches_run_here():
        return None
    runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]
    try:
        workers = runner.client.scheduler_info()["workers"]
        return {address: int(info.get("nthreads") or 1) for address, info in sorted(workers.items())}
    except Exception as exc:  # the scheduler's view only: Dask places the batches itself
        get_run_logger().warning("could not list the probe hosts (%s): Dask places the batches", exc)
        return None


#: The placer's one "host" while no probe host is known: this process's thread pool, or
#: a Dask cluster with no worker yet (Dask then places the batches).
ANY_HOST = "any"


def submit_on(host: str | None, batch: list[str], *args: Any, **kwargs: Any) -> PrefectFuture[Any]:
    """``verify_batch.submit`` to run on ``host`` (a Dask worker's address) if it can:
    another worker takes it when that one is gone (``allow_other_workers``); ``None``:
    in this process; :data:`ANY_HOST`: wherever Dask places it.

    In this process the batch goes ``quote``d: Prefect would otherwise walk its thousand
    addresses looking for futures, several times per task run (2-2.5 ms a walk,
    measured), on the CPU the engine verifies with. Not to Dask: prefect-dask rebuilds
    the parameters before they travel, and a quoted list arrived as a list of one list."""
    if host is None:
        return verify_batch.submit(quote(batch), *args, **kwargs)
    if host == ANY_HOST:
        return verify_batch.submit(batch, *args, **kwargs)
    import dask

    with dask.annotate(workers=[host], allow_other_workers=True):
        return verify_batch.submit(batch, *args, **kwargs)


#: Seconds between two looks at which probe hosts the cluster has (joined, left).
HOSTS_REFRESH_S = 5.0


def run_context(backend: str | None, db: str | None, prefix: str) -> RunContext:
    """``backend`` ``default`` (or empty) and an empty ``db`` mean: from the settings."""
    settings = settings_with({"backend": None if backend in (None, "", "default") else backend})
    scratch.sweep()  # what killed processes left in $TMPDIR (work dirs, partial downloads)
    return RunContext(
        run_id=str(flow_run.get_id() or f"local-{int(time.time() * 1000)}"),
        backend=settings.backend,
        db_path=db_location(db) if db else settings.db,
        work_dir=scratch.make_dir(prefix.removeprefix("mailsift-").strip("-") or "run"),
    )


def refuse_bad_urls(sources: list[str] | None = None, webhook_url: str = "") -> Failed | None:
    """Before the run starts: a URL parameter holding a credential in clear (it should
    name it: ``${ENV}`` / ``${secret:block}``, :mod:`mailsift.urlsecrets`) or a webhook
    URL that can never work is refused in one line, the URL redacted."""
    from mailsift.errors import ConfigError
    from mailsift.urlsecrets import check_no_inline_secret
    from mailsift.webhooks import check_url

    try:
        for source in sources or []:
            if source[:8].lower().startswith(("http://", "https://")):
                check_no_inline_secret(source, "source URL")
        if webhook_url:
            check_url(webhook_url)
            check_no_inline_secret(webhook_url, "webhook URL")
    except ConfigError as exc:
        get_run_logger().error("%s", exc)
        return Failed(message=str(exc), data=exc)
    return None


#: Source rows loaded into the warehouse per call (each call is its own transaction;
#: reloading a chunk adds nothing twice, see Warehouse.upsert_contacts). 200,000: the
#: load of 5 M rows peaks near 500 MB (500,000: ~750 MB), ~15 % slower.
CONTACT_CHUNK_ROWS = 200_000


def contact_chunks(rows_path: str, chunk_rows: int = CONTACT_CHUNK_ROWS):  # -> Iterator[pl.DataFrame]
    """The five columns the warehouse keeps of the normalized rows, ``chunk_rows`` at a
    time, read from the Parquet file (5 M source rows never sit in memory at once).

    Each chunk is a polars slice of a scan, which reads only the row groups it needs
    (pyarrow's ``iter_batches`` held 2-3 times the memory for the same chunks)."""
    import pyarrow.parquet as pq

    names = {"__ms_source": "source", "__ms_row": "row_number", "__ms_record_id": "record_id",
             "__ms_key": "email", "__ms_domain": "domain"}
    scan = pl.scan_parquet(rows_path).select(list(names)).rename(names)
    n_rows = pq.ParquetFile(rows_path).metadata.num_rows
    for offset in range(0, n_rows, chunk_rows):
        yield scan.slice(offset, chunk_rows).collect()


def begin_run(wh: Warehouse, run_id: str, flow_name: str, backend: str) -> None:
    """Mark the runs a killed process left ``running`` as failed (interrupted), then
    record this run with its owner (pid, host, process start time) so the next start can
    tell whether it is still alive. (:func:`run_context` sweeps the scratch files.)"""
    for stale in wh.interrupt_dead_runs(scratch.owner_is_alive):
        get_run_logger().warning("run %s was interrupted (its process is gone): marked failed", stale)
    wh.start_run(run_id, flow_name, backend, utcnow(), owner=scratch.owner())


def batch_failure(exc: BaseException, size: int) -> str:
    """The one line a failed batch logs: what was lost and who checks it."""
    what = f"a batch of {size} addresses"
    if type(exc).__name__ == "KilledWorker":  # distributed: its probe hosts died running it
        return (f"{what} was lost with the probe host running it (its Dask worker died; "
                "nothing of it was stored): the next run verifies those addresses")
    return f"{what} failed after retries and will be verified by the next run: {exc}"


def mark_lost(task_run_id: Any, message: str) -> None:
    """A batch lost with its probe host: the dead worker left its task run ``Running``;
    mark it ``Crashed`` so the Prefect UI shows what happened to it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_task_run_state(task_run_id, Crashed(message=message), force=True)
    except Exception as exc:  # the UI's view only: the run goes on
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return  # the host died before the task started: Prefect never saw a task run
        get_run_logger().warning("could not mark the lost batch's task run crashed: %s", exc)


def verify_and_load(
    wh: Warehouse,
    emails: pl.DataFrame,
    *,
    run_id: str,
    backend: str,
    overrides: dict[str, Any],
    batch_size: int,
    counters: RunCounters,
) -> None:
    """Verify ``emails`` (columns email, domain) in mapped batches grouped by domain and
    append each batch to the warehouse as soon as it completes, so a crash or a kill
    loses only the batches in flight. A refused API key stops the run."""
    logger = get_run_logger()
    batches = batches_by_domain(emails, batch_size=batch_size) if emails.height else []
    if not batches:
        logger.info("nothing to verify: every address has a fresh result in the warehouse")
        return
    total = emails.height
    logger.info("verifying %d addresses in %d batches", total, len(batches))
    settings = settings_with(overrides)
    costs = DomainCosts()  # each batch reports its domains' costs, wherever it ran
    started = time.perf_counter()
    # A sliding window of VERIFY_WORKERS batches in flight, not one map of all: a
    # future holds its batch's result rows, and once loaded nothing should (memory stays
    # flat in the list's size). On probe hosts, the flow picks each batch's host itself
    # (tasks/placement.py): every host holds some of each big domain's batches at a time.
    hosts = probe_hosts()  # None: this process's threads; else the Dask workers (maybe none yet)
    placer = BatchPlacer(batches, hosts or {ANY_HOST: VERIFY_WORKERS}, VERIFY_WORKERS)
    shared = split_domains(batches)
    finished: queue.SimpleQueue[PrefectFuture[Any]] = queue.SimpleQueue()
    placed: dict[Any, tuple[int, int]] = {}  # task run id -> (batch index, its size)
    looked = time.monotonic()

    def submit_ready() -> None:
        while (next_batch := placer.place()) is not None:
            index, host = next_batch
            batch, batches[index] = batches[index], []  # the task holds it now, not the flow
            future = submit_on(None if hosts is None else host, batch, overrides, shared[index],
                               report_costs=True)
            placed[future.task_run_id] = (index, len(batch))
            future.add_done_callback(finished.put)

    submit_ready()
    done = 0
    path = PathDiagnostics(smtp_port=settings.smtp_port, helo_hostname=settings.helo_hostname)
    dns_errors = 0
    # one batch's rows per append: DuckDB's threads gain nothing on them and take the
    # engine's CPU (Warehouse.threads_limited)
    with wh.threads_limited(1):
        while placed:
            future = finished.get()
            index, size = placed.pop(future.task_run_id)
            placer.done(index)
            if hosts is not None and placer.pending and time.monotonic() - looked > HOSTS_REFRESH_S:
                looked = time.monotonic()
                fresh = probe_hosts()
                if fresh:  # none listed: keep placing as before
                    hosts = fresh
                    placer.set_hosts(fresh)
            submit_ready()
            try:
                outcome = future.result()
            except BackendAuthError:
                raise  # a refused key: stop the run with one clear message
            except Exception as exc:  # the batch failed after its retries: the others go on
                counters.n_failed_batches += 1
                counters.n_unverified += size
                logger.error("%s", batch_failure(exc, size))
                if type(exc).__name__ == "KilledWorker":
                    mark_lost(future.task_run_id, batch_failure(exc, size))
                continue
            rows = outcome["rows"]
            costs.add(outcome["costs"])
            inserted = wh.append_verifications(pl.DataFrame(rows, schema=RESULT_SCHEMA), run_id=run_id, backend=backend)
            counters.n_verified += inserted
            done += len(rows)
            dns_errors += sum(1 for r in rows if r["reason"] == "dns_error")
            for row in rows:
                path.note_result(row)
            logger.info("progress: %d/%d addresses verified (%.0f%%)", done, total, 100 * done / total)
    counters.timed("verify", started)
    counters.domains = costs.rows()
    if dns_errors:  # was it the resolver? (asked once; the engine caches the answer)
        path.note_resolver(resolver_health_sync(settings))
    diagnoses = path.diagnoses()
    if diagnoses:
        counters.smtp_note = " ".join(d.message for d in diagnoses)
        counters.diagnoses = [d.to_dict() for d in diagnoses]
        for diagnosis in diagnoses:
            logger.warning("%s", diagnosis.message)


def gate_and_export(
    wh: Warehouse,
    results_path: str,
    rows_path: str,
    out_dir: str,
    *,
    excel: bool,
    run_id: str | None,
    max_unknown_share: float,
    max_age_days: int | None,
    counters: RunCounters,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The quality gate and the exports at once: the exports are written beside
    ``out_dir`` while the gate runs (in its worker process), and take ``out_dir``'s place
    only when it passes, so nothing that fails the gate gets out, and the run does not
    wait for the one after the other. ``meanwhile``: see :func:`gate_results`.
    Returns (gate report, export paths); raises what
    :func:`gate_results` raises (the staged exports removed), or the export's
    :class:`~mailsift.errors.ResourceError` (a full disk: the previous exports stay)."""
    t0 = time.perf_counter()
    staged = write_exports.submit(rows_path, results_path, out_dir, excel, publish=False)
    try:
        gate = gate_results(wh, results_path, run_id=run_id, scope="run",
                            max_unknown_share=max_unknown_share, max_age_days=max_age_days,
                            meanwhile=meanwhile)
    except BaseException:
        staged.wait()
        state = staged.state
        if state.is_completed() and isinstance(outcome := state.result(raise_on_failure=False), dict):
            discard_exports(outcome)
        raise
    counters.timed("gate", t0)
    t0 = time.perf_counter()
    staged.wait()
    state = staged.state
    outcome = state.result(raise_on_failure=False)
    if state.is_failed() or not isinstance(outcome, dict):  # a full disk: its ResourceError, one line
        raise outcome if isinstance(outcome, BaseException) else resource_error(OSError(str(outcome)))
    exports = publish_exports(outcome, out_dir)
    counters.timed("export", t0)
    return gate, exports


def gate_results(
    wh: Warehouse,
    results_path: str,
    *,
    run_id: str | None,
    scope: str,
    max_unknown_share: float,
    max_age_days: int | None,
    meanwhile: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the quality gate over the results file, record it, publish failures.

    ``meanwhile`` is called in a thread of its own (the flow's context copied) while this
    one waits for the gate, and the gate is recorded once both are done: work that must
    not change what the gate reads. (Not a task submitted to the flow's runner: on probe
    hosts that is Dask, and the gate runs in this process, beside its worker.)

    Returns the report as a dict; raises :class:`QualityGateFailed` (listing the failed
    expectations) when it fails."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailsift-meanwhile") as side:
        alongside = None if meanwhile is None else side.submit(contextvars.copy_context().run, meanwhile)
        try:
            report = quality_gate(results_path, max_unknown_share=max_unknown_share,
                                  max_age_days=max_age_days)
        finally:
            if alongside is not None:
                alongside.result()
    wh.record_quality_run(
        run_id=run_id,
        scope=scope,
        checked_at=report["checked_at"],
        is_passed=report["is_passed"],
        n_rows=report["n_rows"],
        unknown_share=report["unknown_share"],
        max_unknown_share=max_unknown_share,
        failed_expectations=[r["name"] for r in report["results"] if not r["success"]],
        details=report,
    )
    if not report["is_passed"]:
        failed = [r for r in report["results"] if not r["success"]]
        lines = ["# Quality gate failed", "", "Nothing was exported.", ""]
        for r in failed:
            lines.append(
                f"- **{r['name']}** (`{r['expectation']}`): {r['unexpected_count']} of "
                f"{r['element_count']} rows; observed {r['observed']}"
            )
        create_markdown_artifact(markdown="\n".join(lines), key="quality-gate-failures",
                                 description="Failed expectations")
        examples = [dict(expectation=r["name"], **ex) for r in failed for ex in r["examples"][:5]]
        if examples:
            create_table_artifact(table=examples, key="quality-gate-examples",
                                  description="Example rows of failed expectations")
        names = ", ".join(f"{r['name']} ({r['unexpected_count']}/{r['element_count']})" for r in failed)
        raise QualityGateFailed(f"quality gate failed: {names}")
    return report


def summarize(flow_name: str, counters: RunCounters, by_status: dict[str, int],
              by_reason: dict[str, int], gate: dict[str, Any] | None,
              exports: dict[str, str] | None, *, ctx: RunContext, sources: list[str] | None = None,
              max_age_days: int | None = None, max_unknown_share: float | None = None
              ) -> dict[str, Any]:
    """The run summary (counts, never address lists): returned by the flow, kept in
    ``runs.summary``, printed by the CLI, rendered by :func:`flows.summary.summary_markdown`."""
    summary = {
        "flow": flow_name,
        "sources": list(sources or []),
        "warehouse": ctx.warehouse_name,
        "source_rows": counters.n_source_rows,
        "rows_without_email": counters.n_without_email,
        "unique_addresses": counters.n_unique,
        "from_warehouse": counters.n_from_warehouse,
        "verified_now": counters.n_verified,
        "failed_batches": counters.n_failed_batches,
        "unverified_addresses": counters.n_unverified,
        "by_status": by_status,
        "by_reason": by_reason,
        "gate": None if gate is None else ("passed" if gate["is_passed"] else "failed"),
        "unknown_share": None if gate is None else round(gate["unknown_share"], 6),
        "max_unknown_share": max_unknown_share,
        "max_age_days": max_age_days,
        "exports": exports or {},
        "report": None,
        "timings_s": counters.timings,
        "peak_rss_mb": counters.peak_rss_mb,
    }
    if counters.smtp_note:
        summary["warning"] = counters.smtp_note
        summary["diagnoses"] = counters.diagnoses
    if counters.domains:
        summary["domains"] = counters.domains
    return summary


def prefetch_run_report(wh: Warehouse) -> Prefetched | None:
    """While the quality gate runs in its own process the flow would only wait: write
    the warehouse's log into its file (so that the close at the run's end has little left
    to write) and read the list-health report's figures that the end of the run does not
    change (:func:`warehouse.report.prefetch`), on one DuckDB thread: the gate's process
    needs the other core (on two cores, the run's tail was 0.05 s shorter than with a
    DuckDB thread per core; medians of 7 paired runs). A failure only loses the head
    start: the report reads everything at the end then."""
    from warehouse.report import prefetch

    try:
        with wh.threads_limited(1):
            wh.checkpoint()
            return prefetch(wh)
    except Exception as exc:  # the report's head start only
        get_run_logger().warning("could not read the list-health report's figures early: %s", exc)
        return None


def write_run_report(wh: Warehouse, path: Path, prefetched: Prefetched | None = None) -> str | None:
    """Write the list-health report (:mod:`warehouse.report`) with the run's own connection
    (``prefetched``: what :func:`prefetch_run_report` read on it); a failure is a warning,
    never a failed run."""
    from warehouse.report import write_report

    try:
        return str(write_report(wh, path, prefetched).resolve())
    except Exception as exc:  # the verdicts are in; a report we cannot write must not undo them
        get_run_logger().warning("could not write the list-health report %s: %s", path, exc)
        return None


def complete_run(wh: Warehouse, run_id: str, summary: dict[str, Any], counters: RunCounters,
                 report_path: Path | None, prefetched: Prefetched | None = None) -> dict[str, Any]:
    """Close a completed run: record it, write its list-health report (which then shows
    this run; ``prefetched``: see :func:`write_run_report`), publish the summary artifact
    (percent, words, paths) and log it."""
    wh.finish_run(run_id, status="completed", finished_at=utcnow(), summary=summary,
                  **counters.as_counts())
    if report_path is not None:
        t0 = time.perf_counter()
        summary["report"] = write_run_report(wh, report_path, prefetched)
        counters.timed("report", t0)
        wh.finish_run(run_id, status="completed", finished_at=utcnow(), summary=summary,
                      **counters.as_counts())
    create_markdown_artifact(markdown=summary_markdown(summary), key=f"{summary['flow']}-summary",
                             description="Run summary")
    get_run_logger().info("summary: %s", json.dumps({k: summary[k] for k in (
        "unique_addresses", "from_warehouse", "verified_now", "by_status", "gate", "report")}))
    return summary


def push_webhooks(wh: Warehouse, run_id: str, url: str, secret_env: str | None,
                  retry_waits_minutes: list[float], results: pl.DataFrame,
                  webhook_format: str = "batch") -> dict[str, Any]:
    """POST the run's results, signed, in batches (``webhook_format`` ``per-address``: one
    POST per result, the integration guide's shape); every attempt lands in
    webhook_deliveries.

    ``retry_waits_minutes`` are the waits between attempts: n waits, n + 1 attempts."""
    from tasks.webhooks import push_results

    # mailsift.webhooks.deliver makes len(schedule) attempts and never waits the last entry
    schedule = [60 * m for m in retry_waits_minutes] + [0.0]
    outcome = push_results(wh, run_id=run_id, url=url, secret_env=secret_env or "",
                           results=results, schedule_seconds=schedule,
                           per_address=webhook_format == "per-address")
    logger = get_run_logger()
    if outcome["failed"]:
        logger.warning("webhooks: %(failed)d of %(batches)d batches not delivered after retries; "
                       "`mailsift webhooks retry` re-sends them", outcome)
    else:
        logger.info("webhooks: %(delivered)d batches delivered", outcome)
    return outcome


def fail_run(wh: Warehouse, run_id: str, exc: BaseException, counters: RunCounters) -> Failed:
    """Record a run that stopped on a known condition (gate failed, API key refused, the
    disk full...) and return the Failed state whose message the CLI prints (no traceback)."""
    if not isinstance(exc, MailsiftError):  # OSError (disk full...), MemoryError
        exc = resource_error(exc)
    if isinstance(exc, QualityGateFailed) and counters.smtp_note:
        exc = QualityGateFailed(f"{exc}. {counters.smtp_note}")
    status = "gate_failed" if isinstance(exc, QualityGateFailed) else "failed"
    summary: dict[str, Any] = {"error": str(exc)}
    wh.finish_run(run_id, status=status, finished_at=utcnow(), summary=summary,
                  **counters.as_counts())
    logger = get_run_logger()
    logger.error("%s", exc)
    if status == "gate_failed" and wh.dialect == "duckdb" and wh.path != ":memory:":
        # nothing goes to the exports, but the list's owner sees why: the report goes
        # beside the warehouse, where a later `mailsift report` would put it too
        summary["report"] = write_run_report(wh, Path(wh.path).with_name("mailsift-report.html"))
        if summary["report"]:
            wh.finish_run(run_id, status=status, finished_at=utcnow(), summary=summary,
                          **counters.as_counts())
            logger.info("the list-health report, with this gate failure: %s", summary["report"])
            create_markdown_artifact(
                markdown=f"# Quality gate failed\n\nNothing was exported. The list-health report "
                         f"shows the list and the gate's history: {md_text(summary['report'])}\n",
                key="list-health-report", description="Where the list-health report is")
    return Failed(message=str(exc), data=exc)


def counts(results: pl.DataFrame, column: str) -> dict[str, int]:
    """How many results have each value of ``column`` (counted by polars: a million
    results are not turned into Python objects)."""
    if results.height == 0:
        return {}
    counted = results.get_column(column).value_counts()
    return {value: int(n) for value, n in counted.iter_rows()}


def write_results(results: pl.DataFrame, work_dir: str) -> str:
    path = Path(work_dir) / "results.parquet"
    results.write_parquet(path)
    return str(path)
