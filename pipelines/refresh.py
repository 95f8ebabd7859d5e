"""Prefect flow ``corpus_refresh``: ingest every source, synthesize, balance into a training-corpus version.

Composition only. Each stage is fingerprinted by its inputs, config and code, so a refresh with nothing
changed reuses every version and publishes nothing new; a changed source is re-ingested alone. The training
corpus is balanced only after every source and the synthesis succeeded, so a failed refresh never publishes
a new version and leaves the previous one as it was. The evaluation benchmarks' series are kept out of the
training corpus (:mod:`corpus.leakage`); what was checked and excluded is in its manifest and in the artifact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact

from corpus.blast.balance import balance
from corpus.blast.config import BlastConfig
from corpus.config import SourceConfig
from corpus.kernelsynth import KernelSynthConfig, synthesize
from corpus.leakage import LeakageConfig, LeakageFilter, build_filter
from infra.ray_runtime import ensure_ray
from infra.versions import DatasetVersion
from pipelines.ingest import ingest_task_for, retry_if_transient
from pipelines.profile import BenchmarksConfig, Profile, as_profile, with_absolute_root
from pipelines.reporting import leakage_markdown, markdown_table


@dataclass(frozen=True)
class RefreshResult:
    """What a refresh made or reused: one row per source (``IngestResult.summary``), the synthesis' and the
    training corpus' rows (``version_summary``, the latter with its leakage check)."""

    sources: list[dict[str, Any]]
    kernelsynth: dict[str, Any]
    training_corpus: dict[str, Any]

    @property
    def training_corpus_url(self) -> str:
        return self.training_corpus["version"]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return asdict(self)


def version_summary(stage: str, version: DatasetVersion, started: float) -> dict[str, Any]:
    """A stage's outcome as a row: a version made before this flow started was reused, not rewritten."""
    return {
        "stage": stage,
        "rows": version.num_rows,
        "bytes": version.manifest["bytes"],
        "reused": version.manifest["created_unix"] < started,
        "version": version.url,
        "ray_nodes": version.manifest["stats"].get("ray_nodes", {}),
    }


def nodes_cell(ray_nodes: dict[str, int]) -> str:
    """``3 nodes: 1a2b3c4d 12, ...``: short node ids with the units each completed (for tables)."""
    if not ray_nodes:
        return "-"
    return f"{len(ray_nodes)} node(s): " + ", ".join(f"{n[:8]} {c}" for n, c in ray_nodes.items())


@task(name="synthesize", retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=retry_if_transient)
def synthesize_task(cfg: KernelSynthConfig, root: str, storage_options: dict[str, Any], started: float) -> dict:
    return version_summary("kernelsynth", synthesize(cfg, root, storage_options, progress=False), started)


def leakage_filter(
    cfg: LeakageConfig, benchmarks: BenchmarksConfig, sources: list[SourceConfig], root: str,
    storage_options: dict[str, Any],
) -> LeakageFilter:
    """The evaluation benchmarks' identities and window index; a benchmark without data fails here, first."""
    return build_filter(cfg, benchmarks.names, sources, root, data_dir=benchmarks.data_dir,
                        benchmark_options=benchmarks.model_dump()["options"], storage_options=storage_options)


leakage_task = task(leakage_filter, name="leakage-index")


@task(name="balance", retries=2, retry_delay_seconds=[2, 8], retry_condition_fn=retry_if_transient)
def balance_task(
    corpus_urls: list[str], cfg: BlastConfig, root: str, storage_options: dict[str, Any], started: float,
    leakage: LeakageFilter | None = None,
) -> dict:
    version = balance(corpus_urls, cfg, root, storage_options, progress=False, leakage=leakage)
    stats = version.manifest["stats"]
    return version_summary("training_corpus", version, started) | {
        "leakage_check": stats.get("leakage_check"), "leakage_excluded": stats.get("leakage_excluded")}


