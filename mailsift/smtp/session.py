"""One probe call's conversations: its workers (as many as the domain's window allows,
see :mod:`.pacing`), the MX targets in preference order, the time budget, and the
sessions that carry the RCPT commands."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailsift.routing import is_ip_text, unroutable_reason
from mailsift.settings import Settings
from mailsift.smtp.outcomes import Kind, RcptOutcome
from mailsift.smtp.pacing import (
    DomainStats,
    Scheduler,
    Ticket,
    Window,
    is_connection_pressure,
    is_rate_reply,
)
from mailsift.smtp.replies import classify_reply, is_too_many, sanitize_message
from mailsift.smtp.wire import ensure_in_step, one_by_one, pipelined, rcpt_command, sni

if TYPE_CHECKING:
    from mailsift.smtp.prober import SmtpProber

log = logging.getLogger("mailsift.smtp")

#: Another connection to a domain is opened only when at least this many of its addresses
#: wait unclaimed: for a handful, one connection is faster than two handshakes.
MIN_RCPTS_PER_CONNECTION = 30
#: Addresses (IPs) tried per domain at most, over all its MX hosts.
MAX_TARGETS = 6
#: Connections that may carry one address before it gets the failure as its outcome.
MAX_ATTEMPTS = 2
#: RCPT commands written at once to a server that offers PIPELINING (RFC 2920).
PIPELINE_DEPTH = 100
#: Recipients per mail transaction: RFC 5321 4.5.3.1.8 obliges a server to take 100; a
#: longer session starts a new transaction (RSET, MAIL FROM) after as many.
MAX_RCPTS_PER_TXN = 100
#: A pipelined group of at least this many RCPTs tells whether the server answers them
#: together or one after another, by at least SERIAL_GAP seconds each.
SERIAL_SAMPLE = 5
SERIAL_GAP = 0.005
#: Pause before a new session after pressure doubles from ``smtp_reconnect_delay`` up to
#: this many seconds (RFC 5321 4.5.4.1: retry, but not at once).
MAX_BACKOFF = 30.0

#: Sessions a domain may open again on a host that answered some recipients and then
#: hung up (a per-session error or recipient limit), over the whole probe call.
MAX_RECONNECTS = 25

_RANK: dict[str, int] = {
    "unroutable": 0,  # any other failure (an unresolved host, a timeout) says more
    "unreachable": 1, "timeout": 2, "error": 3, "rejected": 3, "temporary": 4, "blocked": 5
}


# --------------------------------------------------------------------------- one call


@dataclass(slots=True)
class Target:
    host: str
    ip: str
    alive: bool = True
    proven: bool = False  # a conversation got past MAIL FROM here
    #: RCPT replies a session got here before the server hung up: later sessions ask at
    #: most this many (servers that cap errors or recipients per session).
    session_cap: int | None = None


Next = Literal["done", "next", "retire", "again", "evicted"]


@dataclass(slots=True)
class Failure:
    kind: Kind
    code: int | None
    message: str
    host: str | None
    #: Where it happened: connect, banner, helo, starttls, mail, rcpt ("" unknown).
    stage: str = ""

    def outcome(self, email: str) -> RcptOutcome:
        return RcptOutcome(email, self.kind, self.code, sanitize_message(self.message), self.host)


@dataclass(slots=True)
class Conn:
    """One connection, as its RCPT phase and its failure handling see it."""

    target: Target
    smtp: aiosmtplib.SMTP
    utf8: bool = False
    pipelining: bool = False
    #: Addresses sent and not answered yet, or refused as "too many recipients" and not
    #: sent again yet: if the connection breaks, each is retried elsewhere (once).
    inflight: list[str] = field(default_factory=list)
    established: bool = False  # got past MAIL FROM (and the catch-all probe)
    polite: bool = True  # end with QUIT
    answered: int = 0  # RCPT replies received on this connection (the probe included)
    ticket: Ticket | None = None
    open_at_start: int = 1  # sessions of its window open when it started, itself included
    #: A rate refusal at RCPT: the session ends after its group, the window halves.
    pressure: Failure | None = None
    quit_sent: bool = False  # QUIT went with the last RCPT group (pipelined)


class Abort(Exception):
    """This connection ends on ``failure``."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(slots=True)
