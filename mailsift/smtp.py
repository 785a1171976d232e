"""SMTP probe: ask a domain's MX hosts whether mailboxes exist, without sending mail.

Layer 3 of the engine. For one domain, :meth:`SmtpProber.probe` opens as few
connections as it can (RFC 5321 section 3.3: many ``RCPT`` in one mail transaction),
speaks ``EHLO`` (``HELO`` as fallback, RFC 5321 4.1.1.1), upgrades with ``STARTTLS`` when
offered (RFC 3207; the certificate is not verified: a probe sends nothing secret and
must not fail on the self-signed certificates many MX hosts use), sends
``MAIL FROM`` and one ``RCPT TO`` per address, and ends with ``QUIT``. It never sends
``DATA``, so no mail is ever delivered.

Replies are read code first, RFC 3463 enhanced status code second, text last
(:func:`classify_reply`). Every step has a timeout (``settings.smtp_timeout``);
connections are bounded per domain (``per_domain_concurrency``) and in all
(``concurrency``). MX hosts are tried in preference order (RFC 5321 section 5.1), each
of their addresses in turn, until one holds a conversation. Faults never raise: they
become outcomes (``timeout``, ``unreachable``, ``blocked``, ``error``...) so that the
verifier can call the address ``unknown`` rather than ``invalid``.

The conversation runs on aiosmtplib (reply parsing with a bounded buffer, so an endless
line becomes an error, not a hang; STARTTLS; command-injection guard), with ``MAIL`` and
``RCPT`` sent through ``execute_command`` (pipelined ``RCPT``: through the transport,
with the same control-character guard) so the address goes on the wire exactly as
given, after our own checks.

Pipelining (RFC 2920). When the EHLO reply (the one after STARTTLS, when there is one)
lists ``PIPELINING``, the ``RCPT TO`` commands of a connection go out in groups of up to
:data:`PIPELINE_DEPTH` in one write (the catch-all probe first in the first group) and
their replies are read back in order, each mapped to its address exactly as a lone
``RCPT`` would be: one round trip per group instead of one per address. ``MAIL FROM`` is
*not* pipelined with them, although RFC 2920 allows it: a 4xx/5xx to ``MAIL FROM`` must
stop the ``RCPT`` commands (``blocked`` / ``temporary``, back off) rather than send them
into a refused transaction. ``RSET`` and ``QUIT`` are not pipelined either. Each reply of
a group is awaited with the step timeout (``smtp_timeout``), counted from the previous
reply, so a group is bounded as the same commands sent one by one are. A 421 in a group
ends the connection there: later replies are not read, and their addresses go back to
the queue unanswered. Addresses refused with ``452 4.5.3`` (too many recipients) are
sent again in a new transaction, and the limit so learnt sizes the next groups. Servers
without ``PIPELINING`` get one command per round trip, as before. aiosmtplib's protocol
takes one reply per awaited command (it drops data that arrives while a parsed reply
waits), so while a group's replies come in, the transport is lent to
:class:`_ReplyReader`, a parser with the same bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import re
import secrets
import socket
import ssl
import unicodedata
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailsift.settings import Settings

__all__ = [
    "DomainProbe",
    "HostResolver",
    "Kind",
    "RcptOutcome",
    "SmtpProber",
    "Stage",
    "classify_reply",
    "sanitize_message",
]

log = logging.getLogger(__name__)

Kind = Literal[
    "accepted",
    "not_found",
    "disabled",
    "full",
    "temporary",
    "blocked",
    "timeout",
    "unreachable",
    "error",
]
Stage = Literal["banner", "helo", "starttls", "mail", "rcpt"]

MAX_MESSAGE = 500
#: A second (third...) connection to a domain is opened only when each would carry at
#: least this many addresses: for a handful, one connection is faster than two handshakes.
MIN_RCPTS_PER_CONNECTION = 5
#: Addresses (IPs) tried per domain at most, over all its MX hosts.
MAX_TARGETS = 6
#: Connections that may carry one address before it gets the failure as its outcome.
MAX_ATTEMPTS = 2
#: RCPT commands written at once to a server that offers PIPELINING (RFC 2920).
PIPELINE_DEPTH = 50
#: Bounds of :class:`_ReplyReader`, as aiosmtplib's: one reply line, one unfinished reply.
_MAX_REPLY_LINE = 8192
_MAX_PENDING_REPLY = 4 * _MAX_REPLY_LINE
_COMMAND_UNSAFE = re.compile(rb"[\x00-\x1f\x7f]")

_RANK: dict[str, int] = {"unreachable": 1, "timeout": 2, "error": 3, "temporary": 4, "blocked": 5}
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_BLOCK_TEXT = re.compile(
    r"spamhaus|spamcop|barracuda|blocked|blacklist|blocklist|block\s+list|denied|"
    r"poor\s+reputation|\bdnsbl\b|\brbl\b",
    re.IGNORECASE,
)
_FULL_TEXT = re.compile(
    r"mailbox\s+(is\s+)?full|over\s*quota|quota\s+exceeded|insufficient\s+storage", re.IGNORECASE
)
_DISABLED_TEXT = re.compile(r"disabled|deactivated|suspended|inactive", re.IGNORECASE)
_TOO_MANY_TEXT = re.compile(r"too\s+many\s+recipients", re.IGNORECASE)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What one address's ``RCPT TO`` came to (or why it was never asked)."""

    email: str
    kind: Kind
    code: int | None
    message: str | None  # server text (sanitized, truncated to 500 chars) or our reason
    mx_host: str | None


