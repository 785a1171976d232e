"""The list-health report as a list owner opens it: a real warehouse (built through the
store API), the page written by ``warehouse.report``, rendered by headless Chromium from
Debian's packages; the rendered DOM must hold the charts and the figures SQL gives."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mailsift.result import Checks, VerificationResult
from tests.pg_fixtures import pg_server, pg_url
from warehouse import Warehouse, results_frame
from warehouse.report import collect, prefetch, write_report

__all__ = ["pg_server", "pg_url"]  # the fixtures, imported for pytest

NOW = datetime.now(UTC).replace(microsecond=0)
EVIL_SOURCE = 'crm/<script>alert("src")</script>&co.csv'
EVIL_EMAIL = 'x<img src=x onerror=alert(1)>@evil.test'
CHARTS = ("chart-status-now", "chart-reasons-now", "chart-status-history", "chart-changes",
          "chart-worst-sources", "chart-worst-domains", "chart-signals", "chart-gate-history")


# -- a warehouse with history: two runs a month apart, a gate failure, changed verdicts --

SCORES = {"valid": 0.95, "risky": 0.5, "invalid": 0.05, "unknown": 0.4}


def result(email: str, status: str, reason: str, at: datetime, **checks: bool) -> VerificationResult:
    return VerificationResult(email=email, status=status, score=SCORES[status], reason=reason,
                              checks=Checks(**checks), verified_at=at)


def load_run(wh: Warehouse, run_id: str, flow: str, at: datetime, sources: dict[str, list[str]],
             results: list[VerificationResult]) -> None:
    wh.start_run(run_id, flow, "local", at)
    rows = [(src, i, email) for src, emails in sources.items() for i, email in enumerate(emails, 1)]
    if rows:
        wh.upsert_contacts(pl.DataFrame(rows, schema={"source": pl.String, "row_number": pl.Int64,
                                                      "email": pl.String}, orient="row")
                           .with_columns(record_id=pl.lit(None, pl.String)), run_id=run_id, seen_at=at)
    wh.append_verifications(results_frame(results), run_id=run_id, backend="local")
    wh.finish_run(run_id, "completed", at + timedelta(minutes=2))


@pytest.fixture(scope="module")
def warehouse_file(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("report") / "wh.duckdb"
    fill(db)
    return db


def fill(target: Path | str) -> None:
    """Two runs a month apart, their gates and a warehouse-wide gate."""
    t1, t2 = NOW - timedelta(days=40), NOW - timedelta(days=3)
    good = [f"p{i}@good.test" for i in range(10)]
    bad = [f"gone{i}@bad.test" for i in range(3)] + ["slow@bad.test"]
    team = ["info@corp.test", "a@corp.test", "b@corp.test"]
    with Warehouse.open(target) as wh:
        first = ([result(e, "valid", "accepted", t1, free_provider=True) for e in good]
                 + [result(e, "invalid", "mailbox_not_found", t1) for e in bad[:3]]
                 + [result("slow@bad.test", "unknown", "greylisted", t1),
                    result(EVIL_EMAIL, "unknown", "dns_error", t1),
                    result("info@corp.test", "risky", "role_based", t1, role_based=True),
                    result("a@corp.test", "risky", "catch_all", t1, catch_all=True),
                    result("b@corp.test", "risky", "catch_all", t1, catch_all=True)])
        load_run(wh, "run-1", "verify-crm-exports", t1,
                 {"crm/clean.csv": good + team, EVIL_SOURCE: bad + [EVIL_EMAIL, "p0@good.test"]}, first)
        wh.record_quality_run(run_id="run-1", scope="run", checked_at=t1, is_passed=True, n_rows=18,
                              unknown_share=1 / 18, max_unknown_share=0.2)
        # a month later: two mailboxes closed, the greylisted one answered
        second = ([result(e, "valid", "accepted", t2, free_provider=True) for e in good[2:5]]
                  + [result(e, "invalid", "mailbox_not_found", t2) for e in good[:2]]
                  + [result("slow@bad.test", "valid", "accepted", t2),
                     result(EVIL_EMAIL, "invalid", "syntax", t2)])
        load_run(wh, "run-2", "reverify-stale", t2, {}, second)
        wh.record_quality_run(run_id="run-2", scope="run", checked_at=t2, is_passed=False, n_rows=6,
                              unknown_share=0.25, max_unknown_share=0.2,
                              failed_expectations=["unknown_share_within_threshold"])
        wh.record_quality_run(scope="warehouse", checked_at=t2 + timedelta(hours=1), is_passed=True,
                              n_rows=18, unknown_share=0.0, max_unknown_share=0.2)


def test_the_shared_postgresql_warehouse_gives_the_same_report(warehouse_file: Path, pg_url: str) -> None:
    # On PostgreSQL every query of the report reads one snapshot of the tables (copied
    # once, not once per query): its figures are the DuckDB file's, to the last count.
    fill(pg_url)
    with Warehouse.open(warehouse_file, read_only=True) as wh:
        local = collect(wh)
    with Warehouse.open(pg_url) as wh:
        shared = collect(wh)
    assert local.n_addresses == 18
    for name in ("totals", "status_now", "reasons_now", "status_history", "reason_history",
                 "transitions", "n_rechecked", "changed", "worst_sources", "worst_domains",
                 "signals", "gates"):
        assert getattr(shared, name) == getattr(local, name), name


def test_a_runs_report_read_partly_while_its_gate_ran_shows_the_run_as_it_ended(
        warehouse_file: Path, tmp_path: Path) -> None:
    # A flow reads the report's verdict figures while its quality gate runs, and the rest
    # once the run has ended: the page must equal what `mailsift report` reads afterwards,
    # this run's end and its gate included.
    db = tmp_path / "wh.duckdb"
    shutil.copy(warehouse_file, db)
    at = NOW - timedelta(minutes=5)
    with Warehouse.open(db) as wh:
        wh.start_run("run-3", "verify-crm-exports", "local", at)
        wh.upsert_contacts(pl.DataFrame({"source": ["crm/new.csv"] * 2, "row_number": [1, 2],
                                         "email": ["p5@good.test", "new@corp.test"],
                                         "record_id": [None, None]},
                                        schema_overrides={"record_id": pl.String}),
                           run_id="run-3", seen_at=at)
        wh.append_verifications(results_frame([
            result("p5@good.test", "invalid", "mailbox_not_found", at),
            result("new@corp.test", "risky", "catch_all", at, catch_all=True)]),
            run_id="run-3", backend="local")
        early = prefetch(wh)  # the gate runs meanwhile
        assert early is not None
        wh.record_quality_run(run_id="run-3", scope="run", checked_at=at, is_passed=True, n_rows=2,
                              unknown_share=0.0, max_unknown_share=0.2)
        wh.finish_run("run-3", "completed", at + timedelta(minutes=1))
        in_run = collect(wh, early)
    with Warehouse.open(db, read_only=True) as wh:
        after = collect(wh)
    assert in_run.status_history[-1]["run_id"] == "run-3" and in_run.gates[-1]["run_id"] == "run-3"
    assert ("valid", "invalid", 3) in in_run.transitions  # p0, p1 at run-2; p5 now
    for name in ("totals", "status_now", "reasons_now", "status_history", "reason_history",
                 "transitions", "n_rechecked", "changed", "worst_sources", "worst_domains",
                 "signals", "gates"):
        assert getattr(in_run, name) == getattr(after, name), name


def sql(db: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(query).fetchall()


# -- a small DOM from Chromium's --dump-dom ---------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.text_parts: list[str] = []

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def by_id(self, ident: str) -> Node:
        (node,) = self.find_all(id=ident)
        return node

    @property
    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text for c in self.children)

    def value(self) -> float:
        return float(self.attrs["data-value"] or "nan")


class DomBuilder(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in self.VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        node = self.cur
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.cur = node.parent

    def handle_data(self, data):
        self.cur.text_parts.append(data)


def parse(html: str) -> Node:
    builder = DomBuilder()
    builder.feed(html)
    return builder.root


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def headless(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    binary = chromium()
    assert binary
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp / 'chromium-profile'}", *args, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def rendered(warehouse_file: Path, tmp_path_factory) -> tuple[Node, Path]:
    """The page written from the warehouse (read-only), as Chromium's DOM and a screenshot."""
    if chromium() is None:
        pytest.skip("headless Chromium is not installed")
    tmp = tmp_path_factory.mktemp("render")
    with Warehouse.open(warehouse_file, read_only=True) as wh:
        page = write_report(wh, tmp / "report.html")
    dom = headless(page, tmp, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = headless(page, tmp, "--window-size=1280,1800", f"--screenshot={tmp / 'report.png'}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    return parse(dom.stdout), tmp / "report.png"


# -- the tests --------------------------------------------------------------------------

@needs_chromium
def test_chromium_renders_every_chart_and_a_screenshot(rendered) -> None:
    dom, png = rendered
    for ident in CHARTS:
        svg = dom.by_id(ident)
        assert svg.tag == "svg" and "chart" in svg.attrs["class"], ident
        assert svg.find_all("rect"), f"{ident} draws nothing"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 1800)


@needs_chromium
def test_statuses_and_reasons_now_match_sql(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    expected = dict(sql(warehouse_file, "SELECT status, count(*) FROM latest_verifications GROUP BY 1"))
    assert expected == {"valid": 9, "invalid": 6, "risky": 3}  # the fixture, as a reader would count it
    bars = {r.attrs["data-key"]: r.value() for r in dom.by_id("chart-status-now").find_all("rect")}
    kpis = {b.attrs["data-status"]: b.value() for b in dom.by_id("kpis").find_all("b") if "data-status" in b.attrs}
    for status in ("valid", "risky", "invalid", "unknown"):
        assert bars[status] == kpis[status] == expected.get(status, 0), status
    assert dom.by_id("n-addresses").value() == 18
    assert "50.0\u00a0%" in dom.by_id("kpis").text  # valid 9 of 18, in percent

    reasons = dict(sql(warehouse_file, "SELECT reason, count(*) FROM latest_verifications GROUP BY 1"))
    drawn = {g.attrs["data-label"]: g.find_all("rect")[0].value()
             for g in dom.by_id("chart-reasons-now").find_all("g", **{"class": "bar"})}
    assert drawn == reasons


@needs_chromium
def test_history_per_run_is_the_list_as_it_stood_after_each_run(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    runs = sql(warehouse_file, "SELECT run_id, finished_at FROM runs ORDER BY started_at")
    columns = dom.by_id("chart-status-history").find_all("g", **{"class": "bar"})
    assert len(columns) == len(runs) == 2
    table = dom.by_id("table-status-history")
    for run_id, finished_at in runs:
        expected = dict(sql(warehouse_file, f"""
            SELECT status, count(*) FROM (
                SELECT email, arg_max(status, verified_at) AS status FROM verifications
                WHERE verified_at <= TIMESTAMPTZ '{finished_at.isoformat()}' GROUP BY email)
            GROUP BY status"""))
        (row,) = table.find_all("tr", data_run_id=run_id)
        cells = {c.attrs["data-status"]: c.value() for c in row.find_all("td") if "data-status" in c.attrs}
        assert cells == {s: expected.get(s, 0) for s in ("valid", "risky", "invalid", "unknown")}, run_id
    # the columns are shares of the list then: each stacks up to 100 %
    for column in columns:
        assert sum(r.value() for r in column.find_all("rect")) == pytest.approx(1.0)


@needs_chromium
def test_verdict_changes_since_the_previous_check(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    expected = {f"{before} \u2192 {after}": n for before, after, n in sql(warehouse_file, """
        SELECT previous, status, count(*) FROM (
            SELECT email, status,
                   lag(status) OVER (PARTITION BY email ORDER BY verified_at) AS previous,
                   row_number() OVER (PARTITION BY email ORDER BY verified_at DESC) AS k
            FROM verifications)
        WHERE k = 1 AND previous <> status GROUP BY ALL""")}
    assert expected == {"valid \u2192 invalid": 2, "unknown \u2192 valid": 1, "unknown \u2192 invalid": 1}
    drawn = {g.attrs["data-label"]: g.find_all("rect")[0].value()
             for g in dom.by_id("chart-changes").find_all("g", **{"class": "bar"})}
    assert drawn == expected
    listed = {tr.find_all("td")[0].text for tr in dom.by_id("table-changes").find_all("tr")[1:]}
    assert listed == {"p0@good.test", "p1@good.test", "slow@bad.test", EVIL_EMAIL}


@needs_chromium
def test_worst_sources_and_domains_by_invalid_and_unknown_share(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    shares = sql(warehouse_file, """
        WITH s AS (SELECT DISTINCT unnest(sources) AS source, email FROM contacts)
        SELECT source, avg(CASE WHEN status IN ('invalid', 'unknown') THEN 1 ELSE 0 END) AS bad
        FROM s JOIN latest_verifications USING (email) GROUP BY source ORDER BY bad DESC""")
    bars = dom.by_id("chart-worst-sources").find_all("g", **{"class": "bar"})
    assert [b.attrs["data-label"] for b in bars] == [source for source, _ in shares]
    assert bars[0].attrs["data-label"] == EVIL_SOURCE  # the untrusted name, as text
    for bar, (_, bad) in zip(bars, shares, strict=True):
        assert sum(r.value() for r in bar.find_all("rect")) == pytest.approx(bad)

    domains = [b.attrs["data-label"] for b in dom.by_id("chart-worst-domains").find_all("g", **{"class": "bar"})]
    assert domains[0] == "bad.test" and "corp.test" not in domains  # 3 of 4 bad; corp.test has none
    assert domains.index("bad.test") < domains.index("good.test")  # 3 of 4 before 2 of 10


@needs_chromium
def test_catch_all_and_role_shares(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    ((n, catch_all, role),) = sql(warehouse_file, """SELECT count(*), count(*) FILTER (WHERE catch_all),
        count(*) FILTER (WHERE role_based) FROM latest_verifications""")
    drawn = {r.attrs["data-key"]: r.value() for r in dom.by_id("chart-signals").find_all("rect")}
    assert drawn["catch_all"] == pytest.approx(catch_all / n) and drawn["role_based"] == pytest.approx(role / n)
    assert "11.1\u00a0%" in dom.by_id("signals").text  # 2 of 18 catch-all


@needs_chromium
def test_gate_history_has_every_evaluation(rendered, warehouse_file: Path) -> None:
    dom, _ = rendered
    gates = sql(warehouse_file, "SELECT is_passed, unknown_share FROM quality_runs ORDER BY checked_at")
    rects = dom.by_id("chart-gate-history").find_all("rect")
    assert [r.attrs["data-key"] for r in rects] == ["passed" if p else "failed" for p, _ in gates]
    assert [r.value() for r in rects] == pytest.approx([u for _, u in gates])
    assert dom.by_id("chart-gate-history").find_all("line", **{"class": "threshold"})
    rows = dom.by_id("table-gates").find_all("tr")[1:]
    assert "unknown_share_within_threshold" in rows[1].text and rows[1].attrs["data-passed"] == "false"


@needs_chromium
def test_untrusted_names_stay_text_and_nothing_loads_from_the_network(rendered) -> None:
    dom, _ = rendered
    assert not dom.find_all("script") and not dom.find_all("img") and not dom.find_all("link")
    assert EVIL_EMAIL in dom.by_id("table-changes").text
    refs = [v for n in dom.iter() for k, v in n.attrs.items() if k in ("src", "href") and v]
    assert refs == []
    (csp,) = dom.find_all("meta", http_equiv="Content-Security-Policy")
    assert "default-src 'none'" in csp.attrs["content"]


def test_an_empty_warehouse_gives_a_page_that_says_so(tmp_path: Path) -> None:
    with Warehouse.open(tmp_path / "empty.duckdb") as wh:
        page = write_report(wh, tmp_path / "out" / "report.html")
    html = page.read_text(encoding="utf-8")
    assert html.count("nothing recorded yet") >= 4
    assert all(f'id="{ident}"' in html for ident in CHARTS)


def mailsift(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSIFT_")}
    return subprocess.run([sys.executable, "-m", "mailsift.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_mailsift_report_writes_the_page_and_leaves_the_warehouse_as_it_was(
    warehouse_file: Path, tmp_path: Path
) -> None:
    before = hashlib.sha256(warehouse_file.read_bytes()).hexdigest()
    proc = mailsift(["report", "--db", str(warehouse_file), "--out", "out/health.html"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "out" / "health.html"
    assert str(page.resolve()) in proc.stdout
    html = page.read_text(encoding="utf-8")
    assert all(f'id="{ident}"' in html for ident in CHARTS)
    assert hashlib.sha256(warehouse_file.read_bytes()).hexdigest() == before  # opened read-only

    missing = mailsift(["report", "--db", str(tmp_path / "none.duckdb")], tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.count("\n") == 1 and "none.duckdb" in missing.stderr
    assert not (tmp_path / "none.duckdb").exists() and not (tmp_path / "mailsift-report.html").exists()
