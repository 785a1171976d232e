"""The simulated internet: real DNS and SMTP servers on loopback for tests, benchmarks and the demo.

    from mailsift.testing import World

    with World() as world:
        world.add_domain("acme.test", mailboxes=["jane@acme.test"])
        settings = world.settings()

Nothing here is a mock: the engine speaks real DNS and SMTP to these servers.
"""

from mailsift.testing.dns_server import DnsServer
from mailsift.testing.http_server import HttpServer, Reply
from mailsift.testing.middlebox import Middlebox
from mailsift.testing.smtp_server import BEHAVIOURS, Behaviour, SmtpFarm, SmtpServer
from mailsift.testing.world import MxSpec, World

__all__ = [
    "BEHAVIOURS",
    "Behaviour",
    "DnsServer",
    "HttpServer",
    "Middlebox",
    "MxSpec",
    "Reply",
    "SmtpFarm",
    "SmtpServer",
    "World",
]
