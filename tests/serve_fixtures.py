"""A live ``mailsift serve`` subprocess on loopback with the simulated internet behind it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mailsift.testing.world import World
from service.keys import new_key
from warehouse import Warehouse

__all__ = ["LiveService", "add_key", "free_port", "populate", "running_service"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(world: World) -> None:
    """The domains the serve tests use."""
    world.add_domain("acme.test", mailboxes=["jane@acme.test", "ops@acme.test"])
    world.add_domain("catchall.test", behaviour="catch_all")
    world.add_domain("dead.test", dns="nxdomain")
    world.add_domain("slow.test", dns="timeout")
    world.add_domain("slowsmtp.test", mailboxes=["amy@slowsmtp.test"], latency=0.4)
    # a second per reply and no pipelining: a few addresses keep a job busy for seconds
    world.add_domain("crawl.test", mailboxes=[f"c{i}@crawl.test" for i in range(0, 20, 2)],
                     latency=1.0, pipelining=False)
    for n in range(5):
        world.add_domain(f"shop{n}.test", mailboxes=[f"user{i}@shop{n}.test" for i in range(0, 400, 2)])


def add_key(db: Path, name: str, *, test: bool = False, rate_limit: int | None = None) -> str:
    key, key_id, key_hash, hint = new_key(test=test)
    with Warehouse.open(db) as wh:
        wh.add_api_key(key_id=key_id, name=name, is_test=test, key_hash=key_hash, key_hint=hint,
                       rate_limit_per_minute=rate_limit)
    return key


@dataclass
class LiveService:
    url: str
    db: Path
    env: dict[str, str]
    process: subprocess.Popen
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_service(
    world: World, tmp: Path, *, db: Path | None = None, port: int | None = None,
    base_env: dict[str, str] | None = None, engine_env: dict[str, str] | None = None,
    **serve_env: str,
) -> Iterator[LiveService]:
    db = db or tmp / "warehouse.duckdb"
    port = port or free_port()
    env = {k: v for k, v in (base_env or os.environ).items() if not k.startswith("MAILSIFT_")}
    env.update(world.env())
    env.update(engine_env or {})  # e.g. MAILSIFT_ALLOW_PRIVATE_NETWORKS=false
    env.update(MAILSIFT_DB=str(db), MAILSIFT_SERVE_PORT=str(port), MAILSIFT_SERVE_FLUSH_INTERVAL="0.2")
    env.update({f"MAILSIFT_SERVE_{k.upper()}": str(v) for k, v in serve_env.items()})
    log = tmp / f"serve-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailsift.cli", "serve", "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    live = LiveService(url, db, env, process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mailsift serve exited {process.returncode}:\n{live.output()}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mailsift serve did not start:\n{live.output()}")
            time.sleep(0.1)
        yield live
    finally:
        stop(process)


def stop(process: subprocess.Popen, *, timeout: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
