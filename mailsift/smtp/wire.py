"""The wire: checks on what goes into a command line, TLS for STARTTLS, and the reader of
pipelined replies (RFC 2920)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailsift.settings import Settings

#: Bounds of :class:`ReplyReader`, as aiosmtplib's: one reply line, one unfinished reply.
_MAX_REPLY_LINE = 8192
_MAX_PENDING_REPLY = 4 * _MAX_REPLY_LINE
_COMMAND_UNSAFE = re.compile(rb"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    """C0/C1 controls, DEL, surrogates, line/paragraph separators."""
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


def address_problem(email: object) -> str | None:
    """Why ``email`` must not go on a ``RCPT`` line (defence in depth: the syntax layer
    already refuses these), or ``None``."""
    if not isinstance(email, str):
        return "address is not a string"
    if has_control(email):
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


def settings_problem(settings: Settings) -> str | None:
    helo, sender = settings.helo_hostname, settings.mail_from
    if not helo or has_control(helo) or any(ch.isspace() for ch in helo) or not helo.isascii():
        return "helo_hostname is unusable (empty, non-ASCII, spaces or control characters)"
    if has_control(sender) or any(ch.isspace() for ch in sender) or "<" in sender or ">" in sender:
        return "mail_from is unusable (spaces, angle brackets or control characters)"
    return None


def display(email: object) -> str:
    """A refused input, made printable (control characters -> U+FFFD)."""
    text = email if isinstance(email, str) else repr(email)
    return "".join("\ufffd" if has_control(ch) else ch for ch in text)[:320]


def sni(host: str) -> str | None:
    """``server_hostname`` for TLS: an ASCII DNS name, never an IP literal."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return None
    if not host.isascii() or has_control(host) or not host:
        return None
    return host.rstrip(".")


def client_tls_context() -> ssl.SSLContext:
    # Opportunistic STARTTLS, as MTAs do (RFC 3207 4.1, RFC 7435): encrypt, do not verify.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# --------------------------------------------------------------------------- pipelining


class ReplyReader(asyncio.Protocol):
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


def rcpt_command(address: str) -> tuple[bytes, bytes]:
    arg = b"TO:<" + address.encode("utf-8") + b">"
    if _COMMAND_UNSAFE.search(arg):  # never reached: addresses are checked on entry
        raise ValueError("command argument contains a control character")
    return b"RCPT", arg


@contextlib.asynccontextmanager
async def one_by_one(
    smtp: aiosmtplib.SMTP, commands: Sequence[tuple[bytes, bytes]], timeout: float
) -> AsyncIterator[Callable[[], Awaitable[SMTPResponse]]]:
    """``read()`` sends the next command and returns its reply (no pipelining)."""
    pending = deque(commands)

    async def read() -> SMTPResponse:
        reply = await smtp.execute_command(*pending.popleft(), timeout=timeout)
        ensure_in_step(smtp)
        return reply

    yield read


def ensure_in_step(smtp: aiosmtplib.SMTP) -> None:
    """Raise when the server sent more than the reply just read: lines that came before
    their command was sent (unsolicited ``250`` lines after the banner, say) would be
    taken as the replies to the next commands, a refused address read as accepted.
    RFC 5321 4.2: a server replies to commands; RFC 2920 3.1: it sends no reply before
    its command arrives. A server out of step is a protocol error (``unknown``), never
    a verdict."""
    protocol = smtp.protocol
    buffered = getattr(protocol, "_buffer", None)  # aiosmtplib's unparsed input
    if buffered:
        raise aiosmtplib.SMTPResponseException(
            -1, "the server sent replies before their commands were sent (out of step)"
        )


@contextlib.asynccontextmanager
async def pipelined(
    smtp: aiosmtplib.SMTP, commands: Sequence[tuple[bytes, bytes]], timeout: float
) -> AsyncIterator[Callable[[], Awaitable[SMTPResponse]]]:
    """Write ``commands`` in one go and yield ``read()``, which returns their replies in
    order (each within ``timeout``). The transport goes back to aiosmtplib afterwards."""
    protocol = smtp.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None or transport.is_closing():
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    reader = ReplyReader(protocol, len(commands))
    transport.set_protocol(reader)
    try:
        transport.write(b"".join(b" ".join(command) + b"\r\n" for command in commands))  # type: ignore[attr-defined]

        async def read() -> SMTPResponse:
            return await reader.read(timeout)

        yield read
        if reader.received > reader.expected or reader.buffer:
            raise aiosmtplib.SMTPResponseException(
                -1, "the server sent more replies than commands (out of step)"
            )
    finally:
        transport.set_protocol(protocol)

