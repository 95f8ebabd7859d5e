"""The UTP training step and the per-worker Ray Train function (DeepSpeed engine, metrics, checkpoints, resume).

One training step, whatever runs it: draw the global batch's number of future patches from the step, set the
Warmup-Stable-Decay lr of the step, pinball loss under optional bf16 autocast, backward, clipped update. Two
backends take the same step: ``DeepSpeedBackend`` (the distributed path: ZeRO 0-2, clipping in the DeepSpeed
config) and ``TorchBackend`` (a bare AdamW, for single-process runs and the benchmark's baseline).

``train_loop_per_worker`` is the function Ray Train runs on every worker, 1..N of them, CPU (gloo) or GPU
(NCCL): the same code. Checkpoints hold every rank's DeepSpeed state (``engine.save_checkpoint``), the model in
``save_pretrained`` form (``model/``) and ``train_state.json`` (step, data position, lr); they are reported with
``ray.train.report`` to the run's storage. A rerun of the same run (same ``RunConfig(name, storage_path)``) gets
the latest one from ``ray.train.get_checkpoint()`` and continues at its step, schedule position and data position;
so does the worker group Ray Train starts again in the same run after a worker died (``max_failures``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from training.config import PretrainConfig
from training.data import DataPosition, ExactBatches, future_patches_for_step
from training.model import FactoSTBackbone
from training.schedule import WSDSchedule

log = logging.getLogger(__name__)

DS_TAG = "ds"
STATE_NAME = "train_state.json"
MODEL_DIR = "model"
TRAIN_DATASET = "train"
STATE_FORMAT = 1


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices only; norms, biases and the REG vector are not shrunk towards 0."""
    decay, no_decay = [], []
    for _, p in sorted(model.named_parameters()):
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: PretrainConfig, lr: float) -> torch.optim.AdamW:
    """A torch AdamW: as fast as DeepSpeed's own on CPU and compiles nothing (docs/design.md, "Software stack")."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, betas=cfg.betas, eps=cfg.eps)


def tokens_per_sample(context_length: int, patch_size: int, future_patches: int) -> int:
    """Tokens the backbone sees per window: context patches, the REG token and the future placeholders."""
    return math.ceil(context_length / patch_size) + 1 + future_patches


class StepBackend(Protocol):
    module: FactoSTBackbone

    def set_lr(self, lr: float) -> None: ...

    def train_step(self, context: Tensor, target: Tensor) -> Tensor: ...


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class TorchBackend:
    """Bare single-process PyTorch: AdamW + ``clip_grad_norm_``; the reference the distributed path must match."""

    def __init__(self, model: FactoSTBackbone, cfg: PretrainConfig, device: torch.device | None = None) -> None:
        self.device = device or torch.device("cpu")
        self.module = model.to(self.device)
        self.cfg = cfg
        self.optimizer = make_optimizer(model, cfg, lr=cfg.lr)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, context: Tensor, target: Tensor) -> Tensor:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, self.cfg.precision):
            loss = self.module.training_loss(context, target)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return loss.detach()


class DeepSpeedBackend:
    """A DeepSpeed engine; clipping and ZeRO sharding come from the DeepSpeed config."""

    def __init__(self, engine: Any, cfg: PretrainConfig, device: torch.device) -> None:
        self.engine = engine
        self.module = engine.module
        self.cfg = cfg
        self.device = device

    def set_lr(self, lr: float) -> None:
        # engine.optimizer is the torch AdamW or the ZeRO wrapper; both expose the inner param_groups.
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, context: Tensor, target: Tensor) -> Tensor:
        self.engine.train()
        with _autocast(self.device, self.cfg.precision):
            # Not engine.forward: the loss is a method of the backbone. ZeRO 0-2 need no forward hooks.
            loss = self.module.training_loss(context, target)
        self.engine.backward(loss)
        self.engine.step()
        return loss.detach()


@dataclass
class StepResult:
    step: int  # 1-based number of updates done after this one
    loss: float
    lr: float
    future_patches: int
    step_time_s: float
    data_wait_s: float
    samples: int
    tokens: int
    epoch: int
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        t = max(self.step_time_s, 1e-9)
        return {
            "step": self.step, "loss": self.loss, "lr": self.lr, "future_patches": self.future_patches,
            "step_time_s": round(self.step_time_s, 6), "data_wait_s": round(self.data_wait_s, 6),
            "samples_per_s": self.samples / t, "tokens_per_s": self.tokens / t, "epoch": self.epoch,
            "time": time.time(), **self.extra,
        }


def run_step(
    backend: StepBackend,
    batch: dict[str, Tensor],
    step_index: int,
    cfg: PretrainConfig,
    schedule: WSDSchedule,
    device: torch.device,
    reduce_loss: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float, int]:
    """One update at 0-based ``step_index``: returns (loss, lr, future patches). Same on every backend."""
    patch = backend.module.cfg.patch_size
    n_fut = future_patches_for_step(cfg.seed, step_index, cfg.max_patches)
    context = batch["context"].to(device, non_blocking=True)
    target = batch["target"][:, : n_fut * patch].to(device, non_blocking=True)
    lr = schedule(step_index)
    backend.set_lr(lr)
    loss = backend.train_step(context, target)
    if reduce_loss is not None:
        loss = reduce_loss(loss)
    return float(loss.item()), lr, n_fut


def train_local(
    model: FactoSTBackbone,
    cfg: PretrainConfig,
    batches: Iterator[dict[str, Any]],
    device: torch.device | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[StepResult]:
    """Single-process pretraining with ``TorchBackend``: the same steps, schedule and patch draws as the
    distributed loop, for small runs, tests and the benchmark's bare-PyTorch baseline.

    ``batches`` yields dicts with ``context`` [B, L] and ``target`` [B, H_max] (numpy or torch; ``epoch``
    optional). Stops after ``cfg.steps`` updates or when ``batches`` ends.
    """
    device = device or torch.device("cpu")
    backend = TorchBackend(model, cfg, device)
    schedule = WSDSchedule.from_config(cfg)
    results: list[StepResult] = []
    it = iter(batches)
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        batch = next(it, None)
        if batch is None:
            break
        batch = {k: torch.as_tensor(v) for k, v in batch.items()}
        t_data = time.perf_counter() - t0
        loss, lr, n_fut = run_step(backend, batch, step, cfg, schedule, device)
        n = int(batch["context"].shape[0])
        res = StepResult(
            step=step + 1, loss=loss, lr=lr, future_patches=n_fut, step_time_s=time.perf_counter() - t0,
            data_wait_s=t_data, samples=n, tokens=n * tokens_per_sample(batch["context"].shape[1],
                                                                       model.cfg.patch_size, n_fut),
            epoch=int(batch["epoch"][0]) if "epoch" in batch else 0,
        )
        results.append(res)
        if on_step is not None:
            on_step(res)
    return results


class FirstInBackground:
    """An iterator whose first item is fetched in a thread from construction on.

    Ray Data starts its pipeline (actors, worker processes) on the first ``next``: several seconds on 2 cores.
    Fetching it in the background overlaps that with building the model and the DeepSpeed engine.
    """

    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._first: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(target=self._pull, daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        try:
            self._first = next(self._it, None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self._error = exc

    def __iter__(self) -> FirstInBackground:
        return self

    def __next__(self) -> Any:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
            if self._first is None:
                raise StopIteration
            first, self._first = self._first, None
            return first
        return next(self._it)


@dataclass(frozen=True)
class LoopSettings:
    """What the driver hands to every worker besides the PretrainConfig (plain data: it is pickled)."""

    metrics_url: str
    storage_options: dict[str, Any]
    dataset_start_epoch: int
    run_name: str
    launch_id: str | None = None  # one per driver call: tells a Ray Train restart from a rerun (MetricsWriter)


def _set_torch_threads(cfg: PretrainConfig) -> None:
    """One worker per ``cpus_per_worker`` cores: give torch that many threads, not all of the node's."""
    if not cfg.use_gpu:
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))


