"""The pipeline's commands: ``run``, ``reverify``, ``gate``, ``report``, ``demo``, ``sql``,
``webhooks retry``,
and the HTTP service's ``serve`` and ``keys`` (from :mod:`service.cli`).

Mounted on the ``mailsift`` command by :class:`mailsift.cli.MailsiftGroup` (which imports
this module only when a pipeline command runs or the command list is shown). Importing it
costs typer and pydantic only: Prefect, polars, DuckDB and Great Expectations are imported
inside the commands that use them. Defaults come from :data:`pipeline.settings.DEFAULTS`.

Exit codes: 0 success, 1 the quality gate failed, 2 bad input or usage, 3 the environment
(disk full, an unusable ``--out``), 4 a bug; always one readable line, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from mailsift.cli import (
    EXIT_ENVIRONMENT,
    EXIT_GATE_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    BackendOpt,
    exit_code_for,
    fail,
    settings_from_flags,
)
from pipeline.settings import DEFAULTS

__all__ = ["app"]

app = typer.Typer(
    help="The pipeline: CRM exports in, verified and gated CSVs out, every check kept in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
webhooks_app = typer.Typer(help="Webhook deliveries of run results.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")


def _mount_service() -> None:
    """``serve`` and ``keys`` live in the service package (typer only at import)."""
    from service.cli import keys_app, serve

    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")


_mount_service()


OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Directory for valid/risky/invalid/unknown/no_email.csv and results.parquet; "
        "replaced as a whole by each run, so it must be new or hold only mailsift's exports.",
    ),
]
ExcelOpt = Annotated[
    bool, typer.Option("--excel", help="CSVs in UTF-8 with a byte order mark, for Excel.")
]
DbOpt = Annotated[
    Optional[str],
    typer.Option("--db", help="The warehouse: a DuckDB file or a postgresql:// URL "
                 "[env MAILSIFT_DB, default ./mailsift.duckdb]."),
]
WebhookUrlOpt = Annotated[Optional[str], typer.Option("--webhook-url", help="POST the results here, signed.")]
WebhookSecretOpt = Annotated[
    Optional[str], typer.Option("--webhook-secret-env", help="Name of the env var holding the webhook secret.")
]
WebhookFormatOpt = Annotated[
    str,
    typer.Option(
        "--webhook-format",
        help="batch (500 results a POST) or per-address (one POST per result, as mailsift serve sends).",
    ),
]


def _settings(db: str | None, **flags: Any):  # -> Settings
    """Settings from the flags, ``--db`` being a DuckDB file or a ``postgresql://`` URL as
    MAILSIFT_DB takes it (:func:`mailsift.settings.db_location`); a malformed URL is one
    line and exit 2, shown without its password."""
    location = None
    if db is not None:
        from mailsift.settings import db_location

        try:
            location = db_location(db)
        except ValueError as exc:
            raise fail(f"--db {exc}") from None
    return settings_from_flags(db=location, **flags)


def _flow_db(db: Path | str) -> str:
    """The flow's ``db`` parameter, which Prefect stores and shows: a DuckDB file's path.
    A ``postgresql://`` URL goes to the flow (run in this process) through this process's
    MAILSIFT_DB instead, the parameter left empty, so its password never reaches Prefect."""
    import os

    if isinstance(db, Path):
        return str(db)
    os.environ["MAILSIFT_DB"] = db
    return ""


def _pipeline_env() -> None:
    """Quiet, local-friendly defaults for Prefect and GX, unless the user set them."""
    import os

    for key, value in {
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }.items():
        os.environ.setdefault(key, value)


def _check_webhook_format(value: str) -> str:
    if value not in ("batch", "per-address"):
        raise fail(f"--webhook-format must be batch or per-address, not {value!r}")
    return value


def _check_webhook(url: str | None, secret_env: str | None) -> None:
    """Before anything starts: the URL is http(s) with a host (shown redacted when not)
    and the secret's variable is set."""
    import os

    from mailsift.errors import ConfigError
    from mailsift.webhooks import check_url

    if url and not secret_env:
        raise fail("--webhook-url needs --webhook-secret-env NAME (the env var holding the secret)")
    if url:
        try:
            check_url(url)
        except ConfigError as exc:
            raise fail(str(exc)) from None
    if secret_env and not os.environ.get(secret_env):
        raise fail(f"environment variable {secret_env} (webhook secret) is not set")


