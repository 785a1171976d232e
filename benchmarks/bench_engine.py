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
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib  # noqa: E402

from benchmarks.world import (  # noqa: E402
    LatencyWorld,
    describe,
    expected_status,
    plan_world,
    populate,
)
from mailsift import reputation  # noqa: E402
from mailsift.dns import DnsResolver, MxResult  # noqa: E402
from mailsift.result import VerificationResult  # noqa: E402
from mailsift.settings import Settings
from mailsift.smtp import (  # noqa: E402
    RcptOutcome,
    classify_reply,
    sanitize_message,
)
from mailsift.syntax import SyntaxProblem, parse_address  # noqa: E402
from mailsift.testing.world import World  # noqa: E402
from mailsift.verdict import Evidence, decide, syntax_result  # noqa: E402
from mailsift.verifier import Verifier  # noqa: E402

__all__ = ["main", "run_engine", "run_naive", "run_world", "server_counts"]

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
        "stats": list(verifier.prober.domain_stats.values()),
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


def _max_open(world: World) -> int:
    return max((s.max_concurrent for s in world.smtp.servers), default=0)


def _after_refusal(world: World, domain: str) -> tuple[int, int]:
    """421s for too many connections at ``domain``'s hosts, and the most connections
    open to one of them after the first (0 when none was refused)."""
    servers = world.servers.get(domain, [])
    return (
        sum(s.refused_busy for s in servers),
        max((s.max_concurrent_after_refusal for s in servers), default=0),
    )


def _wrong(results: list[VerificationResult], truth: dict[str, str]) -> int:
    return sum(1 for r in results if truth.get(r.email, r.status) != r.status)


def run_world(
    kind: LatencyWorld, plan: Any, args: argparse.Namespace, overrides: dict[str, str]
) -> dict[str, Any]:
    """Both phases in one world; the figures of one row."""
    n = len(plan.emails)
    emails = list(plan.emails)
    truth = expected_status(plan)
    world = populate(World(), plan, kind=kind, cap=args.cap)
    world.start()
    try:
        settings = world.settings(smtp_timeout=args.smtp_timeout, **overrides)
        reset_servers(world)
        print(f"\n[{kind}] mailsift engine: Verifier.verify_many over {n:,} addresses", flush=True)
        engine = asyncio.run(run_engine(settings, emails, args.max_seconds))
        e_srv = server_counts(world)
        e_open = _max_open(world)
        e_refused, e_after = _after_refusal(world, plan.largest.domain)
        print(f"  done in {engine['wall']:.1f} s", flush=True)
        reset_servers(world)
        sample = emails
        if args.naive_sample and args.naive_sample < n:
            sample = random.Random(args.seed).sample(emails, args.naive_sample)
        print(
            f"[{kind}] guide's pattern: one connection per address, {args.naive_concurrency} at "
            f"a time, {len(sample):,} addresses" + (" (a sample)" if len(sample) < n else ""),
            flush=True,
        )
        naive = asyncio.run(run_naive(settings, sample, args.naive_concurrency, args.max_seconds))
        n_srv = server_counts(world)
        n_open = _max_open(world)
        print(f"  done in {naive['wall']:.1f} s", flush=True)
    finally:
        world.stop()
    e_rate = n / engine["wall"]
    n_rate = len(sample) / naive["wall"]
    top = sorted(engine["stats"], key=lambda st: -st.addresses)[:3]
    return {
        "world": kind,
        "engine_rate": e_rate,
        "naive_rate": n_rate,
        "ratio": e_rate / n_rate,
        "engine_conn_per_addr": e_srv["connections"] / n,
        "naive_conn_per_addr": n_srv["connections"] / len(sample),
        "engine_max_open": e_open,
        "naive_max_open": n_open,
        "engine_wrong": _wrong(engine["results"], truth),
        "naive_wrong": _wrong(naive["results"], truth),
        "naive_n": len(sample),
        "refused_421": e_refused,
        "max_open_after_421": e_after,
        "engine_wall": engine["wall"],
        "naive_wall": naive["wall"],
        "top": top,
    }


async def _settle_times(settings: Settings, emails: list[str]) -> dict[str, float]:
    """Seconds from the start until each address's result was settled (not the order in
    which ``verify_many`` yields them, which is the input's)."""
    verifier = Verifier(settings)
    done: dict[str, float] = {}
    started = time.perf_counter()
    settle = verifier._settle

    def timed(slot: Any, result: VerificationResult) -> None:
        done.setdefault(result.email, time.perf_counter() - started)
        settle(slot, result)

    verifier._settle = timed  # type: ignore[method-assign]
    async with verifier:
        async for _ in verifier.verify_many(emails):
            pass
    return done


