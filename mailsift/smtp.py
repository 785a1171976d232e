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
``RCPT`` sent through ``execute_command`` so the address goes on the wire exactly as
given, after our own checks.
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
from collections.abc import AsyncIterator, Sequence
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
        self, target: _Target, failure: _Failure, inflight: str | None, established: bool
    ) -> _Next:
        """Record a broken connection and say what its worker does next."""
        self.note(failure)
        log.debug("smtp %s (%s): %s %s", target.host, target.ip, failure.kind, failure.message)
        if inflight is not None:
            self.retry_or_settle(inflight, failure)
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
        "too many recipients" 452), as many RCPT as allowed, QUIT. Never DATA."""
        settings = self.settings
        timeout = settings.smtp_timeout
        try:
            sock = await self.connect(target)
        except _Abort as abort:
            return self.after_failure(target, abort.failure, None, False)
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
        stage = "banner"
        inflight: str | None = None
        established = False
        polite = True
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
            utf8 = smtp.supports_extension("smtputf8")
            if not settings.mail_from.isascii() and not utf8:
                lacks = _Failure("error", None, "server lacks SMTPUTF8", target.host)
                for email in list(self.queue):
                    self.results[email] = lacks.outcome(email)
                self.queue.clear()
                return "done"
            stage = "mail"
            await self.mail_from(smtp, target, utf8)
            if self.want_catch_all and not self.catch_all_done:
                stage = "rcpt"
                await self.probe_catch_all(smtp, target)
            established = target.proven = self.established = True
            self.ready.set()
            stage = "rcpt"
            sent = 0
            fresh_transaction = True
            carry: str | None = None  # refused for "too many recipients": next transaction
            while (carry is not None or self.queue) and sent < settings.max_rcpt_per_connection:
                email = carry if carry is not None else self.queue.popleft()
                carry = None
                if not email.isascii() and not utf8:
                    self.results[email] = RcptOutcome(
                        email, "error", None, "server lacks SMTPUTF8", target.host
                    )
                    continue
                inflight = email
                reply = await smtp.execute_command(
                    b"RCPT", b"TO:<" + email.encode("utf-8") + b">", timeout=timeout
                )
                sent += 1
                if reply.code == 452 and not fresh_transaction and self.too_many(reply):
                    # RFC 5321 4.5.3.1.10: the rest go in a new transaction (RSET first).
                    stage = "mail"
                    await self.rset(smtp, target)
                    await self.mail_from(smtp, target, utf8)
                    stage = "rcpt"
                    fresh_transaction = True
                    carry = email
                    continue
                inflight = None
                fresh_transaction = False
                kind = classify_reply(reply.code, reply.message, "rcpt")
                self.results[email] = RcptOutcome(
                    email, kind, reply.code, sanitize_message(reply.message), target.host
                )
                if reply.code == 421:  # the server is closing: back off (RFC 5321 3.8)
                    polite = False
                    raise _Abort(_Failure(kind, reply.code, reply.message, target.host))
            if carry is not None:
                inflight = None
                self.queue.appendleft(carry)
        except _Abort as abort:
            failure = abort.failure
        except asyncio.CancelledError:
            polite = False
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ValueError, UnicodeError) as exc:
            polite = False
            failure = self.failure_from(exc, stage, target)
        except Exception as exc:  # a bug here must not lose the other addresses
            polite = False
            log.exception("smtp probe of %s at %s failed", self.domain, target.host)
            failure = self.failure_from(exc, stage, target)
        finally:
            if polite and smtp.is_connected:
                with contextlib.suppress(Exception):
                    await smtp.quit(timeout=timeout)
            # The transport owns the socket now: closing it here behind the transport's
            # back would free the descriptor while the selector still watches it.
            smtp.close()
        if failure is None:
            return "done"
        return self.after_failure(target, failure, inflight, established)

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

    async def probe_catch_all(self, smtp: aiosmtplib.SMTP, target: _Target) -> None:
        """One RCPT to a local part nobody has: accepted means the domain accepts all."""
        local = f"mailsift-probe-{secrets.token_hex(6)}"
        reply = await smtp.execute_command(
            b"RCPT",
            b"TO:<" + f"{local}@{self.domain}".encode("ascii") + b">",
            timeout=self.settings.smtp_timeout,
        )
        self.catch_all_done = True
        kind = classify_reply(reply.code, reply.message, "rcpt")
        if kind == "accepted":
            self.catch_all = True
        elif 500 <= reply.code < 600 and kind != "blocked":
            self.catch_all = False
        if self.catch_all is not None:
            self.prober._catch_all[self.domain] = self.catch_all
        if reply.code == 421:
            raise _Abort(_Failure(kind, reply.code, reply.message, target.host))


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