@dataclass(frozen=True, slots=True)
class DomainProbe:
    """One :meth:`SmtpProber.probe` call: an outcome per requested email, same order."""

    domain: str
    outcomes: tuple[RcptOutcome, ...]
    catch_all: bool | None  # a random local part accepted / refused; None: not determined
    connections: int  # SMTP connections opened for this call


class HostResolver(Protocol):
    """What the prober needs from :class:`mailsift.dns.DnsResolver`."""

    async def host_addresses(self, host: str) -> tuple[str, ...]: ...


# --------------------------------------------------------------------------- replies


def sanitize_message(text: object) -> str | None:
    """Server text made safe to store and log: line breaks become spaces, other control
    characters are removed, at most 500 characters."""
    if text is None:
        return None
    value = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    value = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp"))
    value = " ".join(value.split())
    return value[:MAX_MESSAGE]


def _enhanced(message: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if any."""
    match = _ENHANCED.match(message or "")
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def classify_reply(code: int, message: str, stage: Stage = "rcpt") -> Kind:
    """Map an SMTP reply to an outcome kind: code and enhanced status code first, text
    second (RFC 5321 4.2, RFC 3463).

    Policy refusals (``5.7.x``, or texts naming a blocklist) are ``blocked``: they are
    about our IP, not the mailbox, so they are checked before "mailbox not found". At the
    banner, 421 and 5xx mean we are turned away (``blocked``); a 5xx to ``MAIL FROM``
    refuses our sender (``blocked``); any 4xx is ``temporary`` (greylisting, RFC 6647).
    """
    message = message or ""
    if stage == "rcpt" and code in (250, 251):
        return "accepted"
    if stage != "rcpt" and 200 <= code < 400:
        return "accepted"
    enhanced = _enhanced(message)
    if 500 <= code < 600 and enhanced is not None and enhanced[1] == 7:
        return "blocked"
    if code >= 400 and _BLOCK_TEXT.search(message):
        return "blocked"
    if stage in ("banner", "helo"):
        if code == 421 or 500 <= code < 600:
            return "blocked"
        return "temporary" if 400 <= code < 500 else "error"
    if stage == "mail":
        if 500 <= code < 600:
            return "blocked"
        return "temporary" if 400 <= code < 500 else "error"
    if stage == "starttls":
        return "error"
    # RCPT
    if code == 552 or (enhanced is not None and enhanced[1:] == (2, 2)):
        return "full"
    if enhanced == (5, 2, 1):
        return "disabled"
    if enhanced is None and code >= 400 and _FULL_TEXT.search(message):
        return "full"
    if 400 <= code < 500:
        return "temporary"
    if 500 <= code < 600:
        if enhanced is not None and enhanced[0] == 5 and enhanced[1] == 1:
            return "not_found"
        if enhanced is None and _DISABLED_TEXT.search(message):
            return "disabled"
        if code in (550, 551, 553, 554):
            return "not_found"
    return "error"


# --------------------------------------------------------------------------- checks


def _has_control(text: str) -> bool:
    """C0/C1 controls, DEL, surrogates, line/paragraph separators."""
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


def _address_problem(email: object) -> str | None:
    """Why ``email`` must not go on a ``RCPT`` line (defence in depth: the syntax layer
    already refuses these), or ``None``."""
    if not isinstance(email, str):
        return "address is not a string"
    if _has_control(email):
        return "address contains control characters"
    if not email or len(email) > 254:  # RFC 5321 4.5.3.1.3: a path is at most 256 octets
        return "address is empty or too long"
    if "<" in email or ">" in email:
        return "address contains angle brackets"
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        return "address has no local part or domain"
    if any(ch.isspace() for ch in domain):
        return "address domain contains whitespace"
    quoted = len(local) >= 2 and local.startswith('"') and local.endswith('"')
    if not quoted and any(ch.isspace() for ch in local):
        return "address contains unquoted whitespace"
    return None


def _settings_problem(settings: Settings) -> str | None:
    helo, sender = settings.helo_hostname, settings.mail_from
    if not helo or _has_control(helo) or any(ch.isspace() for ch in helo) or not helo.isascii():
        return "helo_hostname is unusable (empty, non-ASCII, spaces or control characters)"
    if _has_control(sender) or any(ch.isspace() for ch in sender) or "<" in sender or ">" in sender:
        return "mail_from is unusable (spaces, angle brackets or control characters)"
    return None


def _display(email: object) -> str:
    """A refused input, made printable (control characters -> U+FFFD)."""
    text = email if isinstance(email, str) else repr(email)
    return "".join("\ufffd" if _has_control(ch) else ch for ch in text)[:320]


def _sni(host: str) -> str | None:
    """``server_hostname`` for TLS: an ASCII DNS name, never an IP literal."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    if not host.isascii() or _has_control(host) or not host:
        return None
    return host.rstrip(".")


def _client_tls_context() -> ssl.SSLContext:
    # Opportunistic STARTTLS, as MTAs do (RFC 3207 4.1, RFC 7435): encrypt, do not verify.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --------------------------------------------------------------------------- pipelining


class _ReplyReader(asyncio.Protocol):
    """The transport's protocol while the replies of a pipelined group come in.

    aiosmtplib's ``SMTPProtocol`` parses one reply per awaited command and drops data
    that arrives while a parsed reply waits to be picked up, so several replies in one
    segment would be lost. This parser keeps every complete reply, in order, within
    aiosmtplib's bounds (a line of at most 8 KiB, an unfinished reply of at most 32 KiB),
    and hands the connection's end back to ``inner`` (aiosmtplib's protocol), so that
    the ``SMTP`` object knows it is disconnected.
    """

    def __init__(self, inner: asyncio.BaseProtocol, expected: int) -> None:
        self.inner = inner
        self.expected = expected  # replies beyond these are unsolicited: dropped
        self.received = 0
        self.buffer = bytearray()
        self.replies: deque[SMTPResponse] = deque()
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.buffer.extend(data)
        try:
            self.parse()
        except aiosmtplib.SMTPResponseException as exc:
            self.error = exc
            self.buffer.clear()
        self.wake()

    def eof_received(self) -> bool:
        if self.error is None:
            self.error = aiosmtplib.SMTPServerDisconnected("Unexpected EOF received")
        self.wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            self.error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.wake()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- replies -----------------------------------------------------------------------

    def parse(self) -> None:
        """Move every complete reply (RFC 5321 4.2.1, multi-line included) from the
        buffer to ``replies``."""
        while True:
            offset, code, texts = 0, -1, []
            while True:
                end = self.buffer.find(b"\n", offset)
                if end == -1:
                    if len(self.buffer) - offset > _MAX_REPLY_LINE or (
                        len(self.buffer) > _MAX_PENDING_REPLY
                    ):
                        raise aiosmtplib.SMTPResponseException(-1, "Response too long")
                    return
                line = bytes(self.buffer[offset : end + 1])
                if len(line) > _MAX_REPLY_LINE:
                    raise aiosmtplib.SMTPResponseException(-1, "Response too long")
                if not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b"\n"):
                    text = line.decode("utf-8", "replace").strip()[:200]
                    raise aiosmtplib.SMTPResponseException(
                        -1, f"Malformed SMTP response line: {text}"
                    )
                code = int(line[:3])
                texts.append(line[4:].strip(b" \t\r\n"))
                offset = end + 1
                if line[3:4] != b"-":
                    break
            del self.buffer[:offset]
            if self.received < self.expected:
                message = b"\n".join(texts).decode("utf-8", "surrogateescape")
                self.replies.append(SMTPResponse(code, message))
            self.received += 1

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self, timeout: float) -> SMTPResponse:
        """The next reply, within ``timeout`` seconds (``TimeoutError``); replies that
        came before the connection broke are still returned first."""
        async with asyncio.timeout(timeout):
            while not self.replies:
                if self.error is not None:
                    raise self.error
                self.waiter = asyncio.get_running_loop().create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
        return self.replies.popleft()


