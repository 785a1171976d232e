"""`pip install .` then `mailsift demo` in an empty directory: the wheel carries the demo's
CRM export and world, the pipeline package and the commands. Built with uv (the Makefile
installs it into .venv), installed into a fresh virtualenv, run far from the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")

pytestmark = pytest.mark.skipif(UV is None, reason="uv is absent (make install puts it in .venv)")


def uv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([UV, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--wheel", "--out-dir", str(out), str(ROOT))
    (path,) = out.glob("mailsift-*.whl")
    return path


def test_wheel_carries_the_demo_and_the_pipeline(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("mailsift/testing/data/crm_export.csv", "mailsift/testing/demo.py",
                 "pipeline/cli.py", "pipeline/settings.py", "pipeline/sql.py",
                 "flows/verify_crm_exports.py", "warehouse/schema.py", "mailsift/data/providers.json"):
        assert name in names, name
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


def test_demo_runs_in_an_empty_directory_after_install(
    wheel: Path, tmp_path: Path, prefect_harness: str
) -> None:
    venv = tmp_path / "venv"
    uv("venv", "--quiet", "--python", sys.executable, str(venv))
    uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel))
    empty = tmp_path / "somewhere" / "else"
    empty.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSIFT_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(PREFECT_API_URL=prefect_harness, PREFECT_HOME=str(tmp_path / "prefect-home"))
    proc = subprocess.run([str(venv / "bin" / "mailsift"), "demo"], cwd=empty, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gate" in proc.stdout and "passed" in proc.stdout
    assert str(venv) in proc.stdout  # the export read from the installed package
    assert (empty / "mailsift-demo.duckdb").is_file()
    assert {"valid.csv", "results.parquet"} <= {p.name for p in (empty / "demo-output").iterdir()}
