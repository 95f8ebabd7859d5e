"""The ``pretrain`` stage: a training corpus version in, a ``save_pretrained`` backbone folder out.

Layout under ``out_root`` (a local folder or ``s3://bucket/prefix``):

- ``runs/pretrain/{run_name}/``: ``config.json`` (the run's config and corpus), ``metrics.jsonl``,
  ``loss_curve.png``;
- ``checkpoints/{run_name}/``: Ray Train's run folder (``RunConfig(name=run_name, storage_path=.../checkpoints)``)
  with its ``checkpoint_*`` folders, and ``final/`` (``model.safetensors`` + ``config.json``), the result.

Rerunning the same ``run_name`` resumes from the latest checkpoint (Ray Train V2 restores it by name and storage
path); a finished run returns its ``final/`` URL without training. Within one call, a worker that dies is replaced
by Ray Train (``cfg.max_failures`` times) and the new worker group resumes the same way; ``metrics.jsonl`` records
each such restart (start events with ``attempt`` > 1, ``restarts`` on every step line). A run name reused with a
different config or corpus is refused, naming what differs: resuming someone else's optimizer state would be
silently wrong.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

from infra.fingerprint import code_version, stable_hash
from infra.ray_runtime import cluster_address, ensure_ray, pyarrow_filesystem, shutdown_ray
from infra.storage import filesystem, join, read_json, write_json_atomic
from infra.tracking import open_sinks
from training.config import PretrainConfig
from training.data import DataPosition, build_dataset, open_corpus, planned_epochs, window_acceptance
from training.deepspeed_config import deepspeed_env_vars
from training.loop import MODEL_DIR, TRAIN_DATASET, LoopSettings, train_loop_per_worker
from training.metrics import ProgressFollower, count_restarts, read_metrics
from training.paths import RunPaths

log = logging.getLogger(__name__)

RAY_SNAPSHOT_NAME = "checkpoint_manager_snapshot.json"  # Ray Train V2's record of registered checkpoints


@dataclass(frozen=True)
class PretrainResult:
    """What ``pretrain`` made: the final backbone's URL, the run's name and folders, and whether it trained."""

    checkpoint_url: str
    run_name: str
    paths: RunPaths
    trained: bool  # False: the run was already finished (its final/ is returned as it was)

    @property
    def metrics_url(self) -> str:
        return self.paths.metrics_url

    @property
    def run_url(self) -> str:
        return self.paths.run_url


def default_run_name(corpus_version_id: str, cfg: PretrainConfig) -> str:
    """A name that is the same for the same corpus and config: rerunning resumes instead of starting over."""
    return f"utp-{cfg.size}-{stable_hash({'corpus': corpus_version_id, 'cfg': cfg.model_dump(mode='json')}, 10)}"


@dataclass(frozen=True)
class ResumePoint:
    step: int
    position: DataPosition
    checkpoint_dir: str


def latest_checkpoint(paths: RunPaths, storage_options: dict[str, Any] | None) -> ResumePoint | None:
    """The checkpoint Ray Train will restore, from its snapshot file (the metrics rank 0 reported with it)."""
    fs, path = filesystem(join(paths.ray_run_url, RAY_SNAPSHOT_NAME), storage_options)
    if not fs.exists(path):
        return None
    try:
        snap = read_json(fs, path)
        latest = snap.get("latest_checkpoint_result") or {}
        metrics = latest.get("metrics") or {}
        return ResumePoint(
            step=int(metrics["step"]),
            position=DataPosition(int(metrics["data_epoch"]), int(metrics["data_windows_into_epoch"])),
            checkpoint_dir=str(latest["checkpoint_dir_name"]),
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        # Ray's file format is internal: if it changed, start the data stream at epoch 0 and let the workers
        # skip to the checkpoint's position (correct, only slower).
        log.warning("%s: cannot read the resume point (%s); data will be skipped from epoch 0", path, exc)
        return None


def _run_record(cfg: PretrainConfig, corpus_url: str, corpus_version: str, run_name: str) -> dict[str, Any]:
    return {
        "run_name": run_name,
        "corpus_url": corpus_url,
        "corpus_version": corpus_version,
        "config": cfg.model_dump(mode="json"),
        "code_version": code_version("training"),
    }


# Settings a resumed run may change: they decide how often things happen and how fast data flows, not what is
# computed (the steps, the schedule, the windows and the ZeRO layout stay those of the checkpoint).
RESUME_SAFE_FIELDS = frozenset({"log_every", "checkpoint_every", "keep_checkpoints", "max_failures"})
RESUME_SAFE_DATA_FIELDS = frozenset({"read_concurrency", "prefetch_batches", "stall_warn_ratio"})


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the fields that differ and matter for resuming (``data.x`` for the data section)."""
    skip = RESUME_SAFE_FIELDS | {"data"}
    diff = [k for k in sorted(set(old) | set(new)) if k not in skip and old.get(k) != new.get(k)]
    old_data, new_data = old.get("data") or {}, new.get("data") or {}
    diff += [f"data.{k}" for k in sorted(set(old_data) | set(new_data))
             if k not in RESUME_SAFE_DATA_FIELDS and old_data.get(k) != new_data.get(k)]
    return diff