def run_tarpits(plan: Any, args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """Issue 9: ``--tarpits N`` domains whose servers never send a banner, added to the
    round-trip world: how much later do the other domains finish than without them?"""
    tarpit_emails = [f"user{i}@tarpit{t:03d}.test" for t in range(args.tarpits) for i in range(5)]
    world = populate(World(), plan, kind="round_trip")
    for t in range(args.tarpits):
        world.add_domain(f"tarpit{t:03d}.test", "tarpit")
    world.start()
    try:
        settings = world.settings(smtp_timeout=args.smtp_timeout, **overrides)
        healthy = list(plan.emails)
        print(f"\n[tarpits] {len(healthy):,} addresses, no tarpit", flush=True)
        alone = asyncio.run(_settle_times(settings, healthy))
        mixed_list = healthy + tarpit_emails
        random.Random(args.seed).shuffle(mixed_list)
        print(f"[tarpits] the same and {args.tarpits} tarpit domains ({len(tarpit_emails)} "
              f"addresses; their servers never greet)", flush=True)
        mixed = asyncio.run(_settle_times(settings, mixed_list))
    finally:
        world.stop()
    t_alone = max(alone.values())
    t_healthy = max(v for k, v in mixed.items() if "@tarpit" not in k)
    t_tarpit = max(v for k, v in mixed.items() if "@tarpit" in k)
    print(f"other domains done: {t_alone:.1f} s without tarpits, {t_healthy:.1f} s with "
          f"{args.tarpits} tarpit domains (+{t_healthy - t_alone:.1f} s); the tarpits' addresses "
          f"unknown by {t_tarpit:.1f} s (smtp_timeout {settings.smtp_timeout:g} s, slow after "
          f"{settings.smtp_slow_after:g} s, slow share {settings.smtp_slow_share:.0%} of "
          f"{settings.concurrency} connections)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=None, help="list size (default 5,000)")
    parser.add_argument("--quick", action="store_true", help="1,000 addresses")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per SMTP reply")
    parser.add_argument(
        "--world", choices=["round_trip", "serial", "cap421", "all"], default="all",
        help="where the latency goes (default: all three, one after another)",
    )
    parser.add_argument("--cap", type=int, default=4,
                        help="cap421 world: connections the largest domain takes at once")
    parser.add_argument("--naive-concurrency", type=int, default=20)
    parser.add_argument(
        "--naive-sample", type=int, default=None,
        help="run the guide's pattern on this many addresses only (its rate is measured there)",
    )
    parser.add_argument("--smtp-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--domains", type=int, default=None,
                        help="number of domains (default N/25: 200 for 5,000)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="an engine setting, e.g. per_domain_concurrency=4 (repeatable)",
    )
    parser.add_argument("--max-seconds", type=float, default=1800, help="bound on each phase")
    parser.add_argument("--tarpits", type=int, default=0,
                        help="only: the round-trip world with this many tarpit domains added "
                             "(issue 9: how long do they delay the others?)")
    args = parser.parse_args(argv)
    n = args.addresses or (1_000 if args.quick else 5_000)
    overrides = dict(item.split("=", 1) for item in args.set)
    plan = plan_world(n, latency=args.latency, seed=args.seed,
                      n_domains=args.domains or max(8, n // 25))
    print("mailsift engine benchmark")
    print(describe(plan))
    settings = Settings(**overrides)
    print(
        f"engine settings: concurrency {settings.concurrency}, per_domain_concurrency "
        f"{settings.per_domain_concurrency} growing to max {settings.max_per_domain_concurrency} "
        f"(providers.json may say less), max_rcpt_per_connection "
        f"{settings.max_rcpt_per_connection}, smtp_timeout {args.smtp_timeout} s"
    )
    _warm_reputation()
    if args.tarpits:
        return run_tarpits(plan, args, overrides)
    kinds: list[LatencyWorld] = (
        ["round_trip", "serial", "cap421"] if args.world == "all" else [args.world]
    )
    rows = [run_world(kind, plan, args, overrides) for kind in kinds]

    print("\n" + "=" * 112)
    print(f"{'world':<11} {'mailsift':>10} {'guide':>9} {'ratio':>7} {'conn/addr':>15} "
          f"{'most open to 1 host':>21} {'wrong verdicts':>16} {'after 1st 421':>16}")
    print(f"{'':<11} {'addr/s':>10} {'addr/s':>9} {'':>7} {'mailsift/guide':>15} "
          f"{'mailsift/guide':>21} {'mailsift/guide':>16} {'421s, most open':>16}")
    for r in rows:
        after = f"{r['refused_421']}, {r['max_open_after_421']}" if r["world"] == "cap421" else "-"
        print(
            f"{r['world']:<11} {r['engine_rate']:>10,.0f} {r['naive_rate']:>9,.0f} "
            f"{r['ratio']:>6.1f}x {r['engine_conn_per_addr']:>7.3f}/{r['naive_conn_per_addr']:<7.3f} "
            f"{r['engine_max_open']:>10}/{r['naive_max_open']:<10} "
            f"{r['engine_wrong']:>8,}/{r['naive_wrong']:<7,} {after:>16}"
        )
    print("=" * 112)
    print(f"wrong verdicts: against the world's truth over {n:,} addresses (mailsift) and "
          f"{rows[0]['naive_n']:,} (guide); catch-all domains count as wrong when called valid")
    for r in rows:
        top = ", ".join(
            f"{st.domain} {st.addresses:,} addr / {st.connections} conn / window {st.window}"
            f" / {st.refusals} refusals / {st.seconds:.1f} s" for st in r["top"]
        )
        print(f"  [{r['world']}] largest domains: {top}")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