def _rcpt_command(address: str) -> tuple[bytes, bytes]:
    arg = b"TO:<" + address.encode("utf-8") + b">"
    if _COMMAND_UNSAFE.search(arg):  # never reached: addresses are checked on entry
        raise ValueError("command argument contains a control character")
    return b"RCPT", arg


@contextlib.asynccontextmanager
async def _one_by_one(
    smtp: aiosmtplib.SMTP, commands: Sequence[tuple[bytes, bytes]], timeout: float
) -> AsyncIterator[Callable[[], Awaitable[SMTPResponse]]]:
    """``read()`` sends the next command and returns its reply (no pipelining)."""
    pending = deque(commands)

    async def read() -> SMTPResponse:
        return await smtp.execute_command(*pending.popleft(), timeout=timeout)

    yield read


@contextlib.asynccontextmanager
async def _pipelined(
    smtp: aiosmtplib.SMTP, commands: Sequence[tuple[bytes, bytes]], timeout: float
) -> AsyncIterator[Callable[[], Awaitable[SMTPResponse]]]:
    """Write ``commands`` in one go and yield ``read()``, which returns their replies in
    order (each within ``timeout``). The transport goes back to aiosmtplib afterwards."""
    protocol = smtp.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    reader = _ReplyReader(protocol, len(commands))
    transport.set_protocol(reader)
    try:
        transport.write(b"".join(b" ".join(command) + b"\r\n" for command in commands))  # type: ignore[attr-defined]

        async def read() -> SMTPResponse:
            return await reader.read(timeout)

        yield read
    finally:
        transport.set_protocol(protocol)


