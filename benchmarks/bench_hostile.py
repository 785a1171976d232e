"""Peak memory of ``mailsift run`` on hostile inputs (issue 9: each must stay under 1 GB).

    .venv/bin/python benchmarks/bench_hostile.py [--quick] [--only blank,csv,gzip,xlsx] [--keep]

Cases (generated in a temporary directory; ``--quick`` divides the sizes by 10):

* ``blank``: a CSV of 300 MB of blank lines between a header, a first and a last row;
* ``csv``: a 5,000,000-row CSV (id, email, first, last, company; 20,000 unique addresses);
* ``gzip``: a URL on a loopback :class:`~mailsift.testing.HttpServer` whose ~2 MB body is
  sent ``Content-Encoding: gzip`` and inflates to 800 MB of CSV;
* ``xlsx``: a ~3 MB XLSX whose sheet XML inflates to 1 GB of identical rows.

Each case runs ``mailsift run SOURCE --backend sandbox`` in its own wrapper process, which
reports ``ru_maxrss`` of its children (RUSAGE_CHILDREN: the largest process of the tree,
the CLI and Prefect's API server it starts, as each is waited for). Printed: exit code,
the first line of stderr, wall time and peak RSS; the script exits 1 when a case is at or
above 1 GB.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailsift.testing import HttpServer, Reply  # noqa: E402

__all__ = ["main"]

LIMIT_KB = 1024 * 1024
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "err = [x for x in p.stderr.splitlines() if x.startswith('mailsift:')] or ['']\n"
    "print(p.returncode, rss, err[-1][:200], sep='\\t')\n"
)


def write_blank(path: Path, size: int) -> None:
    block = b"\n" * (16 * 1024 * 1024)
    with path.open("wb") as fh:
        fh.write(b"email,name\nfirst@valid.test,First\n")
        written = 0
        while written < size:
            fh.write(block)
            written += len(block)
        fh.write(b"last@valid.test,Last\n")


def write_big_csv(path: Path, rows: int, unique: int = 20_000) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("id,email,first_name,last_name,company\n")
        step = 100_000
        for start in range(0, rows, step):
            fh.write(
                "".join(
                    f"{i},user{i % unique}@{'valid' if i % 3 else 'invalid'}.test,First{i % 97},"
                    f"Last{i % 89},Company {i % 501}\n"
                    for i in range(start, min(rows, start + step))
                )
            )


def gzip_bomb(target_bytes: int) -> bytes:
    line = b"bomb@valid.test,Bomb\n"
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(b"email,name\n")
        block = line * (1024 * 1024 // len(line))
        for _ in range(target_bytes // len(block)):
            gz.write(block)
    return out.getvalue()


def write_xlsx_bomb(path: Path, inflated: int) -> None:
    head = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row><c t="inlineStr"><is><t>email</t></is></c></row>'
    )
    row = '<row><c t="inlineStr"><is><t>bomb@valid.test</t></is></c></row>'
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>",
        )
        z.writestr(
            "_rels/.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>",
        )
        z.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Contacts" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            "</Relationships>",
        )
        with z.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as sheet:
            sheet.write(head.encode())
            block = (row * (1024 * 1024 // len(row))).encode()
            for _ in range(inflated // len(block)):
                sheet.write(block)
            sheet.write(b"</sheetData></worksheet>")


def run_case(name: str, source: str, work: Path) -> tuple[int, int, str, float]:
    env = dict(os.environ)
    env.update(
        MAILSIFT_ALLOW_TEST_DOMAINS="true",
        PREFECT_HOME=str(work / "prefect-home"),
        TMPDIR=str(work / "tmp"),
    )
    (work / "tmp").mkdir(exist_ok=True)
    cli = [str(Path(sys.executable).with_name("mailsift"))]
    command = [
        sys.executable, "-c", _WRAPPER, *cli, "run", source, "--backend", "sandbox",
        "--db", str(work / f"{name}.duckdb"), "--out", str(work / f"{name}-out"),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    code, rss, line = (done.stdout.strip().split("\t") + ["", "", ""])[:3]
    return int(code or -1), int(rss or 0), line, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by 10")
    parser.add_argument("--only", default="blank,csv,gzip,xlsx")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    work = Path(tempfile.mkdtemp(prefix="mailsift-bench-hostile-"))
    results = []
    try:
        with HttpServer() as server:
            for name in args.only.split(","):
                t0 = time.perf_counter()
                if name == "blank":
                    source = work / "blank.csv"
                    write_blank(source, 300_000_000 // scale)
                    what = f"{source.stat().st_size / 1e6:.0f} MB of blank lines"
                elif name == "csv":
                    source = work / "big.csv"
                    write_big_csv(source, 5_000_000 // scale)
                    what = f"{5_000_000 // scale:,}-row CSV ({source.stat().st_size / 1e6:.0f} MB)"
                elif name == "gzip":
                    body = gzip_bomb(800_000_000 // scale)
                    server.set_default("/bomb.csv", Reply(200, headers={
                        "Content-Type": "text/csv", "Content-Encoding": "gzip"}, body=body))
                    source = server.url_for("/bomb.csv")
                    what = f"gzip bomb URL ({len(body) / 1e6:.1f} MB on the wire)"
                elif name == "xlsx":
                    source = work / "bomb.xlsx"
                    write_xlsx_bomb(source, 1_000_000_000 // scale)
                    what = f"XLSX bomb ({source.stat().st_size / 1e6:.1f} MB)"
                else:
                    parser.error(f"unknown case {name}")
                gen = time.perf_counter() - t0
                code, rss, line, wall = run_case(name, str(source), work)
                results.append((name, what, code, rss, wall, line))
                print(f"{name:6} {what:42} exit {code}  peak RSS {rss / 1024:7.0f} MB  "
                      f"{wall:6.1f} s (input made in {gen:.1f} s)  {line}", flush=True)
                if not args.keep and isinstance(source, Path):
                    source.unlink(missing_ok=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    over = [r for r in results if r[3] >= LIMIT_KB]
    print(f"{len(results) - len(over)}/{len(results)} cases under 1 GB peak RSS")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
