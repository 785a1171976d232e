"""Reading what a flow run published, as the Prefect UI shows it (shared by the flow tests)."""

from __future__ import annotations

from typing import Any

__all__ = ["summary_artifact"]


def summary_artifact(state: Any) -> str:
    """The markdown of the run's summary artifact, as the Prefect UI shows it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    (summary,) = [a for a in artifacts if (a.key or "").endswith("-summary")]
    return str(summary.data)
