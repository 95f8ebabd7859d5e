"""Zero-, few- and full-shot STA runs, the baselines, early stopping and evaluation, as plain functions.

``run_adaptation`` runs every configured (mode, horizon) of one benchmark plus the baselines through the same
windows, loss and metrics, and writes each run's outputs (see :mod:`adaptation.outputs`).

- zero: the pretrained backbone alone, no update (adapter modules off).
- few: adapter (and backbone unless frozen) trained on windows inside the last 10% of the train split.
- full: the same on the whole train split.
- early stopping: validation loss (the training loss, on at most ``max_val_windows`` evenly spaced val
  windows) after every epoch or ``eval_every_steps``; the best weights, including the starting point, are
  kept, so a run never ends worse on validation than it started. A trained run whose best point is the start
  is flagged: ``adapted`` False and status "no improvement over step 0" in its row.
- horizons: every pair is checked against the backbone's ``max_horizon`` / ``max_context`` and the splits
  before anything trains. The protocol (horizons, splits, scaling, masked metrics) is in docs/protocol.md.
- loss: on the benchmark's z-score scale (fitted on the train split), over observed targets only: L1 of the
  median, or the pinball loss of all quantiles. Metrics are computed on the original scale (and, as the LTSF
  papers report, on the z-score scale too).

Baselines:

- seasonal naive: ``y(t + h) = y(t + h - s * (floor((h - 1) / s) + 1))`` with ``s`` = steps per day (288 for
  5-minute data, 24 hourly), or ``s = 1`` (the last value) where a day is not a whole number of steps (daily
  and coarser data). It may read history from before the input window. A lagged value that is missing falls
  back to the last observed input value, then to the train mean. Its quantiles are the point plus the
  empirical quantiles of its own errors on the few-shot training windows (per horizon step, centred on the
  median error), so it has a CRPS and coverage like the models.
- scratch: the same architecture (backbone + adapter) from a random initialisation, trained on the same
  windows with the same budget (epochs, steps, patience) and the whole model learning at ``scratch_lr``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adaptation import metrics as M
from adaptation.adapter import STAModel
from adaptation.config import AdaptConfig
from adaptation.datasets import SpatioTemporalDataset, steps_per_day
from adaptation.modules import ReplayMixer
from adaptation.outputs import write_results_table, write_run_outputs
from adaptation.windows import SeriesArrays, WindowSet, make_windows
from infra.storage import join
from training.io import from_pretrained
from training.losses import pinball_loss
from training.model import FactoSTBackbone

Logger = Callable[[str], None]
# Predictor: (windows, indices) -> quantiles [B, H, N, Q] on the z-score scale.
Predictor = Callable[[WindowSet, np.ndarray], np.ndarray]
# Cap on windows used to estimate the seasonal-naive error quantiles (enough for stable 1%/99% quantiles).
NAIVE_CALIBRATION_WINDOWS = 2048


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda when available else cpu; anything else as torch reads it."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------- metrics


class MetricAccumulator:
    """The metrics of :func:`adaptation.metrics.evaluate` over many chunks, combined exactly.

    Each chunk is evaluated with ``evaluate``; means are recombined with their counts (observed points,
    MAPE's non-zero targets, ``sum |y|`` for the weighted quantile loss), so the result equals ``evaluate``
    on the concatenation without ever holding a whole test split of quantiles in memory.
    """

    _MEANS = ("mae", "crps", "coverage_80", "coverage_98")

    def __init__(self, levels: tuple[float, ...], null_value: M.NullValue) -> None:
        self.levels = levels
        self.null_value = null_value
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}
        self.horizon: dict[str, list[list[float]]] = {}

    def _add(self, key: str, value: float, weight: float) -> None:
        if weight > 0 and math.isfinite(value):
            self.sums[key] = self.sums.get(key, 0.0) + value * weight
            self.counts[key] = self.counts.get(key, 0.0) + weight

    def add(self, quantiles: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> None:
        keep = M.observed(target, self.null_value, mask)
        n = float(keep.sum())
        if n == 0:
            return
        res = M.evaluate(quantiles, target, self.levels, self.null_value, keep)
        y = np.nan_to_num(np.asarray(target, dtype=np.float64))
        mape_keep = keep & (np.abs(y) > M.NULL_ATOL)
        for key in self._MEANS:
            if key in res:
                self._add(key, res[key], n)
        self._add("mse", res["rmse"] ** 2, n)
        self._add("mape", res["mape"], float(mape_keep.sum()))
        self._add("wql", res["wql"], float(np.abs(y[keep]).sum()))
        self.counts["observed"] = self.counts.get("observed", 0.0) + n
        steps = target.shape[1]
        if not self.horizon:
            self.horizon = {k: [[0.0, 0.0] for _ in range(steps)] for k in ("mae", "mse", "mape")}
        for h in range(steps):
            n_h = float(keep[:, h].sum())
            n_mape = float(mape_keep[:, h].sum())
            for key, value, weight in (
                ("mae", res["per_horizon"]["mae"][h], n_h),
                ("mse", res["per_horizon"]["rmse"][h] ** 2, n_h),
                ("mape", res["per_horizon"]["mape"][h], n_mape),
            ):
                if weight > 0 and math.isfinite(value):
                    self.horizon[key][h][0] += value * weight
                    self.horizon[key][h][1] += weight

    def result(self) -> dict[str, Any]:
        def mean(key: str) -> float:
            return self.sums[key] / self.counts[key] if self.counts.get(key) else float("nan")

        out: dict[str, Any] = {
            k: mean(k) for k in ("mae", "mape", "crps", "wql", "coverage_80", "coverage_98")
        }
        out["rmse"] = math.sqrt(mean("mse")) if self.counts.get("mse") else float("nan")
        out["observed"] = int(self.counts.get("observed", 0))

        def per(key: str) -> list[float]:
            return [s / c if c else float("nan") for s, c in self.horizon.get(key, [])]

        out["per_horizon"] = {
            "mae": per("mae"),
            "rmse": [math.sqrt(v) for v in per("mse")],
            "mape": per("mape"),
        }
        return out


# ------------------------------------------------------------------------------------------------ baselines


def seasonal_period(freq: str) -> int:
    """Steps per day, or 1 where a day is not a whole number of steps (see the module docstring)."""
    per_day = steps_per_day(freq)
    return per_day if per_day is not None and per_day > 1 else 1


def seasonal_naive_point(
    data: np.ndarray,
    starts: np.ndarray,
    input_len: int,
    output_len: int,
    season: int,
    fill_value: float = 0.0,
) -> np.ndarray:
    """Seasonal-naive point forecasts [S, output_len, N] from ``data`` [T, N] (NaN = missing)."""
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    starts = np.asarray(starts, dtype=np.int64)
    rows_x = starts[:, None] + np.arange(input_len)[None, :]
    context = data[rows_x]  # [S, L, N]
    finite = np.isfinite(context)
    last_idx = np.where(finite, np.arange(input_len)[None, :, None], -1).max(axis=1)  # [S, N]
    last = np.take_along_axis(context, np.maximum(last_idx, 0)[:, None, :], axis=1)[:, 0]
    last = np.where(last_idx >= 0, last, fill_value)
    out = np.empty((starts.size, output_len, data.shape[1]), dtype=np.float64)
    for h in range(output_len):
        src = starts + input_len + h - season * (h // season + 1)
        vals = np.where((src >= 0)[:, None], data[np.maximum(src, 0)], np.nan)
        out[:, h] = np.where(np.isfinite(vals), vals, last)
    return out


class SeasonalNaive:
    """Seasonal naive with empirical quantile bands, as a :data:`Predictor` on the z-score scale."""

    def __init__(self, season: int, levels: tuple[float, ...]) -> None:
        self.season = season
        self.levels = levels
        self.offsets: np.ndarray | None = None  # [H, Q]

    def point(self, windows: WindowSet, idx: np.ndarray) -> np.ndarray:
        return seasonal_naive_point(
            windows.arrays.normalized, windows.starts[idx], windows.input_len, windows.output_len, self.season
        )

    def calibrate(self, windows: WindowSet) -> None:
        """Error quantiles per horizon step from ``windows`` (centred so the median offset is 0)."""
        sample = windows.evenly_spaced(NAIVE_CALIBRATION_WINDOWS)
        idx = np.arange(len(sample))
        pred = self.point(sample, idx)
        target = sample.batch(idx).y.numpy().astype(np.float64)
        resid = (target - pred).reshape(len(sample), sample.output_len, -1).transpose(1, 0, 2)
        resid = resid.reshape(sample.output_len, -1)
        offsets = np.zeros((sample.output_len, len(self.levels)))
        for h in range(sample.output_len):
            r = resid[h][np.isfinite(resid[h])]
            if r.size:
                offsets[h] = np.quantile(r, self.levels) - np.quantile(r, 0.5)
        self.offsets = offsets

    def __call__(self, windows: WindowSet, idx: np.ndarray) -> np.ndarray:
        if self.offsets is None:
            raise RuntimeError("SeasonalNaive.calibrate must run before predicting")
        point = self.point(windows, idx)
        return np.sort(point[..., None] + self.offsets[None, :, None, :], axis=-1)


# ------------------------------------------------------------------------------------------------- training


def window_loss(
    quantiles: Tensor, target: Tensor, loss: str, levels: Tensor, median_index: int
) -> tuple[Tensor, Tensor]:
    """(sum, count) of the loss over observed targets: L1 of the median, or pinball averaged over levels.

    ``quantiles`` [B, H, N, Q], ``target`` [B, H, N] with NaN where unobserved.
    """
    observed = torch.isfinite(target)
    count = observed.sum()
    if loss == "l1":
        y = torch.where(observed, target, 0.0)
        err = (quantiles[..., median_index] - y).abs()
        return torch.where(observed, err, 0.0).sum(), count
    q = quantiles.reshape(quantiles.shape[0], -1, quantiles.shape[-1])
    mean = pinball_loss(q, target.reshape(target.shape[0], -1), levels)
    return mean * count.clamp_min(1), count


def make_predictor(model: STAModel, device: torch.device) -> Predictor:
    """The model as a :data:`Predictor` (eval mode, no grad)."""

    def predict(windows: WindowSet, idx: np.ndarray) -> np.ndarray:
        batch = windows.batch(idx).to(device)
        model.eval()
        with torch.inference_mode():
            out = model(batch.x, windows.output_len, batch.calendar)
        return out.quantiles.float().cpu().numpy()

    return predict


def validation_loss(model: STAModel, windows: WindowSet, cfg: AdaptConfig, device: torch.device) -> float:
    """Mean loss over observed targets of ``windows`` (eval mode)."""
    levels = model.backbone.quantile_levels_tensor(device)
    median = model.backbone.cfg.median_index
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(windows), cfg.eval_batch_size):
            idx = np.arange(start, min(start + cfg.eval_batch_size, len(windows)))
            batch = windows.batch(idx).to(device)
            out = model(batch.x, windows.output_len, batch.calendar)
            s, c = window_loss(out.quantiles, batch.y, cfg.loss, levels, median)
            total += float(s)
            count += int(c)
    return total / count if count else float("nan")


@dataclass
class TrainReport:
    """What a training run did; ``train_time_s`` is the loop's wall time including its validations.

    ``best_step`` 0 means no validation beat the untrained (step-0) weights, which were kept: the run did not
    adapt (``adapted`` is False) and its row says so.
    """

    steps: int = 0
    epochs: int = 0
    train_time_s: float = 0.0
    initial_val_loss: float = float("nan")
    best_val_loss: float = float("nan")
    best_step: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)
    memory: dict[str, Any] = field(default_factory=dict)

    @property
    def adapted(self) -> bool:
        return self.best_step > 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "adapted": self.adapted}


def optimizer_groups(
    model: STAModel, cfg: AdaptConfig, backbone_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: adapter at ``lr``, backbone at its own rate, or one group when that is "lr"."""
    adapter = [p for p in model.adapter_parameters() if p.requires_grad]
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    rate = backbone_lr if backbone_lr is not None else cfg.choice("backbone_lr")
    if rate == "lr":  # one learning rate for Theta = {theta, phi} (Algorithm 1)
        return [{"params": adapter + backbone, "lr": cfg.lr}] if adapter or backbone else []
    groups = [{"params": adapter, "lr": cfg.lr}] if adapter else []
    return groups + ([{"params": backbone, "lr": rate}] if backbone else [])


class BestKeeper:
    """Early stopping on the validation loss; keeps a copy of the best weights, the step-0 ones included."""

    def __init__(self, model: STAModel, val: WindowSet, cfg: AdaptConfig, device: torch.device,
                 report: TrainReport, log: Logger | None) -> None:
        self.model, self.val, self.cfg, self.device = model, val, cfg, device
        self.report, self.log = report, log
        report.initial_val_loss = report.best_val_loss = validation_loss(model, val, cfg, device)
        if log:
            log(f"step 0: val {report.initial_val_loss:.4f} (before training)")
        self.best_state = copy.deepcopy(model.state_dict())
        self.since_best = 0

    def validate(self, train_loss: float) -> bool:
        """Record a validation; True when patience is exhausted."""
        report = self.report
        val_loss = validation_loss(self.model, self.val, self.cfg, self.device)
        report.history.append({"step": report.steps, "train_loss": train_loss, "val_loss": val_loss})
        if self.log:
            self.log(f"step {report.steps}: train {train_loss:.4f} val {val_loss:.4f}")
        if val_loss < report.best_val_loss:
            report.best_val_loss, report.best_step, self.since_best = val_loss, report.steps, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        self.since_best += 1
        return self.since_best >= self.cfg.patience

    def restore(self) -> None:
        self.model.load_state_dict(self.best_state)


def train_step(
    model: STAModel,
    train: WindowSet,
    idx: np.ndarray,
    cfg: AdaptConfig,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """One optimizer step on the windows ``idx`` (a random node subset when ``nodes_per_batch``); the loss."""
    model.train()
    nodes = node_index = None
    if cfg.nodes_per_batch is not None and cfg.nodes_per_batch < model.num_nodes:
        nodes = np.sort(rng.choice(model.num_nodes, size=cfg.nodes_per_batch, replace=False))
        node_index = torch.from_numpy(nodes).to(device)
    batch = train.batch(idx, nodes).to(device)
    out = model(batch.x, train.output_len, batch.calendar, node_index)
    levels = model.backbone.quantile_levels_tensor(device)
    total, count = window_loss(out.quantiles, batch.y, cfg.loss, levels, model.backbone.cfg.median_index)
    loss = total / count.clamp_min(1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()
    return float(loss.detach())


def make_mixer(num_samples: int, cfg: AdaptConfig, rng: np.random.Generator) -> ReplayMixer:
    """The CMR batch mixer of ``cfg`` over ``num_samples`` chronological training windows."""
    return ReplayMixer(num_samples, cfg.batch_size, cfg.memory_fraction, cfg.replay_ratio, cfg.use_cmr, rng,
                       update_memory=cfg.choice("cmr_memory_update"))


def train_model(
    model: STAModel,
    train: WindowSet,
    val: WindowSet,
    cfg: AdaptConfig,
    device: torch.device,
    backbone_lr: float | None = None,
    log: Logger | None = None,
) -> TrainReport:
    """Train on ``train`` with CMR batches and early stopping on ``val``; restores the best weights."""
    report = TrainReport()
    keeper = BestKeeper(model, val, cfg, device, report, log)
    groups = optimizer_groups(model, cfg, backbone_lr)
    if not groups:
        return report
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    mixer = make_mixer(len(train), cfg, rng)
    eval_every = cfg.eval_every_steps or mixer.steps_per_epoch()
    started = time.perf_counter()
    done, last_loss = False, float("nan")
    while not done and report.epochs < cfg.max_epochs:
        for idx in mixer.epoch():
            last_loss = train_step(model, train, idx, cfg, optimizer, rng, device)
            report.steps += 1
            if report.steps % eval_every == 0 and keeper.validate(last_loss):
                report.stopped_early = done = True
            done = done or (cfg.max_steps is not None and report.steps >= cfg.max_steps)
            if done:
                break
        report.epochs += 1
    if report.steps % eval_every and not report.stopped_early:  # the budget ended between validations
        keeper.validate(last_loss)
    _sync(device)
    report.train_time_s = time.perf_counter() - started
    report.memory = mixer.summary()
    keeper.restore()
    return report


# ----------------------------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Test metrics on both scales, forward-pass time over the test windows, and the saved subset."""

    metrics: dict[str, Any]
    metrics_normalized: dict[str, Any]
    inference_time_s: float
    predictions: dict[str, np.ndarray]


def evaluate_predictor(
    predict: Predictor,
    windows: WindowSet,
    levels: tuple[float, ...],
    null_value: M.NullValue,
    batch_size: int,
    save_windows: int,
    device: torch.device | None = None,
) -> Evaluation:
    """Metrics of ``predict`` over every window of ``windows`` on both scales, plus a saved subset."""
    arrays = windows.arrays
    original = MetricAccumulator(levels, null_value)
    normalized = MetricAccumulator(levels, "nan")
    infer = 0.0
    if len(windows):  # warm-up batch (lazy init, allocator, kernels) so the timing is the steady state
        predict(windows, np.arange(min(batch_size, len(windows))))
    for start in range(0, len(windows), batch_size):
        idx = np.arange(start, min(start + batch_size, len(windows)))
        if device is not None:
            _sync(device)
        tic = time.perf_counter()
        q_norm = predict(windows, idx)
        if device is not None:
            _sync(device)
        infer += time.perf_counter() - tic
        target, observed = windows.targets_original(idx)
        q_orig = arrays.scaler.inverse_transform(q_norm, node_axis=2)
        original.add(q_orig, target, observed)
        y_norm = windows.batch(idx).y.numpy()
        normalized.add(q_norm, y_norm, observed)
    saved = windows.evenly_spaced(save_windows)
    idx = np.arange(len(saved))
    target, observed = saved.targets_original(idx)
    predictions = {
        "quantiles": arrays.scaler.inverse_transform(predict(saved, idx), node_axis=2).astype(np.float32),
        "target": target.astype(np.float32),
        "observed": observed,
        "starts": saved.starts,
        "levels": np.asarray(levels, dtype=np.float64),
    }
    return Evaluation(original.result(), normalized.result(), infer, predictions)


# ---------------------------------------------------------------------------------------------------- runs


def _set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class BenchmarkData:
    """Everything the runs of one benchmark share."""

    dataset: SpatioTemporalDataset
    arrays: SeriesArrays
    splits: dict[str, slice]
    few_slice: slice


def prepare_benchmark(dataset: SpatioTemporalDataset, cfg: AdaptConfig) -> BenchmarkData:
    splits = dataset.splits()
    for name in ("val", "test"):
        if splits[name].stop - splits[name].start < 1:
            raise ValueError(f"{dataset.name}: the {name} split is empty under split rule {dataset.split}")
    few = dataset.few_shot_slice(cfg.few_shot_fraction)
    return BenchmarkData(dataset, SeriesArrays.from_dataset(dataset, cfg.choice("time_of_day")), splits, few)


def build_model(
    backbone: FactoSTBackbone, cfg: AdaptConfig, data: BenchmarkData, device: torch.device
) -> STAModel:
    return STAModel(backbone, cfg, data.arrays.num_nodes, data.arrays.calendar_vocab).to(device)


class BenchmarkRunner:
    """The runs of one benchmark: shared data, checkpoint and output folder; one ``run_horizon`` per pair."""

    def __init__(
        self,
        checkpoint_url: str,
        pretrained: FactoSTBackbone,
        benchmark: SpatioTemporalDataset,
        cfg: AdaptConfig,
        out_dir: str,
        storage_options: dict[str, Any] | None,
        log: Logger | None,
    ) -> None:
        self.checkpoint_url = checkpoint_url
        self.pretrained = pretrained
        self.benchmark = benchmark
        self.cfg = cfg
        self.storage_options = storage_options
        self.say: Logger = log or (lambda _msg: None)
        self.device = resolve_device(cfg.device)
        self.data = prepare_benchmark(benchmark, cfg)
        self.levels = tuple(pretrained.cfg.quantile_levels)
        self.bench_dir = join(out_dir, benchmark.name)
        self.runs: list[dict[str, Any]] = []

    def windows(self, split: str, input_len: int, output_len: int) -> WindowSet:
        cfg, data, name = self.cfg, self.data, self.benchmark.name
        if split == "few":
            return make_windows(
                data.arrays,
                data.few_slice,
                input_len,
                output_len,
                "train",
                cfg.train_stride,
                f"{name} few-shot",
            )
        stride = cfg.eval_stride if split == "test" else cfg.train_stride if split == "train" else 1
        return make_windows(data.arrays, data.splits[split], input_len, output_len, split, stride, name)

    def record(
        self, method: str, mode: str, predict: Predictor, test: WindowSet, extra: dict[str, Any], folder: str
    ) -> dict[str, Any]:
        """Evaluate ``predict`` on ``test``, write the run's outputs and keep its record."""
        cfg, bench = self.cfg, self.benchmark
        self.say(f"{bench.name} {folder}: evaluating on {len(test)} test windows")
        ev = evaluate_predictor(
            predict,
            test,
            self.levels,
            bench.null_value,
            cfg.eval_batch_size,
            cfg.predictions_max_windows,
            self.device,
        )
        run = {
            "benchmark": bench.name,
            "method": method,
            "mode": mode,
            "input_len": test.input_len,
            "output_len": test.output_len,
            "metrics": ev.metrics,
            "metrics_normalized": ev.metrics_normalized,
            "inference_time_s": ev.inference_time_s,
            "test_windows": len(test),
            "checkpoint": self.checkpoint_url,
            "dataset": bench.summary(),
            "config": cfg.model_dump(mode="json"),
            "choices": cfg.choices(),  # the deviations from the paper's form as they applied (docs/protocol.md)
            **extra,
        }
        run["outputs"] = write_run_outputs(
            join(self.bench_dir, folder),
            run,
            ev.predictions,
            self.data.arrays,
            test.input_len,
            bench.node_ids,
            cfg.plot_nodes,
            self.storage_options,
        )
        self.runs.append(run)
        return run

    def check_horizons(self, pairs: tuple[tuple[int, int], ...]) -> None:
        """Before any training: every pair fits the backbone's limits and the benchmark's splits."""
        bcfg, name = self.pretrained.cfg, self.benchmark.name
        for input_len, output_len in pairs:
            if output_len > bcfg.max_horizon:
                raise ValueError(
                    f"{name}: horizon {input_len}->{output_len}: output length {output_len} exceeds the "
                    f"backbone's max_horizon {bcfg.max_horizon}"
                )
            if input_len > bcfg.max_context:
                raise ValueError(
                    f"{name}: horizon {input_len}->{output_len}: input length {input_len} exceeds the "
                    f"backbone's max_context {bcfg.max_context}"
                )
            trained = {"few": "few", "full": "train"}
            for split in ("val", "test", "few", *(trained[m] for m in self.cfg.modes if m == "full")):
                self.windows(split, input_len, output_len)  # raises when the split is too short

    def run_horizon(self, input_len: int, output_len: int) -> None:
        cfg = self.cfg
        val = self.windows("val", input_len, output_len).evenly_spaced(cfg.max_val_windows)
        test = self.windows("test", input_len, output_len)
        few = self.windows("few", input_len, output_len)
        for mode in cfg.modes:
            train = self.windows("train", input_len, output_len) if mode == "full" else few
            self.run_factost(mode, train, val, test)
            if "scratch" in cfg.baselines and mode != "zero":
                self.run_scratch(mode, train, val, test)
        if "seasonal_naive" in cfg.baselines:
            self.run_naive(few, test)

    def run_factost(self, mode: str, train: WindowSet, val: WindowSet, test: WindowSet) -> None:
        """The pretrained backbone with the adapter in ``mode`` (zero: the bare backbone, no update)."""
        cfg, device, tag = self.cfg, self.device, f"{test.input_len}to{test.output_len}"
        _set_seed(cfg.seed)
        run_cfg = cfg.without_modules().model_copy(update={"freeze_backbone": True}) if mode == "zero" else cfg
        model = build_model(copy.deepcopy(self.pretrained), run_cfg, self.data, device)
        if mode == "zero":
            report = TrainReport()
            report.initial_val_loss = report.best_val_loss = validation_loss(model, val, cfg, device)
        else:
            self.say(f"{self.benchmark.name} {mode}-{tag}: training on {len(train)} windows")
            report = train_model(model, train, val, run_cfg, device, log=self.say)
        extra = trained_extra(report, model, 0 if mode == "zero" else len(train), trained=mode != "zero")
        self.record("factost", mode, make_predictor(model, device), test, extra, f"{mode}-{tag}")

    def run_scratch(self, mode: str, train: WindowSet, val: WindowSet, test: WindowSet) -> None:
        """The same architecture from a random initialisation, trained on the same windows and budget."""
        cfg, device, tag = self.cfg, self.device, f"{test.input_len}to{test.output_len}"
        _set_seed(cfg.seed)
        scratch_cfg = cfg.model_copy(update={"freeze_backbone": False})
        scratch = build_model(FactoSTBackbone(self.pretrained.cfg), scratch_cfg, self.data, device)
        self.say(f"{self.benchmark.name} scratch-{mode}-{tag}: training from a random initialisation")
        report = train_model(scratch, train, val, scratch_cfg, device, cfg.scratch_lr, log=self.say)
        extra = trained_extra(report, scratch, len(train), trained=True)
        self.record("scratch", mode, make_predictor(scratch, device), test, extra, f"scratch-{mode}-{tag}")

    def run_naive(self, few: WindowSet, test: WindowSet) -> None:
        """Seasonal naive, its error bands calibrated on the few-shot training windows."""
        naive = SeasonalNaive(seasonal_period(self.benchmark.freq), self.levels)
        tic = time.perf_counter()
        naive.calibrate(few)
        extra = {
            "train_time_s": time.perf_counter() - tic,
            "season": naive.season,
            "parameters": {"total": 0, "trainable": 0, "adapter": 0, "backbone": 0},
            "train_windows": len(few),
        }
        self.record("seasonal_naive", "-", naive, test, extra, f"seasonal_naive-{test.input_len}to{test.output_len}")


def trained_extra(report: TrainReport, model: STAModel, train_windows: int, trained: bool) -> dict[str, Any]:
    """The training part of a model run's record; ``adapted`` is None for a run that was not trained."""
    return {
        "train_time_s": report.train_time_s,
        "training": report.to_dict(),
        "val_loss": report.best_val_loss,
        "parameters": model.parameter_counts(),
        "train_windows": train_windows,
        "adapted": report.adapted if trained else None,
    }


def run_adaptation(
    checkpoint_url: str,
    benchmark: SpatioTemporalDataset,
    cfg: AdaptConfig,
    out_dir: str,
    storage_options: dict[str, Any] | None = None,
    log: Logger | None = None,
    backbone: FactoSTBackbone | None = None,
    write_table: bool = True,
) -> dict[str, Any]:
    """Run every (mode, horizon) of ``cfg`` and the baselines on ``benchmark``; write outputs under
    ``out_dir/<benchmark>/<run>/`` and (``write_table``) the benchmark's results table beside them; a caller
    that runs the modes as separate units writes the table once they are all done.

    ``backbone``: an already loaded checkpoint (it is copied, never modified); by default it is loaded from
    ``checkpoint_url``. Every horizon is checked against the backbone and the splits before any training.
    Returns ``{"benchmark", "rows", "runs", "tables"}``: one flat row per run (the results table), each run's
    full record (what its metrics.json holds) and the table URLs.
    """
    pretrained = backbone if backbone is not None else from_pretrained(checkpoint_url, storage_options)
    runner = BenchmarkRunner(
        checkpoint_url, pretrained.to("cpu"), benchmark, cfg, out_dir, storage_options, log
    )
    runner.check_horizons(cfg.horizon_pairs())
    for input_len, output_len in cfg.horizon_pairs():
        runner.run_horizon(input_len, output_len)
    rows = [result_row(run) for run in runner.runs]
    tables = write_results_table(runner.bench_dir, rows, storage_options) if write_table else {}
    return {"benchmark": benchmark.name, "rows": rows, "runs": runner.runs, "tables": tables}


ROW_METRICS = ("mae", "rmse", "mape", "crps", "coverage_80", "coverage_98")
# The status of a trained row whose best validation was the untrained (step-0) one: it is not an adaptation.
NOT_ADAPTED = "no improvement over step 0"


def result_row(run: dict[str, Any]) -> dict[str, Any]:
    """The flat results-table row of one run record."""
    row: dict[str, Any] = {
        "benchmark": run["benchmark"],
        "method": run["method"],
        "mode": run["mode"],
        "horizon": f"{run['input_len']}->{run['output_len']}",
    }
    row.update({k: run["metrics"].get(k, float("nan")) for k in ROW_METRICS})
    row["norm_mae"] = run["metrics_normalized"].get("mae", float("nan"))
    row["norm_rmse"] = run["metrics_normalized"].get("rmse", float("nan"))
    row["val_loss"] = run.get("val_loss", float("nan"))
    row["train_s"] = run.get("train_time_s", 0.0)
    row["infer_s"] = run.get("inference_time_s", 0.0)
    row["trainable_params"] = run["parameters"]["trainable"]
    row["total_params"] = run["parameters"]["total"]
    row["adapted"] = run.get("adapted")
    row["status"] = NOT_ADAPTED if row["adapted"] is False else "ok"
    return row
