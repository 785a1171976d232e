"""The benchmark world: a B2C-like list of addresses over a simulated internet with latency.

    from benchmarks.world import build_world
    world, emails = build_world(10_000, latency=0.05)   # started; world.stop() when done

Domain sizes are Zipf-like, with the largest domain (``gmail.com``, Google MX host names)
holding a quarter of the list, as Gmail does in consumer lists; the other 75 % fall on
``n_domains - 1`` domains with weights ``1/rank``: a few big providers (Yahoo, Outlook,
Hotmail, iCloud, AOL, each with its real MX host names so provider rules apply), then a
long tail of company domains (``company0042.test``) with a handful of addresses each.

What their mail does (seeded, so every run builds the same world):

- big providers: accept their listed mailboxes, ``550 5.1.1`` for the rest, except
  Yahoo/AOL, which accept every RCPT (their provider rule makes that ``risky``);
- tail domains: 83 % accept listed mailboxes, 6 % catch-all, 4 % greylist every RCPT
  (``450 4.2.0``), 7 % do not exist (``NXDOMAIN``);
- about 10 % of the addresses at accepting domains are not listed (``550 5.1.1``).

Every SMTP server waits ``latency`` seconds before every reply (banner included), a
stand-in for the round trip to a real MX host. The addresses are shuffled: CRM exports
are not sorted by domain.
"""

from __future__ import annotations

import json
import os
import random
import select
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from mailsift.testing.world import MxSpec, World

__all__ = [
    "DomainPlan",
    "LatencyWorld",
    "WorldPlan",
    "WorldProcess",
    "build_world",
    "describe",
    "expected_status",
    "plan_world",
    "populate",
]

Kind = Literal["accept", "catch_all", "greylist", "nxdomain"]

#: The big consumer providers after gmail.com: (domain, kind, MX host names).
PROVIDERS: tuple[tuple[str, Kind, tuple[str, ...]], ...] = (
    ("yahoo.com", "catch_all", ("mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net")),
    ("outlook.com", "accept", ("outlook-com.olc.protection.outlook.com",)),
    ("hotmail.com", "accept", ("hotmail-com.olc.protection.outlook.com",)),
    ("icloud.com", "accept", ("mx01.mail.icloud.com", "mx02.mail.icloud.com")),
    ("aol.com", "catch_all", ("mx-aol.mail.gm0.yahoodns.net",)),
)
GMAIL_MX = ("gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com")

#: Tail domains: what their mail does, with these weights.
TAIL_MIX: tuple[tuple[Kind, float], ...] = (
    ("accept", 0.83),
    ("catch_all", 0.06),
    ("greylist", 0.04),
    ("nxdomain", 0.07),
)

_FIRST = (
    "jane", "john", "maria", "wei", "aisha", "liam", "sofia", "noah", "emma", "lucas",
    "olivia", "ethan", "mia", "arjun", "chloe", "mateo", "yuki", "omar", "lena", "pavel",
    "fatima", "diego", "hana", "samuel", "ines", "kofi", "nora", "ivan", "zoe", "raj",
)
_LAST = (
    "doe", "smith", "garcia", "chen", "khan", "obrien", "rossi", "muller", "dubois",
    "silva", "brown", "jones", "tanaka", "nguyen", "kowalski", "haddad", "larsen", "okafor",
    "petrov", "santos", "fischer", "moreau", "kim", "ali", "novak", "berg", "costa", "weber",
)


@dataclass(frozen=True)
class DomainPlan:
    domain: str
    kind: Kind
    size: int  # addresses of the list at this domain
    mx_names: tuple[str, ...] = ()
    mailboxes: tuple[str, ...] = ()  # the addresses that exist (accept kind only)


@dataclass(frozen=True)
class WorldPlan:
    domains: tuple[DomainPlan, ...]
    emails: tuple[str, ...]  # the list, shuffled
    latency: float
    seed: int
    kinds: Counter[str] = field(default_factory=Counter)  # addresses per domain kind

    @property
    def largest(self) -> DomainPlan:
        return max(self.domains, key=lambda d: d.size)


