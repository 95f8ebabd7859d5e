"""Prefect wiring of the pretraining stage.

The stage itself is ``training.trainer.pretrain`` (a plain function); this module only wraps it in a task and a
flow (artifacts: a summary table of the run and a link to the checkpoint). While it runs, the step, loss,
tokens/s and ETA reach the flow-run log and a progress artifact (``training.metrics.ProgressFollower``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task

from training.config import PretrainConfig

if TYPE_CHECKING:  # the trainer pulls in Ray Train and torch: imported when a task runs
    from training.trainer import PretrainResult


@task(name="pretrain-utp")
def pretrain_task(
    corpus_url: str,
    cfg: PretrainConfig,
    out_root: str,
    run_name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    progress: bool = True,
    tracking: Any = None,
) -> PretrainResult:
    """Pretrain (or resume, or reuse a finished run); the result names the final checkpoint folder and the run."""
    from training.trainer import pretrain

    result = pretrain(
        corpus_url, cfg, out_root, run_name=run_name, storage_options=storage_options, ray_address=ray_address,
        progress=progress, ray_num_cpus=ray_num_cpus, tracking=tracking,
    )
    get_run_logger().info("backbone checkpoint: %s", result.checkpoint_url)
    return result


def run_summary(final_url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Last step, last loss, throughput and worker restarts of the run whose final checkpoint is ``final_url``."""
    from training.metrics import count_restarts, read_metrics, step_records
    from training.paths import RunPaths

    paths = RunPaths.from_checkpoint(final_url)
    lines = read_metrics(paths.metrics_url, storage_options)
    records = step_records(lines)
    tail = records[-min(len(records), 10):]
    return {
        "run": paths.run_name,
        "steps": records[-1]["step"] if records else 0,
        "final loss (mean of last 10)": sum(r["loss"] for r in tail) / len(tail) if tail else float("nan"),
        "tokens/s (mean of last 10)": sum(r["tokens_per_s"] for r in tail) / len(tail) if tail else float("nan"),
        "restarts": count_restarts(lines),
        "checkpoint": final_url,
    }


@flow(name="pretrain", log_prints=True)
def pretrain_flow(
    corpus_url: str,
    cfg: PretrainConfig,
    out_root: str,
    run_name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
    ray_num_cpus: int | None = None,
    progress: bool = True,
    tracking: Any = None,
) -> PretrainResult:
    """UTP pretraining as a flow: returns the run and its backbone checkpoint URL (``save_pretrained`` folder)."""
    result = pretrain_task(corpus_url, cfg, out_root, run_name, storage_options, ray_address, ray_num_cpus, progress,
                           tracking)
    pretrain_artifacts(result.checkpoint_url, storage_options)
    return result


def pretrain_artifacts(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary as a Prefect table artifact and its checkpoint as a link artifact; returns the summary."""
    from pipelines.reporting import link_artifact, table_artifact

    summary = run_summary(url, storage_options)
    table_artifact("pretrain-summary", [summary], list(summary), f"UTP pretraining run {summary['run']}")
    link_artifact("pretrain-checkpoint", url, f"checkpoint {summary['run']}", "Backbone checkpoint (save_pretrained)")
    return summary


def default_checkpoint_url(out_root: str, run_name: str) -> str:
    """Where ``pretrain`` puts a run's final backbone (for flows that chain on a known run name)."""
    from training.paths import RunPaths

    return RunPaths.make(out_root, run_name).final_url
