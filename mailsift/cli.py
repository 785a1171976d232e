"""The ``mailsift`` command.

``verify`` runs the engine alone, ``doctor`` checks this host's own mail path; ``run``, ``reverify``, ``gate``, ``demo`` and ``webhooks``
reach up to the pipeline (Prefect, DuckDB, Great Expectations), imported only inside the
commands that use them so that ``mailsift verify`` starts fast.

Exit codes: 0 success (whatever the verdicts), 1 the quality gate failed, 2 bad input or
usage (one readable line, no traceback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="mailsift",
    help="Keep CRM contact lists deliverable: verify addresses without sending mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
webhooks_app = typer.Typer(help="Webhook deliveries of run results.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one readable line to stderr and return the Exit to raise."""
    typer.echo(f"mailsift: {message}", err=True)
    return typer.Exit(code)


def _settings(**flags: Any):  # -> Settings
    from pydantic import ValidationError

    from mailsift.settings import Settings

    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"bad settings: {problems}") from None


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="mailsift: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


BackendOpt = Annotated[
    Optional[str], typer.Option("--backend", help="local, api or sandbox [env MAILSIFT_BACKEND].")
]
NameserverOpt = Annotated[
    Optional[str],
    typer.Option("--dns-nameservers", help="Comma list of ip or ip:port [env MAILSIFT_DNS_NAMESERVERS]."),
]
SmtpOpt = Annotated[
    Optional[bool],
    typer.Option("--smtp/--no-smtp", help="Run the SMTP mailbox probe [env MAILSIFT_SMTP_ENABLED]."),
]


@app.command()
def verify(
    emails: Annotated[list[str], typer.Argument(help="Addresses to check; '-' reads stdin, one a line.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line, input order.")] = False,
    backend: BackendOpt = None,
    dns_nameservers: NameserverOpt = None,
    smtp: SmtpOpt = None,
    smtp_port: Annotated[Optional[int], typer.Option(help="[env MAILSIFT_SMTP_PORT]")] = None,
    smtp_timeout: Annotated[Optional[float], typer.Option(help="Seconds per SMTP step.")] = None,
    helo_hostname: Annotated[Optional[str], typer.Option(help="[env MAILSIFT_HELO_HOSTNAME]")] = None,
    mail_from: Annotated[Optional[str], typer.Option(help="[env MAILSIFT_MAIL_FROM]")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="[env MAILSIFT_CONCURRENCY]")] = None,
    allow_test_domains: Annotated[
        Optional[bool], typer.Option("--allow-test-domains/--no-allow-test-domains")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Verify addresses with the engine (no warehouse, no Prefect). Exit 0 whatever the verdicts."""
    _setup_logging(verbose)
    settings = _settings(
        backend=backend,
        dns_nameservers=dns_nameservers,
        smtp_enabled=smtp,
        smtp_port=smtp_port,
        smtp_timeout=smtp_timeout,
        helo_hostname=helo_hostname,
        mail_from=mail_from,
        concurrency=concurrency,
        allow_test_domains=allow_test_domains,
    )
    addresses = _read_addresses(emails)
    if not addresses:
        raise fail("no addresses given")
    from mailsift.errors import MailsiftError

    try:
        asyncio.run(_verify_and_print(settings, addresses, as_json))
    except MailsiftError as exc:
        raise fail(str(exc)) from None


def _read_addresses(args: list[str]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if arg == "-":
            out.extend(line.rstrip("\r\n") for line in sys.stdin if line.strip())
        else:
            out.append(arg)
    return out


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    mx_host: Annotated[
        Optional[list[str]],
        typer.Option("--mx-host", help="host[:port] to test port 25 against (repeatable); default: "
                     "the first MX of gmail.com, outlook.com, yahoo.com [env MAILSIFT_DOCTOR_MX_DOMAINS]."),
    ] = None,
    egress_ip: Annotated[
        Optional[str], typer.Option("--egress-ip", help="This host's public IP [env MAILSIFT_EGRESS_IP]; "
                                    "default: as the MX hosts echo it.")
    ] = None,
    dns_nameservers: NameserverOpt = None,
) -> None:
    """Check this host before verifying: resolver, port 25, egress IP and its PTR, HELO, DNS
    blocklists, MAIL FROM's MX and SPF. Exit 0 all PASS, 1 any WARN or FAIL, 2 bad usage."""
    settings = _settings(dns_nameservers=dns_nameservers, egress_ip=egress_ip)
    from mailsift.doctor import parse_mx_host, run_doctor

    try:
        targets = [parse_mx_host(h, settings.smtp_port) for h in mx_host or ()]
    except ValueError as exc:
        raise fail(str(exc)) from None
    report = asyncio.run(run_doctor(settings, targets))
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False) if as_json else report.render())
    raise typer.Exit(report.exit_code)