# --------------------------------------------------------------------------- limits


class _Limits:
    """Connection slots of one event loop: one global semaphore, one per domain
    (created on demand, dropped when nobody holds or waits for it)."""

    def __init__(self, total: int) -> None:
        self.total = asyncio.Semaphore(total)
        self.domains: dict[str, list] = {}  # domain -> [Semaphore, users]

    @contextlib.asynccontextmanager
    async def slot(self, domain: str, per_domain: int) -> AsyncIterator[None]:
        entry = self.domains.get(domain)
        if entry is None:
            entry = self.domains[domain] = [asyncio.Semaphore(per_domain), 0]
        entry[1] += 1
        try:
            async with entry[0], self.total:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0 and self.domains.get(domain) is entry:
                del self.domains[domain]


# --------------------------------------------------------------------------- one call


@dataclass(slots=True)
class _Target:
    host: str
    ip: str
    alive: bool = True
    proven: bool = False  # a conversation got past MAIL FROM here


_Next = Literal["done", "next", "retire"]


@dataclass(slots=True)
class _Failure:
    kind: Kind
    code: int | None
    message: str
    host: str | None

    def outcome(self, email: str) -> RcptOutcome:
        return RcptOutcome(email, self.kind, self.code, sanitize_message(self.message), self.host)