def _sizes(n: int, n_domains: int, top_share: float) -> list[int]:
    """Addresses per domain, largest first: ``top_share`` of ``n`` on the first, the rest
    Zipf (weight 1/rank) over the others, every domain at least one address."""
    top = round(n * top_share)
    rest = n - top
    ranks = range(2, n_domains + 1)
    weights = [1.0 / r for r in ranks]
    total = sum(weights)
    exact = [rest * w / total for w in weights]
    sizes = [max(1, int(x)) for x in exact]
    # largest remainder, then trim from the biggest if the floor of 1 overshot
    short = rest - sum(sizes)
    order = sorted(range(len(exact)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while short > 0:
        sizes[order[i % len(order)]] += 1
        short -= 1
        i += 1
    j = 0
    while short < 0:
        if sizes[j] > 1:
            sizes[j] -= 1
            short += 1
        j = (j + 1) % len(sizes)
    return [top, *sizes]


def plan_world(
    n: int = 10_000,
    *,
    latency: float = 0.05,
    seed: int = 7,
    n_domains: int | None = None,
    top_share: float = 0.25,
    unknown_mailbox_share: float = 0.10,
) -> WorldPlan:
    """The domains, their behaviour and the address list (no servers started)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(seed)
    n_domains = n_domains or max(len(PROVIDERS) + 2, n // 20)
    n_domains = min(n_domains, max(1, n))
    sizes = _sizes(n, n_domains, top_share) if n_domains > 1 else [n]
    plans: list[DomainPlan] = []
    emails: list[str] = []
    kinds: Counter[str] = Counter()
    for rank, size in enumerate(sizes, start=1):
        if rank == 1:
            domain, kind, mx = "gmail.com", "accept", GMAIL_MX
        elif rank - 2 < len(PROVIDERS):
            domain, kind, mx = PROVIDERS[rank - 2]
        else:
            domain = f"company{rank:04d}.test"
            kind = rng.choices([k for k, _ in TAIL_MIX], [w for _, w in TAIL_MIX])[0]
            mx = ()
        addrs = []
        for k in range(size):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            addrs.append(f"{first}.{last}{k}@{domain}")  # k keeps them unique per domain
        boxes: tuple[str, ...] = ()
        if kind == "accept":
            boxes = tuple(a for a in addrs if rng.random() >= unknown_mailbox_share)
        plans.append(DomainPlan(domain, kind, size, mx, boxes))
        emails.extend(addrs)
        kinds[kind] += size
    rng.shuffle(emails)
    return WorldPlan(tuple(plans), tuple(emails), latency, seed, kinds)


#: The three worlds of the engine benchmark (issue 10): where the 50 ms go.
LatencyWorld = Literal["round_trip", "serial", "cap421"]


def populate(
    world: World, plan: WorldPlan, *, kind: LatencyWorld = "round_trip", cap: int = 4
) -> World:
    """Add the plan's domains to ``world`` (started or not).

    ``kind``: ``round_trip``, the latency is the network's (pipelined commands share
    it); ``serial``, each reply costs it, one after another (a server judging each RCPT);
    ``cap421``, round trip, and the largest domain's hosts answer a connection beyond
    ``cap`` at once with a 421 banner."""
    model = "serial" if kind == "serial" else "round_trip"
    largest = plan.largest.domain
    for d in plan.domains:
        if d.kind == "nxdomain":
            world.add_domain(d.domain, dns="nxdomain")
            continue
        behaviour = "accept" if d.kind == "accept" else d.kind
        extra: dict[str, object] = {"latency": plan.latency, "latency_model": model}
        if kind == "cap421" and d.domain == largest:
            extra["max_connections"] = cap
        if d.mx_names:
            specs = [MxSpec(5 + 5 * i, behaviour) for i in range(len(d.mx_names))]
            world.add_domain(
                d.domain, behaviour, mailboxes=d.mailboxes, mx=specs, mx_names=list(d.mx_names),
                **extra,
            )
        else:
            world.add_domain(d.domain, behaviour, mailboxes=d.mailboxes, **extra)
    return world


def expected_status(plan: WorldPlan) -> dict[str, str]:
    """The verdict a correct verifier gives each address of the plan: listed mailboxes
    ``valid``, others at accepting domains ``invalid``; catch-all domains (and Yahoo/AOL,
    whose provider rule says they accept all) ``risky``; greylisting ``unknown``; a domain
    that does not exist ``invalid``."""
    truth: dict[str, str] = {}
    by_domain = {d.domain: d for d in plan.domains}
    boxes = {d.domain: frozenset(d.mailboxes) for d in plan.domains}
    for email in plan.emails:
        d = by_domain[email.rpartition("@")[2]]
        if d.kind == "accept":
            truth[email] = "valid" if email in boxes[d.domain] else "invalid"
        elif d.kind == "catch_all":
            truth[email] = "risky"
        elif d.kind == "greylist":
            truth[email] = "unknown"
        else:
            truth[email] = "invalid"
    return truth


def build_world(
    n: int = 10_000,
    *,
    latency: float = 0.05,
    seed: int = 7,
    n_domains: int | None = None,
) -> tuple[World, list[str]]:
    """A started :class:`World` for :func:`plan_world`, and its address list.

    The caller stops it (``world.stop()``, or ``with world:``)."""
    plan = plan_world(n, latency=latency, seed=seed, n_domains=n_domains)
    world = World()
    populate(world, plan)
    world.start()
    return world, list(plan.emails)


def describe(plan: WorldPlan) -> str:
    """A few lines on the world, for a benchmark's header."""
    d = plan.domains
    n = len(plan.emails)
    by_kind = Counter(x.kind for x in d)
    listed = sum(len(x.mailboxes) for x in d)
    at_accept = plan.kinds["accept"]
    top = sorted(d, key=lambda x: -x.size)[:3]
    lines = [
        f"world: {n:,} addresses at {len(d):,} domains (seed {plan.seed}); "
        f"{plan.latency * 1000:.0f} ms before every SMTP reply",
        "  largest: " + ", ".join(f"{x.domain} {x.size:,} ({x.size / n:.0%})" for x in top)
        + f"; median domain {sorted(x.size for x in d)[len(d) // 2]} address(es)",
        "  domains by kind: " + ", ".join(f"{k} {v}" for k, v in by_kind.most_common())
        + "; addresses by kind: " + ", ".join(f"{k} {v:,}" for k, v in plan.kinds.most_common()),
        f"  at accepting domains {at_accept - listed:,} of {at_accept:,} addresses are not "
        f"listed (550 5.1.1)",
    ]
    return "\n".join(lines)


class WorldProcess:
    """The world of ``plan`` served by a forked child process, as real mail servers live
    on other machines: in the benchmark's own process, the simulated servers share its
    GIL, so whatever Python work the measured code does besides the engine (Prefect's
    task runs, DuckDB appends) also delays the servers' replies, and is counted twice.
    Fork it before the process starts threads (before Prefect is imported).

    The parent reads the servers' counters through a pipe: :meth:`server_counts`,
    :meth:`reset_servers`, :meth:`max_concurrent` (what ``bench_engine``'s functions of
    the same names read from an in-process :class:`World`). The child exits when the
    parent does, or on :meth:`stop`."""

    def __init__(self, plan: WorldPlan) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(self._to_child)
            os.close(self._from_child)
            code = 0
            try:
                _serve_world(plan, to_child_r, from_child_w, parent)
            except BaseException:  # noqa: BLE001 (the parent sees the pipe close)
                code = 1
            os._exit(code)
        os.close(to_child_r)
        os.close(from_child_w)
        self.pid = pid
        self._reader = os.fdopen(self._from_child, "r", encoding="utf-8")
        self._ask({"op": "env"})  # returns once the servers are up

    def _ask(self, request: dict[str, object]) -> dict:  # type: ignore[type-arg]
        os.write(self._to_child, (json.dumps(request) + "\n").encode())
        line = self._reader.readline()
        if not line:
            raise RuntimeError("the world's process ended")
        return json.loads(line)  # type: ignore[no-any-return]

    def env(self, smtp_timeout: float = 5.0) -> dict[str, str]:
        return self._ask({"op": "env", "smtp_timeout": smtp_timeout})

    def server_counts(self) -> dict[str, int]:
        return self._ask({"op": "counts"})

    def reset_servers(self) -> None:
        self._ask({"op": "reset"})

    def max_concurrent(self, domain: str) -> int:
        return int(self._ask({"op": "max_concurrent", "domain": domain})["n"])

    def stop(self) -> None:
        try:
            self._ask({"op": "stop"})
        except (OSError, RuntimeError, ValueError):
            pass
        os.close(self._to_child)
        self._reader.close()
        os.waitpid(self.pid, 0)


def _serve_world(plan: WorldPlan, rfd: int, wfd: int, parent: int) -> None:
    # bench_engine reads the same counters from an in-process world (it imports this module)
    from benchmarks.bench_engine import max_concurrent, reset_servers, server_counts

    world = populate(World(), plan)
    world.start()
    buffer = b""
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], 1.0)
            if not ready:
                if os.getppid() != parent:
                    return
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                op = request["op"]
                if op == "env":
                    answer: object = world.env(smtp_timeout=float(request.get("smtp_timeout", 5.0)))
                elif op == "counts":
                    answer = server_counts(world)
                elif op == "reset":
                    reset_servers(world)
                    answer = {}
                elif op == "max_concurrent":
                    answer = {"n": max_concurrent(world, request["domain"])}
                else:  # stop
                    os.write(wfd, b"{}\n")
                    return
                os.write(wfd, (json.dumps(answer) + "\n").encode())
    finally:
        world.stop()