def _check_same_run(existing: dict[str, Any], new: dict[str, Any], where: str) -> None:
    if existing.get("corpus_version") != new["corpus_version"]:
        raise ValueError(
            f"{where}: run {new['run_name']!r} was trained on corpus version {existing.get('corpus_version')!r}, "
            f"not {new['corpus_version']!r}; pick another run_name"
        )
    diff = _config_diff(existing.get("config", {}), new["config"])
    if diff:
        raise ValueError(
            f"{where}: run {new['run_name']!r} exists with a different config (field(s) {diff}); "
            "resume it with the same config or pick another run_name"
        )
    if existing.get("code_version") != new["code_version"]:
        log.warning("%s: the training code changed since this run started; resuming anyway", where)


def _export_final(paths: RunPaths, checkpoint_dir: str, storage_options: dict[str, Any] | None) -> str:
    """Copy the checkpoint's model into ``final/`` through save_pretrained (validated on the way)."""
    from training.io import from_pretrained, save_pretrained

    model = from_pretrained(join(paths.ray_run_url, checkpoint_dir, MODEL_DIR), storage_options)
    save_pretrained(model, paths.final_url, storage_options)
    return paths.final_url


def _final_done(paths: RunPaths, storage_options: dict[str, Any] | None) -> bool:
    fs, path = filesystem(join(paths.final_url, "config.json"), storage_options)
    return fs.exists(path)


def pretrain(
    corpus_url: str,
    cfg: PretrainConfig,
    out_root: str,
    run_name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    ray_num_cpus: int | None = None,
    tracking: Any = None,
) -> PretrainResult:
    """Pretrain the UTP backbone on a training corpus version with Ray Train + DeepSpeed; returns the final
    backbone's URL (``final/``) with the run's name and folders.

    ``cfg.num_workers`` Ray Train workers (CPU/gloo or GPU/NCCL) each run ``train_loop_per_worker``; the corpus
    streams through Ray Data. ``ray_address`` (else ``RAY_ADDRESS``) joins a cluster; by default a local Ray is
    started in-process (``ray_num_cpus`` logical CPUs, default ``infra.ray_runtime.local_num_cpus()``) and stopped
    at the end. Rerunning with the same ``run_name`` resumes. The step metrics are mirrored as the profile's
    ``tracking`` section asks (TensorBoard events in ``runs/pretrain/{run_name}/tensorboard`` by default).
    """
    version = open_corpus(corpus_url, storage_options)
    run_name = run_name or default_run_name(version.version_id, cfg)
    if "/" in run_name or not run_name.strip():
        raise ValueError(f"run_name {run_name!r} must be a non-empty name without '/'")
    paths = RunPaths.make(out_root, run_name)
    record = _run_record(cfg, version.url, version.version_id, run_name)
    if _record_run(paths, record, storage_options):
        log.info("run %s is finished: %s", run_name, paths.final_url)
        return PretrainResult(paths.final_url, run_name, paths, trained=False)
    resume = latest_checkpoint(paths, storage_options)
    if resume is not None and resume.step >= cfg.steps:
        url = _export_final(paths, resume.checkpoint_dir, storage_options)
        _write_curve(paths, storage_options)
        return PretrainResult(url, run_name, paths, trained=False)
    start_step = resume.step if resume else 0
    position = resume.position if resume else DataPosition()
    num_epochs = _epochs_needed(version, cfg, corpus_url, start_step, position)
    if cluster_address(ray_address) is not None and "://" not in out_root:
        log.warning("out_root %s is a local path on a Ray cluster: every node must see it (shared filesystem); "
                    "use s3://... otherwise", out_root)
    env_vars = deepspeed_env_vars(cfg.use_gpu)
    # Ray's own log lines stay in its session folder; the driver shows the run's progress from metrics.jsonl.
    handle = ensure_ray(ray_address, num_cpus=ray_num_cpus, env_vars=env_vars, log_to_driver=False)
    try:
        dataset = build_dataset(version, cfg, position.epoch, num_epochs)
        trainer = _make_trainer(cfg, paths, dataset, position, env_vars, storage_options)
        checkpoint_dir = _fit(trainer, cfg, paths, record, start_step, storage_options, progress, tracking)
        _log_restarts(paths, storage_options, cfg.max_failures)
        url = _export_final(paths, checkpoint_dir, storage_options)
    finally:
        shutdown_ray(handle)
    _write_curve(paths, storage_options)
    return PretrainResult(url, run_name, paths, trained=True)


