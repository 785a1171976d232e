"""Several probe hosts: each binds its own source address, servers count per client IP.

Real loopback servers (mailsift.testing); 127.0.0.x stand for the probe hosts' egress
addresses (Linux routes all of 127.0.0.0/8 to the loopback interface).
"""

from __future__ import annotations

import socket

import pytest

from mailsift.settings import Settings
from mailsift.testing.smtp_server import Behaviour
from mailsift.testing.world import World
from mailsift.verifier import Verifier


async def verify_all(settings: Settings, emails: list[str]) -> dict[str, str]:
    async with Verifier(settings) as v:
        return {r.email: r.status async for r in v.verify_many(emails)}


async def test_each_host_binds_its_source_address(world: World) -> None:
    (server,) = world.add_domain("big.test", mailboxes=[f"u{i}@big.test" for i in range(20)])
    emails = [f"u{i}@big.test" for i in range(30)]
    by_host = {}
    for ip in ("127.0.0.2", "127.0.0.3"):
        by_host[ip] = await verify_all(world.settings(source_address=ip), emails)
    assert by_host["127.0.0.2"] == by_host["127.0.0.3"]
    assert by_host["127.0.0.2"] == {e: "valid" if int(e[1:].split("@")[0]) < 20 else "invalid" for e in emails}
    assert set(server.connections_by_ip) == {"127.0.0.2", "127.0.0.3"}


async def test_a_source_address_this_host_lacks_is_unknown_never_invalid(world: World) -> None:
    world.add_domain("big.test", mailboxes=["a@big.test"])
    got = await verify_all(world.settings(source_address="192.0.2.7"), ["a@big.test", "b@big.test"])
    assert got == {"a@big.test": "unknown", "b@big.test": "unknown"}


def test_source_address_must_be_an_ip() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Settings(source_address="probe-1.example.com")


def banner(ip: str, port: int, source: str) -> tuple[socket.socket, str]:
    sock = socket.create_connection((ip, port), timeout=5, source_address=(source, 0))
    return sock, sock.recv(512).decode()


def test_connections_over_the_per_ip_cap_get_postfix_421(world: World) -> None:
    (server,) = world.add_domain("capped.test", Behaviour(mailboxes=None, max_connections_per_ip=2))
    port = world.smtp.port
    first = [banner(server.host, port, "127.0.0.2") for _ in range(2)]
    assert all(text.startswith("220 ") for _, text in first)
    sock, text = banner(server.host, port, "127.0.0.2")  # a third from the same IP
    assert text.startswith("421 ") and "4.7.0 Error: too many connections from 127.0.0.2" in text
    sock.close()
    other, text = banner(server.host, port, "127.0.0.3")  # another IP is counted apart
    assert text.startswith("220 ")
    for s, _ in [*first, (other, "")]:
        s.close()
    assert server.max_concurrent_by_ip["127.0.0.2"] == 3 and server.connections_by_ip["127.0.0.3"] == 1


async def test_the_engine_keeps_under_a_per_ip_cap(world: World) -> None:
    emails = [f"u{i}@capped.test" for i in range(120)]
    (server,) = world.add_domain(
        "capped.test", Behaviour(max_connections_per_ip=2, latency=0.02), mailboxes=emails
    )
    settings = world.settings(
        source_address="127.0.0.4", per_domain_concurrency=2, max_per_domain_concurrency=2,
        max_rcpt_per_connection=10,
    )
    got = await verify_all(settings, emails)
    assert set(got.values()) == {"valid"}
    assert server.max_concurrent_by_ip == {"127.0.0.4": 2}


