"""Flow: an address list from ``mailsift serve`` (a bulk job) verified in mapped batches.

    batches (grouped by domain) -> verify-batch (mapped, retried) -> one results file per
    batch, as each completes -> summary artifact

The service decided beforehand which addresses its warehouse already knows (the 30-day
cache), stores the results and sends the webhooks; this flow only verifies, so it never
holds the warehouse (see ``service/sharing.py``). Visible in the Prefect UI like the
pipeline's runs when the service runs with a Prefect API.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from mailsift.settings import BackendName
from tasks.address_list import write_batch
from tasks.steps import verify_batch

__all__ = ["FLOW_NAME", "verify_address_list"]

FLOW_NAME = "verify-address-list"


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)
def verify_address_list(
    job_id: str,
    batches_path: str,
    results_dir: str,
    backend: BackendName | None = None,
    n_cached: int = 0,
) -> dict[str, Any]:
    """Verify the batches in ``batches_path`` (a JSON list of address lists).

    Args:
        job_id: The bulk job of mailsift serve this run belongs to.
        batches_path: JSON file: a list of batches, each a list of addresses.
        results_dir: Where each batch's results land as ``batch-<n>.json``.
        backend: Verification backend (default MAILSIFT_BACKEND).
        n_cached: Addresses of the job answered from the warehouse (for the summary only).
    """
    logger = get_run_logger()
    batches: list[list[str]] = json.loads(Path(batches_path).read_text(encoding="utf-8"))
    total = sum(len(b) for b in batches)
    logger.info("job %s: verifying %d addresses in %d batches", job_id, total, len(batches))
    started = time.perf_counter()
    futures = verify_batch.map(batches, unmapped({"backend": backend}))
    index = {f.task_run_id: i for i, f in enumerate(futures)}
    by_status: Counter[str] = Counter()
    failed = done = 0
    for future in as_completed(futures):
        try:
            rows = future.result()
        except Exception as exc:  # after its retries: the service answers these unknown
            failed += 1
            logger.error("a batch failed after retries: %s", exc)
            continue
        write_batch(results_dir, f"{index[future.task_run_id]:06d}", rows)
        by_status.update(r["status"] for r in rows)
        done += len(rows)
        logger.info("progress: %d/%d addresses verified", done, total)
    seconds = round(time.perf_counter() - started, 3)
    summary = {"job_id": job_id, "verified": done, "from_warehouse": n_cached,
               "failed_batches": failed, "by_status": dict(by_status), "verify_s": seconds}
    md = [f"# Bulk job {job_id}", "", "| measure | value |", "|---|---|",
          f"| verified now | {done} |", f"| from the warehouse | {n_cached} |",
          f"| failed batches | {failed} |", f"| seconds | {seconds} |", "",
          "| status | addresses |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in sorted(by_status.items())]
    create_markdown_artifact(markdown="\n".join(md), key="verify-address-list-summary",
                             description="Bulk job summary (counts, never addresses)")
    return summary