@dataclass(slots=True)
class _Conn:
    """One connection, as its RCPT phase and its failure handling see it."""

    target: _Target
    smtp: aiosmtplib.SMTP
    utf8: bool = False
    pipelining: bool = False
    #: Addresses sent and not answered yet, or refused as "too many recipients" and not
    #: sent again yet: if the connection breaks, each is retried elsewhere (once).
    inflight: list[str] = field(default_factory=list)
    established: bool = False  # got past MAIL FROM (and the catch-all probe)
    polite: bool = True  # end with QUIT


class _Abort(Exception):
    """This connection ends on ``failure``."""

    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(slots=True)
class _DomainRun:
    """The state of one :meth:`SmtpProber.probe` call."""

    prober: SmtpProber
    domain: str
    mx_hosts: list[str]
    queue: deque[str]
    want_catch_all: bool
    needs_utf8: bool
    results: dict[str, RcptOutcome] = field(default_factory=dict)
    last: dict[str, _Failure] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    targets: list[_Target] = field(default_factory=list)
    next_host: int = 0
    failure: _Failure | None = None
    connections: int = 0
    catch_all: bool | None = None
    catch_all_done: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    established: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def settings(self) -> Settings:
        return self.prober.settings

    # -- bookkeeping -------------------------------------------------------------------

    def note(self, failure: _Failure) -> None:
        """Keep the most telling failure (blocked > temporary > error > timeout >
        unreachable; the later one on a tie)."""
        if self.failure is None or _RANK[failure.kind] >= _RANK[self.failure.kind]:
            self.failure = failure

    def retry_or_settle(self, email: str, failure: _Failure) -> None:
        """An address whose connection broke: try it on another connection, once."""
        self.attempts[email] = self.attempts.get(email, 0) + 1
        self.last[email] = failure
        if self.attempts[email] < MAX_ATTEMPTS:
            self.queue.appendleft(email)
        else:
            self.results[email] = failure.outcome(email)

    async def target(self) -> _Target | None:
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
                try:
                    ips = await self.prober.resolver.host_addresses(host)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 -- a resolver fault is a failure, not a crash
                    ips = ()
                known = {t.ip for t in self.targets}
                fresh = [ip for ip in dict.fromkeys(ips) if ip not in known]
                if not fresh:
                    self.note(_Failure("unreachable", None, f"no address for MX host {host}", host))
                for ip in fresh[: MAX_TARGETS - len(self.targets)]:
                    self.targets.append(_Target(host, ip))

    # -- orchestration -----------------------------------------------------------------

    async def execute(self) -> None:
        total = len(self.queue)
        workers = min(
            self.settings.per_domain_concurrency,
            max(1, math.ceil(total / MIN_RCPTS_PER_CONNECTION)),
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(self.worker(first=True))
            if workers > 1:
                group.create_task(self.spawn(group, workers - 1))
        for email in list(self.queue):
            failure = self.last.get(email) or self.failure
            if failure is None:
                failure = _Failure("unreachable", None, "no MX host could be tried", None)
            self.results.setdefault(email, failure.outcome(email))
        self.queue.clear()

    async def spawn(self, group: asyncio.TaskGroup, extra: int) -> None:
        """More connections only once the first one holds a conversation: a dead or
        tarpitting domain costs one connection, not ``per_domain_concurrency``."""
        await self.ready.wait()
        if self.established:
            for _ in range(extra):
                if self.queue:
                    group.create_task(self.worker(first=False))

    async def worker(self, *, first: bool) -> None:
        try:
            while self.queue:
                target = await self.target()
                if target is None:
                    return
                async with self.prober._limits().slot(
                    self.domain, self.settings.per_domain_concurrency
                ):
                    if not self.queue:
                        return
                    if await self.session(target) == "retire":
                        return
        finally:
            if first:
                self.ready.set()

    # -- one connection ----------------------------------------------------------------

    def after_failure(
        self, target: _Target, failure: _Failure, inflight: Sequence[str], established: bool
    ) -> _Next:
        """Record a broken connection and say what its worker does next."""
        self.note(failure)
        log.debug("smtp %s (%s): %s %s", target.host, target.ip, failure.kind, failure.message)
        for email in reversed(inflight):  # back at the head of the queue in their order
            self.retry_or_settle(email, failure)
        if target.proven and not established:
            # The host holds conversations on other connections; this one was turned
            # away (a per-client connection limit, say): fewer connections, same host.
            return "retire"
        target.alive = False
        return "next"

    def failure_from(self, exc: BaseException, stage: str, target: _Target) -> _Failure:
        where = f"{stage} at {target.host}" + (
            f" ({target.ip})" if target.ip != target.host else ""
        )
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code > 0:
            kind = classify_reply(exc.code, exc.message, stage)  # type: ignore[arg-type]
            return _Failure(kind, exc.code, exc.message, target.host)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            return _Failure("error", None, f"invalid reply ({where}): {exc.message}", target.host)
        if isinstance(exc, TimeoutError):
            return _Failure("timeout", None, f"timed out ({where})", target.host)
        if isinstance(exc, ssl.SSLError):
            return _Failure("error", None, f"TLS failed ({where}): {exc}", target.host)
        if isinstance(exc, (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError)):
            return _Failure(
                "error", None, f"connection closed by the server ({where})", target.host
            )
        if isinstance(exc, OSError):
            return _Failure("error", None, f"connection failed ({where}): {exc}", target.host)
        return _Failure("error", None, f"{type(exc).__name__} ({where}): {exc}", target.host)

    async def connect(self, target: _Target) -> socket.socket:
        """A TCP connection (RFC 5321 3.1), within the step timeout."""
        timeout = self.settings.smtp_timeout
        family = socket.AF_INET6 if ":" in target.ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(
                    sock, (target.ip, self.settings.smtp_port)
                )
        except TimeoutError:
            sock.close()
            # Never connected: the host (or port 25 on our side) is unreachable. This is
            # what a blocked outbound port 25 looks like (packets dropped, not refused).
            raise _Abort(
                _Failure(
                    "unreachable",
                    None,
                    f"timed out connecting to {target.host} ({target.ip})",
                    target.host,
                )
            ) from None
        except OSError as exc:
            sock.close()
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
            raise _Abort(
                _Failure("unreachable", None, f"{reason}: {target.host} ({target.ip})", target.host)
            ) from None
        except BaseException:
            sock.close()
            raise
        return sock

    async def session(self, target: _Target) -> _Next:
        """One connection: greet, maybe STARTTLS, one mail transaction (more after a
        "too many recipients" 452), as many RCPT as allowed (pipelined when the server
        offers PIPELINING), QUIT. Never DATA."""
        settings = self.settings
        timeout = settings.smtp_timeout
        try:
            sock = await self.connect(target)
        except _Abort as abort:
            return self.after_failure(target, abort.failure, [], False)
        self.connections += 1
        self.prober.connections_opened += 1
        smtp = aiosmtplib.SMTP(
            sock=sock,
            local_hostname=settings.helo_hostname,
            timeout=timeout,
            start_tls=False,
            use_tls=False,
            validate_certs=False,
        )
        conn = _Conn(target, smtp)
        stage = "banner"
        failure: _Failure | None = None
        try:
            await smtp.connect()
            stage = "helo"
            await self.greet(smtp)
            if settings.smtp_starttls and smtp.supports_extension("starttls"):
                stage = "starttls"
                async with asyncio.timeout(timeout * 2):
                    await smtp.starttls(
                        tls_context=self.prober._tls,
                        server_hostname=_sni(target.host),
                        timeout=timeout,
                    )
                stage = "helo"
                await self.greet(smtp)  # RFC 3207 4.2: the EHLO list is learnt anew
            conn.utf8 = smtp.supports_extension("smtputf8")
            conn.pipelining = smtp.supports_extension("pipelining")
            if not settings.mail_from.isascii() and not conn.utf8:
                lacks = _Failure("error", None, "server lacks SMTPUTF8", target.host)
                for email in list(self.queue):
                    self.results[email] = lacks.outcome(email)
                self.queue.clear()
                return "done"
            stage = "mail"
            await self.mail_from(smtp, target, conn.utf8)
            stage = "rcpt"
            await self.recipients(conn)
        except _Abort as abort:
            failure = abort.failure
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
            if conn.polite and smtp.is_connected:
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=timeout)
            # The transport owns the socket now: closing it here behind the transport's
            # back would free the descriptor while the selector still watches it.
            smtp.close()
        if failure is None:
            return "done"
        return self.after_failure(target, failure, conn.inflight, conn.established)

    def establish(self, conn: _Conn) -> None:
        """This connection holds a conversation: other connections may open now."""
        conn.established = conn.target.proven = self.established = True
        self.ready.set()

    async def recipients(self, conn: _Conn) -> None:
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
            (carried or self.queue) and sent < settings.max_rcpt_per_connection
        ):
            limit = txn_limit if conn.pipelining else None
            if txn_full or (limit is not None and in_txn >= limit):
                await self.new_transaction(conn)
                in_txn, txn_full = 0, False
            group: list[str | None] = [None] if probe is not None else []  # None: the probe
            room = min(
                depth - len(group),
                settings.max_rcpt_per_connection - sent,
                (limit - in_txn - len(group)) if limit is not None else depth,
            )
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
            commands = [_rcpt_command(probe if item is None else item) for item in group]
            if conn.pipelining:
                exchange = _pipelined(smtp, commands, settings.smtp_timeout)
            else:
                exchange = _one_by_one(smtp, commands, settings.smtp_timeout)
            async with exchange as read:
                for item in group:
                    reply = await read()
                    too_many = reply.code == 452 and self.too_many(reply)
                    if item is None:
                        probe = None
                        self.catch_all_reply(reply)
                        if reply.code != 421:
                            self.establish(conn)
                    elif too_many and in_txn > 0:
                        carried.append(item)  # still in flight: sent again below
                        txn_full = True
                        txn_limit = in_txn if txn_limit is None else min(txn_limit, in_txn)
                        self.prober._txn_limits[target.ip] = txn_limit
                        continue
                    else:
                        conn.inflight.remove(item)
                        kind = classify_reply(reply.code, reply.message, "rcpt")
                        self.results[item] = RcptOutcome(
                            item, kind, reply.code, sanitize_message(reply.message), target.host
                        )
                    if not too_many:
                        in_txn += 1
                    if reply.code == 421:  # the server is closing: back off (RFC 5321 3.8)
                        # Replies after it are not read; their addresses were not answered.
                        conn.polite = False
                        for email in reversed(conn.inflight):
                            self.queue.appendleft(email)
                        conn.inflight.clear()
                        kind = classify_reply(reply.code, reply.message, "rcpt")
                        raise _Abort(_Failure(kind, reply.code, reply.message, target.host))
        for email in reversed(carried):  # out of budget: another connection takes them
            conn.inflight.remove(email)
            self.queue.appendleft(email)

    async def new_transaction(self, conn: _Conn) -> None:
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

    async def mail_from(self, smtp: aiosmtplib.SMTP, target: _Target, utf8: bool) -> None:
        params = (
            [b"SMTPUTF8"]
            if utf8 and (self.needs_utf8 or not self.settings.mail_from.isascii())
            else []
        )
        sender = self.settings.mail_from.encode("utf-8")
        reply = await smtp.execute_command(
            b"MAIL", b"FROM:<" + sender + b">", *params, timeout=self.settings.smtp_timeout
        )
        if reply.code != 250:
            # 5xx: our sender or IP is refused; 4xx: try later. Either way stop here.
            kind = classify_reply(reply.code, reply.message, "mail")
            raise _Abort(_Failure(kind, reply.code, reply.message, target.host))

    async def rset(self, smtp: aiosmtplib.SMTP, target: _Target) -> None:
        reply = await smtp.execute_command(b"RSET", timeout=self.settings.smtp_timeout)
        if reply.code != 250:
            raise _Abort(_Failure("error", reply.code, reply.message, target.host))

    @staticmethod
    def too_many(reply: SMTPResponse) -> bool:
        enhanced = _enhanced(reply.message)
        return enhanced == (4, 5, 3) or bool(_TOO_MANY_TEXT.search(reply.message))

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


