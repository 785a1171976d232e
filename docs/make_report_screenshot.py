"""Regenerate docs/report.png: the list-health report of the demo, a month on.

    .venv/bin/python docs/make_report_screenshot.py      (or: make report-screenshot)

What it does, with the real flows against the demo's simulated internet
(``mailsift.testing.demo``):

1. verify the demo's CRM export (``mailsift/testing/data/crm_export.csv``, as ``mailsift demo`` does);
2. age every result by 31 days, as if a month had passed, in which two people left
   acme-corp.test and umbrella.test stopped greylisting;
3. run the daily re-verification (``reverify_stale``), which writes the report;
4. screenshot it with headless Chromium (Debian's ``chromium`` package).

Everything goes into a temporary directory but the PNG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LEFT_ACME = {"jane.doe@acme-corp.test", "wei.chen@acme-corp.test"}
UMBRELLA = {"alice@umbrella.test", "bob@umbrella.test", "carol@umbrella.test", "dave@umbrella.test"}


def main(png: Path = ROOT / "docs" / "report.png") -> None:
    for key, value in {"DO_NOT_TRACK": "1", "GX_ANALYTICS_ENABLED": "false",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
        os.environ.setdefault(key, value)
    from flows.reverify_stale import reverify_stale
    from flows.verify_crm_exports import verify_crm_exports
    from mailsift.testing.demo import demo_export, populate_demo_world
    from mailsift.testing.world import World
    from warehouse import Warehouse

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("needs headless Chromium: apt-get install chromium")
    png = png.resolve()
    with tempfile.TemporaryDirectory(prefix="mailsift-shot-") as tmp, World() as world:
        work = Path(tmp)
        os.chdir(work)  # paths in the page read as in the demo: relative
        (work / "examples").mkdir()
        shutil.copy(demo_export(), work / "examples")
        db = Path("mailsift-demo.duckdb")
        populate_demo_world(world)
        os.environ.update(world.env())
        first = verify_crm_exports(sources=["examples/crm_export.csv"], out_dir="demo-output",
                                   db=str(db), return_state=True)
        assert first.is_completed(), first.message
        with Warehouse.open(db) as wh:  # a month passes (a rewrite of history: demos only)
            wh.age_verifications(31)
            wh.query("UPDATE runs SET started_at = started_at - INTERVAL 31 DAY, "
                     "finished_at = finished_at - INTERVAL 31 DAY")
            wh.query("UPDATE quality_runs SET checked_at = checked_at - INTERVAL 31 DAY")
        (acme,) = world.servers["acme-corp.test"]
        acme.behaviour = replace(acme.behaviour, mailboxes=acme.behaviour.mailboxes - LEFT_ACME)
        for server in world.servers["umbrella.test"]:
            server.behaviour = replace(server.behaviour, rcpt_reply=None, mailboxes=frozenset(UMBRELLA))
        report = (work / "report.html").resolve()
        second = reverify_stale(db=str(db), report=str(report), return_state=True)
        assert second.is_completed(), second.message
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={work / 'chromium'}", "--window-size=1280,2200",
             f"--screenshot={png}", report.as_uri()],
            check=True, capture_output=True,
        )
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