def _gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _mean_across_ranks(loss: Tensor) -> Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loss
    t = loss.detach().float().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def _read_state(directory: str) -> dict[str, Any]:
    path = Path(directory) / STATE_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint has no {STATE_NAME}; not a UTP pretraining checkpoint")
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: unsupported train state format {state.get('format')!r}")
    return state


def stream_skip(state: dict[str, Any], settings: LoopSettings, rank: int, world: int) -> int | None:
    """Windows of its own stream this rank skips to go on exactly where it stopped, when the checkpoint was written
    on this very dataset (a Ray Train restart inside one ``pretrain`` call) by as many workers; else None.

    Why not the combined position: Ray Data deals the stream's blocks to the workers as they ask, so one
    worker's stream can be in another epoch than its neighbour's. A rerun on a new dataset can only start from the
    earliest epoch; the same dataset replays every worker's stream in the same order, so each rank's own count is
    exact.
    """
    counts = state.get("stream_windows")
    if not settings.launch_id or state.get("launch_id") != settings.launch_id or not counts or len(counts) != world:
        return None
    return int(counts[rank])


@dataclass(frozen=True)
class WorkerStart:
    """Where a worker starts: the step, the data position, the restored checkpoint's folder and its own skip."""

    step: int
    position: DataPosition
    directory: str | None = None  # the checkpoint, downloaded; None on a fresh start
    skip_first: int | None = None  # windows of its own stream to skip (see ``stream_skip``)

    @property
    def resumed(self) -> bool:
        return self.directory is not None