def _by_reference(url: str | None) -> str | None:
    """A URL's inline credentials moved into this process's environment, so the flow
    parameter (stored by Prefect) names them instead (:mod:`mailsift.urlsecrets`)."""
    from mailsift.urlsecrets import by_reference

    if not url or not url[:8].lower().startswith(("http://", "https://")):
        return url
    return by_reference(url)


def _check_out(out: Path) -> None:
    """``--out`` must be a directory (or creatable as one) that this user can write, new
    or holding only mailsift's files (the exports replace it as a whole)."""
    import os

    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise fail(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"--out {out}: {existing} is not writable", EXIT_ENVIRONMENT)
    _precheck_out(out)


def _finish(state: Any) -> None:
    """Exit with the run's outcome: 0 completed, 1 gate failed, 2 bad input/usage,
    3 the environment (disk full...), 4 a bug (see :func:`mailsift.cli.exit_code_for`)."""
    if state.is_completed():
        summary = state.result()
        _print_summary(summary)
        raise typer.Exit(EXIT_OK)
    error = state.result(raise_on_failure=False)
    if not isinstance(error, BaseException):
        raise fail(f"run failed: {state.message or 'no reason given'}", EXIT_INTERNAL)
    code, message = exit_code_for(error)
    if code == EXIT_GATE_FAILED:
        message += " -- nothing was exported"
    raise fail(message, code)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    table = Table(title=f"mailsift {summary.get('flow', '')}", show_header=False)
    for key in ("source_rows", "rows_without_email", "unique_addresses", "from_warehouse",
                "verified_now", "gate"):
        if key in summary:
            table.add_row(key.replace("_", " "), str(summary[key]))
    if summary.get("unknown_share") is not None:
        table.add_row("unknown share", f"{100 * summary['unknown_share']:.1f}%")
    for status in ("valid", "risky", "invalid", "unknown"):
        table.add_row(f"  {status}", str(summary.get("by_status", {}).get(status, 0)))
    console.print(table)
    reasons = summary.get("by_reason") or {}
    if reasons:
        console.print("reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    for status, path in (summary.get("exports") or {}).items():
        console.print(f"  {status:>8}: {path}")
    if summary.get("report"):
        console.print(f"  list-health report: {summary['report']} (open it in a browser)", soft_wrap=True)
    if summary.get("failed_batches"):  # nothing of them stored: in unknown.csv this time
        Console(stderr=True).print(
            f"[bold red]NOT VERIFIED:[/] {summary.get('unverified_addresses', 0)} addresses in "
            f"{summary['failed_batches']} failed batch(es) (exported as unknown); the next run verifies them",
            soft_wrap=True)
    if summary.get("warning"):  # a cause the run's failures share (ours, not the list's)
        Console(stderr=True).print(f"[bold red]WARNING:[/] {summary['warning']}")


@app.command()
def run(
    sources: Annotated[list[str], typer.Argument(help="CRM exports: files, globs or http(s) URLs.")],
    db: DbOpt = None,
    out: OutOpt = Path("mailsift-out"),
    excel: ExcelOpt = False,
    email_column: Annotated[Optional[str], typer.Option("--email-column", help="The email column's name.")] = None,
    max_age_days: Annotated[int, typer.Option("--max-age-days", min=0, help="Reuse results younger than this.")] = DEFAULTS.max_age_days,
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = DEFAULTS.max_unknown_share,
    backend: BackendOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=5000)] = DEFAULTS.batch_size,
    webhook_url: WebhookUrlOpt = None,
    webhook_secret_env: WebhookSecretOpt = None,
    webhook_format: WebhookFormatOpt = "batch",
) -> None:
    """Verify CRM exports into the warehouse and write one CSV per status (behind the gate)."""
    _pipeline_env()
    _check_webhook(webhook_url, webhook_secret_env)
    settings = _settings(db, backend=backend)
    _check_out(out)
    sources = [_by_reference(s) or s for s in sources]
    webhook_url = _by_reference(webhook_url)
    _precheck_sources(sources, email_column)
    from flows.scale_out import (
        verify_crm_exports_scaled as verify_crm_exports,  # MAILSIFT_DASK_SCHEDULER
    )
    from pipeline.runtime import gated_flow_run

    with gated_flow_run():
        state = verify_crm_exports(
            sources=sources,
            email_column=email_column or "",
            max_age_days=max_age_days,
            out_dir=str(out),
            excel=excel,
            db=_flow_db(settings.db),
            max_unknown_share=max_unknown_share,
            backend=settings.backend,
            batch_size=batch_size,
            webhook_url=webhook_url or "",
            webhook_secret_env=webhook_secret_env or "",
            webhook_format=_check_webhook_format(webhook_format),
            return_state=True,
        )
    _finish(state)