async def _verify_and_print(settings: Any, addresses: list[str], as_json: bool) -> None:
    from mailsift.backends import get_backend

    backend = get_backend(settings)
    rows = []
    try:
        async for result in backend.verify_many(addresses):
            if as_json:
                typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                rows.append(result)
    finally:
        await backend.aclose()
    if not as_json:
        _print_table(rows)


def _print_table(results: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    colours = {"valid": "green", "risky": "yellow", "unknown": "blue", "invalid": "red"}
    table = Table(show_lines=False, box=None, pad_edge=False)
    for col in ("email", "status", "score", "reason", "suggestion", "provider"):
        table.add_column(col, no_wrap=True)
    table.add_column("smtp", no_wrap=True, overflow="ellipsis", max_width=40)
    for r in results:
        smtp = f"{r.smtp_code} {r.smtp_message or ''}".strip() if r.smtp_code else ""
        table.add_row(
            r.email,
            f"[{colours[r.status]}]{r.status}[/]",
            f"{r.score:.2f}",
            r.reason,
            r.suggestion or "",
            r.provider or "",
            smtp[:60],
        )
    console = Console()
    if not console.is_terminal:
        console.width = 160  # piped: keep one line per address
    console.print(table)


# -- the pipeline ---------------------------------------------------------------------

DbOpt = Annotated[Optional[Path], typer.Option("--db", help="DuckDB warehouse [env MAILSIFT_DB, default ./mailsift.duckdb].")]
WebhookUrlOpt = Annotated[Optional[str], typer.Option("--webhook-url", help="POST the results here, signed.")]
WebhookSecretOpt = Annotated[
    Optional[str], typer.Option("--webhook-secret-env", help="Name of the env var holding the webhook secret.")
]


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


def _check_webhook(url: str | None, secret_env: str | None) -> None:
    import os

    if url and not secret_env:
        raise fail("--webhook-url needs --webhook-secret-env NAME (the env var holding the secret)")
    if secret_env and not os.environ.get(secret_env):
        raise fail(f"environment variable {secret_env} (webhook secret) is not set")


def _finish(state: Any) -> None:
    """Exit with the run's outcome: 0 completed, 1 gate failed, 2 bad input/usage."""
    from mailsift.errors import (
        BackendAuthError,
        ConfigError,
        InputError,
        QualityGateFailed,
        WarehouseError,
    )

    if state.is_completed():
        summary = state.result()
        _print_summary(summary)
        raise typer.Exit(EXIT_OK)
    error = state.result(raise_on_failure=False)
    message = str(error) if isinstance(error, BaseException) else (state.message or "run failed")
    if isinstance(error, QualityGateFailed):
        raise fail(message + " -- nothing was exported", EXIT_GATE_FAILED)
    if isinstance(error, (InputError, ConfigError, WarehouseError, BackendAuthError)):
        raise fail(message, EXIT_USAGE)
    raise fail(f"run failed: {message}", EXIT_GATE_FAILED)


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
    if summary.get("warning"):
        console.print(f"[bold red]WARNING:[/] {summary['warning']}")


@app.command()
def run(
    sources: Annotated[list[str], typer.Argument(help="CRM exports: files, globs or http(s) URLs.")],
    db: DbOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for the per-status CSVs.")] = Path("mailsift-out"),
    email_column: Annotated[Optional[str], typer.Option("--email-column", help="The email column's name.")] = None,
    max_age_days: Annotated[int, typer.Option("--max-age-days", min=0, help="Reuse results younger than this.")] = 30,
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = 0.2,
    backend: BackendOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=5000)] = 500,
    webhook_url: WebhookUrlOpt = None,
    webhook_secret_env: WebhookSecretOpt = None,
) -> None:
    """Verify CRM exports into the warehouse and write one CSV per status (behind the gate)."""
    _pipeline_env()
    _check_webhook(webhook_url, webhook_secret_env)
    settings = _settings(backend=backend, db=db)
    _precheck_sources(sources, email_column)
    from flows.verify_crm_exports import verify_crm_exports

    state = verify_crm_exports(
        sources=sources,
        email_column=email_column,
        max_age_days=max_age_days,
        out_dir=str(out),
        db=str(settings.db),
        max_unknown_share=max_unknown_share,
        backend=settings.backend,
        batch_size=batch_size,
        webhook_url=webhook_url,
        webhook_secret_env=webhook_secret_env,
        return_state=True,
    )
    _finish(state)


