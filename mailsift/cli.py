"""The ``mailsift`` command.

``verify`` runs the engine alone; ``run``, ``reverify``, ``gate``, ``demo`` and ``webhooks``
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
    table = Table(show_lines=False)
    for col in ("email", "status", "score", "reason", "suggestion", "provider", "smtp"):
        table.add_column(col)
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
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
