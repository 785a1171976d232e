"""Politeness and pace: connection slots for a whole run, and one adaptive window per
destination.

**Slots** (:class:`Scheduler`, one per event loop). At most ``concurrency`` SMTP
connections are open at once. Waiting sessions are served by critical path: the one whose
domain has the most addresses left goes first, so the largest domain starts at once and
gets the connections it can use, while small domains fill the gaps. A session that has
waited ``smtp_slow_after`` seconds for a reply is *slow* (a tarpit, an overloaded host):
it moves to the slow share (``smtp_slow_share`` of the slots); when that share is full it
is closed and its addresses wait for a slow slot. So tarpits hold a bounded share of the
slots and other domains wait for them at most ``smtp_slow_after`` seconds. No more than
:data:`MAX_PER_HOST` connections are ever open to one address.

**Windows** (:class:`Window`, one per MX host set, as Postfix keeps one per destination:
``qmgr``'s concurrency feedback, postconf(5) ``default_destination_concurrency_limit``).
A window starts at ``per_domain_concurrency`` and grows by one each time a session gets
a clean conversation while its destination still has work queued (by three at a server
that answers pipelined RCPTs one after another, where only more sessions help), up to a
ceiling:
``max_per_domain_concurrency``, or less for a provider that ``data/providers.json``
gives a lower ``max_concurrency``. Pressure halves it (once per cohort of sessions): a
421 or a 4.7.x refusal at connect or banner, "too many connections" wording, a refused or
timed-out connect, a 4xx rate reply to ``RCPT``. A refusal for too many connections while
other sessions were open also sets a cap (the sessions that were open): the window never
goes above it again in this run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from mailsift.smtp.replies import enhanced_code, fold

__all__ = [
    "MAX_PER_HOST",
    "DomainStats",
    "Scheduler",
    "Ticket",
    "Window",
    "is_rate_reply",
]

#: Connections open to one MX address at most, whatever the windows say (Postfix's
#: default destination limit; Exchange's receive connectors allow 20 per source by default).
MAX_PER_HOST = 20


#: Limits per transaction or per session, not on our pace: "too many recipients" (RFC 5321
#: 4.5.3.1.10), Postfix's "too many errors" (smtpd_hard_error_limit).
_NOT_RATE = re.compile(r"too\s+many\s+(?:recipients|errors|invalid|bad)", re.IGNORECASE)


@cache
def _rate_wording() -> re.Pattern[str]:
    """The "rate" group of ``data/smtp_replies.json`` (too many connections, rate
    limited, slow down...), compiled alone: unlike "try later" (greylisting), it says
    that *we* go too fast."""
    data = json.loads(
        resources.files("mailsift.data").joinpath("smtp_replies.json").read_text("utf-8")
    )
    rules = data["client_refused"]["rate"]
    return re.compile("|".join(f"(?:{rule['re']})" for rule in rules), re.IGNORECASE)


def is_rate_reply(code: int | None, message: str | None) -> bool:
    """A transient refusal that says we go too fast: 421, or a 4xx whose text is about
    rate or too many connections. Not "too many recipients" (452 4.5.3, a per-transaction
    limit), not greylisting."""
    if code is None or not 400 <= code < 500:
        return False
    text = message or ""
    if enhanced_code(text) == (4, 5, 3) or _NOT_RATE.search(text):
        return False
    return bool(_rate_wording().search(fold(text)))


def is_connection_pressure(code: int | None, message: str | None) -> bool:
    """At connect, banner or greeting: a 421, a 4.7.x refusal, or rate wording."""
    if code is None:
        return False
    if code == 421:
        return True
    enhanced = enhanced_code(message or "")
    if 400 <= code < 500 and enhanced is not None and enhanced[:2] == (4, 7):
        return True
    return is_rate_reply(code, message)


@dataclass(slots=True)
class DomainStats:
    """What one domain cost in a run (summed over its probe calls)."""

    domain: str
    addresses: int = 0
    connections: int = 0
    rcpts: int = 0  # RCPT commands sent, the catch-all probe and retries included
    window: int = 0  # most sessions open at once for its MX host set
    cap: int | None = None  # the window's cap after a refusal for too many connections
    refusals: int = 0  # 421s and rate replies (pressure)
    seconds: float = 0.0  # from its first session to its last outcome
    slow: bool = False  # held to the slow share (a tarpit, or answers that slow)
    budget_spent: bool = False  # its time budget ran out

    def as_dict(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "addresses": self.addresses,
            "connections": self.connections,
            "rcpts": self.rcpts,
            "window": self.window,
            "window_cap": self.cap,
            "refusals_421": self.refusals,
            "seconds": round(self.seconds, 3),
            "is_slow": self.slow,
            "is_budget_spent": self.budget_spent,
        }


@dataclass(slots=True, eq=False)
class Window:
    """The connection window of one MX host set (see the module docstring)."""

    size: int
    ceiling: int
    #: Set by the first refusal for too many connections: never more than this again.
    cap: int | None = None
    active: int = 0
    peak: int = 0
    #: The most sessions that were open when one that then got a conversation started:
    #: what the destination has shown it takes. New sessions go beyond it by one (by half
    #: of it from 8 on), so a server's connection limit is crossed by one session, not by
    #: a burst; for a server that judges RCPTs one after another (``serial``), where only
    #: more sessions help, they may triple it.
    good: int = 0
    slow: bool = False
    #: Bumped when the window shrinks: a cohort of sessions halves it once.
    epoch: int = 0
    #: Pause before the next session after pressure (doubles, reset by a clean session).
    backoff: float = 0.0
    refusals: int = 0
    #: Replies to pipelined RCPTs come one after another (the server's time per RCPT),
    #: not together; None until a group has told.
    serial: bool | None = None
    pipelining: bool = False  # the last conversation's server offered PIPELINING
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def limit(self) -> int:
        if self.slow:
            return 1
        limit = min(self.size, self.ceiling)
        return min(limit, self.cap) if self.cap is not None else limit

    def room(self) -> int:
        """Sessions that may start now."""
        if self.serial:  # only more sessions make it faster: triple each round
            ahead = 3 * self.good
        else:
            ahead = self.good + (1 if self.good < 8 else self.good // 2)
        return min(self.limit(), ahead) - self.active

    def established(self, open_at_start: int) -> None:
        """A session that started with ``open_at_start`` sessions open (itself
        included) got a conversation."""
        if open_at_start > self.good:
            self.good = open_at_start
            self._wake()

    def grow(self) -> None:
        """A clean session while work is queued: one more (Postfix's positive feedback)."""
        if self.slow:
            return
        top = self.ceiling if self.cap is None else min(self.ceiling, self.cap)
        if self.size < top:
            # Three for a server that judges RCPTs one after another, where only more
            # sessions make it faster: the window triples each round of new sessions.
            self.size = min(top, self.size + (3 if self.serial else 1))
            self._wake()

    def shrink(self, epoch: int, *, open_ok: int | None = None) -> None:
        """Pressure seen by a session that started in ``epoch``. ``open_ok``: the other
        sessions that were open when a connection was refused (the server's limit)."""
        self.refusals += 1
        if open_ok is not None and open_ok > 0:
            self.cap = open_ok if self.cap is None else min(self.cap, open_ok)
        if epoch == self.epoch:
            self.size = max(1, self.limit() // 2)
            self.epoch += 1

    async def enter(self) -> tuple[int, int]:
        """Wait for room in the window; returns the epoch the session starts in and the
        sessions open then (itself included)."""
        while self.room() <= 0:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
        self.active += 1
        self.peak = max(self.peak, self.active)
        return self.epoch, self.active

    def leave(self) -> None:
        self.active -= 1
        self._wake()

    def _wake(self) -> None:
        room = self.room()
        while room > 0 and self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1


@dataclass(slots=True, eq=False)
class Ticket:
    """One session's slot."""

    scheduler: Scheduler
    window: Window
    ip: str
    slow: bool
    progress: float
    released: bool = False
    #: Closed because it was slow while the slow share was full: its addresses go back.
    evicted: bool = False
    #: Ends the connection (set once an SMTP connection exists).
    closer: Callable[[], None] | None = None
    timer: asyncio.TimerHandle | None = None

    def touch(self) -> None:
        """A reply came: the session is not stuck."""
        self.progress = self.scheduler.loop.time()


class Scheduler:
    """Connection slots of one event loop (see the module docstring)."""

    def __init__(self, total: int, slow_share: float, slow_after: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.total = total
        self.slow_total = max(1, int(total * slow_share))
        self.slow_after = slow_after
        #: Slots that only a destination already holding a session may take: the large
        #: domains grow their windows there while small ones fill the rest.
        self.reserve = total // 2
        self.used = 0
        self.slow_used = 0
        self.per_host: dict[str, int] = {}
        self.windows: dict[tuple[str, ...], Window] = {}
        #: Waiting sessions per pool (False: main, True: slow): (priority, seq, future,
        #: ip, alone), ``alone``: its destination holds no other session.
        self.waiting: dict[bool, list[tuple[int, int, asyncio.Future[None], str, bool]]] = {
            False: [],
            True: [],
        }
        self._seq = itertools.count()

    def window(self, key: tuple[str, ...], start: int, ceiling: int) -> Window:
        window = self.windows.get(key)
        if window is None:
            size = min(start, ceiling)
            window = self.windows[key] = Window(size=size, ceiling=ceiling, good=size - 1)
        return window

    # -- slots -------------------------------------------------------------------------

    def _room(self, slow: bool, ip: str, alone: bool) -> bool:
        if self.per_host.get(ip, 0) >= MAX_PER_HOST:
            return False
        if slow:
            return self.slow_used < self.slow_total
        return self.used < self.total - (self.reserve if alone else 0)

    def _take(self, slow: bool, ip: str) -> None:
        if slow:
            self.slow_used += 1
        else:
            self.used += 1
        self.per_host[ip] = self.per_host.get(ip, 0) + 1

    async def acquire(self, window: Window, ip: str, remaining: int, alone: bool) -> Ticket:
        """A slot for a session to ``ip``; the most ``remaining`` work goes first.
        ``alone``: the first session of its destination (it may not take the reserve)."""
        slow = window.slow
        if not self.waiting[slow] and self._room(slow, ip, alone):
            self._take(slow, ip)
        else:
            waiter = self.loop.create_future()
            item = (-remaining, next(self._seq), waiter, ip, alone)
            heapq.heappush(self.waiting[slow], item)
            self._wake(slow)  # those ahead may be held back by the reserve, not this one
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back(slow, ip)
                raise
        ticket = Ticket(self, window, ip, slow, self.loop.time())
        if not slow:
            self._arm(ticket, self.slow_after)
        return ticket

    def release(self, ticket: Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        if ticket.timer is not None:
            ticket.timer.cancel()
        self._give_back(ticket.slow, ticket.ip)

    def _give_back(self, slow: bool, ip: str) -> None:
        if slow:
            self.slow_used -= 1
        else:
            self.used -= 1
        left = self.per_host.get(ip, 1) - 1
        if left:
            self.per_host[ip] = left
        else:
            self.per_host.pop(ip, None)
        self._wake(False)
        self._wake(True)

    def _wake(self, slow: bool) -> None:
        heap = self.waiting[slow]
        skipped = []
        while heap:
            item = heap[0]
            if item[2].done():
                heapq.heappop(heap)
                continue
            if not (self.slow_used < self.slow_total if slow else self.used < self.total):
                break
            heapq.heappop(heap)
            if not self._room(slow, item[3], item[4]):
                skipped.append(item)  # its host is full, or the reserve: the next goes first
                continue
            self._take(slow, item[3])
            item[2].set_result(None)
        for item in skipped:
            heapq.heappush(heap, item)

    # -- slow sessions -----------------------------------------------------------------

    def _arm(self, ticket: Ticket, delay: float) -> None:
        ticket.timer = self.loop.call_later(delay, self._check, ticket)

    def _check(self, ticket: Ticket) -> None:
        ticket.timer = None
        if ticket.released or ticket.slow:
            return
        idle = self.loop.time() - ticket.progress
        if idle < self.slow_after:
            self._arm(ticket, self.slow_after - idle)
            return
        ticket.window.slow = True  # its destination answers slowly: one session at a time
        if self.slow_used < self.slow_total:
            self.used -= 1
            self.slow_used += 1
            ticket.slow = True
            self._wake(False)
        elif ticket.closer is not None:
            ticket.evicted = True
            ticket.closer()
        else:  # still connecting (bounded by smtp_timeout): look again later
            self._arm(ticket, self.slow_after)
