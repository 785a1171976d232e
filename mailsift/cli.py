"""The ``mailsift`` command.

This module holds the engine's own commands (``verify``: syntax, DNS, SMTP probe,
reputation, no warehouse, no Prefect; ``doctor``: this host's own mail path). The
pipeline's commands (``run``, ``reverify``, ``gate``, ``demo``, ``webhooks``, ``serve``,
``keys`` ...) live beside the flows in :mod:`pipeline.cli` and are
mounted on the same ``mailsift`` command by :class:`MailsiftGroup`, which imports that
module only when one of them runs or when ``mailsift --help`` lists them. So ``mailsift
verify`` never imports Prefect, polars, DuckDB or Great Expectations.

Exit codes: 0 success (whatever the verdicts), 1 the quality gate failed, 2 bad input or
usage, 3 the environment (disk full, an unusable ``--out``, out of memory), 4 an internal
error (a bug: ``MAILSIFT_DEBUG=1`` shows its traceback). Every failure is one readable
line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from mailsift.settings import BackendName

__all__ = [
    "EXIT_ENVIRONMENT",
    "EXIT_GATE_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "BackendOpt",
    "MailsiftGroup",
    "app",
    "exit_code_for",
    "fail",
    "main",
    "settings_from_flags",
]

#: The module that holds the pipeline's commands (imported on demand).
PIPELINE_COMMANDS = "pipeline.cli"


class MailsiftGroup(TyperGroup):
    """The ``mailsift`` group: the engine's commands defined here, plus the pipeline's
    commands from :data:`PIPELINE_COMMANDS`, loaded the first time one is asked for."""

    _pipeline: click.Group | None = None

    def _pipeline_group(self) -> click.Group:
        if MailsiftGroup._pipeline is None:
            import importlib

            module = importlib.import_module(PIPELINE_COMMANDS)
            MailsiftGroup._pipeline = typer.main.get_group(module.app)
        return MailsiftGroup._pipeline

    def list_commands(self, ctx: click.Context) -> list[str]:
        own = super().list_commands(ctx)
        return own + [n for n in self._pipeline_group().list_commands(ctx) if n not in own]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            command = self._pipeline_group().get_command(ctx, cmd_name)
        return command


app = typer.Typer(
    name="mailsift",
    cls=MailsiftGroup,
    help="Keep CRM contact lists deliverable: verify addresses without sending mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _mailsift() -> None:
    """Keep CRM contact lists deliverable: verify addresses without sending mail."""


EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_ENVIRONMENT, EXIT_INTERNAL = 0, 1, 2, 3, 4


def exit_code_for(error: BaseException) -> tuple[int, str]:
    """The exit code and the one line for an error that stopped a command or a run."""
    from mailsift.errors import MailsiftError, QualityGateFailed, ResourceError, resource_error

    if isinstance(error, QualityGateFailed):
        return EXIT_GATE_FAILED, str(error)
    if isinstance(error, ResourceError):
        return EXIT_ENVIRONMENT, str(error)
    if isinstance(error, MailsiftError):
        return EXIT_USAGE, str(error)
    if isinstance(error, RecursionError):
        return EXIT_USAGE, "input nested too deeply to read"
    if isinstance(error, (OSError, MemoryError)):
        return EXIT_ENVIRONMENT, str(resource_error(error))
    text = " ".join(str(error).split())[:300]
    return EXIT_INTERNAL, (
        f"internal error: {type(error).__name__}: {text} (a bug; MAILSIFT_DEBUG=1 shows the traceback)"
    )


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one readable line to stderr and return the Exit to raise."""
    typer.echo(f"mailsift: {message}", err=True)
    return typer.Exit(code)


