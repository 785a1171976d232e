"""Problems of the prober's own path, told apart from facts about mailboxes.

A failure shared by many unrelated domains is about us, never about the mailboxes: when
every MX host of every domain refuses the TCP connection, port 25 is blocked on our side;
when each accepts the connection and closes it before its greeting, a middlebox
intercepts port 25; when each refuses *this client* (a blocklist listing of our IP, a
missing reverse DNS for our HELO name), the addresses tell nothing about their
mailboxes. :class:`PathDiagnostics` watches the domains of a run go by and names such a
shared cause once, with what to do about it. The addresses themselves are already
``unknown`` (never ``invalid``): this is about saying *why*, loudly.

A cause is named when at least :data:`MIN_SITES` unrelated mail sites (MX hosts under
different registered names, by the Public Suffix List) show it and they are at least
:data:`MIN_SHARE` of the sites whose SMTP was tried; a few dead servers in a healthy run
are not a diagnosis.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mailsift.dns import ResolverHealth

__all__ = ["Cause", "Diagnosis", "PathDiagnostics", "smtp_path"]

Cause = Literal["dns_resolver", "port25_blocked", "middlebox", "client_refused"]
Path = Literal["reached", "connect", "banner_drop", "client_refused", "other"]

#: Unrelated mail sites that must share a failure before it is called ours.
MIN_SITES = 3
#: ...and the share of the sites tried that they must be.
MIN_SHARE = 0.8

_MAILBOX_KINDS = frozenset({"accepted", "not_found", "disabled", "full"})

PORT25_HELP = (
    "No SMTP server could be reached on port {port} ({n} mail sites tried, none "
    "connected): outbound port 25 is most likely blocked on this network (most clouds "
    "and home ISPs block it). Those addresses are 'unknown' (smtp_unreachable), not "
    "invalid. Run mailsift from a host that may connect to port 25 (a VPS whose provider "
    "opened it), or set MAILSIFT_SMTP_ENABLED=false to check syntax, DNS and reputation "
    "only. `mailsift doctor` checks this host."
)
MIDDLEBOX_HELP = (
    "SMTP servers of {n} unrelated mail sites accepted the TCP connection on port {port} "
    "and closed it before their greeting: a middlebox on this network (firewall, "
    "antivirus proxy, ISP filter) intercepts port 25. Those addresses are 'unknown', not "
    "invalid. Run mailsift from a host with open outbound port 25; `mailsift doctor` "
    "checks this host."
)
REFUSED_HELP = (
    "SMTP servers of {n} unrelated mail sites refused this client itself, not the "
    "mailboxes (e.g. \"{example}\"): this host's IP is likely on a blocklist, or its "
    "reverse DNS (PTR) does not match MAILSIFT_HELO_HOSTNAME ({helo}). Those addresses "
    "are 'unknown' (smtp_blocked / smtp_rejected), not invalid. Run `mailsift doctor` "
    "to see which, and probe from a host with a clean IP and matching PTR."
)
RESOLVER_HELP = (
    "The DNS resolver {servers} failed its health check: {problem}. Its negative answers "
    "are not trusted, so those addresses are 'unknown' (dns_error), not invalid. Point "
    "MAILSIFT_DNS_NAMESERVERS at a working resolver; `mailsift doctor` checks it."
)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One cause that the run's failures share, in words a user can act on."""

    cause: Cause
    sites: int  # unrelated mail sites (or 1 resolver) that showed it
    tried: int  # sites whose SMTP was tried (for the resolver: 1)
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"cause": self.cause, "sites": self.sites, "tried": self.tried,
                "message": self.message}


_REACHED_REASONS = frozenset(
    {"accepted", "catch_all", "role_based", "mailbox_not_found", "mailbox_disabled",
     "mailbox_full"}
)


def smtp_path(reason: str, smtp_message: str | None, smtp_code: int | None = None) -> Path:
    """How far the SMTP probe of one address got, from its result (reason and the
    message the conversation ended on), as evidence about our own path."""
    message = smtp_message or ""
    if reason in _REACHED_REASONS and smtp_code is not None:
        return "reached"
    if reason == "smtp_unreachable":
        if message.startswith(("no address for MX host", "no usable MX host", "no MX host")):
            return "other"  # DNS, not the network
        return "connect"  # refused, timed out connecting, network unreachable
    if reason in ("smtp_error", "smtp_timeout") and "(banner at " in message:
        return "banner_drop"
    if reason in ("smtp_blocked", "smtp_rejected"):
        return "client_refused"
    return "other"


