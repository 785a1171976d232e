"""Cost of reading an SMTP reply: ``classify_reply`` over the real replies of
``tests/data/smtp_replies.csv``, cycled to N calls (default 100,000), each text carrying
a different address as real replies do.

    .venv/bin/python -m benchmarks replies
    .venv/bin/python benchmarks/bench_replies.py --calls 100000

Prints calls per second and microseconds per call, for classify_reply and, as a
yardstick, sanitize_message (which the prober also runs once per RCPT reply).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from mailsift.smtp.replies import classify_reply, phrases, sanitize_message

TABLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "smtp_replies.csv"


def _replies(n: int) -> list[tuple[int, str, str]]:
    with TABLE.open(encoding="utf-8", newline="") as fh:
        rows = [(int(r["code"]), r["text"], r["stage"]) for r in csv.DictReader(fh)]
    return [(code, f"{text} <user{i}@example{i % 997}.test>", stage) for i, (code, text, stage) in enumerate(rows * (n // len(rows) + 1))][:n]


def _time(label: str, fn, items) -> None:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for item in items:
        fn(*item)
    elapsed = time.perf_counter() - start
    n = len(items)
    print(f"{label:<18} {n:>9,} calls  {elapsed:7.3f} s  {n / elapsed:>11,.0f}/s  {elapsed / n * 1e6:6.2f} µs/call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    start = time.perf_counter()
    phrases()
    print(f"phrase data loaded and compiled once in {(time.perf_counter() - start) * 1e3:.1f} ms")
    items = _replies(args.calls)
    _time("classify_reply", classify_reply, items)
    _time("sanitize_message", lambda code, text, stage: sanitize_message(text), items)
    kinds: dict[str, int] = {}
    for code, text, stage in items:
        kind = classify_reply(code, text, stage)  # type: ignore[arg-type]
        kinds[kind] = kinds.get(kind, 0) + 1
    print("kinds:", ", ".join(f"{k} {v:,}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    main()
