"""Issue 9 through ``mailsift`` as a user runs it (real subprocesses, Prefect's test
harness, loopback servers): every failure one line with the right exit code, a killed
run cleaned up by the next one, and no credential from a URL in Prefect's database."""

from __future__ import annotations

import csv
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from mailsift.testing import HttpServer, Reply
from mailsift.testing.world import World

CLI = [sys.executable, "-m", "mailsift.cli"]


def mailsift(args: list[str], env: dict[str, str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kw)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mailsift:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def sql(db: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query).fetchall()


def write_export(path: Path, emails: list[str], notes: str = "") -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Record ID", "Work Email", "Notes"])
        for i, email in enumerate(emails, start=1):
            writer.writerow([i, email, notes])
    return path


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tmp").mkdir()
    return {**cli_env, "TMPDIR": str(tmp_path / "tmp"), "MAILSIFT_ALLOW_TEST_DOMAINS": "true"}


def test_input_failures_are_one_line_exit_2_before_anything_starts(env, tmp_path: Path) -> None:
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "ok.csv").write_text("email\na@valid.test\n")
    cases = {
        "deep JSON": (["run", "deep.json"], "nested too deeply"),
        "bad URL": (["run", "http://[::1"], "not a valid URL"),
        "ftp webhook": (["run", "ok.csv", "--webhook-url", "ftp://bob:hunter2@hooks.test/x",
                         "--webhook-secret-env", "HOOK"], "must be http:// or https://"),
        "--out is a file": (["run", "ok.csv", "--out", "ok.csv/out"], "is not a directory"),
    }
    for case, (args, words) in cases.items():
        proc = mailsift([*args, "--db", "wh.duckdb"], {**env, "HOOK": "k"}, tmp_path)
        assert proc.returncode == 2, (case, proc.stderr)
        line = one_error_line(proc)
        assert words in line and "hunter2" not in proc.stderr, (case, line)
        assert not (tmp_path / "wh.duckdb").exists(), case


def _no_fsize_limit_signal() -> None:  # in the child: writes past the limit fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (24 * 2**20, 24 * 2**20))


