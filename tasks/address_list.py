"""An address list handed over in memory (an API bulk job), verified in batches whose
results are dropped as files into a directory as each batch completes (pure, no Prefect).

The producer (the ``verify-address-list`` flow, or the service itself) writes
``batch-<id>.json`` atomically (a temporary name, then a rename); the consumer
(:mod:`service.jobs`) picks up every complete file, so it never reads half a batch, and
either side may run in another thread or process that shares the directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from tasks.normalize import batches_by_domain

__all__ = ["plan_batches", "read_new_batches", "write_batch"]


def plan_batches(emails: Sequence[str], batch_size: int) -> list[list[str]]:
    """Addresses packed into batches grouped by domain (one SMTP connection checks many)."""
    if not emails:
        return []
    frame = pl.DataFrame(
        {"email": list(emails), "domain": [e.rpartition("@")[2] or None for e in emails]},
        schema={"email": pl.String, "domain": pl.String},
    )
    return batches_by_domain(frame, batch_size=batch_size)


def write_batch(directory: str | Path, name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """Write one batch's result rows (``VerificationResult.to_row`` dicts) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"batch-{name}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".batch-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(list(rows), out, default=str, ensure_ascii=True)
    os.replace(tmp, final)
    return final


def read_new_batches(directory: str | Path, seen: set[str]) -> list[list[dict[str, Any]]]:
    """Batches written since the last call (``seen`` holds the names already read)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob("batch-*.json")):
        if path.name in seen:
            continue
        seen.add(path.name)
        out.append(json.loads(path.read_text(encoding="utf-8")))
    return out