def settings_from_flags(**flags: Any):  # -> Settings
    """Settings from the flags given (None = not given), then MAILSIFT_* and defaults;
    a bad value is one line and exit 2."""
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
    Optional[BackendName], typer.Option("--backend", help="Where verdicts come from [env MAILSIFT_BACKEND].")
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
    summary: Annotated[
        bool,
        typer.Option(
            "--summary",
            help="Add what each domain cost (SMTP connections, RCPTs, window reached, 421s, "
            "seconds); with --json, print one object {results, summary} instead of lines.",
        ),
    ] = False,
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
    settings = settings_from_flags(
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
        asyncio.run(_verify_and_print(settings, addresses, as_json, summary))
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
                     "the first MX of gmail.com, outlook.com, yahoo.com (env MAILSIFT_DOCTOR_MX_DOMAINS)."),
    ] = None,
    egress_ip: Annotated[
        Optional[str], typer.Option("--egress-ip", help="This host's public IP (env MAILSIFT_EGRESS_IP); "
                                    "default: as the MX hosts echo it.")
    ] = None,
    dns_nameservers: NameserverOpt = None,
) -> None:
    """Check this host before verifying: resolver, port 25, egress IP and its PTR, HELO, DNS
    blocklists, MAIL FROM's MX and SPF. Exit 0 all PASS, 1 any WARN or FAIL, 2 bad usage."""
    settings = settings_from_flags(dns_nameservers=dns_nameservers, egress_ip=egress_ip)
    from mailsift.doctor import parse_mx_host, run_doctor

    try:
        targets = [parse_mx_host(h, settings.smtp_port) for h in mx_host or ()]
    except ValueError as exc:
        raise fail(str(exc)) from None
    report = asyncio.run(run_doctor(settings, targets))
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False) if as_json else report.render())
    raise typer.Exit(report.exit_code)


async def _verify_and_print(
    settings: Any, addresses: list[str], as_json: bool, summary: bool = False
) -> None:
    import time

    from mailsift.backends import get_backend

    backend = get_backend(settings)
    rows = []
    started = time.perf_counter()
    try:
        async for result in backend.verify_many(addresses):
            if as_json and not summary:
                typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                rows.append(result)
    finally:
        await backend.aclose()
    seconds = time.perf_counter() - started
    if not summary:
        if not as_json:
            _print_table(rows)
        return
    report = run_summary(backend, rows, seconds)
    if as_json:
        out = {"results": [r.to_dict() for r in rows], "summary": report}
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    _print_table(rows)
    _print_domain_stats(report)


def run_summary(backend: Any, results: list[Any], seconds: float) -> dict[str, Any]:
    """Counts of a verify run and what each domain cost (the local engine's pace:
    connections, RCPTs, window reached, 421s and rate refusals, seconds), largest first."""
    from collections import Counter

    prober = getattr(backend, "prober", None)
    stats = getattr(prober, "domain_stats", {}) or {}
    domains = sorted(stats.values(), key=lambda st: (-st.addresses, st.domain))
    return {
        "addresses": len(results),
        "seconds": round(seconds, 3),
        "by_status": dict(Counter(r.status for r in results)),
        "smtp_connections": sum(st.connections for st in domains),
        "smtp_rcpts": sum(st.rcpts for st in domains),
        "domains": [st.as_dict() for st in domains],
    }


def _print_domain_stats(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title=None)
    columns = ("domain", "addresses", "connections", "rcpts", "window", "refusals_421", "seconds")
    for col in columns:
        table.add_column(col.replace("_", " "), no_wrap=True)
    for row in report["domains"]:
        table.add_row(*(str(row[c]) for c in columns))
    console = Console()
    console.print()
    console.print(table)
    console.print(
        f"{report['addresses']} addresses in {report['seconds']} s; "
        f"{report['smtp_connections']} SMTP connections, {report['smtp_rcpts']} RCPT commands"
    )


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


def main() -> None:
    """The ``mailsift`` entry point: whatever escapes a command is one line and an exit
    code (:func:`exit_code_for`), never a traceback, unless ``MAILSIFT_DEBUG`` is set."""
    import os

    try:
        app()
    except KeyboardInterrupt:
        typer.echo("mailsift: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, a code
        if os.environ.get("MAILSIFT_DEBUG"):
            raise
        code, message = exit_code_for(exc)
        typer.echo(f"mailsift: {message}", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
