"""Engine throughput: mailsift's engine vs one SMTP connection per address, same run.

    .venv/bin/python benchmarks/bench_engine.py [--addresses 10000] [--latency 0.05]
        [--naive-concurrency 20] [--naive-sample N] [--quick] [--set per_domain_concurrency=4]

Builds the benchmark world (``benchmarks/world.py``: Zipf-sized domains, gmail.com a
quarter of the list, ``--latency`` seconds before every SMTP reply) and verifies the
same addresses twice, in the same process, against the same servers:

1. **mailsift**: ``Verifier.verify_many`` over every address, with ``world.settings()``
   (``smtp_timeout`` 5 s; ``--set key=value`` changes any other setting);
2. **naive**: what a hand-written checker does: for each address, its own connection
   (connect, EHLO, MAIL FROM, RCPT TO, QUIT), ``--naive-concurrency`` at a time, with
   aiosmtplib directly. Its verdicts go through the same ``mailsift.verdict.decide`` so
   that only the SMTP strategy differs (no catch-all probe: that is part of the strategy).

DNS is counted equally: each phase gets a new ``mailsift.dns.DnsResolver`` (cold cache)
and its timer includes its lookups (one MX query per domain, one A query per MX host).
Reputation data (disposable lists...) is loaded before both timers.

SMTP connections are counted on the server side (every server of the world, counters
reset between the phases). ``--naive-sample N`` runs the naive pattern on N addresses
picked at random (seeded) and extrapolates its wall time to the whole list; the output
says so on every extrapolated figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import random
import resource
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib  # noqa: E402

from benchmarks.world import describe, plan_world, populate  # noqa: E402
from mailsift import reputation  # noqa: E402
from mailsift.dns import DnsResolver, MxResult  # noqa: E402
from mailsift.result import VerificationResult  # noqa: E402
from mailsift.settings import Settings
from mailsift.smtp import (  # noqa: E402
    PIPELINE_DEPTH,  # noqa: E402
    RcptOutcome,
    classify_reply,
    sanitize_message,
)
from mailsift.syntax import SyntaxProblem, parse_address  # noqa: E402
from mailsift.testing.world import World  # noqa: E402
from mailsift.verdict import Evidence, decide, syntax_result  # noqa: E402
from mailsift.verifier import Verifier  # noqa: E402

__all__ = ["main", "run_engine", "run_naive", "server_counts"]

PROGRESS_EVERY = 5.0  # seconds between progress lines


# --------------------------------------------------------------------------- counters


def server_counts(world: World) -> dict[str, int]:
    """Connections and RCPT commands seen by every server since the last reset."""
    servers = list(world.smtp.servers)
    return {
        "connections": sum(s.connections for s in servers),
        "rcpt": sum(len(s.commands("RCPT")) for s in servers),
    }


def reset_servers(world: World) -> None:
    for server in world.smtp.servers:
        server.reset_counters()


def max_concurrent(world: World, domain: str) -> int:
    return max((s.max_concurrent for s in world.servers.get(domain, [])), default=0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def _ticker(label: str, total: int, done: Any, started: float, eta: bool = True) -> None:
    """A progress line every few seconds; the ETA assumes a steady rate (true of the naive
    pattern, not of the engine, whose largest domain finishes last)."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY)
        n = done()
        elapsed = time.perf_counter() - started
        eta_text = f", ~{elapsed / n * (total - n):.0f} s to go" if eta and 0 < n < total else ""
        print(f"  [{label}] {n:,}/{total:,} addresses after {elapsed:.0f} s{eta_text}", flush=True)


# --------------------------------------------------------------------------- engine


async def run_engine(settings: Settings, emails: list[str], max_seconds: float) -> dict[str, Any]:
    verifier = Verifier(settings)
    results: list[VerificationResult] = []
    started = time.perf_counter()
    ticker = asyncio.create_task(
        _ticker("mailsift", len(emails), lambda: sum(verifier.stats.by_status.values()), started,
                eta=False)
    )
    try:
        async with asyncio.timeout(max_seconds), verifier:
            async for result in verifier.verify_many(emails):
                results.append(result)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "results": results,
        "client_connections": verifier.smtp_connections,
        "dns_queries": verifier.resolver.queries_sent,
    }


