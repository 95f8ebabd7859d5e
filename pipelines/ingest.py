"""Prefect flow: ingest every source of a profile, one task per source, in parallel, with retries."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact

from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source
from infra.transient import is_transient
from pipelines.profile import Profile
from pipelines.reporting import markdown_table


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
        "%s: %s (%d series, %d quarantined)",
        source.name, "reused" if result.reused else "ingested", summary["series"], summary["quarantined"],
    )
    return summary


def ingest_task_for(cfg: IngestConfig) -> Any:
    """The ingest task with the profile's retry count and exponential backoff."""
    delays = [cfg.retry_delay_seconds * 2**i for i in range(max(cfg.retries, 1))]
    return ingest_source_task.with_options(retries=cfg.retries, retry_delay_seconds=delays)


@flow(name="ingest", log_prints=True)
def ingest_flow(profile: Profile) -> list[dict[str, Any]]:
    """Ingest every configured source; a source that fails fails the flow after its retries."""
    cfg = profile.ingest
    futures = ingest_task_for(cfg).map(
        cfg.sources, cfg=unmapped(cfg), root=unmapped(profile.storage.root),
        storage_options=unmapped(profile.storage.options),
    )
    summaries = [f.result() for f in futures]
    create_markdown_artifact(
        key="ingest-summary", markdown=markdown_table(summaries), description="Corpus ingestion per source"
    )
    return summaries
