"""Which probe host runs the next verify batch (plain Python: no Prefect, no Dask).

Mailbox providers count connections per client IP, and each probe host's engine keeps
its window per (domain, source IP). So a domain is served fastest when every host holds
some of its batches all the time, and a host that holds three batches of one domain
serves them one after another through its own window while the other hosts' windows to
that domain stay shut. A distributed scheduler places tasks by each worker's load, blind
to domains. Measured with it (``benchmarks/bench_scale_out.py``, three domains capped at
2 connections per client IP): at the end of a run one host held several batches of one
domain while another sat idle, and three hosts were 2.1-2.4 times one host.

:class:`BatchPlacer` does the placing itself: it keeps, per host, the batches in flight
by their main domain (the domain most of the batch's addresses have), and gives a host's
free slot the pending batch of the domain that host holds least, among those the domain
with the most batches still pending first (the critical path: the biggest domain cannot
finish before its last batch starts). Each host holds at most ``slots / hosts`` batches
at once, and never more than it has threads: no host hoards the tail of the run, and no
batch waits on a busy host, where Dask's work stealing could move it elsewhere.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["BatchPlacer", "main_domain"]


def main_domain(batch: Sequence[str]) -> str:
    """The domain most of ``batch``'s addresses have (the first such, in batch order)."""
    if not batch:
        return ""
    return Counter(e.rpartition("@")[2].lower() for e in batch).most_common(1)[0][0]


class BatchPlacer:
    """Places ``batches`` (by index) on hosts, ``slots`` batches in flight in all.

    ``hosts``: host names, or a mapping of each host to the batches it can run at once
    (a Dask worker's threads). ``place()`` gives the next ``(batch index, host)`` while a
    host has a free slot and a batch is pending; ``done(index)`` frees its slot.
    ``set_hosts`` follows the cluster:
    a host that left gets nothing more (what it ran is finished by whoever reruns it, and
    freed by ``done`` all the same); a host that joined gets its share from then on.
    """

    def __init__(self, batches: Sequence[Sequence[str]], hosts: Iterable[str] | Mapping[str, int],
                 slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self._slots = slots
        self._lanes: dict[str, deque[int]] = {}  # main domain -> pending batch indexes, in order
        for index, batch in enumerate(batches):
            self._lanes.setdefault(main_domain(batch), deque()).append(index)
        self._load: dict[str, Counter[str]] = {}  # host -> main domain -> batches in flight
        self._running: dict[int, tuple[str, str]] = {}  # batch index -> (host, main domain)
        self._hosts: dict[str, int] = {}  # host -> batches it can run at once
        self.set_hosts(hosts)

    @property
    def pending(self) -> int:
        """Batches not placed yet."""
        return sum(len(lane) for lane in self._lanes.values())

    @property
    def per_host(self) -> int:
        """Batches one host holds at once at most (its threads permitting)."""
        return max(1, math.ceil(self._slots / max(1, len(self._hosts))))

    def capacity(self, host: str) -> int:
        """Batches ``host`` holds at once at most: its share of the slots, within its threads."""
        return max(1, min(self.per_host, self._hosts.get(host, 0)))

    def set_hosts(self, hosts: Iterable[str] | Mapping[str, int]) -> None:
        if isinstance(hosts, Mapping):
            self._hosts = {h: max(1, int(n)) for h, n in hosts.items()}
        else:
            self._hosts = dict.fromkeys(hosts, self._slots)
        for host in self._hosts:
            self._load.setdefault(host, Counter())

    def in_flight(self, host: str) -> int:
        return sum(self._load.get(host, Counter()).values())

    def place(self) -> tuple[int, str] | None:
        """The next batch and the host to run it, or ``None`` (no batch pending, or no
        host with a free slot)."""
        if not self._lanes:
            return None
        free = [h for h in self._hosts if self.in_flight(h) < self.capacity(h)]
        if not free:
            return None
        host = min(free, key=self.in_flight)  # the emptiest host first (stable: list order)
        load = self._load[host]
        domain = min(self._lanes, key=lambda d: (load[d], -len(self._lanes[d])))
        lane = self._lanes[domain]
        index = lane.popleft()
        if not lane:
            del self._lanes[domain]
        load[domain] += 1
        self._running[index] = (host, domain)
        return index, host

    def done(self, index: int) -> None:
        """Batch ``index`` finished (or failed): its slot is free."""
        placed = self._running.pop(index, None)
        if placed is None:
            return
        host, domain = placed
        load = self._load[host]
        load[domain] -= 1
        if load[domain] <= 0:
            del load[domain]
