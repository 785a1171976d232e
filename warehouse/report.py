"""The list-health report: one self-contained HTML page built from SQL over the warehouse.

``mailsift report`` and every flow run write it (``report.html`` beside the exports). The
page needs no network when viewed: its charts are inline SVG (:mod:`warehouse.charts`),
its style is inline CSS, it has no script. Every figure comes from one of the queries
below, run on the :class:`~warehouse.store.Warehouse` given (the CLI opens it read-only;
a flow passes the connection it already holds, since DuckDB lets one process open a
file in one mode only).

Sections, each a chart with an ``id`` and the table of its figures:

- ``chart-status-now`` / ``chart-reasons-now``: the newest verdict of every address;
- ``chart-status-history``: the list as it stood at the end of each run (the newest
  verdict of each address verified by then), oldest run first;
- ``chart-changes``: addresses whose newest verdict differs from the one before it;
- ``chart-worst-sources`` / ``chart-worst-domains``: invalid and unknown shares;
- ``chart-signals``: catch-all, role, disposable and free-provider shares;
- ``chart-gate-history``: every quality-gate evaluation (``quality_runs``).

Strings from data (addresses, source names, reasons) are HTML-escaped by Jinja2's
autoescape and by :class:`markupsafe.Markup` in the charts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from .charts import Bar, Segment, bar_rows, columns, legend
from .store import Warehouse

__all__ = [
    "HealthData",
    "Prefetched",
    "QUERIES",
    "RUN_INDEPENDENT",
    "SNAPSHOT",
    "STATUSES",
    "collect",
    "prefetch",
    "render",
    "write_report",
]

STATUSES: tuple[str, ...] = ("valid", "risky", "invalid", "unknown")
_STATUS_WORDS = {
    "valid": "valid: the mailbox accepts mail",
    "risky": "risky: accepted, but catch-all, role, disposable or full",
    "invalid": "invalid: the mailbox or domain does not take mail",
    "unknown": "unknown: could not tell (greylisting, timeouts, refusals of our IP)",
}
#: At most this many runs and gate evaluations are charted (the newest).
HISTORY_LIMIT = 24
#: Rows in the "worst" charts and in the list of changed addresses.
TOP_N = 10
CHANGES_LISTED = 25
#: A domain is ranked only with at least this many addresses (one-off typos would fill
#: the chart otherwise); sources are always ranked.
MIN_DOMAIN_ADDRESSES = 2

_BY_STATUS = ", ".join(
    f"count(*) FILTER (WHERE l.status = '{s}') AS n_{s}" for s in STATUSES
)

_BAD = "count(*) FILTER (WHERE l.status IN ('invalid', 'unknown'))"
_WORST = f"ORDER BY {_BAD} / count(*) DESC, count(*) DESC, name LIMIT {TOP_N}"

#: The newest verdict of every address and the one before it (``before_*``, NULL for an
#: address checked once), taken once per report (a TEMP table: nothing is written to the
#: warehouse) because every verdict query reads it. One window over ``verifications``
#: gives both: the snapshot had read ``latest_verifications`` (a window) and the changes
#: two more windows of their own (``row_number() <= 2`` joined to itself); on one DuckDB
#: thread at 10,000 addresses that was 6 + 5 + 6 ms, now 8 ms for the three.
_LATEST = """
    SELECT email, status, reason, catch_all, role_based, disposable, free_provider, verified_at,
           lead(status) OVER newest_first AS before_status,
           lead(reason) OVER newest_first AS before_reason,
           lead(verified_at) OVER newest_first AS before_at
    FROM verifications
    WINDOW newest_first AS (PARTITION BY email ORDER BY verified_at DESC, verification_id DESC)
    QUALIFY row_number() OVER newest_first = 1