def refresh_markdown(sources: list[dict[str, Any]], synth: dict[str, Any], corpus: dict[str, Any]) -> str:
    reused = [s["source"] for s in sources if s["reused"]] + [r["stage"] for r in (synth, corpus) if r["reused"]]
    work = [{"stage": s.get("source", ""), "ray nodes (units)": nodes_cell(s.get("ray_nodes", {}))} for s in sources]
    work += [{"stage": r["stage"], "ray nodes (units)": nodes_cell(r["ray_nodes"])} for r in (synth, corpus)]
    made = "reused (nothing changed)" if corpus["reused"] else "published"
    return (
        "# Corpus refresh\n\n## Sources\n\n"
        + markdown_table(sources, ["source", "series", "points", "quarantined", "duplicates", "bytes", "reused"])
        + "\n## Synthesis and balancing\n\n"
        + markdown_table([synth, corpus], ["stage", "rows", "bytes", "reused", "version"])
        + "\n## Where the work ran\n\n"
        + markdown_table(work, ["stage", "ray nodes (units)"])
        + "\n## Benchmark leakage\n\n"
        + leakage_markdown(corpus.get("leakage_check"), corpus.get("leakage_excluded"))
        + f"\n**Training corpus {made}:** `{corpus['version']}`\n\n"
        + f"Reused without work: {', '.join(reused) or 'nothing'}\n"
    )


class SourcesFailed(RuntimeError):
    """Some sources could not be ingested: the others were, and nothing was balanced."""


def _sources_or_raise(sources: list[Any], futures: list[Any]) -> list[dict[str, Any]]:
    """Every source's summary once all have finished; a failed one fails the refresh naming each that failed."""
    outcomes = [f.result(raise_on_failure=False) for f in futures]
    failed = [f"{s.name}: {type(o).__name__}: {(str(o).strip().splitlines() or [''])[0]}"
              for s, o in zip(sources, outcomes, strict=True) if isinstance(o, BaseException)]
    if failed:
        raise SourcesFailed(f"{len(failed)} of {len(sources)} source(s) failed, nothing balanced: " + "; ".join(failed))
    return outcomes


@flow(name="corpus-refresh", log_prints=True)
def corpus_refresh_flow(profile: str | Profile = "local", overrides: dict[str, Any] | None = None) -> RefreshResult:
    """Refresh the corpus of ``profile``; returns per-source rows, the synthesis and the training corpus."""
    prof = with_absolute_root(as_profile(profile, overrides))
    root, options = prof.storage.root, prof.storage.options
    # every stage's units run on the profile's Ray
    ensure_ray(prof.ray.address, num_cpus=prof.ray.num_cpus, include_dashboard=prof.ray.dashboard)
    started = time.time()
    log = get_run_logger()
    # before any work: a benchmark that cannot be checked stops the refresh here
    leakage = leakage_task(prof.leakage, prof.benchmarks, prof.ingest.sources, root, options)
    source_futures = ingest_task_for(prof.ingest).map(
        prof.ingest.sources, cfg=unmapped(prof.ingest), root=unmapped(root), storage_options=unmapped(options)
    )
    synth_future = synthesize_task.submit(prof.synth, root, options, started)
    sources = _sources_or_raise(prof.ingest.sources, source_futures)  # every source finishes first
    synth = synth_future.result()
    corpus_urls = [s["version"] for s in sources] + [synth["version"]]
    corpus = balance_task(corpus_urls, prof.balance, root, options, started, leakage)
    log.info("training corpus %s: %s (%d series excluded as evaluation benchmark series)",
             "reused" if corpus["reused"] else "published", corpus["version"],
             (corpus["leakage_excluded"] or {}).get("count", 0))
    create_markdown_artifact(key="corpus-refresh", markdown=refresh_markdown(sources, synth, corpus),
                             description="Corpus refresh summary")
    return RefreshResult(sources, synth, corpus)