def worker_start(
    checkpoint: Any, settings: LoopSettings, schedule: WSDSchedule, rank: int, world: int,
    stack: contextlib.ExitStack,
) -> WorkerStart:
    """The start of a fresh run, or the step and data position of Ray Train's checkpoint (held open in ``stack``)."""
    if checkpoint is None:
        return WorkerStart(0, DataPosition(settings.dataset_start_epoch, 0))
    directory = stack.enter_context(checkpoint.as_directory())  # downloaded once, loaded into the engine later
    state = _read_state(directory)
    start_step = int(state["step"])
    position = DataPosition(**state["data"])
    if position.epoch < settings.dataset_start_epoch:
        log.warning("checkpoint data position %s precedes the dataset's first epoch %d; starting there",
                    position, settings.dataset_start_epoch)
        position = DataPosition(settings.dataset_start_epoch, 0)
    skip_first = stream_skip(state, settings, rank, world)
    log.info("rank %d resuming at step %d (lr %.3g, data %s, own stream skip %s)", rank, start_step,
             schedule(start_step), position, skip_first)
    return WorkerStart(start_step, position, directory, skip_first)


def worker_batches(
    shard: Any, cfg: PretrainConfig, settings: LoopSettings, start: WorkerStart, rank: int, world: int
) -> ExactBatches:
    """This worker's exact batches from its Ray Data shard, positioned where ``start`` says."""
    torch_batches = shard.iter_torch_batches(
        batch_size=cfg.per_worker_batch,
        prefetch_batches=cfg.data.prefetch_batches,
        local_shuffle_buffer_size=cfg.data.shuffle_buffer_rows or None,
        local_shuffle_seed=(cfg.seed + 7919 * rank + 104729 * start.step) if cfg.data.shuffle_buffer_rows else None,
        drop_last=False,
        device="cpu",  # ExactBatches counts epochs on the host; run_step moves the batch to the device
        pin_memory=cfg.use_gpu,
    )
    if start.skip_first is not None:
        return ExactBatches(torch_batches, cfg.per_worker_batch, settings.dataset_start_epoch, 0, start.skip_first)
    return ExactBatches(torch_batches, cfg.per_worker_batch, start.position.epoch,
                        start.position.windows_into_epoch // world)


def build_engine(cfg: PretrainConfig, schedule: WSDSchedule, world: int, device: torch.device) -> Any:
    """The DeepSpeed engine around a freshly initialised backbone (the same weights on every rank)."""
    import deepspeed

    from training.deepspeed_config import build_ds_config

    torch.manual_seed(cfg.seed)  # identical init everywhere (DeepSpeed also broadcasts rank 0's weights)
    model = FactoSTBackbone(cfg.backbone_config()).to(device)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=make_optimizer(model, cfg, schedule(0)), config=build_ds_config(cfg, world)
    )
    return engine


