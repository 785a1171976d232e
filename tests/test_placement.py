"""Which probe host runs each verify batch (tasks/placement.py).

The property users rely on: with several probe hosts, every host works on every big
domain at once (each host has its own per-IP window there), so N hosts finish a list
capped per client IP about N times faster. The cluster itself is exercised end to end in
test_scale_out_flow.py; here the placement is driven by a model of those hosts."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from tasks.placement import BatchPlacer, main_domain


def lists(domains: dict[str, int], size: int = 25) -> list[list[str]]:
    """Single-domain batches of ``size`` addresses, domain by domain (as batches_by_domain
    packs full batches of a large domain)."""
    return [[f"u{b}.{i}@{d}" for i in range(size)] for d, n in domains.items() for b in range(n)]


def serve(placer: BatchPlacer, batches: list[list[str]], hosts: list[str]) -> tuple[int, list[tuple[int, str]]]:
    """Run the placement against a model of probe hosts whose remote side caps each client
    IP per domain: per tick, each host finishes one batch of each domain it holds (its
    window to that domain is busy with one batch at a time). Returns the ticks taken and
    every (batch, host) placed."""
    placed: list[tuple[int, str]] = []
    running: dict[str, dict[str, list[int]]] = {h: {} for h in hosts}

    def fill() -> None:
        while (got := placer.place()) is not None:
            index, host = got
            placed.append(got)
            running[host].setdefault(main_domain(batches[index]), []).append(index)

    fill()
    ticks = 0
    while any(queue for per_domain in running.values() for queue in per_domain.values()):
        ticks += 1
        for per_domain in running.values():
            for queue in per_domain.values():
                if queue:
                    placer.done(queue.pop(0))
        fill()
    return ticks, placed


def test_three_hosts_finish_three_capped_domains_three_times_faster() -> None:
    # the benchmark's world: 3 domains x 40 batches, 3 hosts, 32 batches in flight in all
    batches = lists({"big0.test": 40, "big1.test": 40, "big2.test": 40})
    one_host, _ = serve(BatchPlacer(batches, ["h1"], 32), batches, ["h1"])
    hosts = ["h1", "h2", "h3"]
    three_hosts, placed = serve(BatchPlacer(batches, hosts, 32), batches, hosts)

    assert one_host == 40  # one host: each domain's 40 batches one after another
    assert three_hosts <= math.ceil(40 / 3) + 1  # three: each host holds a third of each domain
    assert sorted(i for i, _ in placed) == list(range(len(batches)))  # each batch placed once
    per_host_domain = Counter((h, main_domain(batches[i])) for i, h in placed)
    assert set(per_host_domain.values()) <= {13, 14}  # every host served every domain, evenly


def test_a_host_never_holds_more_than_its_share_of_the_slots() -> None:
    batches = lists({"a.test": 30, "b.test": 3})
    placer = BatchPlacer(batches, ["h1", "h2", "h3"], 32)
    first = []
    while (got := placer.place()) is not None:
        first.append(got)
    assert placer.per_host == 11
    assert Counter(h for _, h in first) == {"h1": 11, "h2": 11, "h3": 11}
    assert placer.pending == len(batches) - 33
    # the biggest domain first (its last batch decides when the run ends), spread over hosts
    assert {main_domain(batches[i]) for i, _ in first[:3]} == {"a.test"}
    assert {h for _, h in first[:3]} == {"h1", "h2", "h3"}


def test_small_domains_fill_slots_beside_the_big_one() -> None:
    batches = lists({"gmail.test": 6}) + [[f"x@small{i}.test"] for i in range(6)]
    placer = BatchPlacer(batches, ["h1"], 4)
    first = [main_domain(batches[i]) for i, _ in iter(placer.place, None)]
    # one gmail batch, then the host holds the domains it holds least: small ones
    assert first[0] == "gmail.test" and first.count("gmail.test") == 1 and len(first) == 4


def test_a_host_that_left_gets_nothing_more_and_a_new_one_gets_its_share() -> None:
    batches = lists({"a.test": 12})
    placer = BatchPlacer(batches, ["h1", "h2"], 4)
    first = list(iter(placer.place, None))
    assert Counter(h for _, h in first) == {"h1": 2, "h2": 2}
    placer.set_hosts(["h1", "h3"])  # h2 died, h3 joined
    for index, host in first:
        if host == "h2":
            placer.done(index)  # its batches were rerun elsewhere, or failed
    later = list(iter(placer.place, None))
    assert {h for _, h in later} == {"h3"} and len(later) == 2
    assert placer.in_flight("h2") == 0


def test_every_batch_is_placed_exactly_once_whatever_the_mix() -> None:
    batches = lists({"a.test": 7, "b.test": 5}, size=3) + [["no-at-sign"], [], ["p@q.test", "r@q.test"]]
    placer = BatchPlacer(batches, ["h1", "h2", "h3"], 5)
    seen: list[int] = []
    while placer.pending:
        got = list(iter(placer.place, None))
        seen.extend(i for i, _ in got)
        for index, _ in got:
            placer.done(index)
    assert sorted(seen) == list(range(len(batches)))
    with pytest.raises(ValueError):
        BatchPlacer(batches, ["h1"], 0)


def test_a_host_is_never_given_more_batches_than_it_has_threads() -> None:
    # a batch queued on a busy Dask worker waits there, or is stolen by another worker
    # whatever its domain: the placer keeps it until a host has a thread for it
    batches = lists({"a.test": 20, "b.test": 20})
    placer = BatchPlacer(batches, {"h1": 2, "h2": 8}, 32)
    first = list(iter(placer.place, None))
    assert Counter(h for _, h in first) == {"h1": 2, "h2": 8}
    assert {main_domain(batches[i]) for i, h in first if h == "h1"} == {"a.test", "b.test"}
    index, host = first[0]
    placer.done(index)  # a thread is free on that host, and only there
    again = placer.place()
    assert again is not None and again[1] == host and placer.place() is None