def _precheck_out(out: Path) -> None:
    """The export directory is replaced as a whole: refuse one holding other files now,
    not after the run."""
    from mailsift.errors import ConfigError
    from tasks.export import check_out_dir

    try:
        check_out_dir(out)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _precheck_sources(sources: list[str], email_column: str | None) -> None:
    """Sniff the local sources before Prefect starts (format, size limit, header and
    email column from their first rows: well under a second whatever their size), so a
    broken file is one line and exit 2 at once, not after the API server's start-up.
    URLs are read by the flow only (no double download), but a malformed one is refused."""
    from mailsift.errors import InputError
    from tasks.extract import check_sources

    try:
        check_sources(sources, email_column=email_column)
    except InputError as exc:
        raise fail(str(exc)) from None


def _listed(values: list[str] | None) -> list[str]:
    """Repeated options and comma lists alike: ``--status invalid,unknown --status risky``."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


Status = Literal["valid", "invalid", "risky", "unknown"]


@app.command()
def reverify(
    db: DbOpt = None,
    older_than_days: Annotated[
        Optional[int],
        typer.Option("--older-than-days", min=0, help="Re-check what was last verified this many days "
                     "ago or longer; default 30, or 0 (any age) when a --status/--domain/--source/--email is given."),
    ] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="Only these newest verdicts (repeat or comma list).")] = None,
    domain: Annotated[Optional[list[str]], typer.Option("--domain", help="Only addresses at these domains.")] = None,
    source: Annotated[Optional[list[str]], typer.Option("--source", help="Only addresses these sources hold (full name or file name).")] = None,
    email: Annotated[Optional[list[str]], typer.Option("--email", help="Only these addresses.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many, oldest first.")] = None,
    max_age_days: Annotated[int, typer.Option("--max-age-days", min=0, help="Quality gate: refuse results older than this.")] = DEFAULTS.max_age_days,
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = DEFAULTS.max_unknown_share,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the re-checked addresses' exports here (as run's --out).")] = None,
    excel: ExcelOpt = False,
    backend: BackendOpt = None,
    webhook_url: WebhookUrlOpt = None,
    webhook_secret_env: WebhookSecretOpt = None,
    webhook_format: WebhookFormatOpt = "batch",
) -> None:
    """Re-verify what is older than --older-than-days (or what the filters pick); print the
    summary; with --out, export the results."""
    from typing import get_args

    _pipeline_env()
    _check_webhook(webhook_url, webhook_secret_env)
    statuses = [s.lower() for s in _listed(status)]
    wrong = [s for s in statuses if s not in get_args(Status)]
    if wrong:
        raise fail(f"--status {', '.join(wrong)}: choose from {', '.join(get_args(Status))}")
    domains, sources, emails = _listed(domain), _listed(source), _listed(email)
    if older_than_days is None:
        older_than_days = 0 if (statuses or domains or sources or emails) else DEFAULTS.max_age_days
    settings = _settings(db, backend=backend)
    _require_warehouse(settings.db)
    webhook_url = _by_reference(webhook_url)
    if out is not None:
        _check_out(out)
    from flows.scale_out import reverify_stale_scaled as reverify_stale  # MAILSIFT_DASK_SCHEDULER
    from pipeline.runtime import gated_flow_run

    with gated_flow_run():
        state = reverify_stale(
            older_than_days=older_than_days,
            statuses=statuses,
            domains=domains,
            sources=sources,
            emails=emails,
            limit=limit or 0,
            max_age_days=max_age_days,
            out_dir=str(out) if out is not None else "",
            excel=excel,
            db=_flow_db(settings.db),
            max_unknown_share=max_unknown_share,
            backend=settings.backend,
            webhook_url=webhook_url or "",
            webhook_secret_env=webhook_secret_env or "",
            webhook_format=_check_webhook_format(webhook_format),
            return_state=True,
        )
    _finish(state)


def _require_warehouse(path: Path) -> None:
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    try:
        Warehouse.open(path, create=False, read_only=True).close()
    except WarehouseError as exc:
        raise fail(str(exc)) from None


@app.command()
def gate(
    db: DbOpt = None,
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = DEFAULTS.max_unknown_share,
    max_age_days: Annotated[Optional[int], typer.Option("--max-age-days", min=0, help="Fail on results older than this (default: not checked).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    docs: Annotated[Optional[Path], typer.Option("--docs", help="Also build GX data docs into this directory.")] = None,
    record: Annotated[bool, typer.Option("--record", help="Also add the verdict to quality_runs (the only write).")] = False,
) -> None:
    """The CI step: validate latest_verifications, read-only. Exit 0 pass, 1 fail, 2 cannot run.

    Nothing in the warehouse changes unless --record is given (then one quality_runs row)."""
    _pipeline_env()
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    settings = _settings(db)
    try:
        with Warehouse.open(settings.db, create=False, read_only=True) as wh:
            frame = wh.latest_pandas()
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    from tasks.quality import GateConfig, render_table, run_gate

    report = run_gate(frame, GateConfig(max_unknown_share=max_unknown_share, max_age_days=max_age_days), docs_dir=docs)
    if record:
        try:
            with Warehouse.open(settings.db, create=False) as wh:
                wh.record_quality_run(
                    run_id=None, scope="warehouse", checked_at=report.checked_at,
                    is_passed=report.is_passed, n_rows=report.n_rows,
                    unknown_share=report.unknown_share, max_unknown_share=max_unknown_share,
                    failed_expectations=[r.name for r in report.failed], details=report.to_dict(),
                )
        except WarehouseError as exc:  # e.g. a read-only file: still report the verdict
            typer.echo(f"mailsift: could not record the gate run: {exc}", err=True)
    typer.echo(json.dumps(report.to_dict(), default=str) if as_json else render_table(report))
    raise typer.Exit(EXIT_OK if report.is_passed else EXIT_GATE_FAILED)


@app.command()
def report(
    db: DbOpt = None,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("mailsift-report.html"),
) -> None:
    """Write the list-health report: one HTML page to open in a browser.

    Statuses and reasons now and run by run, verdict changes since the previous check, the
    worst sources and domains, catch-all and role shares, the gate's history. Reads the
    warehouse read-only; the page is self-contained and loads nothing from the network."""
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse
    from warehouse.report import write_report

    settings = _settings(db)
    try:
        with Warehouse.open(settings.db, create=False, read_only=True) as wh:
            path = write_report(wh, out)
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    typer.echo(f"list-health report: {path.resolve()}")
    raise typer.Exit(EXIT_OK)


#: The demo's "try next": (title, SQL) pairs, printed as ``mailsift sql`` commands. Each one
#: runs in tests/test_sql.py against the demo's warehouse.
DEMO_RECIPES: tuple[tuple[str, str], ...] = (
    (
        "counts by status and reason",
        "SELECT status, reason, count(*) AS n FROM latest_verifications GROUP BY ALL ORDER BY n DESC",
    ),
    (
        "the risky rows of the demo's export, with their CRM record ids",
        "SELECT s.record_id, v.email, v.reason, v.score FROM latest_contact_sources s "
        "JOIN latest_verifications v USING (email) "
        "WHERE s.source LIKE '%crm_export.csv' AND v.status = 'risky' ORDER BY s.row_number",
    ),
)


def demo_next_steps(db: Path) -> str:
    """What the demo prints after its run: the recipes as commands, then a second run."""
    import shlex

    lines = ["Try next:", ""]
    for title, query in DEMO_RECIPES:
        lines += [f"  # {title}", f"  mailsift sql {shlex.quote(query)} --db {shlex.quote(str(db))}", ""]
    lines += [
        "  # run it again: every address comes from the warehouse, no SMTP connection is made",
        "  mailsift demo",
    ]
    return "\n".join(lines)


@app.command()
def demo(
    db: Annotated[Path, typer.Option("--db")] = Path("mailsift-demo.duckdb"),
    out: Annotated[Path, typer.Option("--out")] = Path("demo-output"),
    source: Annotated[Optional[Path], typer.Option("--source", help="Another export whose domains live in the demo world.")] = None,
) -> None:
    """Run the real pipeline on the demo's CRM export against a simulated internet.

    Port 25 is closed on most laptops and clouds, so the demo starts mailsift.testing's DNS
    and SMTP servers in-process (every verdict path is there) and leaves the warehouse and
    the exports for you to query. The export and the world ship in the package: it runs
    from any directory."""
    import os

    _pipeline_env()
    _check_out(out)
    from mailsift.testing.demo import DEMO_DOMAINS, demo_export, populate_demo_world
    from mailsift.testing.world import World

    example = source or demo_export()
    with World() as world:
        populate_demo_world(world)
        os.environ.update(world.env())
        typer.echo(f"mailsift demo: a simulated internet is up (DNS {world.dns.nameserver}, "
                   f"{len(world.smtp.servers)} SMTP servers on port {world.smtp.port}) "
                   f"with {len(DEMO_DOMAINS)} domains; verifying {example} ...")
        from flows.verify_crm_exports import verify_crm_exports
        from pipeline.runtime import gated_flow_run

        with gated_flow_run():
            state = verify_crm_exports(sources=[str(example)], out_dir=str(out), db=str(db),
                                       return_state=True)
        if state.is_completed():
            _print_summary(state.result())
            typer.echo("\n" + demo_next_steps(db))
            raise typer.Exit(EXIT_OK)
        _finish(state)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement, e.g. \"SELECT status, count(*) FROM latest_verifications GROUP BY ALL\".")],
    db: DbOpt = None,
    fmt: Annotated[
        Literal["table", "csv", "json"], typer.Option("--format", help="table (rich), csv or json (array of objects).")
    ] = "table",
    max_rows: Annotated[int, typer.Option("--max-rows", min=1, help="Rows the table shows (csv and json print all).")] = 1000,
) -> None:
    """Query the warehouse read-only (nothing in it can change). Exit 0, or 2 with one line."""
    from mailsift.errors import WarehouseError
    from pipeline.sql import print_result, run_query

    settings = _settings(db)
    try:
        frame = run_query(settings.db, query)
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    print_result(frame, fmt, max_rows=max_rows)


@webhooks_app.command("retry")
def webhooks_retry(
    webhook_secret_env: Annotated[str, typer.Option("--webhook-secret-env", help="Env var holding the secret.")],
    db: DbOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Only this run's deliveries.")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Send to this URL instead of the recorded one.")] = None,
) -> None:
    """Re-send every webhook delivery whose last attempt failed."""
    _check_webhook(url, webhook_secret_env)
    settings = _settings(db)
    _require_warehouse(settings.db)
    from tasks.webhooks import retry_failed

    sent, still_failed = retry_failed(settings.db, webhook_secret_env, run_id=run_id, url=url)
    typer.echo(f"re-sent {sent} deliveries; {still_failed} still failing")
    raise typer.Exit(EXIT_OK if still_failed == 0 else EXIT_GATE_FAILED)