class StepLogger:
    """Rank 0's step records: appended every step, flushed every ``log_every`` steps with a data-stall warning.

    Without a writer (ranks > 0) it only builds the records, which every rank reports with its checkpoints.
    """

    def __init__(self, writer: Any, cfg: PretrainConfig, start_step: int) -> None:
        self.writer, self.cfg, self.start_step = writer, cfg, start_step
        self.window_wait = self.window_time = 0.0

    def record(self, res: StepResult) -> dict[str, Any]:
        self.window_wait += res.data_wait_s
        self.window_time += res.step_time_s
        rec = res.record()
        if self.writer is None:
            return rec
        self.writer.append(rec)
        if res.step % self.cfg.log_every == 0 or res.step == self.cfg.steps:
            self.writer.flush()
            share = self.window_wait / max(self.window_time, 1e-9)
            if share > self.cfg.data.stall_warn_ratio and res.step > self.start_step + self.cfg.log_every:
                log.warning("data loader stalls training: %.0f%% of step time spent waiting for batches", 100 * share)
            self.window_wait = self.window_time = 0.0
        return rec


class Checkpointer:
    """Every ``checkpoint_every`` steps and at the end: every rank's DeepSpeed state, rank 0's ``model/`` and
    ``train_state.json`` (step, combined data position, each rank's stream count), reported to Ray Train."""

    def __init__(
        self, engine: Any, batches: ExactBatches, schedule: WSDSchedule, cfg: PretrainConfig,
        settings: LoopSettings, rank: int, world: int, writer: Any,
    ) -> None:
        self.engine, self.batches, self.schedule, self.cfg = engine, batches, schedule, cfg
        self.settings, self.rank, self.world, self.writer = settings, rank, world, writer

    def due(self, step_done: int) -> bool:
        return step_done % self.cfg.checkpoint_every == 0 or step_done == self.cfg.steps

    def train_state(self, step_done: int, per_rank: list[dict[int, int]], pos: DataPosition) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "step": step_done, "data": pos.to_dict(), "world_size": self.world,
            "next_lr": self.schedule(step_done) if step_done < self.cfg.steps else None,
            "run_name": self.settings.run_name, "launch_id": self.settings.launch_id,
            "stream_windows": [sum(c.values()) for c in per_rank],
        }

    def save(self, step_done: int, metrics: dict[str, Any]) -> None:
        import ray.train

        from training.io import save_pretrained

        per_rank = _gather(dict(self.batches.passed))
        pos = DataPosition.combine(per_rank)
        with tempfile.TemporaryDirectory(prefix="utp-ckpt-") as tmp:
            self.engine.save_checkpoint(tmp, tag=DS_TAG)
            if self.rank == 0:
                save_pretrained(self.engine.module, os.path.join(tmp, MODEL_DIR))
                Path(tmp, STATE_NAME).write_text(json.dumps(self.train_state(step_done, per_rank, pos), indent=2))
                self.writer.flush()
            report = {**metrics, "step": step_done, "data_epoch": pos.epoch,
                      "data_windows_into_epoch": pos.windows_into_epoch}
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_steps(
    backend: DeepSpeedBackend, stream: Iterator[dict[str, Any]], start_step: int, cfg: PretrainConfig,
    schedule: WSDSchedule, device: torch.device, rank: int, steps_log: StepLogger, checkpointer: Checkpointer,
) -> None:
    """Steps ``start_step..cfg.steps``: one update per batch, its record logged, checkpoints when due."""
    patch = cfg.backbone_config().patch_size
    t_prev = time.perf_counter()
    for step in range(start_step, cfg.steps):
        batch = next(stream, None)
        if batch is None:
            raise RuntimeError(
                f"the corpus stream ended at step {step} of {cfg.steps}: too few windows (raise "
                "data.extra_epochs or data.windows_per_sample, or check min_observed against the corpus)"
            )
        t_data = time.perf_counter() - t_prev
        if step == start_step:
            log.info("rank %d: first batch after %.1f s", rank, t_data)
        loss, lr, n_fut = run_step(backend, batch, step, cfg, schedule, device, reduce_loss=_mean_across_ranks)
        now = time.perf_counter()
        dt, t_prev = now - t_prev, now
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step + 1}; lower lr or check the corpus")
        last = steps_log.record(StepResult(
            step=step + 1, loss=loss, lr=lr, future_patches=n_fut, step_time_s=dt, data_wait_s=t_data,
            samples=cfg.batch_size, tokens=cfg.batch_size * tokens_per_sample(cfg.context_length, patch, n_fut),
            epoch=int(batch["epoch"].min()),
        ))
        if checkpointer.due(step + 1):
            checkpointer.save(step + 1, {k: v for k, v in last.items() if isinstance(v, int | float)})
            t_prev = time.perf_counter()  # checkpoint time is not data wait


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: build the engine, resume if a checkpoint exists, train to ``cfg.steps``."""
    import ray.train
    import ray.train.torch

    from training.deepspeed_config import prepare_deepspeed_environment
    from training.metrics import MetricsWriter

    cfg = PretrainConfig.model_validate(config["cfg"])
    settings = LoopSettings(**config["settings"])
    # DeepSpeed's ZeRO calls a deprecated torch collective every step; one warning per step drowns the log.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    prepare_deepspeed_environment(cfg.use_gpu)
    _set_torch_threads(cfg)
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")

    schedule = WSDSchedule.from_config(cfg)
    stack = contextlib.ExitStack()
    start = worker_start(ray.train.get_checkpoint(), settings, schedule, rank, world, stack)
    writer = None
    if rank == 0:  # first thing after the checkpoint: a restart is on record even if this attempt dies early
        writer = MetricsWriter(settings.metrics_url, settings.storage_options,
                               resume_step=start.step if start.resumed else None, launch=settings.launch_id)
    batches = worker_batches(ray.train.get_dataset_shard(TRAIN_DATASET), cfg, settings, start, rank, world)
    stream = FirstInBackground(batches)  # the pipeline starts up while DeepSpeed initialises
    engine = build_engine(cfg, schedule, world, device)
    with stack:
        if start.directory is not None:
            engine.load_checkpoint(start.directory, tag=DS_TAG, load_lr_scheduler_states=False)
    log.info("rank %d/%d: DeepSpeed engine ready (ZeRO %d, %s)", rank, world, cfg.zero_stage, device)
    checkpointer = Checkpointer(engine, batches, schedule, cfg, settings, rank, world, writer)
    train_steps(DeepSpeedBackend(engine, cfg, device), stream, start.step, cfg, schedule, device, rank,
                StepLogger(writer, cfg, start.step), checkpointer)
    if writer is not None:
        writer.close()


def windows_to_batches(windows: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Cut a dict of window arrays (as ``crop_windows`` returns) into full batches, in order."""
    n = len(windows["context"])
    for start in range(0, n - batch_size + 1, batch_size):
        yield {k: v[start : start + batch_size] for k, v in windows.items()}
