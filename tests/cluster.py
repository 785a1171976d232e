"""A Dask cluster of "probe hosts" on loopback: a scheduler and one worker per source IP.

Each worker is its own process (``--no-nanny``) serving on its own 127.0.0.x with
``MAILSIFT_SOURCE_ADDRESS`` set to it, so the simulated SMTP servers see one client IP
per worker, as they would see one egress IP per probe host. Used by the scale-out test
and by benchmarks/bench_scale_out.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

__all__ = ["dask_cluster", "free_port", "worker_pids"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def dask_cluster(
    source_ips: Sequence[str], env: Mapping[str, str], *, threads: int = 2, timeout: float = 120
) -> Iterator[str]:
    """Start a scheduler and one worker per IP in ``source_ips`` (env: ``env`` plus that
    worker's ``MAILSIFT_SOURCE_ADDRESS``); yield the scheduler address once every worker
    has joined; stop them all at the end."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {**env, "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", str(port), "--no-dashboard"],
            env=quiet, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for ip in source_ips:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny",
                     "--nthreads", str(threads), "--host", ip, "--name", f"probe-{ip}",
                     "--no-dashboard", "--preload", "tasks.steps"],
                    env={**quiet, "MAILSIFT_SOURCE_ADDRESS": ip},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        while True:  # the scheduler takes a moment to listen
            try:
                client = Client(address, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        try:
            if source_ips:  # none: a scheduler alone, whose workers join later
                client.wait_for_workers(len(source_ips), timeout=max(1.0, deadline - time.monotonic()))
        finally:
            client.close()
        yield address
    finally:
        _stop(procs)


def worker_pids(address: str) -> dict[str, int]:
    """The process id of each worker of the cluster at ``address``, by the IP it serves
    on (its source address): each worker reports its own ``os.getpid()``."""
    import os
    from urllib.parse import urlsplit

    from distributed import Client

    with Client(address, timeout=30) as client:
        pids = client.run(os.getpid)
    return {str(urlsplit(worker).hostname): int(pid) for worker, pid in pids.items()}
