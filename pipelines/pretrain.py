"""Prefect wiring of the pretraining stage, and a typer-ready ``pretrain`` command for the CLI.

The stage itself is ``training.trainer.pretrain`` (a plain function); this module only wraps it in a task and a
flow (artifact: a summary table of the run), and maps command-line options onto ``PretrainConfig``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from infra.storage import join
from training.config import PretrainConfig


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
) -> str:
    """Pretrain (or resume, or reuse a finished run) and return the final checkpoint folder's URL."""
    from training.trainer import pretrain

    url = pretrain(
        corpus_url, cfg, out_root, run_name=run_name, storage_options=storage_options, ray_address=ray_address,
        progress=progress, ray_num_cpus=ray_num_cpus,
    )
    get_run_logger().info("backbone checkpoint: %s", url)
    return url


def run_summary(final_url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Last step, last loss, throughput and worker restarts of the run whose final checkpoint is ``final_url``."""
    from training.metrics import count_restarts, read_metrics, step_records
    from training.trainer import RunPaths

    # final_url = {out_root}/checkpoints/{run_name}/final
    run_name = final_url.rstrip("/").rsplit("/", 2)[-2]
    out_root = final_url.rstrip("/").rsplit("/", 3)[0]
    lines = read_metrics(RunPaths.make(out_root, run_name).metrics_url, storage_options)
    records = step_records(lines)
    tail = records[-min(len(records), 10):]
    return {
        "run": run_name,
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
) -> str:
    """UTP pretraining as a flow: returns the backbone checkpoint URL (``save_pretrained`` folder)."""
    from pipelines.reporting import markdown_table

    url = pretrain_task(corpus_url, cfg, out_root, run_name, storage_options, ray_address, ray_num_cpus, progress)
    create_markdown_artifact(
        key="pretrain-summary", markdown=markdown_table([run_summary(url, storage_options)]),
        description="UTP pretraining run",
    )
    return url


def build_config(base: PretrainConfig | None = None, **overrides: Any) -> PretrainConfig:
    """``base`` (a profile's pretrain section, else defaults) with the non-None ``overrides`` applied, validated."""
    data = (base or PretrainConfig()).model_dump(mode="json")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return PretrainConfig.model_validate(data)


def pretrain_command(
    corpus: Annotated[str, typer.Option("--corpus", help="Training corpus version folder (local path or s3:// URL)")],
    size: Annotated[str | None, typer.Option(help="Backbone size: minuscule, tiny, small, base")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer updates")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size (all workers)")] = None,
    context: Annotated[int | None, typer.Option(help="Max context points (multiple of 16, <= 2048)")] = None,
    horizon: Annotated[int | None, typer.Option(help="Max horizon points (multiple of 16, <= 256)")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="Train on GPUs (NCCL, bf16)")] = None,
    zero_stage: Annotated[int | None, typer.Option(help="DeepSpeed ZeRO stage 0-2")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, windows and patch draws")] = None,
    run_name: Annotated[str | None, typer.Option(help="Run name; rerun the same name to resume")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: the profile's)")] = None,
    flow_run: Annotated[bool, typer.Option("--flow/--no-flow", help="Run as a Prefect flow")] = True,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile name in configs/ or a YAML path")] = "local",
) -> str:
    """Pretrain the UTP backbone on a training corpus; prints the checkpoint folder URL last."""
    from pipelines.profile import load_profile

    prof = load_profile(profile)
    base = getattr(prof, "pretrain", None)
    precision = "bf16" if gpu else ("fp32" if gpu is False else None)
    cfg = build_config(
        base if isinstance(base, PretrainConfig) else None, size=size, steps=steps, batch_size=batch_size,
        context_length=context, max_horizon=horizon, lr=lr, num_workers=workers, use_gpu=gpu,
        zero_stage=zero_stage, checkpoint_every=checkpoint_every, seed=seed, precision=precision,
    )
    root = out or prof.storage.root
    address = ray_address if ray_address is not None else prof.ray.address
    if flow_run:
        runner = pretrain_flow
    else:
        from training.trainer import pretrain as runner
    url = runner(
        corpus, cfg, root, run_name=run_name, storage_options=prof.storage.options or None, ray_address=address,
        ray_num_cpus=prof.ray.num_cpus,
    )
    typer.echo(url)
    return url


def default_checkpoint_url(out_root: str, run_name: str) -> str:
    """Where ``pretrain`` puts a run's final backbone (for flows that chain on a known run name)."""
    return join(out_root, "checkpoints", run_name, "final")
