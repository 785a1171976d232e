"""The demo world: the domains of the demo's CRM export (:func:`demo_export`, package data
``mailsift/testing/data/crm_export.csv``) and what their mail does.

``mailsift demo`` starts this world in-process and runs the real pipeline against it, so
every verdict path shows up on a laptop whose port 25 is closed.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from mailsift.testing.world import MxSpec, World

__all__ = ["DEMO_DOMAINS", "demo_export", "demo_mailboxes", "populate_demo_world"]

#: domain -> (what its mail does, in words), for the README and the demo's output.
DEMO_DOMAINS: dict[str, str] = {
    "acme-corp.test": "accepts its listed mailboxes, 550 5.1.1 for the rest; one disabled, one full",
    "initech.test": "accepts listed mailboxes over STARTTLS (self-signed certificate)",
    "globex.test": "catch-all: accepts every RCPT",
    "umbrella.test": "greylists every RCPT (450 4.2.0)",
    "stark-industries.test": "primary MX refuses connections, secondary MX accepts",
    "wayne-enterprises.test": "no MX record, mail goes to its A record (implicit MX)",
    "parked-domain.test": "null MX (RFC 7505): takes no mail",
    "gone-startup.test": "does not exist (NXDOMAIN)",
    "broken-dns.test": "its DNS answers SERVFAIL",
    "slow-mail.test": "tarpit: the SMTP banner never comes in time",
    "strict-filter.test": "refuses our sender at MAIL FROM (550 5.7.1 ... Spamhaus)",
    "gmail.com": "Google MX hosts (aspmx.l.google.com), listed mailboxes",
    "outlook.com": "Microsoft MX hosts, listed mailboxes",
    "yahoo.com": "Yahoo MX hosts: accepts every RCPT (an accept-all provider rule)",
    "mailinator.com": "disposable: never contacted",
    "gmial.com": "a typo of gmail.com that does not exist",
}


def demo_mailboxes() -> dict[str, list[str]]:
    """The mailboxes that exist in the demo world, by domain."""
    people = ["jane.doe", "john.smith", "maria.garcia", "wei.chen", "aisha.khan", "liam.obrien",
              "sofia.rossi", "noah.muller", "emma.dubois", "lucas.silva", "olivia.brown",
              "ethan.jones", "chloe.martin", "zoe.bernard", "renee.petit", "jose.santos",
              "amara.okafor", "kenji.tanaka", "ingrid.larsen", "pablo.ruiz", "fatima.zahra",
              "oscar.nilsson", "mei.lin", "tomas.novak", "hana.kim", "david.cohen"]
    return {
        "acme-corp.test": people[:18] + ["info", "sales", "support", "closed.account", "full.box"],
        "initech.test": people[2:16],
        "stark-industries.test": people[:12],
        "wayne-enterprises.test": people[4:16],
        "gmail.com": people + ["info"],
        "outlook.com": people[:16],
    }


def populate_demo_world(world: World) -> World:
    boxes = {d: [f"{local}@{d}" for local in locals_] for d, locals_ in demo_mailboxes().items()}
    world.add_domain(
        "acme-corp.test",
        mailboxes=boxes["acme-corp.test"],
        rcpt_replies={
            "closed.account@acme-corp.test": (550, "5.2.1 Mailbox disabled, not accepting messages"),
            "full.box@acme-corp.test": (552, "5.2.2 Mailbox full"),
        },
    )
    world.add_domain("initech.test", "starttls", mailboxes=boxes["initech.test"])
    world.add_domain("globex.test", "catch_all")
    world.add_domain("umbrella.test", "greylist")
    world.add_domain(
        "stark-industries.test",
        mailboxes=boxes["stark-industries.test"],
        mx=[MxSpec(10, None), MxSpec(20, "accept")],
    )
    world.add_domain("wayne-enterprises.test", mailboxes=boxes["wayne-enterprises.test"], dns="implicit")
    world.add_domain("parked-domain.test", dns="null_mx")
    world.add_domain("broken-dns.test", dns="servfail")
    world.add_domain("slow-mail.test", "tarpit")
    world.add_domain("strict-filter.test", "block_mail_from")
    world.add_domain(
        "gmail.com",
        mailboxes=boxes["gmail.com"],
        mx=[MxSpec(5, "accept"), MxSpec(10, "accept")],
        mx_names=["gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.google.com"],
    )
    world.add_domain(
        "outlook.com",
        mailboxes=boxes["outlook.com"],
        mx_names=["outlook-com.olc.protection.outlook.com"],
    )
    world.add_domain("yahoo.com", "catch_all", mx_names=["mta5.am0.yahoodns.net"])
    # gone-startup.test, gmial.com: not in DNS at all (NXDOMAIN); mailinator.com: disposable
    return world


def demo_export() -> Path:
    """The demo's messy CRM export (259 rows: BOM, CRLF, ``Name <addr>``, ``mailto:``...),
    shipped inside the package so ``mailsift demo`` works from any directory."""
    resource = files("mailsift.testing").joinpath("data", "crm_export.csv")
    with as_file(resource) as path:  # a real file for a normal install (wheel or checkout)
        return Path(path)
