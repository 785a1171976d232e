"""SMTP servers for the simulated internet: one per loopback IP, all on one port.

A :class:`SmtpFarm` runs many :class:`SmtpServer` instances in ONE background thread with
its own asyncio event loop, so synchronous callers (the CLI, Prefect flows, benchmarks)
and asynchronous tests alike can point the engine at them. Every server listens on the
same port of a different ``127.0.0.x`` address, because the engine uses one port
(``MAILSIFT_SMTP_PORT``) for every MX host.

The servers speak enough RFC 5321 for a verification probe (EHLO/HELO, STARTTLS per
RFC 3207, MAIL, RCPT, RSET, NOOP, QUIT; command pipelining per RFC 2920, advertised as
``PIPELINING``) and misbehave on request: tarpit banners, 421/554 banners, blocklisting
at MAIL FROM, greylisting, garbage, endless lines, dropped connections, replies cut in
half and lost pipelined commands.

Latency models a network round trip (or, with ``latency_model="serial"``, a server that
takes that long to judge each command, one after another): the reply to a command goes out ``latency``
seconds after the command was *received* (and never before the reply to the command
before it; replies stay in order). A client that waits for each reply pays ``latency``
per command; one that pipelines N commands gets N replies after about one ``latency``.
A reader task timestamps every line as it arrives, so pipelined commands that arrive in
one segment are handled one after another, each answered on its own schedule. That needs byte-level control of the
socket, which aiosmtpd's state machine does not give, so the protocol is a small
asyncio-streams server here. ``DATA`` is recorded and refused with 554: a prober must
never send it, and tests assert it never appears in a transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ipaddress
import logging
import os
import random
import socket
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Self

__all__ = [
    "BEHAVIOURS",
    "EHLO_ECHO_GREETINGS",
    "Behaviour",
    "Fault",
    "SmtpFarm",
    "SmtpServer",
    "tls_server_context",
]

_log = logging.getLogger(__name__)

Fault = Literal[
    "close_on_connect",
    "drop_after_ehlo",
    "drop_at_rcpt",
    "garbage",
    "endless_line",
    "close_mid_reply",
    "drop_pipelined",
]

_MAX_COMMAND_LINE = 64 * 1024  # far above RFC 5321 4.5.3.1.4's 512 octets; longer -> 500 + close
_IDLE_TIMEOUT = 60.0  # a client that says nothing for this long is disconnected
_MAX_ERRORS = 20  # unknown commands before we hang up
_ENDLESS_BYTES = 8 * 1024 * 1024  # what the "endless_line" fault streams at most
_MAX_QUEUED = 1024  # command lines read ahead of the replies (pipelined), at most


@dataclass(frozen=True)
class Behaviour:
    """How one simulated MX host answers. Replies are ``(code, text)``; the text may
    start with an RFC 3463 enhanced status code (``"5.1.1 User unknown"``)."""

    #: Full addresses that exist (compared case-insensitively); ``None`` = catch-all.
    mailboxes: frozenset[str] | None = frozenset()
    #: Address -> reply for that RCPT (e.g. ``(552, "5.2.2 Mailbox full")``); checked first.
    rcpt_replies: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    #: Reply to every other RCPT (e.g. greylisting ``(450, "4.2.0 ...")``).
    rcpt_reply: tuple[int, str] | None = None
    banner: tuple[int, str] = (220, "ESMTP ready")
    #: Seconds before the banner (a tarpit).
    banner_delay: float = 0.0
    #: Reply to MAIL FROM instead of 250 (e.g. ``(550, "5.7.1 blocked by Spamhaus")``).
    mail_from_reply: tuple[int, str] | None = None
    #: Reply to EHLO and HELO instead of greeting (e.g. ``(550, "Rejected")``, as Exim
    #: answers a client its ACLs refuse; set-of-emails lhost-exim-49). 421 also hangs up.
    helo_reply: tuple[int, str] | None = None
    #: Offer STARTTLS (RFC 3207) with a self-signed certificate made at run time.
    starttls: bool = False
    #: Network round trip, in seconds: each reply goes out this long after its command
    #: was received (the banner: after the connection, plus ``banner_delay``), never
    #: before the previous reply. Pipelined commands therefore overlap.
    latency: float = 0.0
    #: How ``latency`` is spent. ``"round_trip"``: in the network, so pipelined commands
    #: share it. ``"serial"``: in the server, which judges one command after another
    #: (a directory or policy lookup per RCPT: Postfix's smtpd handles a connection's
    #: commands in order, each RCPT through its restriction lists and lookup tables before
    #: the next is read), so each reply goes out ``latency`` after the previous one even
    #: when the commands were pipelined; more connections are what help then.
    latency_model: Literal["round_trip", "serial"] = "round_trip"
    #: ``drop_pipelined``: advertises PIPELINING but silently loses every command that
    #: arrived while it was still answering an earlier one (a broken pipeliner).
    fault: Fault | None = None
    #: Advertise PIPELINING (RFC 2920) in the EHLO reply.
    pipelining: bool = True
    #: Answer this many RCPTs on a connection, then hang up without replying to the next
    #: (``0`` is the ``drop_at_rcpt`` fault).
    drop_after_rcpts: int | None = None
    #: Advertise SMTPUTF8 (RFC 6531) in the EHLO reply.
    smtputf8: bool = True
    #: Simultaneous connections allowed; more get a 421 banner (a per-client limit:
    #: Postfix's ``smtpd_client_connection_count_limit`` answers "421 4.7.0 Error: too
    #: many connections from <ip>"; Exchange's ``MaxInboundConnectionPerSource``).
    max_connections: int | None = None
    #: Simultaneous connections allowed from one client IP; more get Postfix's reply to a
    #: client over ``smtpd_client_connection_count_limit`` (postconf(5); anvil counts per
    #: client address): "421 4.7.0 <host> Error: too many connections from <ip>", and the
    #: connection is closed (the reply as mail clients log it from Postfix servers).
    max_connections_per_ip: int | None = None
    #: Understand EHLO; ``False`` makes an RFC 821-only server (502 to EHLO, HELO works).
    ehlo: bool = True
    #: RCPTs per mail transaction; more get 452 4.5.3 (RFC 5321 4.5.3.1.10).
    max_rcpts: int | None = None
    #: First line of the EHLO reply; ``{helo}`` is the client's EHLO argument, ``{ip}``
    #: the client's address as the server sees it. Many MTAs echo the client's IP
    #: there (see :data:`EHLO_ECHO_GREETINGS`), which is how ``mailsift doctor``
    #: learns the host's public egress address.
    ehlo_greeting: str = "mx.mailsift.test greets {helo}"
    #: Replies sent with the banner, before any command (a server out of step).
    unsolicited: tuple[tuple[int, str], ...] = ()
    #: Postfix's ``smtpd_hard_error_limit`` (default 20 there; 1-5 on hardened hosts):
    #: after this many 4xx/5xx replies in a session (a refused RCPT counts, the random
    #: catch-all probe included), the next command gets "421 4.7.0 <host> Error: too
    #: many errors" and the connection is closed (postfix/src/smtpd/smtpd.c).
    hard_error_limit: int | None = None

    def __post_init__(self) -> None:
        if self.mailboxes is not None:
            object.__setattr__(self, "mailboxes", frozenset(m.lower() for m in self.mailboxes))
        replies = {k.lower(): (int(c), str(t)) for k, (c, t) in dict(self.rcpt_replies).items()}
        object.__setattr__(self, "rcpt_replies", MappingProxyType(replies))

    def __hash__(self) -> int:
        return hash(
            tuple(
                tuple(sorted(self.rcpt_replies.items()))
                if f.name == "rcpt_replies"
                else getattr(self, f.name)
                for f in dataclasses.fields(self)
            )
        )

    def rcpt_answer(self, address: str) -> tuple[int, str]:
        """The reply this behaviour gives to ``RCPT TO:<address>``."""
        key = address.lower()
        if key in self.rcpt_replies:
            return self.rcpt_replies[key]
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        if self.mailboxes is None or key in self.mailboxes:
            return (250, "2.1.5 Ok")
        return (550, f"5.1.1 <{address}>: Recipient address rejected: User unknown")


#: EHLO greetings of real MTAs that echo the client's address (taken from public SMTP
#: transcripts): Gmail's MX ("250-mx.google.com at your service, [198.51.100.24]"),
#: Exchange Online / Outlook.com ("250-XX.mail.protection.outlook.com Hello
#: [198.51.100.42]"), Exim's default ("250-host Hello client.example [192.0.2.1]") and
#: Sendmail's ("250-host Hello client.example [192.0.2.1], pleased to meet you").
#: Postfix echoes nothing ("250-host").
EHLO_ECHO_GREETINGS: dict[str, str] = {
    "gmail": "mx.mailsift.test at your service, [{ip}]",
    "outlook": "mx.mailsift.test Hello [{ip}]",
    "exim": "mx.mailsift.test Hello {helo} [{ip}]",
    "sendmail": "mx.mailsift.test Hello {helo} [{ip}], pleased to meet you",
    "postfix": "mx.mailsift.test",
}

BEHAVIOURS: dict[str, Behaviour] = {
    "accept": Behaviour(),
    "catch_all": Behaviour(mailboxes=None),
    "reject_all": Behaviour(rcpt_reply=(550, "5.1.1 Recipient address rejected: User unknown")),
    "full": Behaviour(rcpt_reply=(552, "5.2.2 Mailbox full: quota exceeded")),
    "disabled": Behaviour(rcpt_reply=(550, "5.2.1 Mailbox disabled, not accepting messages")),
    "greylist": Behaviour(rcpt_reply=(450, "4.2.0 Greylisted, please try again later")),
    "banner_421": Behaviour(banner=(421, "4.7.0 Too many connections from your IP, closing")),
    "banner_554": Behaviour(
        banner=(554, "5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")
    ),
    "block_mail_from": Behaviour(
        mail_from_reply=(550, "5.7.1 Service unavailable; client host blocked by Spamhaus")
    ),
    "tarpit": Behaviour(banner_delay=30.0),
    "drop": Behaviour(fault="drop_after_ehlo"),
    "drop_at_rcpt": Behaviour(fault="drop_at_rcpt"),
    "garbage": Behaviour(fault="garbage"),
    "endless_line": Behaviour(fault="endless_line"),
    "close_mid_reply": Behaviour(fault="close_mid_reply"),
    "starttls": Behaviour(starttls=True),
    "no_pipelining": Behaviour(pipelining=False),
    "drop_pipelined": Behaviour(fault="drop_pipelined"),
    "echo_ip": Behaviour(ehlo_greeting=EHLO_ECHO_GREETINGS["gmail"]),
    "close_on_connect": Behaviour(fault="close_on_connect"),
    # Postfix with smtpd_hard_error_limit = 2: the catch-all probe and one unknown
    # recipient use it up; the next RCPT gets 421 and the connection closes.
    "hard_error_limit": Behaviour(hard_error_limit=2),
    # Our IP on a DNS blocklist, as Postfix's reject_rbl_client says it (at RCPT).
    "rbl_listed": Behaviour(
        rcpt_reply=(
            554,
            "5.7.1 Service unavailable; Client host [127.0.0.1] blocked using "
            "zen.spamhaus.org; https://www.spamhaus.org/query/ip/127.0.0.1",
        )
    ),
}


# --------------------------------------------------------------------------- TLS

_tls_lock = threading.Lock()
_tls_context: ssl.SSLContext | None = None


def _self_signed_pem() -> tuple[bytes, bytes]:
    """A fresh self-signed certificate and key (EC P-256, valid one day), PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.mailsift.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("*.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def tls_server_context() -> ssl.SSLContext:
    """The servers' TLS context: a self-signed certificate generated once per process."""
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            cert_pem, key_pem = _self_signed_pem()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory(prefix="mailsift-tls-") as tmp:
                cert_path = os.path.join(tmp, "cert.pem")
                key_path = os.path.join(tmp, "key.pem")
                with open(cert_path, "wb") as fh:
                    fh.write(cert_pem)
                with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
                    fh.write(key_pem)
                context.load_cert_chain(cert_path, key_path)
            _tls_context = context
        return _tls_context


# --------------------------------------------------------------------------- server


class _Hangup(Exception):
    """End this connection now (a fault, QUIT, or a client gone)."""


class SmtpServer:
    """One simulated MX host on ``host:port``. Counters are for test assertions.

    ``behaviour`` may be replaced while running; each new connection uses the behaviour
    in force when it was accepted.
    """

    def __init__(self, host: str, port: int, behaviour: Behaviour) -> None:
        self.host = host
        self.port = port
        self.behaviour = behaviour
        #: Every command line received (CRLF removed, otherwise verbatim), all connections.
        self.transcript: list[str] = []
        #: Connections accepted.
        self.connections = 0
        #: Connections open right now, and the most that were open at once.
        self.active = 0
        self.max_concurrent = 0
        #: The same per client IP (as the server sees it: the source address the client
        #: bound), and connections accepted per client IP.
        self.active_by_ip: dict[str, int] = {}
        self.max_concurrent_by_ip: dict[str, int] = {}
        self.connections_by_ip: dict[str, int] = {}
        #: Connections that completed a STARTTLS handshake.
        self.tls_sessions = 0
        #: Commands received before the reply to the command before them was sent,
        #: i.e. commands a client pipelined (RFC 2920).
        self.pipelined = 0
        #: Connections refused with 421 for ``max_connections``, and the most that were
        #: open at once after the first such refusal (a polite client stays at the cap).
        self.refused_busy = 0
        self.max_concurrent_after_refusal = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"SmtpServer({self.host}:{self.port}, connections={self.connections})"

    def commands(self, verb: str) -> list[str]:
        """Transcript lines whose command verb is ``verb`` (case-insensitive)."""
        verb = verb.upper()
        return [line for line in self.transcript if _verb(line) == verb]

    def reset_counters(self) -> None:
        """Forget the transcript and counters (not the behaviour)."""
        self.transcript.clear()
        self.connections = 0
        self.max_concurrent = self.active
        self.max_concurrent_by_ip = {ip: n for ip, n in self.active_by_ip.items() if n}
        self.connections_by_ip = {}
        self.tls_sessions = 0
        self.pipelined = 0
        self.refused_busy = 0
        self.max_concurrent_after_refusal = 0

    # -- lifecycle (inside the serving loop) -------------------------------------------

    async def start(self) -> None:
        """Listen on ``host:port`` (call from the event loop that will serve it)."""
        self._server = await asyncio.start_server(
            self._handle,
            self.host,
            self.port,
            reuse_address=True,
            limit=_MAX_COMMAND_LINE,
        )

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # -- one connection ----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.active += 1
        self.max_concurrent = max(self.max_concurrent, self.active)
        if self.refused_busy:
            self.max_concurrent_after_refusal = max(self.max_concurrent_after_refusal, self.active)
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.connections_by_ip[ip] = self.connections_by_ip.get(ip, 0) + 1
        self.active_by_ip[ip] = self.active_by_ip.get(ip, 0) + 1
        self.max_concurrent_by_ip[ip] = max(self.max_concurrent_by_ip.get(ip, 0), self.active_by_ip[ip])
        session = _Session(self, self.behaviour, reader, writer, client_ip=ip)
        try:
            await session.run()
        except (_Hangup, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - odd input cuts one connection, never the farm
            _log.debug("connection to %s ended by an error", self.host, exc_info=True)
        finally:
            if session.counted:
                self.active -= 1
                self.active_by_ip[ip] -= 1
            self._tasks.discard(task)
            writer.transport.abort()


def _verb(line: str) -> str:
    return line.split(" ", 1)[0].split(":", 1)[0].strip().upper()


def _path(arg: str, keyword: str) -> tuple[str | None, list[str]]:
    """Split ``FROM:<path> PARAMS`` (RFC 5321 4.1.2) into path and parameters."""
    head, sep, rest = arg.partition(":")
    if not sep or head.strip().upper() != keyword:
        return None, []
    rest = rest.strip()
    if rest.startswith("<"):
        path, close, params = rest[1:].partition(">")
        if not close:
            return None, []
        return path, params.split()
    parts = rest.split()
    return (parts[0] if parts else None), parts[1:]


class _Session:
    """The RFC 5321 conversation on one connection, with the behaviour's faults."""

    def __init__(
        self,
        server: SmtpServer,
        behaviour: Behaviour,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client_ip: str = "unknown",
    ) -> None:
        self.server = server
        self.client_ip = client_ip
        self.b = behaviour
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.greeted = False
        self.counted = True  # in the server's ``active`` count
        self.tls = False
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.rcpt_count = 0
        self.rcpts_answered = 0  # on this connection, for ``drop_after_rcpts``
        self.errors = 0
        self.error_replies = 0  # 4xx/5xx replies sent, for ``hard_error_limit``
        #: When the reply being prepared may go out: its command's arrival + latency.
        self.due = 0.0
        #: When the last reply was written (commands that arrived before: pipelined).
        self.replied_at = 0.0
        #: Lines as they arrive: (kind, received_at, line), kind "line", "too_long", "eof".
        #: Bounded, so that a client that never stops sending is held back by TCP.
        self.inbox: asyncio.Queue[tuple[str, float, str]] = asyncio.Queue(_MAX_QUEUED)
        #: Set while the reader may read on; cleared by a STARTTLS line until the
        #: handshake is done (RFC 3207: nothing is read in plain text after STARTTLS).
        self.reading = asyncio.Event()
        self.reading.set()

    async def send(self, code: int, *lines: str) -> None:
        """Reply, multi-line when several lines are given (RFC 5321 4.2.1), not before
        ``self.due`` (the command's arrival plus the behaviour's latency)."""
        delay = self.due - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # A text holding "\n" is several reply lines (RFC 5321 4.2.1 multiline replies),
        # as aiosmtplib hands them back: joined with "\n".
        lines = tuple(part for line in lines for part in line.split("\n")) or ("",)
        out = []
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out.append(f"{code}{sep}{text}\r\n")
        self.writer.write("".join(out).encode("utf-8", "replace"))
        self.replied_at = self.loop.time()
        if code >= 400:
            self.error_replies += 1
        await self.writer.drain()

    async def run(self) -> None:
        b = self.b
        connected_at = self.loop.time()
        if b.fault == "close_on_connect":
            # What a port-25 middlebox (ISP filter, firewall) looks like from inside:
            # the TCP handshake completes, then the connection closes with no banner.
            raise _Hangup
        if b.banner_delay:
            await asyncio.sleep(b.banner_delay)
        if b.fault == "garbage":
            self.writer.write(b"HTTP/1.1 400 Bad Request\r\n\x00\xff\xfe<html>not smtp</html>\r\n")
            await self.writer.drain()
            await asyncio.sleep(0.2)
            raise _Hangup
        code, text = b.banner
        if b.max_connections is not None and self.server.active > b.max_connections:
            code, text = 421, "4.7.0 Too many concurrent connections, try again later"
            self.server.refused_busy += 1
        elif (
            b.max_connections_per_ip is not None
            and self.server.active_by_ip.get(self.client_ip, 0) > b.max_connections_per_ip
        ):
            code, text = 421, f"4.7.0 Error: too many connections from {self.client_ip}"
            self.server.refused_busy += 1
        self.due = connected_at + b.banner_delay + b.latency
        if b.unsolicited and code == 220:
            # Replies to commands not sent yet, in the banner's segment: a broken or
            # hostile server trying to make a client take them for the answers to
            # EHLO, MAIL and RCPT (issue 9). RFC 2920 3.1 forbids replying early.
            extra = "".join(f"{c} {line}\r\n" for c, line in b.unsolicited)
            self.writer.write(f"220 mx.mailsift.test {text}\r\n{extra}".encode())
            await self.writer.drain()
        else:
            await self.send(code, f"mx.mailsift.test {text}")
        if code != 220:
            # RFC 5321 3.1: a 554 server waits for QUIT; a 421 one closes. Close both.
            raise _Hangup
        reader = asyncio.create_task(self.read_lines())
        try:
            while True:
                try:
                    kind, received_at, line = await asyncio.wait_for(
                        self.inbox.get(), _IDLE_TIMEOUT
                    )
                except TimeoutError:
                    self.due = 0.0
                    with contextlib.suppress(Exception):
                        await self.send(421, "4.4.2 Idle timeout, closing")
                    raise _Hangup from None
                start = received_at
                if b.latency_model == "serial":
                    start = max(received_at, self.replied_at)
                self.due = start + b.latency
                if kind == "eof":
                    raise _Hangup
                if kind == "too_long":
                    await self.send(500, "5.5.6 Line too long")
                    raise _Hangup
                if received_at < self.replied_at:
                    self.server.pipelined += 1
                limit = b.hard_error_limit
                if limit is not None and self.error_replies >= limit:
                    await self.send(421, "4.7.0 mx.mailsift.test Error: too many errors")
                    raise _Hangup
                await self.dispatch(line)
                if b.fault == "drop_pipelined":
                    self.lose_pipelined()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def read_lines(self) -> None:
        """Read lines as they arrive, stamp them, queue them for :meth:`run`."""
        while True:
            await self.reading.wait()
            try:
                raw = await self.reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                await self.inbox.put(("too_long", self.loop.time(), ""))
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - EOF, reset, TLS failure: the client is gone
                await self.inbox.put(("eof", self.loop.time(), ""))
                return
            received_at = self.loop.time()
            if raw.endswith(b"\r\n"):
                raw = raw[:-2]
            elif raw.endswith(b"\n"):
                raw = raw[:-1]
            line = raw.decode("utf-8", "surrogateescape")
            self.server.transcript.append(line)
            await self.inbox.put(("line", received_at, line))
            if _verb(line) == "STARTTLS":
                self.reading.clear()  # cmd_starttls sets it again

    def lose_pipelined(self) -> None:
        """The ``drop_pipelined`` fault: forget commands that arrived while answering."""
        kept = []
        while not self.inbox.empty():
            event = self.inbox.get_nowait()
            if event[0] != "line":
                kept.append(event)
        for event in kept:
            self.inbox.put_nowait(event)

    async def dispatch(self, line: str) -> None:
        verb = _verb(line)
        arg = line[len(verb) :].strip() if line[: len(verb)].upper() == verb else ""
        handler = getattr(self, f"cmd_{verb.lower()}", None) if verb.isalpha() else None
        if handler is None:
            self.errors += 1
            await self.send(502, "5.5.2 Error: command not recognized")
            if self.errors >= _MAX_ERRORS:
                await self.send(421, "4.7.0 Too many errors, closing")
                raise _Hangup
            return
        await handler(arg)

    # -- commands ----------------------------------------------------------------------

    async def refuse_greeting(self) -> bool:
        """The behaviour's ``helo_reply``, if any, instead of a greeting."""
        if self.b.helo_reply is None:
            return False
        code, text = self.b.helo_reply
        await self.send(code, text)
        if code == 421:
            raise _Hangup
        return True

    async def cmd_ehlo(self, arg: str) -> None:
        if await self.refuse_greeting():
            return
        if not self.b.ehlo:
            await self.send(502, "5.5.2 Error: command not recognized")
            return
        if not arg:
            await self.send(501, "5.5.4 Syntax: EHLO hostname")
            return
        await self.greet_fault()
        self.greeted = True
        self.reset()
        peer = self.writer.get_extra_info("peername")
        client_ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        greeting = self.b.ehlo_greeting.format(helo=arg, ip=client_ip)
        lines = [greeting, "SIZE 10240000", "8BITMIME"]
        if self.b.pipelining or self.b.fault == "drop_pipelined":
            lines.append("PIPELINING")
        lines.append("ENHANCEDSTATUSCODES")
        if self.b.smtputf8:
            lines.append("SMTPUTF8")
        if self.b.starttls and not self.tls:
            lines.append("STARTTLS")
        await self.send(250, *lines)
        if self.b.fault == "drop_after_ehlo":
            raise _Hangup

    async def cmd_helo(self, arg: str) -> None:
        if await self.refuse_greeting():
            return
        if not arg:
            await self.send(501, "5.5.4 Syntax: HELO hostname")
            return
        await self.greet_fault()
        self.greeted = True
        self.reset()
        await self.send(250, "mx.mailsift.test")
        if self.b.fault == "drop_after_ehlo":
            raise _Hangup

    async def greet_fault(self) -> None:
        if self.b.fault == "endless_line":
            # Megabytes without a line ending: a client must bound its buffer and give up.
            chunk = b"250-" + b"x" * (64 * 1024 - 4)
            sent = 0
            while sent < _ENDLESS_BYTES:
                self.writer.write(chunk)
                await self.writer.drain()
                sent += len(chunk)
                chunk = b"x" * (64 * 1024)
            raise _Hangup
        if self.b.fault == "close_mid_reply":
            self.writer.write(b"250-mx.mailsift.test greets you\r\n250-SIZE 1024")
            await self.writer.drain()
            raise _Hangup

    async def cmd_starttls(self, arg: str) -> None:
        try:
            await self.starttls(arg)
        finally:
            self.reading.set()  # the reader paused at this line (see read_lines)

    async def starttls(self, arg: str) -> None:
        if not self.b.starttls or self.tls:
            await self.send(502, "5.5.1 STARTTLS not available")
            return
        if arg:
            await self.send(501, "5.5.4 Syntax: STARTTLS")
            return
        context = await asyncio.to_thread(tls_server_context)  # never block the farm's loop
        await self.send(220, "2.0.0 Ready to start TLS")
        await self.writer.start_tls(context)
        self.tls = True
        self.server.tls_sessions += 1
        # RFC 3207 4.2: forget everything said before the handshake.
        self.greeted = False
        self.reset()

    async def cmd_mail(self, arg: str) -> None:
        if not self.greeted:
            await self.send(503, "5.5.1 Error: send HELO/EHLO first")
            return
        if self.mail_from is not None:
            await self.send(503, "5.5.1 Error: nested MAIL command")
            return
        path, _params = _path(arg, "FROM")
        if path is None:
            await self.send(501, "5.5.4 Syntax: MAIL FROM:<address>")
            return
        if self.b.mail_from_reply is not None:
            code, text = self.b.mail_from_reply
            await self.send(code, text)
            if 200 <= code < 300:
                self.mail_from = path
            elif code == 421:
                raise _Hangup
            return
        self.mail_from = path
        await self.send(250, "2.1.0 Ok")

    async def cmd_rcpt(self, arg: str) -> None:
        if self.mail_from is None:
            await self.send(503, "5.5.1 Error: need MAIL command")
            return
        path, _params = _path(arg, "TO")
        if not path:
            await self.send(501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        if self.b.fault == "drop_at_rcpt" or (
            self.b.drop_after_rcpts is not None and self.rcpts_answered >= self.b.drop_after_rcpts
        ):
            raise _Hangup
        self.rcpts_answered += 1
        if self.b.max_rcpts is not None and self.rcpt_count >= self.b.max_rcpts:
            await self.send(452, "4.5.3 Error: too many recipients")
            return
        self.rcpt_count += 1
        code, text = self.b.rcpt_answer(path)
        if 200 <= code < 300:
            self.rcpts.append(path)
        await self.send(code, text)
        if code == 421:
            raise _Hangup

    async def cmd_data(self, arg: str) -> None:
        # A verification probe must never get here; refuse so nothing is ever delivered.
        await self.send(554, "5.5.1 Error: DATA refused by the mailsift test server")

    async def cmd_rset(self, arg: str) -> None:
        self.reset()
        await self.send(250, "2.0.0 Ok")

    async def cmd_noop(self, arg: str) -> None:
        await self.send(250, "2.0.0 Ok")

    async def cmd_vrfy(self, arg: str) -> None:
        await self.send(252, "2.0.0 Cannot VRFY user, but will accept message")

    async def cmd_quit(self, arg: str) -> None:
        # The session is over once QUIT is read: no longer counted as open, so that a
        # client's next connection, made as soon as it reads the 221, is not refused
        # for a connection this thread has not closed yet (``max_connections``).
        self.server.active -= 1
        self.server.active_by_ip[self.client_ip] -= 1
        self.counted = False
        await self.send(221, "2.0.0 Bye")
        raise _Hangup

    def reset(self) -> None:
        self.mail_from = None
        self.rcpts = []
        self.rcpt_count = 0


# --------------------------------------------------------------------------- farm


def _port_free(port: int, hosts: tuple[str, ...]) -> bool:
    for host in hosts:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def pick_port() -> int:
    """A port that is free on 127.0.0.1 and on other 127.0.0.x addresses.

    Chosen below Linux's ephemeral range (32768-60999) so outgoing connections do not
    grab it between the check and the bind.
    """
    probe_hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.77", "127.0.0.254")
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        if _port_free(port, probe_hosts):
            return port
    raise RuntimeError("no free port found on 127.0.0.x")


class SmtpFarm:
    """Many :class:`SmtpServer` on one port, served by one background thread's loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else pick_port()
        #: Every server of the farm, in the order added.
        self.servers: list[SmtpServer] = []
        self._by_host: dict[str, SmtpServer] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SmtpFarm(port={self.port}, hosts={sorted(self._by_host)})"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None

    def add(self, host: str, behaviour: Behaviour) -> SmtpServer:
        """Serve ``behaviour`` on ``host`` (a loopback IP such as ``"127.0.0.7"``)."""
        ipaddress.ip_address(host)  # a name here would bind who knows what
        if behaviour.starttls:
            tls_server_context()  # made now, in the caller's thread, not mid-conversation
        with self._lock:
            if host in self._by_host:
                raise ValueError(f"{host} already has a server; replace its .behaviour instead")
            server = SmtpServer(host, self.port, behaviour)
            self._by_host[host] = server
            self.servers.append(server)
            loop = self._loop
        if loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
            except BaseException:
                with self._lock:
                    self._forget(host)
                raise
        return server

    def remove(self, host: str) -> None:
        """Stop and forget the server on ``host`` (connections to it are then refused)."""
        with self._lock:
            server = self._forget(host)
            loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)

    def _forget(self, host: str) -> SmtpServer:
        server = self._by_host.pop(host)
        self.servers.remove(server)
        return server

    def get(self, host: str) -> SmtpServer:
        """The server on ``host`` (KeyError if none)."""
        return self._by_host[host]

    @property
    def transcript(self) -> list[str]:
        """Every command line any server of the farm received, server by server."""
        return [line for server in list(self.servers) for line in server.transcript]

    def start(self) -> SmtpFarm:
        with self._lock:
            if self._loop is not None:
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

            thread = threading.Thread(target=run, name=f"smtp-farm-{self.port}", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            servers = list(self.servers)

        async def start_all() -> None:
            await asyncio.gather(*(server.start() for server in servers))

        try:
            asyncio.run_coroutine_threadsafe(start_all(), loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            servers = list(self.servers)
        if loop is None or thread is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(server.stop() for server in servers), return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