def test_a_full_disk_during_export_is_one_line_exit_3_and_the_run_closed(env, tmp_path: Path) -> None:
    # 8 rows whose notes make each export ~40 MB: past a 24 MB file-size limit (what a
    # full disk looks like to the writer), while the warehouse and the Parquet work files
    # (compressed) stay far below it
    src = write_export(tmp_path / "e.csv", [f"u{i}@valid.test" for i in range(8)], notes="x" * 5_000_000)
    proc = mailsift(["run", str(src), "--backend", "sandbox", "--db", "wh.duckdb", "--out", "out"],
                    env, tmp_path, preexec_fn=_no_fsize_limit_signal)
    assert proc.returncode == 3, proc.stderr
    line = one_error_line(proc)
    assert "file too large" in line, line
    assert sql(tmp_path / "wh.duckdb", "SELECT status FROM runs") == [("failed",)]
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == []


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_run_is_closed_and_cleaned_by_the_next_one(env, world: World, tmp_path: Path) -> None:
    from mailsift.testing.smtp_server import Behaviour

    domains = [f"d{n}.test" for n in range(24)]
    for d in domains:  # slow enough (~1.4 s a batch) to be killed half-way
        world.add_domain(d, Behaviour(mailboxes=None, latency=0.1, pipelining=False))
    src = write_export(tmp_path / "e.csv", [f"u{i}@{d}" for d in domains for i in range(10)])
    out = tmp_path / "out"
    out.mkdir()
    (out / "valid.csv").write_text("the previous run's export\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    run_env = {**env, **world.env()}
    args = ["run", str(src), "--db", "wh.duckdb", "--out", "out", "--batch-size", "10"]
    proc = subprocess.Popen([*CLI, *args], env=run_env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    seen = 0
    for line in proc.stdout:  # kill after a few batches were stored
        if "progress:" in line:
            seen += 1
            if seen >= 3:
                break
        assert time.monotonic() < deadline
    gate_workers = [pid for pid in _children(proc.pid) if "multiprocessing" in _cmdline(pid)]
    assert gate_workers  # the gate's worker process, started with the flow
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the orphaned worker notices and exits by itself (it holds ~360 MB)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in gate_workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in gate_workers)
    assert sql(tmp_path / "wh.duckdb", "SELECT status FROM runs") == [("running",)]
    assert any(p.name.startswith(f"mailsift-{proc.pid}-") for p in (tmp_path / "tmp").iterdir())
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written

    again = mailsift(args, run_env, tmp_path)
    assert again.returncode == 0, again.stderr
    runs = dict(sql(tmp_path / "wh.duckdb", "SELECT status, count(*) FROM runs GROUP BY status"))
    assert runs == {"failed": 1, "completed": 1}
    (error,) = sql(tmp_path / "wh.duckdb", "SELECT summary->>'error' FROM runs WHERE status = 'failed'")[0]
    assert error.startswith(f"interrupted: its process (pid {proc.pid}")
    assert list((tmp_path / "tmp").iterdir()) == []  # the work dir with the contacts is gone
    assert (out / "valid.csv").read_bytes() != before["valid.csv"]


def test_no_credential_from_a_url_reaches_prefect(env, tmp_path: Path) -> None:
    import prefect.settings

    secrets = ("pw-0f1e2d", "key-9a8b7c", "tok-5d4c3b")
    with HttpServer() as server:
        server.set_default("/c.csv", Reply(body="email\na@valid.test\nb@invalid.test\n"))
        server.set_default("/hook", Reply(200))
        source = server.url_for("/c.csv").replace("://", f"://alice:{secrets[0]}@") + f"?api_key={secrets[1]}"
        hook = server.url_for("/hook") + f"?token={secrets[2]}"
        proc = mailsift(["run", source, "--backend", "sandbox", "--db", "wh.duckdb", "--out", "out",
                         "--webhook-url", hook, "--webhook-secret-env", "HOOK_SECRET"],
                        {**env, "HOOK_SECRET": "signing-key"}, tmp_path)
        assert proc.returncode == 0, proc.stderr
        fetched = server.requests_for("/c.csv")[0]
        assert fetched.query == f"api_key={secrets[1]}" and fetched.header("Authorization")
        assert server.requests_for("/hook")[0].query == f"token={secrets[2]}"
    url = prefect.settings.PREFECT_API_DATABASE_CONNECTION_URL.value()
    database = Path(url.split("///", 1)[1])
    stored = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    assert b"alice" in stored or b"c.csv" in stored  # the run is there...
    for secret in secrets:  # ...its credentials are not: parameters, logs, events, states
        assert secret.encode() not in stored, secret
        assert secret not in proc.stdout + proc.stderr
        assert secret.encode() not in (tmp_path / "wh.duckdb").read_bytes()


def test_the_flow_refuses_credentials_in_clear_and_bad_webhook_urls(prefect_harness, tmp_path: Path) -> None:
    """A run started from the UI or a deployment (no CLI to move the secret aside): refused
    before it starts, the URL redacted in the state, nothing written."""
    from flows.verify_crm_exports import verify_crm_exports

    (tmp_path / "ok.csv").write_text("email\na@valid.test\n")
    cases = {
        "password": dict(sources=["https://bob:hunter2@crm.test/export.csv"]),
        "token": dict(sources=[str(tmp_path / "ok.csv")], webhook_url="https://hooks.test/x?token=hunter2"),
        "ftp": dict(sources=[str(tmp_path / "ok.csv")], webhook_url="ftp://bob:hunter2@hooks.test/x"),
    }
    for case, params in cases.items():
        state = verify_crm_exports(return_state=True, db=str(tmp_path / "wh.duckdb"),
                                   out_dir=str(tmp_path / "out"), **params)
        assert state.is_failed(), case
        assert "hunter2" not in state.message and "***" in state.message, (case, state.message)
        assert not (tmp_path / "wh.duckdb").exists() and not (tmp_path / "out").exists(), case
