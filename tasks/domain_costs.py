"""What each domain cost a run, reported by the verify batches wherever they ran.

The engine counts per domain what its probing cost (connections, RCPTs, the window
reached, 421s, seconds: :class:`mailsift.smtp.pacing.DomainStats`), in the memory of the
process that runs it. Batches run in the flow's threads, or on Dask workers on other
probe hosts (:mod:`flows.scale_out`), so the flow cannot read those counters itself: each
batch reports its domains' counters as it started and as it ended, under the name of the
engine that ran it (:func:`batch_costs`), and the flow sums them (:class:`DomainCosts`).

Per engine and domain the run's cost is the last report's counters less the first's (the
counters only grow; batches of one domain overlap on one engine, so per-batch deltas
would count the overlap twice). Across engines (probe hosts) counts add up; the window
is the largest one host reached, the time the longest one host took.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from mailsift.settings import Settings
from tasks.verify import engine_for, run_on_engine_loop

__all__ = ["DomainCosts", "batch_costs", "batch_domains", "domain_counters"]

#: Told apart from every other process's engines (pids repeat across hosts).
_PROCESS = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"

#: Counters that add up (per engine: last less first; across engines: summed).
_COUNTS = ("addresses", "connections", "rcpts", "refusals_421")


def batch_domains(emails: Iterable[str]) -> list[str]:
    """The domain names the engine may count ``emails`` under: each address's domain in
    lower case, and its IDNA (A-label) form when that differs."""
    names: set[str] = set()
    for email in emails:
        if not isinstance(email, str) or "@" not in email:
            continue
        domain = email.rpartition("@")[2].strip().lower().rstrip(".")
        if not domain:
            continue
        names.add(domain)
        if not domain.isascii():
            try:
                names.add(domain.encode("idna").decode("ascii"))
            except UnicodeError:
                pass
    return sorted(names)


def domain_counters(settings: Settings, domains: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The engine's counters (for ``settings``, in this process) of those of ``domains`` it
    has probed; empty for backends without SMTP."""
    prober = getattr(engine_for(settings), "prober", None)
    stats = getattr(prober, "domain_stats", None)
    if not stats:
        return {}
    wanted = set(domains)

    async def copy() -> dict[str, dict[str, Any]]:  # on the engine's loop, which writes them
        return {d: st.as_dict() for d, st in list(stats.items()) if d in wanted}

    return run_on_engine_loop(copy()).result()


def batch_costs(settings: Settings, before: dict[str, dict[str, Any]],
                after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A batch's report: its domains' counters at its start and end, and which engine
    (process, settings) they belong to."""
    return {"engine": f"{_PROCESS}/{id(engine_for(settings))}", "before": before, "after": after}


class DomainCosts:
    """The run's per-domain costs, from its batches' reports (:func:`batch_costs`)."""

    def __init__(self) -> None:
        #: (engine, domain) -> [the smallest counters at a batch start, the latest end]
        self._spans: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def add(self, report: Mapping[str, Any] | None) -> None:
        if not report:
            return
        engine, before = str(report["engine"]), report.get("before") or {}
        for domain, end in (report.get("after") or {}).items():
            start = before.get(domain) or {k: 0 for k in (*_COUNTS, "seconds")}
            span = self._spans.get((engine, domain))
            if span is None:
                self._spans[(engine, domain)] = [dict(start), dict(end)]
                continue
            first, last = span
            for key in (*_COUNTS, "seconds"):
                first[key] = min(first.get(key, 0), start.get(key, 0))
            if end["rcpts"] + end["connections"] + end["addresses"] >= (
                last["rcpts"] + last["connections"] + last["addresses"]
            ):
                span[1] = dict(end)

    def rows(self, top: int = 10) -> list[dict[str, Any]]:
        """One row per domain (DomainStats.as_dict's keys, plus ``hosts``: the engines that
        probed it), the ``top`` largest by addresses first."""
        by_domain: dict[str, dict[str, Any]] = {}
        for (_engine, domain), (first, last) in self._spans.items():
            cost = {k: last[k] - first.get(k, 0) for k in _COUNTS}
            seconds = round(float(last["seconds"]) - float(first.get("seconds", 0.0)), 3)
            if cost["addresses"] <= 0:
                continue
            row = by_domain.get(domain)
            if row is None:
                by_domain[domain] = {**last, **cost, "seconds": seconds, "hosts": 1}
                continue
            for key in _COUNTS:
                row[key] += cost[key]
            row["seconds"] = max(row["seconds"], seconds)
            row["window"] = max(row["window"], last["window"])
            caps = [c for c in (row["window_cap"], last["window_cap"]) if c is not None]
            row["window_cap"] = min(caps) if caps else None
            row["is_slow"] = bool(row["is_slow"] or last["is_slow"])
            row["is_budget_spent"] = bool(row["is_budget_spent"] or last["is_budget_spent"])
            row["hosts"] += 1
        rows = sorted(by_domain.values(), key=lambda r: (-r["addresses"], r["domain"]))
        return rows[:top]