def _precheck_sources(sources: list[str], email_column: str | None) -> None:
    """Read the local sources once before Prefect starts (~1 s per million rows), so a
    broken file is one line and exit 2 in a second, not after the API server's start-up.
    URLs are read by the flow only (no double download)."""
    from mailsift.errors import InputError
    from tasks.extract import expand_sources, read_sources

    try:
        local = [s for s in expand_sources(sources) if not s.lower().startswith(("http://", "https://"))]
        if local:
            read_sources(local, email_column=email_column)
    except InputError as exc:
        raise fail(str(exc)) from None


@app.command()
def reverify(
    db: DbOpt = None,
    older_than_days: Annotated[int, typer.Option("--older-than-days", min=0)] = 30,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many, oldest first.")] = None,
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = 0.2,
    backend: BackendOpt = None,
    webhook_url: WebhookUrlOpt = None,
    webhook_secret_env: WebhookSecretOpt = None,
) -> None:
    """Re-verify every address whose newest check is older than --older-than-days."""
    _pipeline_env()
    _check_webhook(webhook_url, webhook_secret_env)
    settings = _settings(backend=backend, db=db)
    _require_warehouse(settings.db)
    from flows.reverify_stale import reverify_stale

    state = reverify_stale(
        max_age_days=older_than_days,
        limit=limit,
        db=str(settings.db),
        max_unknown_share=max_unknown_share,
        backend=settings.backend,
        webhook_url=webhook_url,
        webhook_secret_env=webhook_secret_env,
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
    max_unknown_share: Annotated[float, typer.Option("--max-unknown-share", min=0.0, max=1.0)] = 0.2,
    max_age_days: Annotated[Optional[int], typer.Option("--max-age-days", min=0, help="Fail on results older than this (default: not checked).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    docs: Annotated[Optional[Path], typer.Option("--docs", help="Also build GX data docs into this directory.")] = None,
) -> None:
    """The CI step: validate latest_verifications. Exit 0 pass, 1 fail, 2 cannot run."""
    _pipeline_env()
    from mailsift.errors import WarehouseError
    from warehouse import Warehouse

    settings = _settings(db=db)
    try:
        with Warehouse.open(settings.db, create=False, read_only=True) as wh:
            frame = wh.latest_pandas()
    except WarehouseError as exc:
        raise fail(str(exc)) from None
    from tasks.quality import GateConfig, render_table, run_gate

    report = run_gate(frame, GateConfig(max_unknown_share=max_unknown_share, max_age_days=max_age_days), docs_dir=docs)
    try:
        with Warehouse.open(settings.db, create=False) as wh:
            wh.record_quality_run(
                run_id=None, scope="warehouse", checked_at=report.checked_at, is_passed=report.is_passed,
                n_rows=report.n_rows, unknown_share=report.unknown_share,
                max_unknown_share=max_unknown_share,
                failed_expectations=[r.name for r in report.failed], details=report.to_dict(),
            )
    except WarehouseError as exc:  # e.g. a read-only CI checkout: still report the verdict
        typer.echo(f"mailsift: could not record the gate run: {exc}", err=True)
    typer.echo(json.dumps(report.to_dict(), default=str) if as_json else render_table(report))
    raise typer.Exit(EXIT_OK if report.is_passed else EXIT_GATE_FAILED)


DEMO_SQL = """\
Try next (duckdb {db}, or python -c "import duckdb; print(duckdb.sql('...'))"):

  -- counts by status and reason
  SELECT status, reason, count(*) AS n FROM latest_verifications GROUP BY ALL ORDER BY n DESC;

  -- the risky addresses of one source file
  SELECT v.email, v.reason, v.score FROM latest_verifications v
  JOIN contact_sources s USING (email)
  WHERE s.source LIKE '%crm_export.csv' AND v.status = 'risky';

  -- run it again: every address comes from the warehouse, no SMTP connection is made
  mailsift demo
"""


def _find_example() -> Path:
    here = Path(__file__).resolve().parents[1] / "examples" / "crm_export.csv"
    for candidate in (Path("examples/crm_export.csv"), here):
        if candidate.is_file():
            return candidate
    raise fail("examples/crm_export.csv not found: run mailsift demo from the repository root")


@app.command()
def demo(
    db: Annotated[Path, typer.Option("--db")] = Path("mailsift-demo.duckdb"),
    out: Annotated[Path, typer.Option("--out")] = Path("demo-output"),
    source: Annotated[Optional[Path], typer.Option("--source", help="Another export whose domains live in the demo world.")] = None,
) -> None:
    """Run the real pipeline on examples/crm_export.csv against a simulated internet.

    Port 25 is closed on most laptops and clouds, so the demo starts mailsift.testing's DNS
    and SMTP servers in-process (every verdict path is there) and leaves the warehouse and
    the exports for you to query."""
    import os

    _pipeline_env()
    from mailsift.testing.demo import DEMO_DOMAINS, populate_demo_world
    from mailsift.testing.world import World

    example = source or _find_example()
    with World() as world:
        populate_demo_world(world)
        os.environ.update(world.env())
        typer.echo(f"mailsift demo: a simulated internet is up (DNS {world.dns.nameserver}, "
                   f"{len(world.smtp.servers)} SMTP servers on port {world.smtp.port}) "
                   f"with {len(DEMO_DOMAINS)} domains; verifying {example} ...")
        from flows.verify_crm_exports import verify_crm_exports

        state = verify_crm_exports(sources=[str(example)], out_dir=str(out), db=str(db), return_state=True)
        if state.is_completed():
            _print_summary(state.result())
            typer.echo("\n" + DEMO_SQL.format(db=db))
            raise typer.Exit(EXIT_OK)
        _finish(state)


@webhooks_app.command("retry")
def webhooks_retry(
    webhook_secret_env: Annotated[str, typer.Option("--webhook-secret-env", help="Env var holding the secret.")],
    db: DbOpt = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="Only this run's deliveries.")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="Send to this URL instead of the recorded one.")] = None,
) -> None:
    """Re-send every webhook delivery whose last attempt failed."""
    _check_webhook(url, webhook_secret_env)
    settings = _settings(db=db)
    _require_warehouse(settings.db)
    from tasks.webhooks import retry_failed

    sent, still_failed = retry_failed(settings.db, webhook_secret_env, run_id=run_id, url=url)
    typer.echo(f"re-sent {sent} deliveries; {still_failed} still failing")
    raise typer.Exit(EXIT_OK if still_failed == 0 else EXIT_GATE_FAILED)


def _mount_service() -> None:
    """``serve`` and ``keys`` live in the service package (typer only at import)."""
    from service.cli import keys_app, serve

    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")


_mount_service()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