"""
_SNAPSHOT_OF = f"report_latest AS {_LATEST}"
SNAPSHOT = f"CREATE OR REPLACE TEMP TABLE {_SNAPSHOT_OF}"

#: name -> SQL over the warehouse and ``report_latest`` (:data:`SNAPSHOT`). Read-only;
#: each states what one row is.
QUERIES: dict[str, str] = {
    # one row per (status, reason) of the newest verdicts: how many, and how many of them
    # carry each signal (the statuses now, the reasons now and the signal shares, summed
    # in Python over these few rows: one scan instead of three)
    "verdicts": """
        SELECT status, reason, count(*) AS n,
               count(*) FILTER (WHERE catch_all) AS catch_all,
               count(*) FILTER (WHERE role_based) AS role_based,
               count(*) FILTER (WHERE disposable) AS disposable,
               count(*) FILTER (WHERE free_provider) AS free_provider
        FROM report_latest
        GROUP BY ALL ORDER BY n DESC, reason
    """,
    # one row per finished run, the newest HISTORY_LIMIT, oldest first
    "runs": f"""
        SELECT * FROM (
            SELECT run_id, flow_name, status AS run_status, started_at,
                   coalesce(finished_at, started_at) AS as_of
            FROM runs WHERE status <> 'running'
            ORDER BY started_at DESC LIMIT {HISTORY_LIMIT}
        ) ORDER BY started_at
    """,
    # one row per (run, status, reason) of those runs: the list as it stood at the run's
    # end, i.e. the verification of each address that was its newest then. Each
    # verification is the newest from its verified_at until the next one of its address
    # (ties: the greater verification_id is the later), so one range join finds it.
    "history": f"""
        WITH r AS (
            SELECT run_id, coalesce(finished_at, started_at) AS as_of
            FROM runs WHERE status <> 'running'
            ORDER BY started_at DESC LIMIT {HISTORY_LIMIT}
        ), spans AS (
            SELECT status, reason, verified_at,
                   coalesce(lead(verified_at) OVER (
                       PARTITION BY email ORDER BY verified_at, verification_id
                   ), 'infinity'::TIMESTAMPTZ) AS until_at
            FROM verifications
        )
        SELECT r.run_id, s.status, s.reason, count(*) AS n
        FROM r JOIN spans AS s ON s.verified_at <= r.as_of AND s.until_at > r.as_of
        GROUP BY ALL
    """,
    # one row per (previous, newest) verdict pair of the addresses checked at least twice
    "changes": """
        SELECT before_status, status AS after_status, count(*) AS n
        FROM report_latest WHERE before_status IS NOT NULL GROUP BY ALL
    """,
    # one row per changed address, the newest CHANGES_LISTED
    "changed": f"""
        SELECT email, before_status, before_reason, before_at, status AS after_status,
               reason AS after_reason, verified_at AS after_at
        FROM report_latest WHERE before_status <> status
        ORDER BY after_at DESC, email LIMIT {CHANGES_LISTED}
    """,
    # one row per source file/URL among the TOP_N with the largest share of its distinct
    # addresses now invalid or unknown
    "sources": f"""
        WITH s AS (SELECT DISTINCT unnest(sources) AS source, email FROM contacts)
        SELECT s.source AS name, count(*) AS n, {_BY_STATUS}
        FROM s JOIN report_latest AS l USING (email)
        GROUP BY s.source HAVING {_BAD} > 0
        {_WORST}
    """,
    # one row per domain among the TOP_N worst (at least MIN_DOMAIN_ADDRESSES addresses)
    "domains": f"""
        SELECT c.domain AS name, count(*) AS n, {_BY_STATUS}
        FROM contacts AS c JOIN report_latest AS l USING (email)
        GROUP BY c.domain
        HAVING count(*) >= {MIN_DOMAIN_ADDRESSES} AND {_BAD} > 0
        {_WORST}
    """,
    # one row per gate evaluation (newest HISTORY_LIMIT), oldest first
    "gates": f"""
        SELECT * FROM (
            SELECT checked_at, scope, run_id, is_passed, n_rows, unknown_share,
                   max_unknown_share, failed_expectations
            FROM quality_runs ORDER BY checked_at DESC LIMIT {HISTORY_LIMIT}
        ) ORDER BY checked_at
    """,
    "totals": """
        SELECT (SELECT count(*) FROM contacts) AS n_contacts,
               (SELECT count(*) FROM report_latest) AS n_addresses,
               (SELECT count(*) FROM verifications) AS n_verifications,
               (SELECT count(*) FROM runs) AS n_runs,
               (SELECT max(started_at) FROM runs) AS last_run_at
    """,
}

#: The queries whose rows the end of a run does not change: they read only verdicts and
#: contacts, which are complete once a run's verify step is over (its end changes the
#: ``runs`` and ``quality_runs`` tables). A flow reads them while its quality gate runs.
RUN_INDEPENDENT: tuple[str, ...] = ("verdicts", "changes", "changed", "sources", "domains")

_SIGNALS = {
    "catch_all": "catch-all domain",
    "role_based": "role address",
    "disposable": "disposable provider",
    "free_provider": "free provider",
}


@dataclass(frozen=True)
class GroupShare:
    """A source or a domain: its addresses and how many are invalid or unknown now."""

    name: str
    n: int
    by_status: dict[str, int]

    @property
    def bad_share(self) -> float:
        return (self.by_status["invalid"] + self.by_status["unknown"]) / self.n if self.n else 0.0


@dataclass(frozen=True)
class HealthData:
    """Every figure of the report, as the queries returned them."""

    db_path: str
    generated_at: datetime
    totals: dict[str, Any]
    status_now: dict[str, int]
    reasons_now: list[dict[str, Any]]
    status_history: list[dict[str, Any]]  # per run: its row, n and n_<status>
    reason_history: dict[str, dict[str, int]]  # run_id -> reason -> n
    transitions: list[tuple[str, str, int]]  # (before, after, n), changed only
    n_rechecked: int
    changed: list[dict[str, Any]]  # newest changes first, at most CHANGES_LISTED
    worst_sources: list[GroupShare]
    worst_domains: list[GroupShare]
    signals: dict[str, int]
    gates: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def n_addresses(self) -> int:
        return sum(self.status_now.values())


def _groups(rows: list[dict[str, Any]]) -> list[GroupShare]:
    return [GroupShare(str(r["name"]), int(r["n"]), {s: int(r[f"n_{s}"]) for s in STATUSES})
            for r in rows]


@dataclass(frozen=True)
class Prefetched:
    """The rows of the :data:`RUN_INDEPENDENT` queries, read ahead by :func:`prefetch`
    on one warehouse connection (its TEMP snapshot kept for the other queries)."""

    rows: dict[str, list[dict[str, Any]]]


def prefetch(wh: Warehouse) -> Prefetched | None:
    """Run the :data:`RUN_INDEPENDENT` queries now, for a :func:`collect` on the same
    connection once the run has ended (a flow does it while its quality gate runs: most
    of the report's SQL is then off the run's critical path). ``None`` on PostgreSQL,
    whose report reads one snapshot of its own at :func:`collect`."""
    if wh.dialect != "duckdb":
        return None
    wh.query(SNAPSHOT)
    return Prefetched({name: wh.query(QUERIES[name]).to_dicts() for name in RUN_INDEPENDENT})


def collect(wh: Warehouse, prefetched: Prefetched | None = None) -> HealthData:
    """Run every query of :data:`QUERIES` on ``wh`` and keep the figures (those of
    ``prefetched``, read earlier on this connection by :func:`prefetch`, as they are).

    On DuckDB ``report_latest`` is a TEMP snapshot; where the warehouse takes no
    statement that creates one (PostgreSQL: ``query`` runs read-only DuckDB SQL over a
    snapshot of its own), each query that reads it has it as a CTE."""
    if wh.dialect != "duckdb":  # one snapshot of the tables for every query
        sqls = {name: _with_latest(sql) for name, sql in QUERIES.items()}
        with wh.snapshot(list(sqls.values())) as snap:  # type: ignore[attr-defined]
            return _collect(snap, sqls)
    if prefetched is None:
        wh.query(SNAPSHOT)
    else:  # prefetch's snapshot, unless something dropped it since
        wh.query(f"CREATE TEMP TABLE IF NOT EXISTS {_SNAPSHOT_OF}")
    try:
        return _collect(wh, QUERIES, prefetched)
    finally:
        wh.query("DROP TABLE IF EXISTS temp.report_latest")


def _with_latest(sql: str) -> str:
    """``sql`` with ``report_latest`` as a CTE of its own (:data:`_LATEST`), for a
    connection that cannot make the TEMP table."""
    if "report_latest" not in sql:
        return sql
    body = sql.strip()
    if body[:5].upper() == "WITH ":
        return f"WITH report_latest AS ({_LATEST}), {body[5:]}"
    return f"WITH report_latest AS ({_LATEST}) {body}"


def _collect(wh: Any, sqls: dict[str, str], prefetched: Prefetched | None = None) -> HealthData:
    """The figures, from ``wh``: a Warehouse, or a PostgreSQL warehouse's snapshot (both
    have ``query`` and ``path``), running ``sqls`` (:data:`QUERIES`, as that connection
    reads them)."""
    def _rows(name: str) -> list[dict[str, Any]]:
        if prefetched is not None and name in prefetched.rows:
            return prefetched.rows[name]
        return wh.query(sqls[name]).to_dicts()

    verdicts = _rows("verdicts")
    status_now = {s: 0 for s in STATUSES}
    signals = dict.fromkeys(("n", *_SIGNALS), 0)
    for row in verdicts:
        status_now[row["status"]] = status_now.get(row["status"], 0) + int(row["n"])
        for key in signals:
            signals[key] += int(row[key])
    runs = _rows("runs")
    for run in runs:
        run.update(n=0, **{f"n_{s}": 0 for s in STATUSES})
    by_run = {run["run_id"]: run for run in runs}
    reason_history: dict[str, dict[str, int]] = {}
    for row in _rows("history"):
        run, k = by_run[row["run_id"]], int(row["n"])
        run["n"] += k
        run[f"n_{row['status']}"] += k
        reasons = reason_history.setdefault(row["run_id"], {})
        reasons[row["reason"]] = reasons.get(row["reason"], 0) + k
    changes = _rows("changes")
    transitions = [(r["before_status"], r["after_status"], int(r["n"]))
                   for r in changes if r["before_status"] != r["after_status"]]
    return HealthData(
        db_path=wh.path,
        generated_at=datetime.now(UTC),
        totals=_rows("totals")[0],
        status_now=status_now,
        reasons_now=[{"status": r["status"], "reason": r["reason"], "n": r["n"]} for r in verdicts],
        status_history=runs,
        reason_history=reason_history,
        transitions=sorted(transitions, key=lambda t: (-t[2], t[0], t[1])),
        n_rechecked=sum(int(r["n"]) for r in changes),
        changed=_rows("changed"),
        worst_sources=_groups(_rows("sources")),
        worst_domains=_groups(_rows("domains")),
        signals=signals,
        gates=_rows("gates"),
    )


# ---------------------------------------------------------------------- formatting

def pct(part: float, whole: float) -> str:
    """``12.5 %``; ``-`` when there is no whole."""
    return f"{100 * part / whole:.1f}\u00a0%" if whole else "-"


def when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _count(n: int | float) -> str:
    return f"{int(n):,}"


def _status_segments(counts: dict[str, int], whole: int, *, shares: bool = False) -> tuple[Segment, ...]:
    return tuple(
        Segment(s, (counts[s] / whole if shares else counts[s]) if whole else 0,
                f"{s}: {_count(counts[s])} ({pct(counts[s], whole)})")
        for s in STATUSES
    )


def _charts(d: HealthData) -> dict[str, Markup]:
    n = d.n_addresses
    charts: dict[str, Markup] = {}
    charts["status_now"] = bar_rows(
        "chart-status-now",
        [Bar(s, (Segment(s, d.status_now[s], f"{s}: {_count(d.status_now[s])} ({pct(d.status_now[s], n)})"),),
             note=f"{_count(d.status_now[s])} · {pct(d.status_now[s], n)}") for s in STATUSES],
        scale=n or 1, label_width=90, title="Newest verdict of every address, by status",
    )
    charts["reasons_now"] = bar_rows(
        "chart-reasons-now",
        [Bar(r["reason"], (Segment(r["status"], r["n"], f"{r['reason']} ({r['status']}): {_count(r['n'])}"),),
             note=f"{_count(r['n'])} · {pct(r['n'], n)}") for r in d.reasons_now],
        label_width=150, title="Newest verdict of every address, by reason",
    )
    history_bars = [
        Bar(when(r["started_at"])[5:16],
            _status_segments({s: r[f"n_{s}"] for s in STATUSES}, r["n"], shares=True),
            note=_count(r["n"]))
        for r in d.status_history
    ]
    charts["status_history"] = columns(
        "chart-status-history", history_bars, scale=1.0,
        axis=[(0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")],
        title="Status mix of the list at the end of each run",
    )
    charts["changes"] = bar_rows(
        "chart-changes",
        [Bar(f"{b} \u2192 {a}", (Segment(a, k, f"{b} \u2192 {a}: {_count(k)}"),), note=_count(k))
         for b, a, k in d.transitions],
        label_width=150, title="Addresses whose newest verdict differs from the previous one",
    )
    for key, groups in (("worst_sources", d.worst_sources), ("worst_domains", d.worst_domains)):
        charts[key] = bar_rows(
            f"chart-{key.replace('_', '-')}",
            [Bar(g.name, (
                Segment("invalid", g.by_status["invalid"] / g.n,
                        f"invalid: {_count(g.by_status['invalid'])} of {_count(g.n)} ({pct(g.by_status['invalid'], g.n)})"),
                Segment("unknown", g.by_status["unknown"] / g.n,
                        f"unknown: {_count(g.by_status['unknown'])} of {_count(g.n)} ({pct(g.by_status['unknown'], g.n)})"),
             ), note=f"{pct(g.by_status['invalid'] + g.by_status['unknown'], g.n)} of {_count(g.n)}")
             for g in groups],
            scale=1.0, label_width=200, title="Invalid and unknown share",
        )
    sig_n = d.signals.get("n", 0)
    charts["signals"] = bar_rows(
        "chart-signals",
        [Bar(words, (Segment(key, d.signals[key] / sig_n if sig_n else 0,
                             f"{words}: {_count(d.signals[key])} ({pct(d.signals[key], sig_n)})"),),
             note=f"{pct(d.signals[key], sig_n)} · {_count(d.signals[key])}")
         for key, words in _SIGNALS.items()],
        scale=1.0, label_width=150, title="Shares of addresses with each signal",
    )
    gate_bars = [
        Bar(when(g["checked_at"])[5:16],
            (Segment("passed" if g["is_passed"] else "failed", g["unknown_share"] or 0.0,
                     f"{'passed' if g['is_passed'] else 'failed'}: unknown share "
                     f"{pct(g['unknown_share'] or 0, 1)} of {_count(g['n_rows'])} rows"),),
            note="passed" if g["is_passed"] else "failed")
        for g in d.gates
    ]
    limit = next((g["max_unknown_share"] for g in reversed(d.gates) if g["max_unknown_share"] is not None), None)
    top = max([limit or 0.0] + [g["unknown_share"] or 0.0 for g in d.gates] + [0.05])
    scale = min(1.0, top * 1.25)
    charts["gate_history"] = columns(
        "chart-gate-history", gate_bars, scale=scale, threshold=limit,
        threshold_label=f"largest unknown share let out: {pct(limit, 1)}" if limit is not None else "",
        axis=[(0.0, "0 %"), (scale / 2, pct(scale / 2, 1)), (scale, pct(scale, 1))],
        title="Unknown share at each quality-gate evaluation",
    )
    charts["status_legend"] = legend([(s, s) for s in STATUSES])
    charts["bad_legend"] = legend([("invalid", "invalid"), ("unknown", "unknown")])
    charts["gate_legend"] = legend([("passed", "gate passed"), ("failed", "gate failed")])
    return charts


_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(pct=lambda part, whole: pct(part, whole), when=when, count=_count)

_TEMPLATE = _ENV.from_string("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>mailsift list health · {{ d.generated_at | when }}</title>
<style>
  :root { --valid:#2f8f4e; --risky:#e0a030; --invalid:#d0453c; --unknown:#8c96a6; --ink:#1d2330; --muted:#5d6675; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", Arial, sans-serif;
         color: var(--ink); background: #f3f5f8; margin: 0; }
  header { background: #1d2330; color: #fff; padding: 18px 32px; }
  header h1 { margin: 0; font-size: 22px; }
  header p { margin: 4px 0 0; color: #c7cdd8; }
  main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
  .kpis { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; margin-bottom: 16px; }
  .kpi { background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 2px #0001; }
  .kpi b { display: block; font-size: 22px; }
  .kpi span { color: var(--muted); font-size: 12px; }
  .kpi.valid b { color: var(--valid); } .kpi.risky b { color: #b07a10; }
  .kpi.invalid b { color: var(--invalid); } .kpi.unknown b { color: #5d6675; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  section { background: #fff; border-radius: 8px; padding: 14px 18px; box-shadow: 0 1px 2px #0001; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 16px; margin: 0 0 2px; }
  p.what { color: var(--muted); margin: 0 0 8px; font-size: 12.5px; }
  svg.chart { max-width: 100%; height: auto; display: block; }
  svg text { font-size: 12px; fill: var(--ink); }
  svg text.axis, svg text.tick, svg text.value { fill: var(--muted); font-size: 11px; }
  svg .grid { stroke: #e3e7ee; } svg .baseline { stroke: #9aa3b2; }
  svg .threshold { stroke: var(--invalid); stroke-dasharray: 5 4; stroke-width: 1.5; }
  svg text.threshold-label { fill: var(--invalid); font-size: 11px; }
  .seg-valid { fill: var(--valid); } .seg-risky { fill: var(--risky); }
  .seg-invalid { fill: var(--invalid); } .seg-unknown { fill: var(--unknown); }
  .seg-passed { fill: var(--valid); } .seg-failed { fill: var(--invalid); }
  .seg-catch_all, .seg-role_based, .seg-disposable, .seg-free_provider { fill: #4f6fb0; }
  .legend { color: var(--muted); font-size: 12px; margin: 2px 0 6px; }
  .swatch { margin-right: 12px; white-space: nowrap; } .swatch svg { vertical-align: -1px; }
  details { margin-top: 6px; } summary { cursor: pointer; color: var(--muted); font-size: 12.5px; }
  table { border-collapse: collapse; width: 100%; font-size: 12.5px; margin-top: 6px; }
  th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e8ebf0; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  td.when { white-space: nowrap; }
  td.email { font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
  .empty { color: var(--muted); }
  footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
</style>
</head>
<body>
<header>
  <h1>List health</h1>
  <p>Warehouse <code id="db-path">{{ d.db_path }}</code> · generated {{ d.generated_at | when }}
     · last run {{ d.totals.last_run_at | when }}</p>
</header>
<main>
<div class="kpis" id="kpis">
  <div class="kpi"><b id="n-addresses" data-value="{{ d.n_addresses }}">{{ d.n_addresses | count }}</b><span>addresses verified</span></div>
  {% for s in statuses %}
  <div class="kpi {{ s }}"><b data-status="{{ s }}" data-value="{{ d.status_now[s] }}">{{ d.status_now[s] | pct(d.n_addresses) }}</b><span>{{ s }} · {{ d.status_now[s] | count }}</span></div>
  {% endfor %}
  <div class="kpi"><b id="n-runs" data-value="{{ d.totals.n_runs }}">{{ d.totals.n_runs | count }}</b><span>runs · {{ d.totals.n_verifications | count }} checks kept</span></div>
</div>

<div class="grid">
<section id="status-now">
  <h2>Statuses now</h2>
  <p class="what">The newest verdict of each of the {{ d.n_addresses | count }} addresses in the warehouse.</p>
  {{ charts.status_now }}
  <table id="table-status-now"><tr><th>status</th><th>meaning</th><th class="n">addresses</th><th class="n">share</th></tr>
  {% for s in statuses %}<tr data-status="{{ s }}"><td>{{ s }}</td><td>{{ words[s] }}</td><td class="n">{{ d.status_now[s] | count }}</td><td class="n">{{ d.status_now[s] | pct(d.n_addresses) }}</td></tr>{% endfor %}
  </table>
</section>

<section id="reasons-now">
  <h2>Reasons now</h2>
  <p class="what">Why each address got its verdict; the bar's colour is the status.</p>
  {{ charts.status_legend }}
  {{ charts.reasons_now }}
</section>

<section id="status-history" class="wide">
  <h2>Statuses run by run</h2>
  <p class="what">The list as it stood at the end of each run (the newest verdict of each address verified by then), oldest run first; the number under a column is the addresses then.</p>
  {{ charts.status_legend }}
  {{ charts.status_history }}
  <details><summary>figures per run</summary>
  <table id="table-status-history"><tr><th>run started</th><th>flow</th><th>run</th>{% for s in statuses %}<th class="n">{{ s }}</th>{% endfor %}<th>top reasons</th></tr>
  {% for r in d.status_history %}<tr data-run-id="{{ r.run_id }}"><td>{{ r.started_at | when }}</td><td>{{ r.flow_name }}</td><td>{{ r.run_status }}</td>
  {% for s in statuses %}<td class="n" data-status="{{ s }}" data-value="{{ r['n_' ~ s] }}">{{ r['n_' ~ s] | count }}</td>{% endfor %}
  <td>{% for reason, k in top_reasons(r.run_id) %}{{ reason }} {{ k | count }}{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>{% endfor %}
  </table></details>
</section>

<section id="changes">
  <h2>Changes since the previous check</h2>
  <p class="what">{{ d.n_rechecked | count }} addresses were checked more than once; {{ changed_total | count }} of them have a newest verdict that differs from the one before.</p>
  {{ charts.changes }}
  {% if d.changed %}
  <details{% if d.changed | length <= 8 %} open{% endif %}><summary>the {{ d.changed | length }} newest changes</summary>
  <table id="table-changes"><tr><th>address</th><th>before</th><th>now</th><th>checked</th></tr>
  {% for c in d.changed %}<tr><td class="email">{{ c.email }}</td><td>{{ c.before_status }} ({{ c.before_reason }})</td><td>{{ c.after_status }} ({{ c.after_reason }})</td><td class="when">{{ (c.after_at | when)[:16] }}</td></tr>{% endfor %}
  </table></details>
  {% endif %}
</section>

<section id="signals">
  <h2>Catch-all and role shares</h2>
  <p class="what">Shares of the newest verdicts with each signal. A catch-all domain accepts every address, so its mailboxes cannot be confirmed; a role address (info@, sales@) reaches a team, not a person.</p>
  {{ charts.signals }}
</section>

<section id="worst-sources">
  <h2>Worst sources</h2>
  <p class="what">Source files by share of their distinct addresses now invalid or unknown.</p>
  {{ charts.bad_legend }}
  {{ charts.worst_sources }}
</section>

<section id="worst-domains">
  <h2>Worst domains</h2>
  <p class="what">Domains with at least {{ min_domain }} addresses, by share now invalid or unknown.</p>
  {{ charts.bad_legend }}
  {{ charts.worst_domains }}
</section>

<section id="gate-history" class="wide">
  <h2>Quality gate, check by check</h2>
  <p class="what">The unknown share each gate evaluation saw (runs and the CI gate); the dashed line is the largest share it lets out.</p>
  {{ charts.gate_legend }}
  {{ charts.gate_history }}
  <details><summary>every evaluation</summary>
  <table id="table-gates"><tr><th>checked</th><th>scope</th><th>verdict</th><th class="n">rows</th><th class="n">unknown share</th><th>failed expectations</th></tr>
  {% for g in d.gates %}<tr data-passed="{{ 'true' if g.is_passed else 'false' }}"><td>{{ g.checked_at | when }}</td><td>{{ g.scope }}</td><td>{{ 'passed' if g.is_passed else 'failed' }}</td><td class="n">{{ g.n_rows | count }}</td><td class="n">{{ (g.unknown_share or 0) | pct(1) }}</td><td>{{ g.failed_expectations | join(', ') }}</td></tr>{% endfor %}
  </table></details>
</section>
</div>
<footer>mailsift · every figure is SQL over the warehouse (<code>warehouse/report.py</code>, <code>QUERIES</code>); this page loads nothing from the network.</footer>
</main>
</body>
</html>
""")


def render(d: HealthData) -> str:
    """The HTML page for ``d``."""

    def top_reasons(run_id: str) -> list[tuple[str, int]]:
        reasons = d.reason_history.get(run_id, {})
        return sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:4]

    return _TEMPLATE.render(
        d=d, charts=_charts(d), statuses=STATUSES, words=_STATUS_WORDS, top_reasons=top_reasons,
        changed_total=sum(n for _, _, n in d.transitions), min_domain=MIN_DOMAIN_ADDRESSES,
    )


def write_report(wh: Warehouse, out: str | os.PathLike[str],
                 prefetched: Prefetched | None = None) -> Path:
    """Collect (see :func:`collect` for ``prefetched``), render and write the page to
    ``out`` (parents made; replaced atomically)."""
    page = render(collect(wh, prefetched))  # before anything is made on disk
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path
