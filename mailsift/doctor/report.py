"""The doctor's report: one :class:`Check` per line, PASS / WARN / FAIL, rendered for a
human (one line per check, with what to do) or as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Check", "DoctorReport", "Status", "skipped"]


Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report. ``name`` is ``kind`` plus its subject (an MX host, a
    zone), ``action`` is what to do (``None`` on PASS)."""

    kind: str
    subject: str | None
    status: Status
    finding: str
    action: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind} {self.subject}" if self.subject else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "finding": self.finding,
            "action": self.action,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]
    resolver: str
    helo_hostname: str
    mail_from: str
    egress_ip: str | None

    @property
    def ok(self) -> bool:
        return all(c.status == "PASS" for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every check passed, 1 on any WARN or FAIL."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("PASS", "WARN", "FAIL")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "resolver": self.resolver,
            "helo_hostname": self.helo_hostname,
            "mail_from": self.mail_from,
            "egress_ip": self.egress_ip,
            "checks": [c.to_dict() for c in self.checks],
        }

    def render(self) -> str:
        """One line per check: status, name, finding, and ``-> fix:`` what to do."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [
            f"mailsift doctor: resolver {self.resolver}, HELO {self.helo_hostname}, "
            f"MAIL FROM {self.mail_from}"
        ]
        for c in self.checks:
            line = f"{c.status}  {c.name:<{width}}  {c.finding}"
            if c.action and c.status != "PASS":
                line += f"  -> fix: {c.action}"
            lines.append(line)
        counts = self.counts()
        tail = ", ".join(f"{counts[s]} {s}" for s in ("FAIL", "WARN", "PASS") if counts[s])
        if self.ok:
            lines.append(f"{tail}: this host can verify mail.")
        elif counts["FAIL"]:
            lines.append(f"{tail}: fix the FAIL lines first; until then SMTP-dependent "
                         "verdicts come back 'unknown'.")
        else:
            lines.append(f"{tail}: usable, but read the WARN lines.")
        return "\n".join(lines)




def skipped(
    kind: str, subject: str | None, why: str, action: str, subjects: Sequence[str] = ()
) -> Check:
    """A check that could not run; ``subjects`` (MX domains, zones) share one line."""
    which = f" ({', '.join(subjects)})" if subjects else ""
    details = {"skipped": True, "subjects": list(subjects)}
    return Check(kind, subject, "WARN", f"not checked{which}: {why}", action, details)

