"""The pipeline as users run it: CRM exports -> Prefect flows -> DuckDB -> gate -> CSVs,
through real DuckDB files, the simulated internet and Prefect's own test harness."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from flows.summary import md_text
from mailsift.testing.http_server import HttpServer, Reply
from mailsift.testing.world import World
from mailsift.webhooks import verify_signature
from tests.prefect_artifacts import summary_artifact

pytestmark = pytest.mark.usefixtures("prefect_harness")

HEADER = ["Record ID", "Full Name", "Work Email", "Notes"]


def write_export(path: Path, emails: list[str]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i, email in enumerate(emails, start=1):
            w.writerow([f"R{i:04d}", f"Person {i}", email, "note, with comma" if i % 3 else "multi\nline"])
    return path


def sql(db: Path, query: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.sql(query).fetchall()
    finally:
        con.close()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def crm_world(world: World, monkeypatch) -> World:
    world.add_domain("acme.test", mailboxes=[f"user{i}@acme.test" for i in range(30)] + ["info@acme.test"])
    world.add_domain("globex.test", "catch_all")
    world.add_domain("gone.test", dns="nxdomain")
    world.add_domain("grey.test", "greylist")
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    return world


def run_flow(**params):
    from flows.verify_crm_exports import verify_crm_exports

    return verify_crm_exports(return_state=True, **params)


def test_run_twice_second_run_reuses_the_warehouse(crm_world: World, tmp_path: Path) -> None:
    emails = [f"user{i}@acme.test" for i in range(20)] + ["nobody@acme.test", "info@acme.test",
              "x@globex.test", "a@gone.test", "b@grey.test", "not an email", ""]
    emails += ["USER1@ACME.TEST", " Person Two <user2@acme.test>"]  # duplicates of rows above
    src = write_export(tmp_path / "export.csv", emails)
    db, out = tmp_path / "wh.duckdb", tmp_path / "out"

    state = run_flow(sources=[str(src)], db=str(db), out_dir=str(out))
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["unique_addresses"] == 26 and summary["rows_without_email"] == 1
    assert summary["verified_now"] == 26 and summary["from_warehouse"] == 0
    assert summary["by_status"] == {"valid": 20, "invalid": 3, "risky": 2, "unknown": 1}

    by_file = {p.stem: read_csv(p) for p in out.glob("*.csv")}
    assert sum(len(rows) for rows in by_file.values()) == len(emails)  # every source row kept
    assert {r["Work Email"] for r in by_file["invalid"]} >= {"nobody@acme.test", "a@gone.test", "not an email"}
    assert list(by_file["valid"][0])[:4] == HEADER  # original columns first, in order
    assert {"email_normalized", "status", "score", "reason", "suggestion", "verified_at"} <= set(by_file["valid"][0])
    assert out.joinpath("valid.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # the source had a BOM
    assert pl.read_parquet(out / "results.parquet").height == len(emails)
    assert any("\n" in r["Notes"] for rows in by_file.values() for r in rows)

    # the run's artifact, in percent and words, says what was read and where everything went
    md = summary_artifact(state)
    assert "| valid | 20 | 76.9 % |" in md and "| unknown | 1 | 3.8 % |" in md  # of 26
    assert "**Quality gate passed**: 3.8 % of the addresses are unknown; the gate lets out at most 20.0 %" in md
    assert "| reading the sources |" in md and "extract_s" not in md and "0.0385" not in md
    assert "| mailbox not found | 1 |" in md
    # what the largest domains cost over SMTP: acme.test's 22 addresses (and the probe)
    acme = summary["domains"][0]
    assert (acme["domain"], acme["addresses"], acme["rcpts"]) == ("acme.test", 22, 23)
    assert acme["connections"] >= 1 and acme["refusals_421"] == 0
    assert f"| acme\\.test | 22 | {acme['connections']} | 23 |" in md
    assert f"| source | {md_text(src)} |" in md  # escaped: a path stays text in the UI
    report = out / "report.html"
    assert summary["report"] == str(report.resolve()) and report.is_file()
    assert f"| warehouse (DuckDB) | {md_text(db.resolve())} |" in md
    assert f"| list-health report (open it in a browser) | {md_text(report.resolve())} |" in md
    assert 'id="chart-status-history"' in report.read_text(encoding="utf-8")

    connections = sum(s.connections for s in crm_world.smtp.servers)
    rows_before = sql(db, "SELECT count(*) FROM verifications")[0][0]
    assert rows_before == 26

    again = run_flow(sources=[str(src)], db=str(db), out_dir=str(out))
    assert again.is_completed(), again.message
    second = again.result()
    assert second["from_warehouse"] == 26 and second["verified_now"] == 0
    assert second["by_status"] == summary["by_status"]
    assert sum(s.connections for s in crm_world.smtp.servers) == connections  # no SMTP at all
    assert sql(db, "SELECT count(*) FROM verifications")[0][0] == rows_before
    assert sql(db, "SELECT count(*) FROM runs WHERE status = 'completed'")[0][0] == 2

    # an 'unknown' (greylisted) result is re-checked once older than retry_unknown_after_minutes
    third = run_flow(sources=[str(src)], db=str(db), out_dir=str(out), retry_unknown_after_minutes=0)
    assert third.is_completed(), third.message
    assert (third.result()["from_warehouse"], third.result()["verified_now"]) == (25, 1)
    assert sql(db, "SELECT count(*) FROM verifications WHERE email = 'b@grey.test'")[0][0] == 2


def test_reverify_rechecks_what_is_older_than_30_days_and_keeps_history(crm_world: World, tmp_path: Path) -> None:
    from flows.reverify_stale import reverify_stale
    from warehouse import Warehouse

    src = write_export(tmp_path / "e.csv", [f"user{i}@acme.test" for i in range(6)])
    db = tmp_path / "wh.duckdb"
    assert run_flow(sources=[str(src)], db=str(db), out_dir=str(tmp_path / "o")).is_completed()
    assert sql(db, "SELECT count(*) FROM stale_contacts")[0][0] == 0
    with Warehouse.open(db) as wh:
        wh.age_verifications(31)
    assert sql(db, "SELECT count(*) FROM stale_contacts")[0][0] == 6

    state = reverify_stale(db=str(db), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["verified_now"] == 6
    report = tmp_path / "mailsift-report.html"  # beside the warehouse
    assert state.result()["report"] == str(report.resolve())
    html = report.read_text(encoding="utf-8")
    assert html.count('class="bar" data-label=') >= 2  # the history now shows both runs
    md = summary_artifact(state)
    assert "Re-checked **6 addresses**" in md and "| valid | 6 | 100.0 % |" in md
    assert md_text(report.resolve()) in md
    assert sql(db, "SELECT count(*) FROM stale_contacts")[0][0] == 0
    history = sql(db, "SELECT email, count(*), count(DISTINCT run_id) FROM verifications GROUP BY email")
    assert len(history) == 6 and all(n == 2 and runs == 2 for _, n, runs in history)
    newest = sql(db, "SELECT min(verified_at) > now() - INTERVAL 1 DAY FROM latest_verifications")[0][0]
    assert newest is True


def test_gate_failure_exports_nothing_and_records_it(world: World, tmp_path: Path, monkeypatch) -> None:
    world.add_domain("grey.test", "greylist")
    world.add_domain("acme.test", mailboxes=["a@acme.test"])
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    src = write_export(tmp_path / "e.csv", ["a@acme.test"] + [f"u{i}@grey.test" for i in range(4)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "valid.csv").write_text("Email\nfrom-the-last-good-run@acme.test\n")  # the previous exports
    state = run_flow(sources=[str(src)], db=str(tmp_path / "wh.duckdb"), out_dir=str(out))
    assert state.is_failed()
    assert "unknown_share_within_threshold" in state.message
    # the exports were written while the gate ran: none got out, none is left beside
    assert [p.name for p in out.iterdir()] == ["valid.csv"]
    assert (out / "valid.csv").read_text() == "Email\nfrom-the-last-good-run@acme.test\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    rows = sql(tmp_path / "wh.duckdb", "SELECT is_passed, failed_expectations FROM quality_runs")
    assert rows == [(False, ["unknown_share_within_threshold"])]
    assert sql(tmp_path / "wh.duckdb", "SELECT status FROM runs")[0][0] == "gate_failed"
    # nothing exported, but the report beside the warehouse shows the failed gate
    report = (tmp_path / "mailsift-report.html").read_text(encoding="utf-8")
    assert 'class="seg seg-failed"' in report and "unknown_share_within_threshold" in report


def test_webhooks_are_signed_batched_and_recorded(crm_world: World, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CRM_HOOK_SECRET", "s3cret-value")
    src = write_export(tmp_path / "e.csv", [f"user{i}@acme.test" for i in range(7)])
    with HttpServer() as receiver:
        receiver.set_default("/hook", Reply(200))
        state = run_flow(sources=[str(src)], db=str(tmp_path / "wh.duckdb"), out_dir=str(tmp_path / "o"),
                         webhook_url=receiver.url_for("/hook"), webhook_secret_env="CRM_HOOK_SECRET")
        assert state.is_completed(), state.message
        (request,) = receiver.requests_for("/hook")
    assert verify_signature(request.body, "s3cret-value", request.header("X-Webhook-Signature"))
    assert len(request.json()["results"]) == 7
    rows = sql(tmp_path / "wh.duckdb", "SELECT attempt, is_delivered, status_code FROM webhook_deliveries")
    assert rows == [(1, True, 200)]
    assert "s3cret-value" not in (tmp_path / "wh.duckdb").read_bytes().decode("latin-1")


# -- the CLI, as a user runs it --------------------------------------------------------

def mailsift(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailsift.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "notes.txt").write_text("just some prose without a single address\nnothing tabular here\n")
    (tmp / "nocol.csv").write_text("name,phone\nJane,123\nJohn,456\n")
    (tmp / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))
    with (tmp / "oneline.csv").open("wb") as fh:
        chunk = b"a" * (1 << 20)
        for _ in range(50):
            fh.write(chunk)
    return {
        "missing": (tmp / "missing.csv", "no such file"),
        "not tabular": (tmp / "notes.txt", "notes.txt"),
        "no email column": (tmp / "nocol.csv", "no email column"),
        "binary": (tmp / "image.png", "image.png"),
        "50 MB single line": (tmp / "oneline.csv", "oneline.csv"),
    }


def test_bad_input_one_line_exit_2_warehouse_untouched(cli_env, tmp_path: Path) -> None:
    db = tmp_path / "wh.duckdb"
    for case, (path, words) in bad_inputs(tmp_path).items():
        proc = mailsift(["run", str(path), "--db", str(db), "--out", str(tmp_path / "out")], cli_env, tmp_path)
        assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("mailsift:")]
        assert len(errors) == 1 and words in errors[0] and path.name in errors[0], (case, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, case
        assert not db.exists(), case
        assert not (tmp_path / "out").exists(), case


def test_cli_run_with_the_sandbox_backend(cli_env, tmp_path: Path) -> None:
    src = write_export(tmp_path / "e.csv", ["a@valid.test", "b@invalid.test", "c@elsewhere.test", "bad@"])
    proc = mailsift(["run", str(src), "--backend", "sandbox", "--db", "wh.duckdb", "--out", "out"],
                    {**cli_env, "MAILSIFT_ALLOW_TEST_DOMAINS": "true"}, tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = dict(sql(tmp_path / "wh.duckdb", "SELECT email, status FROM latest_verifications"))
    assert got == {"a@valid.test": "valid", "b@invalid.test": "invalid", "c@elsewhere.test": "risky",
                   "bad@": "invalid"}
    assert sql(tmp_path / "wh.duckdb", "SELECT DISTINCT backend FROM verifications") == [("sandbox",)]
    assert [r["Work Email"] for r in read_csv(tmp_path / "out" / "valid.csv")] == ["a@valid.test"]


def test_cli_gate_failure_exits_1(cli_env, world: World, tmp_path: Path) -> None:
    world.add_domain("grey.test", "greylist")
    src = write_export(tmp_path / "e.csv", [f"u{i}@grey.test" for i in range(5)])
    proc = mailsift(["run", str(src), "--db", "wh.duckdb", "--out", "out"], {**cli_env, **world.env()}, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "quality gate failed" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    gate = mailsift(["gate", "--db", "wh.duckdb", "--json"], cli_env, tmp_path)
    assert gate.returncode == 1
    report = json.loads(gate.stdout)
    assert [r["name"] for r in report["results"] if not r["success"]] == ["unknown_share_within_threshold"]
    lenient = mailsift(["gate", "--db", "wh.duckdb", "--max-unknown-share", "1"], cli_env, tmp_path)
    assert lenient.returncode == 0, lenient.stdout


def test_cli_gate_cannot_run_exits_2(cli_env, tmp_path: Path) -> None:
    proc = mailsift(["gate", "--db", "nope.duckdb"], cli_env, tmp_path)
    assert proc.returncode == 2 and "nope.duckdb" in proc.stderr
    (tmp_path / "junk.duckdb").write_bytes(b"not a database at all" * 100)
    proc = mailsift(["gate", "--db", "junk.duckdb"], cli_env, tmp_path)
    assert proc.returncode == 2 and "junk.duckdb" in proc.stderr and "Traceback" not in proc.stderr


def test_api_key_refused_stops_the_run_with_one_message(cli_env, tmp_path: Path) -> None:
    src = write_export(tmp_path / "e.csv", [f"u{i}@example.com" for i in range(5)])
    with HttpServer() as api:
        api.set_default("/verify", Reply(401, body={"error": "bad key"}))
        env = {**cli_env, "MAILSIFT_API_URL": api.url, "MAILSIFT_API_KEY": "sk-live-abcdef123456"}
        proc = mailsift(["run", str(src), "--backend", "api", "--db", "wh.duckdb"], env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "API key rejected" in proc.stderr
    assert "sk-live-abcdef123456" not in proc.stderr + proc.stdout


def test_killed_run_resumes_without_losing_or_repeating_addresses(cli_env, world: World, tmp_path: Path) -> None:
    from mailsift.testing.smtp_server import Behaviour

    domains = [f"d{n}.test" for n in range(24)]
    for d in domains:  # slow enough (~1.4 s a batch) to be killed half-way
        world.add_domain(d, Behaviour(mailboxes=None, latency=0.1, pipelining=False))
    emails = [f"u{i}@{d}" for d in domains for i in range(10)]
    src = write_export(tmp_path / "e.csv", emails)
    env = {**cli_env, **world.env()}
    args = ["run", str(src), "--db", "wh.duckdb", "--out", "out", "--batch-size", "10"]
    proc = subprocess.Popen([sys.executable, "-m", "mailsift.cli", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    seen = 0
    for line in proc.stdout:  # kill after a few batches were stored
        if "progress:" in line:
            seen += 1
            if seen >= 3:
                break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = sql(tmp_path / "wh.duckdb", "SELECT count(*) FROM verifications")[0][0]
    assert 0 < stored < len(emails)

    again = mailsift(args, env, tmp_path)
    assert again.returncode == 0, again.stderr
    per_email = sql(tmp_path / "wh.duckdb", "SELECT email, count(*) FROM verifications GROUP BY email")
    assert len(per_email) == len(emails)  # none lost
    assert all(n == 1 for _, n in per_email)  # none verified twice


def test_every_flow_imports_and_every_deployment_resolves() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from deployments.serve import DEPLOYMENTS, build

    names = set()
    for spec in DEPLOYMENTS.values():
        flow = load_flow_from_entrypoint(spec["entrypoint"])
        names.add(flow.name)
    assert names == {"verify-crm-exports", "reverify-stale"}
    deployments = {d.name: d for d in build()}
    daily = deployments["daily"]
    assert daily.concurrency_limit == 1 or daily.concurrency_limit.limit == 1
    assert daily.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert [s.schedule.cron for s in daily.schedules] == ["0 3 * * *"]


def test_flow_itself_refuses_a_broken_file_without_touching_the_warehouse(tmp_path: Path) -> None:
    (tmp_path / "nocol.csv").write_text("name,phone\nJane,123\n")
    db = tmp_path / "wh.duckdb"
    state = run_flow(sources=[str(tmp_path / "nocol.csv")], db=str(db), out_dir=str(tmp_path / "out"))
    assert state.is_failed()
    assert "nocol.csv" in state.message and "no email column" in state.message
    assert not db.exists() and not (tmp_path / "out").exists()


def test_port_25_blocked_is_said_loudly_and_nothing_goes_out(world: World, tmp_path: Path, monkeypatch) -> None:
    from mailsift.testing.world import MxSpec

    for n in range(4):  # DNS answers, but nothing listens on the SMTP port: as with port 25 blocked
        world.add_domain(f"corp{n}.test", mx=[MxSpec(10, None)])
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    src = write_export(tmp_path / "e.csv", [f"p{i}@corp{n}.test" for n in range(4) for i in range(3)])
    state = run_flow(sources=[str(src)], db=str(tmp_path / "wh.duckdb"), out_dir=str(tmp_path / "out"))
    assert state.is_failed()
    assert "unknown_share_within_threshold" in state.message
    assert "most likely blocked" in state.message and "MAILSIFT_SMTP_ENABLED=false" in state.message
    assert not (tmp_path / "out").exists()
    reasons = sql(tmp_path / "wh.duckdb", "SELECT DISTINCT status, reason FROM latest_verifications")
    assert reasons == [("unknown", "smtp_unreachable")]


def test_demo_shows_every_verdict_path_and_reruns_from_the_warehouse(cli_env, tmp_path: Path) -> None:
    from mailsift.testing.demo import demo_export

    example = demo_export()
    args = ["demo", "--source", str(example), "--db", "demo.duckdb", "--out", "out"]
    first = mailsift(args, cli_env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "SELECT status, reason" in first.stdout  # the SQL to try next
    reasons = {r for (r,) in sql(tmp_path / "demo.duckdb", "SELECT DISTINCT reason FROM latest_verifications")}
    assert reasons >= {"accepted", "mailbox_not_found", "mailbox_disabled", "mailbox_full", "catch_all",
                       "role_based", "greylisted", "smtp_blocked", "smtp_timeout", "nxdomain", "null_mx",
                       "dns_error", "disposable", "syntax"}
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"valid.csv", "risky.csv", "invalid.csv", "unknown.csv"}
    assert "list-health report" in first.stdout and (tmp_path / "out" / "report.html").is_file()
    n = sql(tmp_path / "demo.duckdb", "SELECT count(*) FROM verifications")[0][0]
    again = mailsift(args, cli_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert sql(tmp_path / "demo.duckdb", "SELECT count(*) FROM verifications")[0][0] == n


def test_per_domain_connection_limit_holds_across_mapped_batches(world: World, tmp_path: Path, monkeypatch) -> None:
    """Worker threads verifying batches of one big domain at once still open at most
    MAILSIFT_MAX_PER_DOMAIN_CONCURRENCY connections to it (ethical probing): they share
    one engine and its window for the domain."""
    from mailsift.testing.smtp_server import Behaviour

    (server,) = world.add_domain("big.test", Behaviour(mailboxes=None, latency=0.02))
    for key, value in world.env(per_domain_concurrency=1, max_per_domain_concurrency=2).items():
        monkeypatch.setenv(key, value)
    src = write_export(tmp_path / "e.csv", [f"u{i}@big.test" for i in range(120)])
    state = run_flow(sources=[str(src)], db=str(tmp_path / "wh.duckdb"), out_dir=str(tmp_path / "o"),
                     batch_size=10)
    assert state.is_completed(), state.message
    assert server.max_concurrent <= 2
    assert state.result()["verified_now"] == 120


def test_failing_receiver_gets_five_attempts_then_webhooks_retry_delivers(
    crm_world: World, cli_env, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("CRM_HOOK_SECRET", "another-secret")
    src = write_export(tmp_path / "e.csv", [f"user{i}@acme.test" for i in range(3)])
    db = tmp_path / "wh.duckdb"
    with HttpServer() as receiver:
        receiver.set_default("/hook", Reply(503))
        state = run_flow(sources=[str(src)], db=str(db), out_dir=str(tmp_path / "o"),
                         webhook_url=receiver.url_for("/hook"), webhook_secret_env="CRM_HOOK_SECRET",
                         webhook_retry_waits_minutes=[0.0002] * 4)  # 4 waits: 5 attempts
        assert state.is_completed(), state.message  # a webhook outage does not fail the run
        assert state.result()["webhooks"]["failed"] == 1
        assert len(receiver.requests_for("/hook")) == 5
        attempts = sql(db, "SELECT attempt, is_delivered, status_code FROM webhook_deliveries ORDER BY attempt")
        assert attempts == [(n, False, 503) for n in range(1, 6)]

        receiver.set_default("/hook", Reply(200))
        proc = mailsift(["webhooks", "retry", "--db", str(db), "--webhook-secret-env", "CRM_HOOK_SECRET"],
                        {**cli_env, "CRM_HOOK_SECRET": "another-secret"}, tmp_path)
        assert proc.returncode == 0, proc.stderr
        first, last = receiver.requests_for("/hook")[0], receiver.requests_for("/hook")[-1]
    assert last.body == first.body and verify_signature(last.body, "another-secret", last.header("X-Webhook-Signature"))
    assert sql(db, "SELECT max(attempt), bool_or(is_delivered) FROM webhook_deliveries") == [(6, True)]


@pytest.mark.parametrize("flow_path", ["flows.verify_crm_exports:verify_crm_exports",
                                       "flows.reverify_stale:reverify_stale"])
def test_the_run_form_shows_typed_values_and_a_backend_select(flow_path: str) -> None:
    """The Prefect UI builds its run form from this schema: no 'str | None' toggles,
    the backend's choices listed, the webhook schedule as its four waits, every field explained."""
    import importlib

    from prefect.utilities.callables import parameter_schema

    module, name = flow_path.split(":")
    flow = getattr(importlib.import_module(module), name)
    props = parameter_schema(flow.fn).model_dump()["properties"]
    for field, prop in props.items():
        assert "anyOf" not in prop and prop.get("type") != "null", (field, prop)
        assert prop.get("description"), f"{field} has no description in the form"
    assert props["backend"]["enum"] == ["default", "local", "api", "sandbox"]
    assert props["backend"]["default"] == "default"
    assert props["webhook_retry_waits_minutes"]["default"] == [1, 2, 4, 8]
    assert props["max_unknown_share"]["maximum"] == 1 and props["db"]["default"] == ""
    assert "20 %" in props["max_unknown_share"]["description"]


def test_reverify_without_a_warehouse_fails_with_one_line(tmp_path: Path) -> None:
    from flows.reverify_stale import reverify_stale

    state = reverify_stale(db=str(tmp_path / "none.duckdb"), return_state=True)
    assert state.is_failed() and "none.duckdb" in state.message
    assert not (tmp_path / "none.duckdb").exists()
