"""The ``mailsift`` command: the engine's commands and the pipeline's, on one command,
with the pipeline (Prefect, polars, DuckDB, GX) imported only when one of its commands runs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("prefect", "polars", "duckdb", "great_expectations", "pipeline.cli", "flows", "tasks")


def _imported_after(code: str) -> set[str]:
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_engine_command_imports_no_pipeline() -> None:
    """`mailsift verify` stays fast: the engine's CLI never imports the pipeline."""
    modules = _imported_after("import mailsift.cli")
    assert not {m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY}


def test_verify_runs_without_loading_the_pipeline() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mailsift.cli import app\n"
        "r = CliRunner().invoke(app, ['verify', '--json', '--no-smtp', 'not an address'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert json.loads(r.output)['status'] == 'invalid'\n"
    )
    modules = _imported_after("import json\n" + code)
    assert not {m for m in modules if m.split(".")[0] in ("prefect", "polars", "duckdb", "pipeline")}


def test_one_command_lists_engine_and_pipeline_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("verify", "run", "reverify", "gate", "demo", "webhooks"):
        assert f" {name} " in proc.stdout, name


def test_pipeline_command_runs_through_mailsift(tmp_path) -> None:
    """A pipeline command found through the lazy group gives its one-line error, exit 2."""
    missing = tmp_path / "none.duckdb"
    proc = subprocess.run(
        [sys.executable, "-m", "mailsift.cli", "gate", "--db", str(missing)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mailsift: no warehouse at {missing} (set MAILSIFT_DB to an existing file, or run a "
        "flow, which creates it)"
    ]
    assert not missing.exists()