class DomainRun:
    """The state of one :meth:`SmtpProber.probe` call."""

    prober: SmtpProber
    domain: str
    mx_hosts: list[str]
    queue: deque[str]
    want_catch_all: bool
    needs_utf8: bool
    results: dict[str, RcptOutcome] = field(default_factory=dict)
    last: dict[str, Failure] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    next_host: int = 0
    failure: Failure | None = None
    connections: int = 0
    catch_all: bool | None = None
    catch_all_done: bool = False
    established: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reconnects: int = 0
    # -- pace (see :mod:`.pacing`)
    scheduler: Scheduler | None = None
    window: Window | None = None
    stats: DomainStats | None = None
    emails: list[str] = field(default_factory=list)
    group: asyncio.TaskGroup | None = None
    workers: int = 0  # worker tasks alive
    waiting: int = 0  # of them, waiting for room in the window or a slot
    budget: asyncio.Timeout | None = None
    started: float | None = None  # the first session's start (loop time)
    expired: bool = False

    @property
    def settings(self) -> Settings:
        return self.prober.settings

    # -- bookkeeping -------------------------------------------------------------------

    def note(self, failure: Failure) -> None:
        """Keep the most telling failure (blocked > temporary > error > timeout >
        unreachable; the later one on a tie)."""
        if self.failure is None or _RANK.get(failure.kind, 0) >= _RANK.get(self.failure.kind, 0):
            self.failure = failure

    def retry_or_settle(self, email: str, failure: Failure) -> None:
        """An address whose connection broke: try it on another connection, once."""
        self.attempts[email] = self.attempts.get(email, 0) + 1
        self.last[email] = failure
        if self.attempts[email] < MAX_ATTEMPTS:
            self.queue.appendleft(email)
        else:
            self.results[email] = failure.outcome(email)

    async def target(self) -> Target | None:
        """The first address of the most preferred MX host not yet failed; hosts are
        resolved only when the ones before them have failed."""
        async with self.lock:
            while True:
                for target in self.targets:
                    if target.alive:
                        return target
                if self.next_host >= len(self.mx_hosts) or len(self.targets) >= MAX_TARGETS:
                    return None
                host = self.mx_hosts[self.next_host]
                self.next_host += 1
                public_only = not self.settings.allow_private_networks
                if public_only and is_ip_text(host):
                    # An MX must name a host (RFC 5321 5.1); IP text is resolved no further.
                    self.note(
                        Failure(
                            "unroutable", None,
                            f"MX host {host} is an IP address, not a host name: "
                            "the domain's mail goes nowhere public",
                            host, "resolve",
                        )
                    )
                    continue
                try:
                    ips = await self.prober.resolver.host_addresses(host)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 -- a resolver fault is a failure, not a crash
                    ips = ()
                if public_only:
                    refused = {ip: unroutable_reason(ip) for ip in ips}
                    refused = {ip: why for ip, why in refused.items() if why is not None}
                    if refused and len(refused) == len(set(ips)):
                        shown = ", ".join(f"{ip} ({why})" for ip, why in list(refused.items())[:3])
                        self.note(
                            Failure(
                                "unroutable", None,
                                f"MX host {host} has only non-public addresses: {shown}; "
                                "the domain's mail goes nowhere public",
                                host, "resolve",
                            )
                        )
                        continue
                    ips = tuple(ip for ip in ips if ip not in refused)
                known = {t.ip for t in self.targets}
                fresh = [ip for ip in dict.fromkeys(ips) if ip not in known]
                if not fresh:
                    self.note(
                        Failure(
                            "unreachable", None, f"no address for MX host {host}", host, "resolve"
                        )
                    )
                for ip in fresh[: MAX_TARGETS - len(self.targets)]:
                    self.targets.append(Target(host, ip))

    # -- orchestration -----------------------------------------------------------------

    async def execute(self) -> None:
        """Run workers until every address has an outcome or the domain's time budget
        (``smtp_domain_budget``, counted from its first session) runs out."""
        loop = asyncio.get_running_loop()
        self.emails = list(self.queue)
        self.budget = asyncio.timeout(None)
        try:
            async with self.budget:
                async with asyncio.TaskGroup() as group:
                    self.group = group
                    self.launch()
        except TimeoutError:
            if not self.budget.expired():
                raise
            self.expired = True
        finally:
            self.group = None
            if self.stats is not None and self.started is not None:
                self.stats.seconds += loop.time() - self.started
        if self.expired:
            spent = Failure(
                "timeout",
                None,
                f"time budget of {self.settings.smtp_domain_budget:g} s for {self.domain} spent",
                None,
                "budget",
            )
            self.note(spent)
            if self.stats is not None:
                self.stats.budget_spent = True
            for email in self.emails:
                self.results.setdefault(email, spent.outcome(email))
        for email in list(self.queue):
            failure = self.last.get(email) or self.failure
            if failure is None:
                failure = Failure("unreachable", None, "no MX host could be tried", None)
            self.results.setdefault(email, failure.outcome(email))
        self.queue.clear()
        self.weigh_rejections()

    def launch(self) -> None:
        assert self.group is not None
        self.workers += 1
        self.group.create_task(self.worker())

    def maybe_spawn(self) -> None:
        """More connections only once one holds a conversation here (a dead or
        tarpitting domain costs one connection), while the window has room and enough
        addresses wait unclaimed to be worth a handshake."""
        window = self.window
        if self.group is None or window is None or not self.established or self.waiting:
            return
        if window.pipelining and window.serial is None:
            # The first group tells whether more sessions would help; until then, the
            # window's first size when there is more than one session's work.
            if len(self.queue) < self.settings.max_rcpt_per_connection:
                return
            room = min(window.size - self.workers, window.room())
            for _ in range(max(0, room)):
                self.launch()
            return
        if window.serial or not window.pipelining:
            worth = MIN_RCPTS_PER_CONNECTION  # one RCPT at a time: more sessions, faster
        else:  # a group of RCPTs costs one round trip: more only for more than a session's
            worth = self.settings.max_rcpt_per_connection
        room = min(window.limit() - self.workers, window.room())
        # as many sessions as there are ``worth`` addresses waiting, at least one
        extra = min(room, len(self.queue) // worth + 1 - self.workers)
        for _ in range(max(0, extra)):
            self.launch()

    def weigh_rejections(self) -> None:
        """Use the conversation as evidence for replies that alone prove nothing.

        A ``rejected`` outcome is a 5xx at RCPT that names neither the mailbox nor the
        client ("550 Requested action not taken"). When the same domain's servers
        accepted other real recipients in this call, they judge recipients one by one,
        so the refusal is about that mailbox: ``not_found``. When they accepted nobody
        (every address and the random catch-all probe got the same generic refusal),
        the refusal may be of us: it stays ``rejected`` (unknown)."""
        if self.catch_all is True:
            return
        if not any(o.kind == "accepted" for o in self.results.values()):
            return
        for email, outcome in list(self.results.items()):
            if outcome.kind == "rejected" and outcome.code in (550, 551, 553):
                self.results[email] = RcptOutcome(
                    email, "not_found", outcome.code, outcome.message, outcome.mx_host
                )

    async def worker(self) -> None:
        assert self.window is not None and self.scheduler is not None
        window, scheduler = self.window, self.scheduler
        try:
            while self.queue:
                target = await self.target()
                if target is None:
                    return
                self.waiting += 1
                try:
                    epoch, open_at_start = await window.enter()
                    try:
                        ticket = await scheduler.acquire(
                            window, target.ip, len(self.queue), open_at_start == 1
                        )
                    except BaseException:
                        window.leave()
                        raise
                finally:
                    self.waiting -= 1
                try:
                    if self.started is None:
                        self.started = asyncio.get_running_loop().time()
                        assert self.budget is not None
                        self.budget.reschedule(self.started + self.settings.smtp_domain_budget)
                    if not self.queue:
                        return
                    step = await self.session(target, ticket, epoch, open_at_start)
                finally:
                    scheduler.release(ticket)
                    window.leave()
                if step == "retire":
                    return
                if step == "again":  # RFC 5321 4.5.4.1: do not come straight back
                    pause = window.backoff or self.settings.smtp_reconnect_delay
                    await asyncio.sleep(pause)
        finally:
            self.workers -= 1

    def pressure(self, failure: Failure, epoch: int) -> None:
        """A sign that we go too fast for this destination: halve its window; a refused
        connection while others were open caps it at those."""
        assert self.window is not None
        window = self.window
        at_connect = failure.stage in ("connect", "banner", "helo")
        open_ok = window.active - 1 if at_connect and failure.stage != "connect" else None
        window.shrink(epoch, open_ok=open_ok)
        delay = self.settings.smtp_reconnect_delay
        window.backoff = min(MAX_BACKOFF, max(delay, window.backoff * 2 if window.backoff else delay))
        if self.stats is not None:
            self.stats.refusals += 1
        log.debug(
            "smtp %s: pressure (%s %s): window %d, cap %s",
            self.domain, failure.code, failure.message, window.limit(), window.cap,
        )

    def is_pressure(self, failure: Failure) -> bool:
        if failure.stage == "connect":
            return True  # refused or timed out
        if failure.stage in ("banner", "helo"):
            return is_connection_pressure(failure.code, failure.message)
        if failure.stage in ("mail", "rcpt"):
            return is_rate_reply(failure.code, failure.message)
        return False

    # -- one connection ----------------------------------------------------------------

    def after_failure(
        self,
        target: Target,
        failure: Failure,
        inflight: Sequence[str],
        established: bool,
        answered: int = 0,
        epoch: int | None = None,
    ) -> Next:
        """Record a broken connection and say what its worker does next.

        A server that answered some recipients and then hung up (a 421 or a dropped
        connection part-way: Postfix's ``smtpd_hard_error_limit``, a recipient cap per
        session) is alive: the answers it gave are kept, and a fresh session, after a
        short pause, asks only what is left, at most as many as it answered this time.
        Only the first unanswered address may have caused the hang-up: it alone is
        charged an attempt.

        Pressure (see :meth:`is_pressure`) halves the destination's window. A host that
        holds conversations here and refuses one more connection is not dead: that
        worker retires, or, when it is the domain's last, tries again after a pause
        while the domain's time budget lasts."""
        self.note(failure)
        log.debug("smtp %s (%s): %s %s", target.host, target.ip, failure.kind, failure.message)
        pressure = epoch is not None and self.is_pressure(failure)
        if pressure:
            assert epoch is not None
            self.pressure(failure, epoch)
        if (
            pressure
            and failure.stage in ("mail", "rcpt")
            and inflight
            # A refusal worded about our IP ("mail from your IP address has been
            # temporarily blocked") is not eased by asking again: it is the outcome.
            and failure.kind != "blocked"
        ):
            # A rate refusal part-way: nothing here is about these addresses.
            for email in reversed(inflight):
                self.queue.appendleft(email)
            return "again"
        resumable = (
            answered > 0
            and failure.kind in ("temporary", "error", "timeout")
            and self.reconnects < MAX_RECONNECTS
        )
        if resumable:
            self.reconnects += 1
            cap = answered if target.session_cap is None else min(target.session_cap, answered)
            target.session_cap = max(1, cap)
            for position, email in reversed(list(enumerate(inflight))):
                if position == 0:
                    self.retry_or_settle(email, failure)
                else:
                    self.queue.appendleft(email)
            return "again"
        for email in reversed(inflight):  # back at the head of the queue in their order
            self.retry_or_settle(email, failure)
        if target.proven and not established:
            # The host holds conversations on other connections; this one was turned
            # away (a per-client connection limit, say): fewer connections, same host.
            if pressure and self.workers <= 1 and self.queue:
                return "again"
            return "retire"
        target.alive = False
        return "next"

    def failure_from(self, exc: BaseException, stage: str, target: Target) -> Failure:
        where = f"{stage} at {target.host}" + (
            f" ({target.ip})" if target.ip != target.host else ""
        )
        host = target.host
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
            kind = classify_reply(exc.code, exc.message, stage)  # type: ignore[arg-type]
            return Failure(kind, exc.code, exc.message, host, stage)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return Failure("error", None, f"invalid reply ({where}): {exc.message}", host, stage)
        if isinstance(exc, TimeoutError):
            return Failure("timeout", None, f"timed out ({where})", host, stage)
        if isinstance(exc, ssl.SSLError):
            return Failure("error", None, f"TLS failed ({where}): {exc}", host, stage)
        if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError)):
            return Failure("error", None, f"connection closed by the server ({where})", host, stage)
        if isinstance(exc, OSError):
            return Failure("error", None, f"connection failed ({where}): {exc}", host, stage)
        return Failure("error", None, f"{type(exc).__name__} ({where}): {exc}", host, stage)

    async def connect(self, target: Target) -> socket.socket:
        """A TCP connection (RFC 5321 3.1), within the step timeout."""
        timeout = self.settings.smtp_timeout
        family = socket.AF_INET6 if ":" in target.ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        source = self.settings.source_address  # this probe host's egress IP (scale-out)
        try:
            if source and (":" in source) == (family == socket.AF_INET6):
                sock.bind((source, 0))
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(
                    sock, (target.ip, self.settings.smtp_port)
                )
        except TimeoutError:
            sock.close()
            # Never connected: the host (or port 25 on our side) is unreachable. This is
            # what a blocked outbound port 25 looks like (packets dropped, not refused).
            raise Abort(
                Failure(
                    "unreachable",
                    None,
                    f"timed out connecting to {target.host} ({target.ip})",
                    target.host,
                    "connect",
                )
            ) from None
        except OSError as exc:
            sock.close()
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
            raise Abort(
                Failure(
                    "unreachable",
                    None,
                    f"{reason}: {target.host} ({target.ip})",
                    target.host,
                    "connect",
                )
            ) from None
        except BaseException:
            sock.close()
            raise
        return sock

    async def session(
        self, target: Target, ticket: Ticket, epoch: int, open_at_start: int = 1
    ) -> Next:
        """One connection: greet, maybe STARTTLS, one mail transaction per 100
        recipients (and after a "too many recipients" 452), as many RCPT as allowed
        (pipelined when the server offers PIPELINING), QUIT. Never DATA."""
        settings = self.settings
        timeout = settings.smtp_timeout
        try:
            sock = await self.connect(target)
        except Abort as abort:
            return self.after_failure(target, abort.failure, [], False, epoch=epoch)
        ticket.touch()
        self.connections += 1
        self.prober.connections_opened += 1
        if self.stats is not None:
            self.stats.connections += 1
        smtp = aiosmtplib.SMTP(
            sock=sock,
            local_hostname=settings.helo_hostname,
            timeout=timeout,
            start_tls=False,
            use_tls=False,
            validate_certs=False,
        )
        conn = Conn(target, smtp, ticket=ticket, open_at_start=open_at_start)
        ticket.closer = smtp.close
        stage = "banner"
        failure: Failure | None = None
        try:
            await smtp.connect()
            ensure_in_step(smtp)
            ticket.touch()
            stage = "helo"
            await self.greet(smtp)
            ensure_in_step(smtp)
            ticket.touch()
            if settings.smtp_starttls and smtp.supports_extension("starttls"):
                stage = "starttls"
                async with asyncio.timeout(timeout * 2):
                    await smtp.starttls(
                        tls_context=self.prober._tls,
                        server_hostname=sni(target.host),
                        timeout=timeout,
                    )
                ticket.touch()
                stage = "helo"
                await self.greet(smtp)  # RFC 3207 4.2: the EHLO list is learnt anew
                ensure_in_step(smtp)
                ticket.touch()
            conn.utf8 = smtp.supports_extension("smtputf8")
            conn.pipelining = smtp.supports_extension("pipelining")
            if not settings.mail_from.isascii() and not conn.utf8:
                lacks = Failure("error", None, "server lacks SMTPUTF8", target.host)
                for email in list(self.queue):
                    self.results[email] = lacks.outcome(email)
                self.queue.clear()
                return "done"
            stage = "mail"
            await self.mail_from(smtp, target, conn.utf8)
            ensure_in_step(smtp)
            ticket.touch()
            self.handshake_ok(conn)
            stage = "rcpt"
            await self.recipients(conn)
        except Abort as abort:
            failure = abort.failure
            if not failure.stage:
                failure.stage = stage
        except asyncio.CancelledError:
            conn.polite = False
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError, UnicodeError) as exc:
            conn.polite = False
            failure = self.failure_from(exc, stage, target)
        except Exception as exc:  # a bug here must not lose the other addresses
            conn.polite = False
            log.exception("smtp probe of %s at %s failed", self.domain, target.host)
            failure = self.failure_from(exc, stage, target)
        finally:
            if conn.polite and smtp.is_connected and not conn.quit_sent:
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=timeout)
            # The transport owns the socket now: closing it here behind the transport's
            # back would free the descriptor while the selector still watches it.
            ticket.closer = None
            smtp.close()
        if ticket.evicted:
            # Closed by the scheduler: slow while the slow share was full. Nothing here
            # is about the addresses: they wait for a slow slot.
            for email in reversed(conn.inflight):
                self.queue.appendleft(email)
            return "evicted"
        if failure is None and conn.pressure is not None:
            self.pressure(conn.pressure, epoch)
            return "again"
        if failure is None:
            assert self.window is not None
            self.window.backoff = 0.0
            return "done"
        return self.after_failure(
            target, failure, conn.inflight, conn.established, conn.answered, epoch
        )

    def establish(self, conn: Conn) -> None:
        """This connection holds a conversation: the window grows by one while work is
        queued, and other connections may open."""
        if conn.established:
            return
        conn.established = conn.target.proven = self.established = True
        self.maybe_spawn()

    def handshake_ok(self, conn: Conn) -> None:
        """Greeting, EHLO and MAIL FROM went through: the destination took this session
        with the others open (Postfix's positive feedback: one more while work waits)."""
        assert self.window is not None
        self.window.pipelining = conn.pipelining
        self.window.established(conn.open_at_start)
        if self.queue:
            self.window.grow()

    async def recipients(self, conn: Conn) -> None:
        """The RCPT commands of one connection: the catch-all probe first (when still
        wanted), then queued addresses, up to ``max_rcpt_per_connection`` of them.

        With PIPELINING they go in groups of up to :data:`PIPELINE_DEPTH` (one write, the
        replies read in order); without, one at a time. A ``452 4.5.3`` (too many
        recipients) after the transaction took some recipients sends that address again
        in a new transaction (RSET, MAIL FROM; RFC 5321 4.5.3.1.10); with pipelining the
        limit so learnt sizes the groups, so that few commands are wasted.
        """
        settings = self.settings
        smtp, target = conn.smtp, conn.target
        depth = PIPELINE_DEPTH if conn.pipelining else 1
        probe: str | None = None
        if self.want_catch_all and not self.catch_all_done:
            probe = f"mailsift-probe-{secrets.token_hex(6)}@{self.domain}"
        else:
            self.establish(conn)
        sent = 0  # addresses sent on this connection (a re-sent one counts again)
        in_txn = 0  # recipients the server took into this transaction (any reply but 452 4.5.3)
        # Recipients per transaction, learnt from a 452 4.5.3 (here or on an earlier
        # connection to this address); it sizes pipelined groups only.
        txn_limit = self.prober._txn_limits.get(target.ip)
        txn_full = False  # a 452 4.5.3 was seen in this transaction
        carried: deque[str] = deque()  # refused as too many: the next transaction
        while probe is not None or (
            (carried or self.queue)
            and sent < min(settings.max_rcpt_per_connection, target.session_cap or sys.maxsize)
        ):
            limit = min(txn_limit or MAX_RCPTS_PER_TXN, MAX_RCPTS_PER_TXN)
            # A new transaction: RSET and MAIL FROM go in the same write as the group's
            # RCPTs when the server pipelines (RFC 2920 3.1: RSET and MAIL may be
            # pipelined), each reply checked before the RCPT replies are read.
            prefix: list[tuple[bytes, ...]] = []
            if txn_full or in_txn >= limit:
                if conn.pipelining:
                    prefix = [(b"RSET",), self.mail_command(conn.utf8)]
                else:
                    await self.new_transaction(conn)
                in_txn, txn_full = 0, False
            group: list[str | None] = [None] if probe is not None else []  # None: the probe
            per_session = settings.max_rcpt_per_connection
            if target.session_cap is not None:
                per_session = min(per_session, target.session_cap)
            room = min(depth - len(group), per_session - sent, limit - in_txn - len(group))
            if depth > 1 and self.window is not None and self.window.serial is None:
                room = min(room, SERIAL_SAMPLE + 1)  # a sample first: how does it answer?
            elif depth > 1 and self.window is not None and self.window.serial:
                # A server that judges one RCPT after another: a fair share of what is
                # left for each session the window may open, so that many ask at once.
                # (half of it at a time: sessions come back for more, so they end
                # together rather than one long group last).
                share = math.ceil(len(self.queue) / (2 * self.spread()))
                room = min(room, max(SERIAL_SAMPLE, share))
            while room > 0 and (carried or self.queue):
                if carried:
                    email = carried.popleft()  # in flight already
                else:
                    email = self.queue.popleft()
                    if not email.isascii() and not conn.utf8:
                        self.results[email] = RcptOutcome(
                            email, "error", None, "server lacks SMTPUTF8", target.host
                        )
                        continue
                    conn.inflight.append(email)
                group.append(email)
                room -= 1
            if not group:
                continue
            sent += len(group) - (probe is not None)
            if self.stats is not None:
                self.stats.rcpts += len(group)
            commands = prefix + [rcpt_command(probe if item is None else item) for item in group]
            # The session's last group: QUIT goes with it (RFC 2920 3.1), and its reply
            # is read after the RCPT replies.
            last = conn.pipelining and probe is None and not carried and (
                not self.queue or sent >= per_session
            )
            if last:
                commands.append((b"QUIT",))
            if conn.pipelining:
                exchange = pipelined(smtp, commands, settings.smtp_timeout)
            else:
                exchange = one_by_one(smtp, commands, settings.smtp_timeout)
            arrivals: list[float] = []  # when each reply of the group was read
            sent_at = time.monotonic()
            async with exchange as read:
                for verb in prefix:
                    reply = await read()
                    if reply.code != 250:  # the RCPTs after it are not answers: unread
                        conn.polite = False
                        stage_kind = "mail" if verb[0] == b"MAIL" else "error"
                        kind = (
                            classify_reply(reply.code, reply.message, "mail")
                            if stage_kind == "mail"
                            else "error"
                        )
                        raise Abort(
                            Failure(kind, reply.code, reply.message, target.host, stage_kind)
                        )
                for item in group:
                    reply = await read()
                    if conn.ticket is not None:
                        conn.ticket.touch()
                    if len(arrivals) < 2 * SERIAL_SAMPLE:
                        arrivals.append(time.monotonic())
                    if reply.code == 421:  # the server is closing: back off (RFC 5321 3.8)
                        # Not an answer about this address: Postfix says 421 to the
                        # command that crosses its error limit. The address and those
                        # after it (pipelined, unread) stay in flight, asked again later.
                        conn.polite = False
                        if item is None:
                            probe = None
                            self.catch_all_done = True
                        kind = classify_reply(reply.code, reply.message, "rcpt")
                        raise Abort(Failure(kind, reply.code, reply.message, target.host, "rcpt"))
                    conn.answered += 1
                    too_many = reply.code == 452 and is_too_many(reply.message)
                    if item is None:
                        probe = None
                        self.catch_all_reply(reply)
                        self.establish(conn)
                    elif too_many and in_txn > 0:
                        carried.append(item)  # still in flight: sent again below
                        txn_full = True
                        txn_limit = in_txn if txn_limit is None else min(txn_limit, in_txn)
                        self.prober._txn_limits[target.ip] = txn_limit
                        continue
                    elif is_rate_reply(reply.code, reply.message) and not too_many:
                        # "Too fast": not an answer about the address. It is asked again
                        # on a later session, after a pause (the window halves).
                        conn.inflight.remove(item)
                        self.queue.append(item)
                        conn.pressure = Failure(
                            "temporary", reply.code, reply.message, target.host, "rcpt"
                        )
                    else:
                        conn.inflight.remove(item)
                        kind = classify_reply(reply.code, reply.message, "rcpt")
                        self.results[item] = RcptOutcome(
                            item, kind, reply.code, sanitize_message(reply.message), target.host
                        )
                    if not too_many:
                        in_txn += 1
                if last:
                    with contextlib.suppress(Exception):
                        await read()  # 221
                    conn.quit_sent = True
            if conn.pipelining and len(arrivals) >= SERIAL_SAMPLE:
                # the median gap: replies that came in one segment are read back to back
                gaps = sorted(b - a for a, b in itertools.pairwise(arrivals))
                self.note_pace(gaps[len(gaps) // 2], arrivals[0] - sent_at)
            if conn.pressure is not None or conn.quit_sent:
                break
        for email in reversed(carried):  # out of budget: another connection takes them
            conn.inflight.remove(email)
            self.queue.appendleft(email)

    def note_pace(self, gap: float, first: float) -> None:
        """``gap``, the (median) time between the replies of a pipelined group: next to nothing
        when the server answers them together (one round trip: ``first``, the wait for
        the first reply), the server's own time per RCPT when it judges them one after
        another; then more sessions ask at once."""
        if self.window is not None and self.window.serial is None:
            self.window.serial = gap >= max(SERIAL_GAP, first / 4)
            self.maybe_spawn()

    def spread(self) -> int:
        """Sessions the window may hold at once (1 for a slow destination)."""
        window = self.window
        if window is None or window.slow:
            return 1
        top = window.ceiling if window.cap is None else min(window.ceiling, window.cap)
        return max(1, top)

    async def new_transaction(self, conn: Conn) -> None:
        await self.rset(conn.smtp, conn.target)
        await self.mail_from(conn.smtp, conn.target, conn.utf8)

    async def greet(self, smtp: aiosmtplib.SMTP) -> None:
        """EHLO, or HELO when EHLO is refused (RFC 5321 4.1.1.1)."""
        try:
            await smtp.ehlo(timeout=self.settings.smtp_timeout)
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code == 421 or not smtp.is_connected:
                raise
            await smtp.helo(timeout=self.settings.smtp_timeout)

    def mail_command(self, utf8: bool) -> tuple[bytes, ...]:
        params = (
            (b"SMTPUTF8",)
            if utf8 and (self.needs_utf8 or not self.settings.mail_from.isascii())
            else ()
        )
        sender = self.settings.mail_from.encode("utf-8")
        return (b"MAIL", b"FROM:<" + sender + b">", *params)

    async def mail_from(self, smtp: aiosmtplib.SMTP, target: Target, utf8: bool) -> None:
        reply = await smtp.execute_command(
            *self.mail_command(utf8), timeout=self.settings.smtp_timeout
        )
        if reply.code != 250:
            # 5xx: our sender or IP is refused; 4xx: try later. Either way stop here.
            kind = classify_reply(reply.code, reply.message, "mail")
            raise Abort(Failure(kind, reply.code, reply.message, target.host))

    async def rset(self, smtp: aiosmtplib.SMTP, target: Target) -> None:
        reply = await smtp.execute_command(b"RSET", timeout=self.settings.smtp_timeout)
        if reply.code != 250:
            raise Abort(Failure("error", reply.code, reply.message, target.host))

    def catch_all_reply(self, reply: SMTPResponse) -> None:
        """The reply to the RCPT for a local part nobody has: accepted means the domain
        accepts all; a 5xx (not a block) that it does not; anything else tells nothing."""
        self.catch_all_done = True
        kind = classify_reply(reply.code, reply.message, "rcpt")
        if kind == "accepted":
            self.catch_all = True
        elif 500 <= reply.code < 600 and kind != "blocked":
            self.catch_all = False
        if self.catch_all is not None:
            self.prober._catch_all[self.domain] = self.catch_all

