"""``mailsift serve``: single-address latency (fresh and cached) and cached lookups per
second under concurrent clients, against a live server with the simulated internet.

Run: ``.venv/bin/python benchmarks/bench_serve.py [--addresses 200] [--clients 50] [--seconds 10]``

Steps (one ``mailsift serve`` subprocess on loopback, rate limit off, the benchmark world
of :mod:`benchmarks.world` with ``--latency`` seconds per SMTP reply):

1. fresh: ``--addresses`` distinct addresses, one request at a time (DNS + SMTP each)
2. cached (memory): the same addresses again (the service remembers what it answered)
3. cached (warehouse): the service restarted, the same addresses (each read from DuckDB
   once, a short read-only open, then remembered)
4. throughput: ``--clients`` concurrent clients (aiohttp, one connection each) asking for
   cached addresses for ``--seconds``: requests per second, p50/p99 latency, errors

Targets from issue 12: cached lookups >= 500/s with p99 < 50 ms under 50 clients. The
load generator shares the machine with the server: on a 2-core box it takes a good part
of the CPU the server would otherwise have.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from benchmarks.world import build_world
from service.keys import new_key
from warehouse import Warehouse

__all__ = ["main"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailsift.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("mailsift serve did not start")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _line(name: str, ms: list[float]) -> str:
    return (f"{name:<28} n={len(ms):<6} p50 {_pct(ms, .5):7.2f} ms   p99 {_pct(ms, .99):7.2f} ms   "
            f"mean {statistics.fmean(ms):7.2f} ms")


def _sequential(url: str, key: str, emails: list[str]) -> tuple[list[float], list[bool]]:
    ms, cached = [], []
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for email in emails:
            t = time.perf_counter()
            body = client.post("/api/v1/verify", json={"email": email}).json()
            ms.append(1000 * (time.perf_counter() - t))
            cached.append(body["cached"])
    return ms, cached


async def _load(url: str, key: str, emails: list[str], clients: int, seconds: float,
                rate: float = 0.0) -> tuple[int, int, list[float], float]:
    """``clients`` connections asking for cached addresses. ``rate`` 0: each as fast as it
    can (saturation: latency is then clients / throughput, by Little's law). ``rate`` > 0:
    all clients together send that many requests a second, each on a fixed schedule, and
    latency counts from the scheduled send time (no coordinated omission)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    interval = clients / rate if rate > 0 else 0.0

    async def client(n: int) -> None:
        nonlocal errors
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(url, headers={"X-API-Key": key}, connector=connector) as session:
            i = n
            due = time.perf_counter() + (interval * n / clients)
            while time.perf_counter() < stop_at:
                if interval:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    t = due
                    due += interval
                else:
                    t = time.perf_counter()
                async with session.post("/api/v1/verify", json={"email": emails[i % len(emails)]}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(1000 * (time.perf_counter() - t))
                i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return len(latencies), errors, latencies, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--addresses", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", type=float, default=0.02, help="Seconds per SMTP reply.")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="Requests a second for the paced run (issue 12's 500/s).")
    args = parser.parse_args(argv)

    world, emails = build_world(max(args.addresses, 50), latency=args.latency)
    emails = emails[: args.addresses]
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    db = tmp / "warehouse.duckdb"
    key, key_id, key_hash, hint = new_key()
    with Warehouse.open(db) as wh:
        wh.add_api_key(key_id=key_id, name="bench", is_test=False, key_hash=key_hash, key_hint=hint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    env.update(world.env(), MAILSIFT_DB=str(db), MAILSIFT_SERVE_RATE_LIMIT_PER_MINUTE="0",
               MAILSIFT_SERVE_FLUSH_INTERVAL="0.5", MAILSIFT_DNS_TIMEOUT="2", MAILSIFT_SMTP_TIMEOUT="5")
    port = _port()
    url = f"http://127.0.0.1:{port}"
    print(f"mailsift serve benchmark: {len(emails)} addresses, SMTP latency {args.latency * 1000:.0f} ms "
          f"per reply, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    try:
        proc = _start(env, port)
        try:
            fresh, was_cached = _sequential(url, key, emails)
            assert not any(was_cached)
            print(_line("fresh (DNS + SMTP)", fresh))
            memory, was_cached = _sequential(url, key, emails)
            assert all(was_cached)
            print(_line("cached (memory)", memory))
            time.sleep(1.5)  # let the results load into the warehouse
        finally:
            _stop(proc)
        proc = _start(env, port)
        try:
            stored, was_cached = _sequential(url, key, emails)
            print(_line("cached (warehouse)", stored) + f"   cached {sum(was_cached)}/{len(emails)}")
            n, errors, lat, wall = asyncio.run(_load(url, key, emails, args.clients, args.seconds))
            print(_line(f"{args.clients} clients, cached", lat))
            print(f"{'throughput (saturated)':<28} {n / wall:8.0f} lookups/s over {wall:.1f} s, "
                  f"{errors} errors")
            n, errors, lat, wall = asyncio.run(
                _load(url, key, emails, args.clients, args.seconds, rate=args.rate))
            print(_line(f"{args.clients} clients at {args.rate:.0f}/s", lat))
            print(f"{'throughput (paced)':<28} {n / wall:8.0f} lookups/s over {wall:.1f} s, "
                  f"{errors} errors (target >= 500/s with p99 < 50 ms)")
        finally:
            _stop(proc)
    finally:
        world.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
