"""Regenerate mailsift/testing/data/crm_export.csv (package data: ``mailsift demo`` reads it):
a messy CRM export whose domains live in the demo world (mailsift.testing.demo). Deterministic: `python examples/generate_crm_export.py`."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from mailsift.testing.demo import demo_mailboxes

FIRST = ["Jane", "John", "Maria", "Wei", "Aisha", "Liam", "Sofia", "Noah", "Emma", "Lucas",
         "Olivia", "Ethan", "Chloé", "Zoë", "Renée", "José"]
LAST = ["Doe", "Smith", "García", "Chen", "Khan", "O'Brien", "Rossi", "Müller", "Dubois", "Silva"]
STAGES = ["Lead", "MQL", "SQL", "Opportunity", "Customer", "Churned"]


def addresses(rng: random.Random) -> list[str]:
    out: list[str] = []
    for domain, locals_ in demo_mailboxes().items():
        out += [f"{local}@{domain}" for local in locals_]
        out += [f"{rng.choice(['old', 'former', 'x'])}.{local}@{domain}" for local in locals_[:4]]  # 550
    out += ["closed.account@acme-corp.test", "full.box@acme-corp.test"]
    out += [f"{n}@globex.test" for n in ("ceo", "finance", "m.jones", "a.patel", "k.lee", "r.diaz",
                                           "t.nguyen", "s.olsen")]
    out += [f"{n}@umbrella.test" for n in ("alice", "bob", "carol", "dave")]
    out += [f"{n}@parked-domain.test" for n in ("sales", "jim")]
    out += [f"{n}@gone-startup.test" for n in ("founder", "dev", "hello")]
    out += [f"{n}@broken-dns.test" for n in ("ops", "pat")]
    out += [f"{n}@slow-mail.test" for n in ("tom", "ann")]
    out += [f"{n}@strict-filter.test" for n in ("legal", "ben")]
    out += [f"{n}@yahoo.com" for n in ("sunny.day", "mike77", "grandma.jo")]
    out += [f"{n}@mailinator.com" for n in ("test123", "freebie")]
    out += ["jane.doe@gmial.com", "wei.chen@gmial.com", "maria.garcia@gmail.con"]
    return out


def messy(rng: random.Random, email: str, name: str) -> str:
    roll = rng.random()
    if roll < 0.08:
        return f"{name} <{email}>"
    if roll < 0.12:
        return f"mailto:{email}"
    if roll < 0.20:
        local, _, domain = email.partition("@")
        return f"{local}@{domain.upper()}"
    if roll < 0.26:
        return f"  {email}\t"
    return email


def main() -> None:
    rng = random.Random(20261129)
    rows = []
    record = 100200
    for email in addresses(rng):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):  # contacts appear in several CRM records
            record += rng.randint(1, 9)
            rows.append({
                "Record ID": str(record),
                "First Name": first,
                "Last Name": last,
                "E-mail Address": messy(rng, email, f"{first} {last}"),
                "Company": email.split("@")[1].split(".")[0].replace("-", " ").title(),
                "Lifecycle Stage": rng.choice(STAGES),
                "Notes": rng.choice(["", "", "Met at expo, Berlin", "Asked for pricing; call back",
                                     'Said "maybe next quarter"', "Line one\nline two"]),
            })
    for bad in ["john.doe@", "not an email", "jane@@acme-corp.test", "", "", "  ",
                "info@acme-corp.test, sales@acme-corp.test"]:
        record += 3
        rows.append({"Record ID": str(record), "First Name": "?", "Last Name": "?",
                     "E-mail Address": bad, "Company": "", "Lifecycle Stage": "Lead", "Notes": "imported"})
    rng.shuffle(rows)
    path = Path(__file__).resolve().parents[1] / "mailsift" / "testing" / "data" / "crm_export.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as fh:  # Excel-style: BOM + CRLF
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