# --------------------------------------------------------------------------- naive


def _outcome(email: str, kind: str, code: int | None, message: str | None, host: str) -> RcptOutcome:
    return RcptOutcome(email, kind, code, sanitize_message(message), host)  # type: ignore[arg-type]


async def _naive_smtp(
    email: str, hosts: tuple[str, ...], resolver: DnsResolver, settings: Settings
) -> RcptOutcome:
    """One connection for one address: connect, EHLO, MAIL FROM, RCPT TO, QUIT.

    MX hosts in preference order; the next host only when a connection cannot be made."""
    last = _outcome(email, "unreachable", None, "no MX host could be reached", hosts[0] if hosts else "")
    for host in hosts:
        for ip in await resolver.host_addresses(host):
            smtp = aiosmtplib.SMTP(
                hostname=ip,
                port=settings.smtp_port,
                local_hostname=settings.helo_hostname,
                timeout=settings.smtp_timeout,
                start_tls=False,
                use_tls=False,
            )
            stage = "banner"
            try:
                await smtp.connect()
                stage = "helo"
                await smtp.ehlo()
                stage = "mail"
                await smtp.mail(settings.mail_from)
                stage = "rcpt"
                try:
                    reply = await smtp.rcpt(email)
                    code, message = reply.code, reply.message
                except aiosmtplib.SMTPRecipientRefused as exc:
                    code, message = exc.code, exc.message
                with contextlib.suppress(Exception):
                    await smtp.quit()
                return _outcome(email, classify_reply(code, message, "rcpt"), code, message, host)
            except aiosmtplib.SMTPConnectError as exc:
                last = _outcome(email, "unreachable", None, str(exc), host)
                continue  # nothing there: the next address / MX host
            except aiosmtplib.SMTPResponseException as exc:
                kind = classify_reply(exc.code, exc.message, stage) if exc.code > 0 else "error"  # type: ignore[arg-type]
                return _outcome(email, kind, exc.code if exc.code > 0 else None, exc.message, host)
            except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
                return _outcome(email, "timeout", None, f"timed out at {stage}: {exc}", host)
            except (aiosmtplib.SMTPException, OSError) as exc:
                return _outcome(email, "error", None, f"{type(exc).__name__} at {stage}: {exc}", host)
            finally:
                smtp.close()
    return last


async def _naive_one(email: str, resolver: DnsResolver, settings: Settings) -> VerificationResult:
    parsed = parse_address(email, allow_test_domains=settings.allow_test_domains)
    if isinstance(parsed, SyntaxProblem):
        return syntax_result(parsed)
    domain = parsed.domain
    disposable = reputation.is_disposable(domain)
    mx: MxResult | None = None
    provider, accepts_all = None, False
    if not disposable:
        mx = await resolver.mx(domain)
        if mx.outcome == "ok":
            provider = reputation.provider_from_mx(mx.hosts)
            accepts_all = reputation.provider_rule(provider).accepts_all
    ev = Evidence(
        address=parsed,
        disposable=disposable,
        role_based=reputation.is_role_account(parsed.local),
        free_provider=reputation.is_free_provider(domain),
        suggestion_domain=reputation.suggest_domain(domain),
        mx=mx,
        provider=provider,
        accepts_all=accepts_all,
        smtp_enabled=settings.smtp_enabled,
    )
    if mx is None or mx.outcome != "ok" or not settings.smtp_enabled:
        return decide(ev)
    outcome = await _naive_smtp(parsed.email, mx.hosts, resolver, settings)
    return decide(dataclasses.replace(ev, rcpt=outcome, catch_all=None))


async def run_naive(
    settings: Settings, emails: list[str], concurrency: int, max_seconds: float
) -> dict[str, Any]:
    resolver = DnsResolver(settings)
    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def one(email: str) -> VerificationResult:
        nonlocal done
        async with limit:
            result = await _naive_one(email, resolver, settings)
        done += 1
        return result

    started = time.perf_counter()
    ticker = asyncio.create_task(_ticker("naive", len(emails), lambda: done, started))
    try:
        async with asyncio.timeout(max_seconds):
            results = await asyncio.gather(*(one(e) for e in emails))
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    wall = time.perf_counter() - started
    return {"wall": wall, "results": list(results), "dns_queries": resolver.queries_sent}