# --------------------------------------------------------------------------- prober


class SmtpProber:
    """Probe mailboxes over SMTP. One instance serves a whole run, from any number of
    event loops (its semaphores are kept per loop)."""

    def __init__(self, settings: Settings, resolver: HostResolver) -> None:
        self.settings = settings
        self.resolver = resolver
        #: SMTP connections opened so far (TCP connected), over all calls.
        self.connections_opened = 0
        self._catch_all: dict[str, bool] = {}
        self._catch_all_pending: set[str] = set()
        #: Recipients per transaction of an MX address, learnt from 452 4.5.3 replies.
        self._txn_limits: dict[str, int] = {}
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Limits] = (
            weakref.WeakKeyDictionary()
        )
        self._tls = _client_tls_context()
        self._problem = _settings_problem(settings)

    def _limits(self) -> _Limits:
        loop = asyncio.get_running_loop()
        limits = self._per_loop.get(loop)
        if limits is None:
            limits = self._per_loop[loop] = _Limits(self.settings.concurrency)
        return limits

    def catch_all(self, domain: str) -> bool | None:
        """The cached catch-all verdict of ``domain``, if one was determined."""
        return self._catch_all.get(domain.lower())

    async def aclose(self) -> None:
        """Nothing is kept open between calls; here for symmetry with other backends."""

    async def probe(
        self, domain: str, mx_hosts: Sequence[str], emails: Sequence[str]
    ) -> DomainProbe:
        """Check ``emails`` (all of ``domain``) against ``mx_hosts`` (by preference).

        Never raises for bad input or network faults: every email gets an outcome.
        """
        emails = list(emails)
        outcomes: list[RcptOutcome | None] = [None] * len(emails)
        key = domain.lower() if isinstance(domain, str) else ""
        problem = self._problem
        if problem is None and (not isinstance(domain, str) or _has_control(domain)):
            problem = "domain contains control characters"
        todo: dict[str, list[int]] = {}
        for i, email in enumerate(emails):
            why = problem or _address_problem(email)
            if why is not None:
                outcomes[i] = RcptOutcome(_display(email), "error", None, why, None)
            else:
                todo.setdefault(email, []).append(i)
        hosts = [h for h in mx_hosts if isinstance(h, str) and h and not _has_control(h)]
        run: _DomainRun | None = None
        results: dict[str, RcptOutcome] = {}
        if todo and not hosts:
            failure = _Failure("unreachable", None, "no usable MX host", None)
            results = {email: failure.outcome(email) for email in todo}
        elif todo:
            want = (
                self.settings.catch_all_check
                and key.isascii()  # an A-label; a U-label would need SMTPUTF8 for the probe
                and _address_problem(f"x@{key}") is None
                and key not in self._catch_all
                and key not in self._catch_all_pending
            )
            if want:
                self._catch_all_pending.add(key)
            run = _DomainRun(
                prober=self,
                domain=key,
                mx_hosts=hosts,
                queue=deque(todo),
                want_catch_all=want,
                needs_utf8=any(not e.isascii() for e in todo),
            )
            try:
                await run.execute()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("smtp probe of %s failed", key)
                failure = _Failure("error", None, f"internal error: {type(exc).__name__}", None)
                for email in todo:
                    run.results.setdefault(email, failure.outcome(email))
            finally:
                if want:
                    self._catch_all_pending.discard(key)
            results = run.results
        for email, indexes in todo.items():
            outcome = results.get(email) or RcptOutcome(email, "error", None, "not probed", None)
            for i in indexes:
                outcomes[i] = outcome
        catch_all = run.catch_all if run is not None and run.catch_all is not None else None
        if catch_all is None:
            catch_all = self._catch_all.get(key)
        return DomainProbe(
            domain=key,
            outcomes=tuple(o for o in outcomes if o is not None),
            catch_all=catch_all,
            connections=run.connections if run is not None else 0,
        )
