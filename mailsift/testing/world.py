"""A simulated internet: one authoritative DNS server and a farm of SMTP servers on
loopback, with domains whose mail behaves as asked.

    with World() as world:
        world.add_domain("acme.test", mailboxes=["jane@acme.test"])
        world.add_domain("catchall.test", behaviour="catch_all")
        world.add_domain("dead.test", dns="nxdomain")
        settings = world.settings()          # Settings pointing the engine at this world
        env = world.env()                    # the same as MAILSIFT_* variables

Every SMTP server listens on the same port (the engine uses one port for all MX hosts)
on its own 127.0.x.y address, so each MX host name resolves, through the world's DNS,
to a distinct server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from mailsift.settings import Settings
from mailsift.testing.dns_server import DnsServer
from mailsift.testing.middlebox import Middlebox, MiddleboxMode
from mailsift.testing.smtp_server import BEHAVIOURS, Behaviour, SmtpFarm, SmtpServer

__all__ = ["World", "MxSpec", "DnsMode"]

DnsMode = Literal["mx", "implicit", "null_mx", "no_mail", "nxdomain", "servfail", "timeout"]


@dataclass(frozen=True)
class MxSpec:
    """One MX host of a domain: its preference, and what its SMTP server does
    (``None``: nothing listens there, connections are refused)."""

    preference: int = 10
    behaviour: Behaviour | str | None = "accept"


class World:
    def __init__(self, *, smtp_port: int | None = None) -> None:
        self.dns = DnsServer()
        self.smtp = SmtpFarm(port=smtp_port)
        self._ips = _loopback_ips()
        self.servers: dict[str, list[SmtpServer]] = {}
        self.hosts: dict[str, str] = {}  # MX host name -> IP
        self._server_at: dict[str, SmtpServer] = {}  # MX host name -> its server
        self.middleboxes: list[Middlebox] = []
        self._started = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> World:
        if not self._started:
            self.dns.start()
            self.smtp.start()
            for box in self.middleboxes:
                box.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            for box in self.middleboxes:
                box.stop()
            self.smtp.stop()
            self.dns.stop()
            self._started = False

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building ---------------------------------------------------------------------

    def add_domain(
        self,
        domain: str,
        behaviour: Behaviour | str = "accept",
        *,
        mailboxes: Iterable[str] = (),
        rcpt_replies: Mapping[str, tuple[int, str]] | None = None,
        dns: DnsMode = "mx",
        mx: Sequence[MxSpec] | None = None,
        mx_names: Sequence[str] | None = None,
        **overrides: Any,
    ) -> list[SmtpServer]:
        """Add a domain and the SMTP servers behind it.

        ``behaviour`` is a :data:`BEHAVIOURS` preset name or a :class:`Behaviour`;
        ``mailboxes`` (full addresses) and ``rcpt_replies``/``overrides`` refine it.
        ``mx`` lists several MX hosts (e.g. a dead primary and a working secondary);
        ``mx_names`` names them (e.g. ``aspmx.l.google.com`` for provider detection).
        ``dns`` picks what the DNS says instead of MX records.
        """
        domain = domain.lower().rstrip(".")

        def refine(value: Behaviour | str) -> Behaviour:
            return _refine(_behaviour(value), mailboxes, rcpt_replies, overrides)

        base = refine(behaviour)
        if dns in ("nxdomain",):
            return []
        if dns in ("servfail", "timeout"):
            self.dns.add_name(domain)
            self.dns.set_failure(domain, dns)
            return []
        if dns == "null_mx":
            self.dns.add_null_mx(domain)
            return []
        if dns == "no_mail":
            self.dns.add_name(domain)
            return []
        if dns == "implicit":
            ip = next(self._ips)
            self.dns.add_a(domain, ip)
            server = self.smtp.add(ip, base)
            self.servers[domain] = [server]
            return [server]

        specs = list(mx) if mx is not None else [MxSpec(10, base)]
        names = list(mx_names) if mx_names else [f"mx{n}.{domain}" for n in range(1, len(specs) + 1)]
        exchanges, servers = [], []
        for spec, name in zip(specs, names, strict=True):
            exchanges.append((spec.preference, name))
            if name in self.hosts:  # a shared MX host: one server serves many domains
                shared = self._server_at.get(name)
                if shared is not None and shared.behaviour.mailboxes is not None:
                    boxes = frozenset(m.lower() for m in mailboxes)
                    shared.behaviour = replace(shared.behaviour, mailboxes=shared.behaviour.mailboxes | boxes)
                continue
            ip = next(self._ips)
            self.hosts[name] = ip
            self.dns.add_a(name, ip)
            if spec.behaviour is not None:
                here = base if spec.behaviour is base else refine(spec.behaviour)
                server = self.smtp.add(ip, here)
                self._server_at[name] = server
                servers.append(server)
        self.dns.add_mx(domain, exchanges)
        self.servers[domain] = servers
        return servers

    def add_middlebox(self, domain: str, mode: MiddleboxMode = "close") -> Middlebox:
        """Give ``domain`` one MX host behind a port-25 middlebox (see
        :mod:`mailsift.testing.middlebox`): the TCP connection is accepted on the SMTP
        port and then closed (``close``), reset (``reset``) or held silent (``silent``)
        before any banner."""
        domain = domain.lower().rstrip(".")
        name = f"mx1.{domain}"
        ip = next(self._ips)
        box = Middlebox([ip], port=self.smtp.port, mode=mode)
        if self._started:
            box.start()
        self.middleboxes.append(box)
        self.hosts[name] = ip
        self.dns.add_a(name, ip)
        self.dns.add_mx(domain, [(10, name)])
        return box

    # -- pointing the engine at it ----------------------------------------------------

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {
            "MAILSIFT_DNS_NAMESERVERS": self.dns.nameserver,
            "MAILSIFT_SMTP_PORT": str(self.smtp.port),
            "MAILSIFT_ALLOW_TEST_DOMAINS": "true",
            "MAILSIFT_DNS_TIMEOUT": "1",
            "MAILSIFT_SMTP_TIMEOUT": "2",
            "MAILSIFT_HELO_HOSTNAME": "probe.mailsift.test",
            "MAILSIFT_MAIL_FROM": "verify@mailsift.test",
            "MAILSIFT_SMTP_RECONNECT_DELAY": "0.05",
            "MAILSIFT_ALLOW_PRIVATE_NETWORKS": "true",  # the world's servers are on loopback
        }
        env.update({f"MAILSIFT_{k.upper()}": str(v) for k, v in overrides.items()})
        return env

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "dns_nameservers": [self.dns.nameserver],
            "smtp_port": self.smtp.port,
            "allow_test_domains": True,
            "dns_timeout": 1.0,
            "smtp_timeout": 2.0,
            "helo_hostname": "probe.mailsift.test",
            "mail_from": "verify@mailsift.test",
            "smtp_reconnect_delay": 0.05,
            "allow_private_networks": True,  # the world's servers are on loopback
        }
        values.update(overrides)
        return Settings(**values)

    @property
    def transcript(self) -> list[str]:
        """Every SMTP command line any server of this world received."""
        return [line for server in self.smtp.servers for line in server.transcript]


def _behaviour(value: Behaviour | str | None) -> Behaviour:
    if isinstance(value, Behaviour):
        return value
    if value is None:
        raise ValueError("no behaviour")
    try:
        return BEHAVIOURS[value]
    except KeyError:
        raise ValueError(f"unknown behaviour {value!r}; one of {sorted(BEHAVIOURS)}") from None


def _refine(
    base: Behaviour,
    mailboxes: Iterable[str],
    rcpt_replies: Mapping[str, tuple[int, str]] | None,
    overrides: Mapping[str, Any],
) -> Behaviour:
    changes: dict[str, Any] = dict(overrides)
    boxes = frozenset(m.lower() for m in mailboxes)
    if boxes and base.mailboxes is not None:
        changes["mailboxes"] = base.mailboxes | boxes
    if rcpt_replies:
        changes["rcpt_replies"] = {**base.rcpt_replies, **{k.lower(): v for k, v in rcpt_replies.items()}}
    return replace(base, **changes) if changes else base


def _loopback_ips() -> itertools.Iterator[str]:
    """127.0.1.1, 127.0.1.2, ... (127.0.0.x is left to other local services)."""
    return (f"127.0.{b}.{c}" for b in range(1, 255) for c in range(1, 255))
