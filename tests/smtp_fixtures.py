"""Helpers for the SMTP probe tests: servers of a real :class:`SmtpFarm` on fresh
127.42.x.y loopback addresses, and probers pointed at them through settings.

MX hosts are IP literals (the real :class:`DnsResolver` passes them through without a
query) except where a test serves names from a real :class:`DnsServer`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from mailsift.dns import DnsResolver
from mailsift.settings import Settings
from mailsift.smtp import SmtpProber
from mailsift.testing.smtp_server import BEHAVIOURS, Behaviour, SmtpFarm, SmtpServer

__all__ = ["INJECTED", "Net"]

#: A CR/LF injection attempt; no transcript may ever hold its tail as a line of its own.
INJECTED = "a@x.test\r\nDATA"

_ips = (f"127.42.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def _verbs(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[0].split(":", 1)[0].strip().upper() for line in lines]


class Net:
    """Hands out servers on fresh loopback IPs of one farm and probers aimed at them."""

    def __init__(self, farm: SmtpFarm) -> None:
        self.farm = farm
        self.servers: list[SmtpServer] = []

    def server(self, behaviour: str | Behaviour = "accept", **changes: Any) -> SmtpServer:
        base = BEHAVIOURS[behaviour] if isinstance(behaviour, str) else behaviour
        if "mailboxes" in changes and changes["mailboxes"] is not None:
            changes["mailboxes"] = frozenset(changes["mailboxes"])
        server = self.farm.add(next(_ips), dataclasses.replace(base, **changes))
        self.servers.append(server)
        return server

    def dead_ip(self) -> str:
        """A loopback address where nothing listens: connections are refused."""
        return next(_ips)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            # Never the system resolver: nothing here may leave the machine.
            "dns_nameservers": ["127.0.0.1:9"],
            "dns_timeout": 0.5,
            "smtp_port": self.farm.port,
            "smtp_timeout": 1.0,
            "helo_hostname": "probe.mailsift.test",
            "mail_from": "verify@mailsift.test",
            "allow_test_domains": True,
            "allow_private_networks": True,  # the servers are on loopback
            "smtp_reconnect_delay": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    def prober(self, **overrides: Any) -> SmtpProber:
        settings = self.settings(**overrides)
        return SmtpProber(settings, DnsResolver(settings))

    def check_never_data(self) -> None:
        for server in self.servers:
            verbs = _verbs(server.transcript)
            assert "DATA" not in verbs, f"DATA sent to {server.host}: {server.transcript}"
            assert not any(line.strip().upper() == "DATA" for line in server.transcript)