def site_of(host: str) -> str:
    """The registered name of an MX host, by the Public Suffix List
    (``aspmx.l.google.com`` -> ``google.com``, ``mx.acme.co.uk`` -> ``acme.co.uk``):
    domains hosted at one provider are one site, not many unrelated ones, and two
    companies under ``co.uk`` are two. An IP address, a single label or a public suffix
    itself is its own site."""
    name = host.lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    from mailsift.suffixes import registered_name

    return registered_name(name) or name


class PathDiagnostics:
    """What the domains of one run say about our own path. Thread-safe."""

    def __init__(self, *, smtp_port: int = 25, helo_hostname: str = "") -> None:
        self.smtp_port = smtp_port
        self.helo_hostname = helo_hostname
        self._lock = threading.Lock()
        self._paths: dict[str, set[Path]] = {}  # site -> paths seen there
        # path -> sites that showed only it so far: kept as sites go by, so a new site
        # costs O(1), not a walk over every site (a run of 500 domains noted 10,000 results)
        self._only: dict[Path, int] = {}
        self._sites: dict[str, str] = {}  # MX host -> its site (a run has far fewer hosts than results)
        self._examples: dict[Path, str] = {}
        self._said: set[Cause] = set()
        self._resolver: ResolverHealth | None = None

    def note(
        self, reason: str, smtp_message: str | None, smtp_code: int | None, mx_host: str | None
    ) -> list[Diagnosis]:
        """Record one address's SMTP result; returns the diagnoses newly established by
        it (to be said once). Results without an SMTP probe are ignored."""
        if not reason.startswith("smtp_") and smtp_code is None:
            return []
        if reason == "smtp_disabled":
            return []
        path = smtp_path(reason, smtp_message, smtp_code)
        site = self._sites.get(mx_host) if mx_host else "?"
        if site is None:
            site = self._sites[mx_host] = site_of(mx_host)  # type: ignore[index]
        if path in self._paths.get(site, ()) and path != "client_refused":
            return []  # nothing new at this site (the common case: read without the lock)
        with self._lock:
            if path == "client_refused" and smtp_message and path not in self._examples:
                self._examples[path] = smtp_message[:160]
            seen = self._paths.setdefault(site, set())
            if path in seen:  # nothing new at this site: the diagnoses are as they were
                return []
            if len(seen) == 1:  # the site showed only one path: no longer
                (was,) = seen
                self._only[was] -= 1
            seen.add(path)
            if len(seen) == 1:
                self._only[path] = self._only.get(path, 0) + 1
            fresh = [d for d in self._smtp_diagnoses() if d.cause not in self._said]
            self._said.update(d.cause for d in fresh)
        return fresh

    def note_result(self, result: object) -> list[Diagnosis]:
        """:meth:`note` for a :class:`~mailsift.result.VerificationResult` or a row dict."""
        if isinstance(result, dict):
            return self.note(str(result.get("reason") or ""), result.get("smtp_message"),
                             result.get("smtp_code"), result.get("mx_host"))
        return self.note(str(getattr(result, "reason", "") or ""), getattr(result, "smtp_message", None),
                         getattr(result, "smtp_code", None), getattr(result, "mx_host", None))

    def note_resolver(self, health: ResolverHealth | None) -> None:
        if health is not None and not health.ok and self._resolver is None:
            self._resolver = health

    def diagnoses(self) -> list[Diagnosis]:
        """Every cause the run's failures share so far, the resolver first."""
        with self._lock:
            out = self._smtp_diagnoses()
        if self._resolver is not None:
            out.insert(0, Diagnosis(
                "dns_resolver", 1, 1,
                RESOLVER_HELP.format(servers=self._resolver.nameservers,
                                     problem=self._resolver.problem),
            ))
        return out

    def _smtp_diagnoses(self) -> list[Diagnosis]:
        tried = len(self._paths)
        if tried < MIN_SITES:
            return []
        out: list[Diagnosis] = []
        # A site counts for a cause when that is all it ever showed in this run.
        counts = self._only
        for path, cause, text in (
            ("connect", "port25_blocked", PORT25_HELP),
            ("banner_drop", "middlebox", MIDDLEBOX_HELP),
            ("client_refused", "client_refused", REFUSED_HELP),
        ):
            n = counts.get(path, 0)  # type: ignore[call-overload]
            if path != "client_refused" and counts.get("reached", 0):
                continue  # some server was reached: port 25 itself is open
            if n >= MIN_SITES and n >= MIN_SHARE * tried:
                message = text.format(
                    n=n, port=self.smtp_port, helo=self.helo_hostname or "unset",
                    example=self._examples.get(path, "refused"),  # type: ignore[call-overload]
                )
                out.append(Diagnosis(cause, n, tried, message))  # type: ignore[arg-type]
        return out