def _record_run(paths: RunPaths, record: dict[str, Any], storage_options: dict[str, Any] | None) -> bool:
    """Write the run's ``config.json`` (an existing run must be the same run); True when the run is finished."""
    fs, config_path = filesystem(paths.config_url, storage_options)
    if fs.exists(config_path):
        _check_same_run(read_json(fs, config_path), record, paths.config_url)
        if _final_done(paths, storage_options):
            return True
        write_json_atomic(fs, config_path, record)  # the resume-safe settings now in force
    else:
        fs.makedirs(posixpath.dirname(config_path), exist_ok=True)
        write_json_atomic(fs, config_path, record)
    return False


def _epochs_needed(
    version: Any, cfg: PretrainConfig, corpus_url: str, start_step: int, position: DataPosition
) -> int:
    """Epochs of the corpus the remaining steps need, from the share of rows that yield a usable window."""
    acceptance = window_acceptance(version, cfg)
    if acceptance <= 0:
        raise ValueError(
            f"{corpus_url}: no usable window in the corpus's first rows (need {cfg.context_length}+ points with "
            f">= {cfg.min_observed:.0%} observed); check the corpus or lower context_length/min_observed"
        )
    windows_needed = (cfg.steps - start_step) * cfg.batch_size + position.windows_into_epoch
    return planned_epochs(version.num_rows, acceptance, cfg, windows_needed)


def _make_trainer(
    cfg: PretrainConfig, paths: RunPaths, dataset: Any, position: DataPosition, env_vars: dict[str, str],
    storage_options: dict[str, Any] | None,
) -> Any:
    """The TorchTrainer: ``cfg.num_workers`` workers running ``train_loop_per_worker`` on the run's storage."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage_fs, storage_path = pyarrow_filesystem(paths.checkpoints_root, storage_options)
    ingest = DataConfig.default_ingest_options()
    ingest.preserve_order = True  # the window sequence, hence the data position, is deterministic
    settings = LoopSettings(
        metrics_url=paths.metrics_url, storage_options=dict(storage_options or {}),
        dataset_start_epoch=position.epoch, run_name=paths.run_name, launch_id=uuid.uuid4().hex,
    )
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "settings": settings.__dict__},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=paths.run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            worker_runtime_env={"env_vars": env_vars},
        ),
        datasets={TRAIN_DATASET: dataset},
        dataset_config=DataConfig(execution_options=ingest),
    )


def _fit(
    trainer: Any, cfg: PretrainConfig, paths: RunPaths, record: dict[str, Any], start_step: int,
    storage_options: dict[str, Any] | None, progress: bool, tracking: Any,
) -> str:
    """Run the trainer while the driver follows ``metrics.jsonl`` (progress, tracking); returns the last
    checkpoint's folder name."""
    sinks = open_sinks(tracking, paths.run_url, paths.run_name, record, storage_options)
    follower = ProgressFollower(
        paths.metrics_url, storage_options, cfg.steps, start_step, cfg.log_every, cfg.data.stall_warn_ratio,
        show=progress, listeners=[lambda rec: sinks.scalars(int(rec["step"]), pretrain_scalars(rec))],
    )
    try:
        with follower:
            result = trainer.fit()
    finally:
        sinks.close()
    if result.error is not None:
        raise RuntimeError(f"pretraining run {paths.run_name!r} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"pretraining run {paths.run_name!r} ended without a checkpoint")
    return posixpath.basename(result.checkpoint.path.rstrip("/"))


def _log_restarts(paths: RunPaths, storage_options: dict[str, Any] | None, max_failures: int) -> None:
    """Say on the driver that workers died and were replaced: the run succeeded, but the cluster is not healthy."""
    restarts = count_restarts(read_metrics(paths.metrics_url, storage_options))
    if restarts:
        log.warning("run %s finished after %d worker restart(s) (max_failures=%d); see %s",
                    paths.run_name, restarts, max_failures, paths.metrics_url)


TRACKED_SCALARS = ("loss", "lr", "tokens_per_s", "samples_per_s", "grad_norm", "data_wait_s", "step_time_s")


def pretrain_scalars(rec: dict[str, Any]) -> dict[str, Any]:
    """The step record's scalars as TensorBoard/MLflow tags (``pretrain/loss``...)."""
    return {f"pretrain/{k}": rec[k] for k in TRACKED_SCALARS if k in rec}


def _write_curve(paths: RunPaths, storage_options: dict[str, Any] | None) -> None:
    from training.metrics import write_loss_curve

    write_loss_curve(paths.metrics_url, paths.loss_curve_url, storage_options)