# --------------------------------------------------------------------------- report


def _warm_reputation() -> None:
    """Load the lazily read data files (disposable lists, typo tables) before any timer."""
    reputation.is_disposable("warm-up.test")
    reputation.is_role_account("info")
    reputation.is_free_provider("gmail.com")
    reputation.suggest_domain("gmial.com")
    reputation.provider_rule(reputation.provider_from_mx(["gmail-smtp-in.l.google.com"]))


def _row(label: str, a: str, b: str) -> str:
    return f"{label:<40} {a:>18} {b:>26}"


def _floor_estimate(plan: Any, settings: Settings) -> str:
    """The engine's lower bound set by the largest domain: its connections run
    per_domain_concurrency at a time; the RCPTs of a connection go out in pipelined
    groups of PIPELINE_DEPTH (RFC 2920), one round trip a group."""
    big = plan.largest
    per_conn = settings.max_rcpt_per_connection
    conns = math.ceil(big.size / per_conn)
    rounds = math.ceil(conns / settings.per_domain_concurrency)
    replies = 4 + math.ceil(min(per_conn, big.size) / PIPELINE_DEPTH)  # banner, EHLO, MAIL, RCPT groups, QUIT
    return (
        f"{big.domain}: {big.size:,} addresses = {conns} connections of <= {per_conn} RCPT, "
        f"{settings.per_domain_concurrency} at a time -> {rounds} rounds x {replies} round trips x "
        f"{plan.latency * 1000:.0f} ms ~ {rounds * replies * plan.latency:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=None, help="list size (default 10,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 addresses")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds before every SMTP reply")
    parser.add_argument("--naive-concurrency", type=int, default=20)
    parser.add_argument(
        "--naive-sample", type=int, default=None,
        help="run the naive pattern on this many addresses only and extrapolate (labelled)",
    )
    parser.add_argument("--smtp-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--domains", type=int, default=None, help="number of domains (default N/20)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an engine setting, e.g. per_domain_concurrency=4 (repeatable)",
    )
    parser.add_argument("--max-seconds", type=float, default=1800, help="bound on each phase")
    args = parser.parse_args(argv)
    n = args.addresses or (1_000 if args.quick else 10_000)
    overrides = dict(item.split("=", 1) for item in args.set)

    plan = plan_world(n, latency=args.latency, seed=args.seed, n_domains=args.domains)
    emails = list(plan.emails)
    print("mailsift engine benchmark")
    print(describe(plan))
    world = populate(World(), plan)
    world.start()
    try:
        settings = world.settings(smtp_timeout=args.smtp_timeout, **overrides)
        print(
            f"engine settings: concurrency {settings.concurrency}, per_domain_concurrency "
            f"{settings.per_domain_concurrency}, max_rcpt_per_connection "
            f"{settings.max_rcpt_per_connection}, smtp_timeout {settings.smtp_timeout} s"
        )
        print(f"engine floor set by the largest domain: {_floor_estimate(plan, settings)}")
        _warm_reputation()

        # -- 1. the engine
        reset_servers(world)
        print(f"\n[1/2] mailsift engine: Verifier.verify_many over {n:,} addresses", flush=True)
        engine = asyncio.run(run_engine(settings, emails, args.max_seconds))
        e_srv = server_counts(world)
        e_maxc = max_concurrent(world, plan.largest.domain)
        print(f"  done in {engine['wall']:.1f} s", flush=True)

        # -- 2. the naive pattern
        reset_servers(world)
        sample = emails
        if args.naive_sample and args.naive_sample < n:
            sample = random.Random(args.seed).sample(emails, args.naive_sample)
        sampled = len(sample) < n
        print(
            f"\n[2/2] naive: one connection per address, {args.naive_concurrency} at a time, "
            f"{len(sample):,} addresses" + (" (a sample; wall time extrapolated)" if sampled else ""),
            flush=True,
        )
        naive = asyncio.run(run_naive(settings, sample, args.naive_concurrency, args.max_seconds))
        n_srv = server_counts(world)
        n_maxc = max_concurrent(world, plan.largest.domain)
        print(f"  done in {naive['wall']:.1f} s", flush=True)
    finally:
        world.stop()

    # -- figures
    e_wall = engine["wall"]
    n_wall_measured = naive["wall"]
    scale = n / len(sample)
    n_wall = n_wall_measured * scale
    tag = " (extrap.)" if sampled else ""
    e_rate, n_rate = n / e_wall, len(sample) / n_wall_measured
    print("\n" + "=" * 86)
    print(_row("", "mailsift engine", f"naive, {args.naive_concurrency} at a time"))
    print(_row("addresses", f"{n:,}", f"{len(sample):,}" + (f" of {n:,}" if sampled else "")))
    print(_row("wall seconds", f"{e_wall:.1f}", f"{n_wall_measured:.1f}"))
    if sampled:
        print(_row(f"wall seconds for all {n:,}", f"{e_wall:.1f}", f"{n_wall:.1f}{tag}"))
    print(_row("addresses / second", f"{e_rate:.1f}", f"{n_rate:.1f}"))
    print(_row("SMTP connections (server side)", f"{e_srv['connections']:,}", f"{n_srv['connections']:,}"))
    print(_row(
        "SMTP connections per address",
        f"{e_srv['connections'] / n:.3f}", f"{n_srv['connections'] / len(sample):.3f}",
    ))
    print(_row("RCPT commands (server side)", f"{e_srv['rcpt']:,}", f"{n_srv['rcpt']:,}"))
    print(_row(
        f"most connections at once, {plan.largest.domain}", f"{e_maxc}", f"{n_maxc}"
    ))
    print(_row("DNS queries sent", f"{engine['dns_queries']:,}", f"{naive['dns_queries']:,}"))
    print(_row("engine's own connection counter", f"{engine['client_connections']:,}", "-"))
    print("=" * 86)
    print(
        f"speed ratio (addresses/s, mailsift / naive): {e_rate / n_rate:.2f}x"
        + (" -- naive rate measured on the sample" if sampled else "")
    )
    print("DNS: counted in both timings (new resolver, cold cache, in each phase)")
    print(f"peak RSS of this process (both phases and the world): {peak_rss_mb():.0f} MB")

    # -- agreement
    by_email = {r.email: r for r in engine["results"]}
    pairs = [(by_email.get(r.email), r) for r in naive["results"]]
    e_status = Counter(e.status for e, _ in pairs if e is not None)
    n_status = Counter(r.status for _, r in pairs)
    same_status = sum(1 for e, r in pairs if e is not None and e.status == r.status)
    same_code = sum(1 for e, r in pairs if e is not None and e.smtp_code == r.smtp_code)
    scope = f"the {len(sample):,} sampled addresses" if sampled else f"all {n:,} addresses"
    print(f"\nverdict agreement over {scope}:")
    print(f"  {'status':<10} {'mailsift':>10} {'naive':>10}")
    for status in ("valid", "invalid", "risky", "unknown"):
        print(f"  {status:<10} {e_status[status]:>10,} {n_status[status]:>10,}")
    print(f"  same status: {same_status:,}/{len(pairs):,} ({same_status / len(pairs):.1%}); "
          f"same SMTP reply code: {same_code:,}/{len(pairs):,} ({same_code / len(pairs):.1%})")
    diffs = Counter(
        (f"{e.status}/{e.reason}", f"{r.status}/{r.reason}")
        for e, r in pairs if e is not None and (e.status, e.reason) != (r.status, r.reason)
    )
    for (a, b), count in diffs.most_common(6):
        print(f"  differ: mailsift {a:<28} naive {b:<28} {count:,}")
    if diffs:
        print("  (catch-all domains: the engine probes a random mailbox once per domain; the naive"
              " pattern cannot tell, so it calls them valid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
