"""The run summary as a person reads it: the markdown of a run's Prefect artifact.

Pure functions of the summary dict a flow returns (and keeps in ``runs.summary``): shares
in percent, steps and files named in words, every path the run read or wrote. Strings
from data (source names, paths) are escaped so that they stay text in the Prefect UI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["STEP_WORDS", "md_text", "percent", "summary_markdown"]

#: Timing keys of a run (``RunCounters.timings``) -> what the step did.
STEP_WORDS: dict[str, str] = {
    "extract_s": "reading the sources",
    "load_contacts_s": "loading the contacts into the warehouse and finding its fresh results",
    "verify_s": "verifying the addresses",
    "gate_s": "quality gate",
    "export_s": "writing the exports",
    "report_s": "writing the report",
}
#: Export keys (``tasks.steps.write_exports``) -> what the file holds.
EXPORT_WORDS: dict[str, str] = {
    "valid": "valid addresses",
    "risky": "risky addresses",
    "invalid": "invalid addresses",
    "unknown": "addresses that could not be checked",
    "no_email": "rows without an email address",
    "results": "every row with its verdict (Parquet)",
}
_STATUSES = ("valid", "risky", "invalid", "unknown")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")


def md_text(value: Any) -> str:
    """``value`` as inert markdown text: special characters backslash-escaped, line
    breaks and control characters made spaces."""
    text = "".join(" " if ord(c) < 32 or c == "\x7f" else c for c in str(value))
    return _MD_SPECIAL.sub(r"\\\1", text)


def percent(part: float, whole: float = 1.0) -> str:
    """``part / whole`` in percent with one decimal (``1.9 %``); ``-`` without a whole."""
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 60 else f"{int(value // 60)} min {value % 60:.0f} s"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The markdown of the run-summary artifact for one flow's ``summary`` dict."""
    by_status = {s: int(summary.get("by_status", {}).get(s, 0)) for s in _STATUSES}
    n = sum(by_status.values())
    gate = summary.get("gate")
    title = {"passed": "quality gate passed", "failed": "quality gate failed"}.get(gate or "", "no gate run")
    md = [f"# {summary.get('flow', 'mailsift')}: {title}", ""]  # our own flow name

    sources = list(summary.get("sources") or [])
    if summary.get("source_rows") is not None and sources:
        md.append(
            f"Read {_plural(int(summary['source_rows']), 'row')} from {_plural(len(sources), 'source')}: "
            f"**{_plural(int(summary.get('unique_addresses', n)), 'distinct address', 'distinct addresses')}**"
            + (f", {_plural(int(summary['rows_without_email']), 'row')} without an email address."
               if summary.get("rows_without_email") else ".")
        )
    else:
        md.append(f"Re-checked **{_plural(int(summary.get('unique_addresses', n)), 'address', 'addresses')}** "
                  "whose newest verdict had grown old.")
    verified, reused = int(summary.get("verified_now", 0)), int(summary.get("from_warehouse", 0))
    max_age = summary.get("max_age_days")
    reuse_words = f" (checked within the last {max_age} days)" if max_age is not None else ""
    md.append(f"Verified now: {verified:,}; reused from the warehouse: {reused:,}{reuse_words}.")
    if summary.get("failed_batches"):
        lost = int(summary.get("unverified_addresses") or 0)
        what = f" ({_plural(lost, 'address', 'addresses')})" if lost else ""
        md.append(f"**{_plural(int(summary['failed_batches']), 'batch', 'batches')}{what} failed after retries** "
                  "(or with the probe host running them); the next run verifies those addresses.")
    md += ["", "| verdict | addresses | share |", "|---|---:|---:|"]
    md += [f"| {s} | {by_status[s]:,} | {percent(by_status[s], n)} |" for s in _STATUSES]

    if gate is not None:
        limit = summary.get("max_unknown_share")
        share = summary.get("unknown_share") or 0.0
        words = f"{percent(share)} of the addresses are unknown"
        if limit is not None:
            words += f"; the gate lets out at most {percent(limit)}"
        md += ["", f"**Quality gate {gate}**: {words}."]
    if summary.get("warning"):
        md += ["", f"> **Warning:** {md_text(summary['warning'])}"]

    md += ["", "## Files", "", "| what | where |", "|---|---|"]
    md += [f"| source | {md_text(s)} |" for s in sources]
    if summary.get("warehouse"):
        md.append(f"| warehouse (DuckDB) | {md_text(summary['warehouse'])} |")
    for key, path in (summary.get("exports") or {}).items():
        md.append(f"| {md_text(EXPORT_WORDS.get(key, key))} | {md_text(path)} |")
    if summary.get("report"):
        md.append(f"| list-health report (open it in a browser) | {md_text(summary['report'])} |")

    reasons = summary.get("by_reason") or {}
    if reasons:
        md += ["", "## Reasons", "", "| reason | addresses | share |", "|---|---:|---:|"]
        md += [f"| {md_text(r).replace(chr(92) + '_', ' ')} | {k:,} | {percent(k, n)} |"
               for r, k in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]

    hooks = summary.get("webhooks")
    if hooks:
        md += ["", "## Webhooks", "",
               f"{_plural(int(hooks.get('delivered', 0)), 'batch', 'batches')} delivered, "
               f"{_plural(int(hooks.get('failed', 0)), 'batch', 'batches')} not delivered after retries"
               + (" (`mailsift webhooks retry` re-sends them)." if hooks.get("failed") else ".")]

    domains = summary.get("domains") or []
    if domains:  # what the engine's politeness cost per domain (mailsift.smtp.pacing)
        md += ["", "## Largest domains over SMTP", "",
               "| domain | addresses | connections | RCPTs | most at once | 421s | time |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        md += [f"| {md_text(d['domain'])} | {d['addresses']:,} | {d['connections']:,} | "
               f"{d['rcpts']:,} | {d['window']} | {d['refusals_421']} | {_seconds(float(d['seconds']))} |"
               for d in domains]

    timings = summary.get("timings_s") or {}
    if timings:
        md += ["", "## Time taken", "", "| step | time |", "|---|---:|"]
        md += [f"| {STEP_WORDS.get(k, md_text(k))} | {_seconds(float(v))} |" for k, v in timings.items()]
    return "\n".join(md) + "\n"
