"""What a probe comes to: one outcome per address, one probe per domain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

__all__ = ["DomainProbe", "HostResolver", "Kind", "ProbeFailure", "RcptOutcome", "Stage"]

#: What one address's RCPT (or the conversation before it) came to. ``not_found``,
#: ``disabled`` and ``full`` are about the mailbox; the rest are about the way there.
#: ``rejected`` is a 5xx at RCPT that names neither the mailbox nor the client: not proof
#: that the mailbox is missing (the session may still prove it, see :mod:`.session`).
#: ``unroutable``: every MX address is loopback/private/link-local...: the domain's mail
#: goes nowhere public, and nothing was connected to (see :mod:`mailsift.routing`).
Kind = Literal[
    "accepted",
    "not_found",
    "disabled",
    "full",
    "rejected",
    "temporary",
    "blocked",
    "timeout",
    "unreachable",
    "unroutable",
    "error",
]
Stage = Literal["banner", "helo", "starttls", "mail", "rcpt"]

@dataclass(frozen=True, slots=True)
class RcptOutcome:
    """What one address's ``RCPT TO`` came to (or why it was never asked)."""

    email: str
    kind: Kind
    code: int | None
    message: str | None  # server text (sanitized, truncated to 500 chars) or our reason
    mx_host: str | None


class ProbeFailure(NamedTuple):
    """The most telling failure of a probe call's connections (see ``DomainProbe``)."""

    kind: Kind
    stage: str  # connect, banner, helo, starttls, mail, rcpt
    code: int | None
    message: str
    host: str | None


@dataclass(frozen=True, slots=True)
class DomainProbe:
    """One :meth:`SmtpProber.probe` call: an outcome per requested email, same order."""

    domain: str
    outcomes: tuple[RcptOutcome, ...]
    catch_all: bool | None  # a random local part accepted / refused; None: not determined
    connections: int  # SMTP connections opened for this call
    #: The most telling connection failure, when there was one (evidence about our own
    #: path: see :mod:`mailsift.diagnosis`).
    failure: ProbeFailure | None = None


class HostResolver(Protocol):
    """What the prober needs from :class:`mailsift.dns.DnsResolver`."""

    async def host_addresses(self, host: str) -> tuple[str, ...]: ...

