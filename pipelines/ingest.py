"""Prefect flow: ingest every source of a profile, one task per source, in parallel, with retries."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact

from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source
from infra.transient import is_transient
from pipelines.profile import Profile, as_profile
from pipelines.reporting import markdown_table

NODE_ID_CHARS = 8  # enough to tell a cluster's nodes apart in a table


def retry_if_transient(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: only network and I/O hiccups are retried; bad input fails at once."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


@task(name="ingest-source", retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=retry_if_transient)
def ingest_source_task(
    source: SourceConfig, cfg: IngestConfig, root: str, storage_options: dict[str, Any]
) -> dict[str, Any]:
    result = ingest_source(source, cfg, root, storage_options)
    summary = result.summary()
    get_run_logger().info(
        "%s: %s (%d series, %d quarantined; work units per Ray node: %s)",
        source.name, "reused" if result.reused else "ingested", summary["series"], summary["quarantined"],
        summary["ray_nodes"],
    )
    return summary


def ingest_task_for(cfg: IngestConfig) -> Any:
    """The ingest task with the profile's retry count and exponential backoff."""
    delays = [cfg.retry_delay_seconds * 2**i for i in range(max(cfg.retries, 1))]
    return ingest_source_task.with_options(retries=cfg.retries, retry_delay_seconds=delays)


@flow(name="ingest", log_prints=True)
def ingest_flow(profile: str | Profile = "local") -> list[dict[str, Any]]:
    """Ingest every configured source; a source that fails fails the flow after its retries."""
    profile = as_profile(profile)  # its credentials made usable here, where storage is opened
    cfg = profile.ingest
    futures = ingest_task_for(cfg).map(
        cfg.sources, cfg=unmapped(cfg), root=unmapped(profile.storage.root),
        storage_options=unmapped(profile.storage.options),
    )
    summaries = [f.result() for f in futures]
    create_markdown_artifact(
        key="ingest-summary", markdown=markdown_table([summary_row(s) for s in summaries]),
        description="Corpus ingestion per source; ray_nodes: work units done per Ray node",
    )
    return summaries


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """A source's summary as a table row: ``ray_nodes`` as ``node: units`` pairs (node ids shortened)."""
    nodes = summary.get("ray_nodes") or {}
    return {**summary, "ray_nodes": ", ".join(f"{node[:NODE_ID_CHARS]}: {n}" for node, n in nodes.items())}
