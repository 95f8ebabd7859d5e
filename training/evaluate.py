"""Zero-shot point and probabilistic evaluation on the last-H protocol of Chronos Benchmark II, GIFT-Eval and fev.

Every series is cut into a context (everything but its last ``horizon`` points) and a test window (the last
``horizon`` points). Each method forecasts the test window from the context; per dataset we report

- MASE: mean over series of ``MAE(median) / in-sample seasonal-naive MAE at lag S`` (the scale is computed on
  the context only, over the pairs where both points are observed);
- WQL: ``2 * sum of quantile losses / sum |y|`` over the whole dataset, averaged over the levels 0.1..0.9;
- CRPS: ``2 * mean quantile loss`` over the backbone's quantile levels (the quantile approximation of CRPS);
- coverage_80: share of test points inside the [0.1, 0.9] interval.

Baselines run in the same call: seasonal naive (computed here, exactly: every quantile is the point forecast, as
the published tables score it) and statsforecast's AutoETS and AutoTheta with season length S. Those two fit on
at most the last ``baseline_context`` points of each context (2500, what the statistical baselines of the
Chronos benchmark saw through AutoGluon's ``max_ts_length``; it also keeps their fit time bounded).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from adaptation.metrics import crps_from_quantiles, interval_coverage, weighted_quantile_loss
from training.model import DEFAULT_QUANTILE_LEVELS

if TYPE_CHECKING:
    from training.model import FactoSTBackbone

METHODS: tuple[str, ...] = ("factost", "seasonal_naive", "auto_ets", "auto_theta")
WQL_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BASELINE_CONTEXT = 2500
# Season length by the frequency's base unit (GIFT-Eval / gluonts' table); sub-daily ticks use steps per day.
SEASON_BY_UNIT: dict[str, int] = {
    **dict.fromkeys(("YE", "YS", "BYE", "BYS"), 1), **dict.fromkeys(("QE", "QS", "BQE", "BQS"), 4),
    **dict.fromkeys(("ME", "MS", "BME", "BMS", "CBME", "CBMS"), 12), **dict.fromkeys(("SME", "SMS"), 24),
    "W": 1, "D": 1, "B": 5, "C": 5,
}


@dataclass(frozen=True)
class EvalDataset:
    """The series of one dataset as read from its source; ``skipped`` counts series rejected while reading."""

    name: str
    freq: str | None
    ids: list[str]
    series: list[np.ndarray]
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Split:
    """The scorable series of a dataset cut into contexts and test windows, with their MASE scales."""

    dataset: str
    season: int
    horizon: int
    ids: list[str]
    contexts: list[np.ndarray]
    targets: np.ndarray  # [N, H]
    scales: np.ndarray  # [N]
    skipped: dict[str, int]


@dataclass(frozen=True)
class Forecast:
    """One method's quantile forecasts [N, H, Q] at ``levels`` and how long fitting and forecasting took."""

    method: str
    quantiles: np.ndarray
    levels: tuple[float, ...]
    seconds: float


@dataclass(frozen=True)
class Score:
    """One method's scores on one dataset (a row of the results table)."""

    dataset: str
    method: str
    mase: float
    wql: float
    crps: float
    coverage_80: float
    n_series: int
    n_skipped: int
    season: int
    horizon: int
    seconds: float

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Evaluation:
    """Every score, each method's per-dataset ratio to seasonal naive, their geometric means, the skip reasons."""

    scores: list[Score]
    skipped: dict[str, dict[str, int]]
    splits: list[Split] = field(repr=False, default_factory=list)
    forecasts: dict[str, list[Forecast]] = field(repr=False, default_factory=dict)

    def relative(self) -> dict[str, Any]:
        """``{"per_dataset": [{dataset, method, mase, wql}], "geometric_mean": {method: {mase, wql}}}``."""
        base = {s.dataset: s for s in self.scores if s.method == "seasonal_naive"}
        rows = [{"dataset": s.dataset, "method": s.method, "mase": _ratio(s.mase, base[s.dataset].mase),
                 "wql": _ratio(s.wql, base[s.dataset].wql)} for s in self.scores if s.dataset in base]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        gmean = {m: {k: geometric_mean([r[k] for r in rows if r["method"] == m]) for k in ("mase", "wql")}
                 for m in methods}
        return {"per_dataset": rows, "geometric_mean": gmean}

    def document(self) -> dict[str, Any]:
        """What ``factost evaluate --json`` prints."""
        return {"results": [s.row() for s in self.scores], "relative": self.relative(), "skipped": self.skipped}


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 and math.isfinite(base) else math.nan


def geometric_mean(values: Sequence[float]) -> float:
    """Geometric mean of the ratios; 0 when one is 0 (a perfect dataset), NaN when one is undefined (a zero
    seasonal-naive score)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).all():
        return math.nan
    if (arr <= 0).any():
        return 0.0 if (arr == 0).any() and (arr >= 0).all() else math.nan
    return float(np.exp(np.log(arr).mean()))


def season_length(freq: str | None) -> int:
    """S from a pandas frequency alias: M 12, Q 4, W 1, D 1, B 5, h 24, 15min 96, ...; 1 when unknown."""
    if not freq:
        return 1
    from pandas.tseries.frequencies import to_offset

    from infra.freq import normalize_freq

    try:
        offset = to_offset(normalize_freq(freq))
    except ValueError:
        raise ValueError(f"frequency {freq!r} is not a pandas offset alias; give the season length") from None
    day = 86_400_000_000_000
    nanos = getattr(offset, "nanos", None) if _is_tick(offset) else None
    if nanos:
        return max(1, day // nanos) if day % nanos == 0 else 1
    base = offset.rule_code.split("-")[0]
    return SEASON_BY_UNIT.get(base, 1) if offset.n == 1 else 1


def _is_tick(offset: Any) -> bool:
    from pandas.tseries.offsets import Day, Tick

    return isinstance(offset, Tick) and not isinstance(offset, Day)


def _skip_reason(reason: str) -> str:
    """The ingest engine's validation reason, without the per-series numbers (so reasons can be counted)."""
    if reason.startswith("all values missing"):
        return "all missing"
    return reason.split(" at index")[0].split(":")[0]


def read_source(source: Any, storage_options: dict[str, Any] | None = None) -> EvalDataset:
    """A source (a ``SourceConfig``) read exactly as ``factost ingest`` reads it: its connector, then the ingest
    engine's per-series validation (empty, all-missing and non-finite series are counted as skipped)."""
    from corpus.config import IngestConfig
    from corpus.fetch import localized_source
    from corpus.ingest import prepared_batches
    from corpus.sources.registry import get_connector

    # the whole series (the window a corpus holds out is what is scored); https:// and hf:// from the cache
    source = localized_source(source.model_copy(update={"holdout": 0}), IngestConfig(), None)
    connector = get_connector(source.kind)
    raw = connector.read(source.paths, connector.parse_options(source.options), dict(storage_options or {}))
    ids, series, freqs, skipped = [], [], [], Counter()
    for batch in prepared_batches(raw, source, IngestConfig(min_length=1)):
        _collect(batch, ids, series, freqs, skipped, reasons=batch.column("reason").to_pylist())
    return EvalDataset(source.name, source.freq or _common_freq(freqs), ids, series, dict(skipped))


def read_version(url: str, storage_options: dict[str, Any] | None = None) -> EvalDataset:
    """The series of an already published corpus version; what ingest quarantined is counted as skipped."""
    from infra.versions import iter_batches, open_version, read_side_table

    version = open_version(url, storage_options)
    ids, series, freqs, skipped = [], [], [], Counter()
    quarantine = read_side_table(version, "quarantine")
    if quarantine is not None:
        skipped.update(_skip_reason(r) for r in quarantine.column("reason").to_pylist() if r)
    for batch in iter_batches(version, columns=["series_id", "freq", "target"]):
        _collect(batch, ids, series, freqs, skipped, reasons=None)
    return EvalDataset(version.dataset.rsplit("/", 1)[-1], _common_freq(freqs), ids, series, dict(skipped))


def _collect(batch: Any, ids: list[str], series: list[np.ndarray], freqs: list[str | None], skipped: Counter,
             reasons: list[str | None] | None) -> None:
    names, batch_freqs = batch.column("series_id").to_pylist(), batch.column("freq").to_pylist()
    target = batch.column("target")
    offsets, flat = target.offsets.to_numpy(), target.values.to_numpy(zero_copy_only=False)
    for i, series_id in enumerate(names):
        if reasons is not None and reasons[i] is not None:
            skipped[_skip_reason(reasons[i])] += 1
            continue
        ids.append(series_id)
        series.append(np.asarray(flat[offsets[i] : offsets[i + 1]], dtype=np.float64))
        freqs.append(batch_freqs[i])


def _common_freq(freqs: Iterable[str | None]) -> str | None:
    seen = Counter(f for f in freqs if f)
    return seen.most_common(1)[0][0] if seen else None


def seasonal_scale(context: np.ndarray, season: int) -> float:
    """In-sample MAE of the seasonal-naive forecast at lag ``season`` over pairs with both points observed."""
    diff = np.abs(context[season:] - context[:-season])
    diff = diff[np.isfinite(diff)]
    return float(diff.mean()) if diff.size else math.nan


def split_dataset(data: EvalDataset, horizon: int, season: int) -> Split:
    """Keep the series that can be scored: at least H + S + 1 points (one seasonal pair in the context), an
    observed point in the test window and a non-zero seasonal-naive scale; count the others by reason."""
    skipped: Counter = Counter(data.skipped)
    ids, contexts, targets, scales = [], [], [], []
    for series_id, values in zip(data.ids, data.series, strict=True):
        context, target = values[:-horizon], values[-horizon:]
        reason = None
        if len(values) < horizon + season + 1:
            reason = f"too short (< H + S + 1 = {horizon + season + 1} points)"
        elif not np.isfinite(values).any():
            reason = "all missing"
        elif not np.isfinite(target).any():
            reason = "test window all missing"
        else:
            scale = seasonal_scale(context, season)
            if not scale > 0:
                reason = "no seasonal-naive scale (constant or missing context)"
        if reason:
            skipped[reason] += 1
            continue
        ids.append(series_id)
        contexts.append(context)
        targets.append(target)
        scales.append(scale)
    if not ids:
        reasons = ", ".join(f"{k}: {v}" for k, v in skipped.items()) or "no series"
        raise ValueError(f"dataset {data.name!r}: no scorable series at horizon {horizon}, season {season} ({reasons})")
    return Split(data.name, season, horizon, ids, contexts, np.stack(targets), np.asarray(scales), dict(skipped))


def score(split: Split, fc: Forecast) -> Score:
    """The protocol's scores of one method's forecasts on one dataset."""
    levels = list(fc.levels)
    median = fc.quantiles[:, :, _level(levels, 0.5)]
    mae = np.nanmean(np.abs(median - split.targets), axis=1)
    wql_idx = [_level(levels, q) for q in WQL_LEVELS]
    return Score(
        dataset=split.dataset, method=fc.method,
        mase=float(np.mean(mae / split.scales)),
        wql=weighted_quantile_loss(fc.quantiles[:, :, wql_idx], split.targets, WQL_LEVELS),
        crps=crps_from_quantiles(fc.quantiles, split.targets, levels),
        coverage_80=interval_coverage(fc.quantiles[:, :, _level(levels, 0.1)], fc.quantiles[:, :, _level(levels, 0.9)],
                                      split.targets),
        n_series=len(split.ids), n_skipped=sum(split.skipped.values()), season=split.season,
        horizon=split.horizon, seconds=fc.seconds,
    )


def _level(levels: Sequence[float], q: float) -> int:
    for i, level in enumerate(levels):
        if abs(level - q) < 1e-9:
            return i
    raise ValueError(f"quantile level {q} is not among the forecast's levels {list(levels)}")


def _filled(context: np.ndarray) -> np.ndarray:
    """Missing points carried forward (leading ones backward): the baselines cannot read NaN."""
    out = np.asarray(context, dtype=np.float64).copy()
    finite = np.isfinite(out)
    idx = np.where(finite, np.arange(len(out)), 0)
    np.maximum.accumulate(idx, out=idx)
    out = out[idx]
    first = int(np.argmax(finite))
    out[:first] = out[first]
    return out


def seasonal_naive(split: Split, levels: Sequence[float]) -> Forecast:
    """The last S observed points repeated; every quantile is the point forecast."""
    start = time.perf_counter()
    reps = math.ceil(split.horizon / split.season)
    point = np.stack([np.tile(_filled(c)[-split.season :], reps)[: split.horizon] for c in split.contexts])
    q = np.repeat(point[:, :, None], len(levels), axis=2)
    return Forecast("seasonal_naive", q, tuple(levels), time.perf_counter() - start)


def statsforecast_baseline(split: Split, method: str, levels: Sequence[float],
                           max_context: int = BASELINE_CONTEXT) -> Forecast:
    """AutoETS or AutoTheta (season length S) on each context's last ``max_context`` points, with intervals
    turned into quantiles (level L gives the (1 -+ L/100) / 2 quantiles; the point forecast is the median)."""
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, AutoTheta

    model = {"auto_ets": AutoETS, "auto_theta": AutoTheta}[method](season_length=split.season)
    frames = []
    for i, context in enumerate(split.contexts):
        y = _filled(context)[-max_context:]
        frames.append(pd.DataFrame({"unique_id": i, "ds": np.arange(len(y)), "y": y}))
    widths = sorted({_width(q) for q in levels if q != 0.5})
    start = time.perf_counter()
    out = StatsForecast(models=[model], freq=1, n_jobs=1).forecast(df=pd.concat(frames), h=split.horizon,
                                                                     level=widths)
    seconds = time.perf_counter() - start
    out = out.sort_values(["unique_id", "ds"])
    name = type(model).__name__
    columns = [name if q == 0.5 else f"{name}-{'lo' if q < 0.5 else 'hi'}-{_width(q)}" for q in levels]
    q = out[columns].to_numpy(dtype=np.float64).reshape(len(split.contexts), split.horizon, len(levels))
    return Forecast(method, np.sort(q, axis=-1), tuple(levels), seconds)


def _width(q: float) -> int | float:
    """The central interval (in percent) whose bounds are the quantiles q and 1 - q, as statsforecast names it."""
    width = round(abs(1 - 2 * q) * 100, 6)
    return int(width) if width == int(width) else width


def backbone_forecast(model: FactoSTBackbone, split: Split, batch_size: int = 256) -> Forecast:
    """The backbone's quantiles; NaN inside a context goes to the model as NaN (it masks missing points)."""
    from training.forecast import forecast

    start = time.perf_counter()
    q = forecast(model, [c.astype(np.float32) for c in split.contexts], split.horizon, batch_size=batch_size)
    return Forecast("factost", q.astype(np.float64), tuple(model.cfg.quantile_levels), time.perf_counter() - start)


def check_horizon(model: FactoSTBackbone, horizon: int, where: str) -> None:
    """A rollout feeds the median back as context; past ``max_context`` points the model would read nothing but
    its own forecasts, so that is the longest horizon evaluated."""
    if horizon < 1:
        raise ValueError(f"horizon {horizon}: must be >= 1")
    if horizon > model.cfg.max_context:
        raise ValueError(f"horizon {horizon} is more than {where} can roll out (max_context {model.cfg.max_context})")


def evaluate(
    model: FactoSTBackbone | None, datasets: Sequence[EvalDataset], horizon: int, season: int | None = None,
    methods: Sequence[str] = METHODS, checkpoint: str = "the backbone",
) -> Evaluation:
    """Score every method on every dataset's last ``horizon`` points; ``season`` overrides the frequency table.

    ``model`` may be None when only baselines are asked for (they then use the default 11 quantile levels).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS)}")
    if "factost" in methods and model is None:
        raise ValueError("method 'factost' needs a backbone")
    if model is not None:
        check_horizon(model, horizon, checkpoint)
    if "seasonal_naive" not in methods:
        methods = ["seasonal_naive", *methods]
    levels = tuple(model.cfg.quantile_levels) if model is not None else DEFAULT_QUANTILE_LEVELS
    scores, splits, forecasts = [], [], {}
    for data in datasets:
        split = split_dataset(data, horizon, season or season_length(data.freq))
        splits.append(split)
        forecasts[data.name] = [_run(m, model, split, levels) for m in methods]
        scores.extend(score(split, fc) for fc in forecasts[data.name])
    return Evaluation(scores, {s.dataset: s.skipped for s in splits}, splits, forecasts)


def _run(method: str, model: FactoSTBackbone | None, split: Split, levels: Sequence[float]) -> Forecast:
    if method == "factost":
        return backbone_forecast(model, split)
    if method == "seasonal_naive":
        return seasonal_naive(split, levels)
    return statsforecast_baseline(split, method, levels)


RESULT_COLUMNS = ["dataset", "method", "mase", "wql", "crps", "coverage_80", "n_series", "n_skipped", "season",
                  "horizon", "seconds", "relative_mase", "relative_wql"]


def result_rows(result: Evaluation) -> list[dict[str, Any]]:
    """Score rows with each method's ratio to seasonal naive on that dataset."""
    ratios = {(r["dataset"], r["method"]): r for r in result.relative()["per_dataset"]}
    return [{**s.row(), "relative_mase": ratios.get((s.dataset, s.method), {}).get("mase"),
             "relative_wql": ratios.get((s.dataset, s.method), {}).get("wql")} for s in result.scores]


def write_outputs(result: Evaluation, root: str, storage_options: dict[str, Any] | None = None,
                  plot_series: int = 3) -> dict[str, str]:
    """``results.csv``, ``results.md``, ``results.json`` and one ``forecasts_<dataset>.png`` per dataset."""
    import csv
    import io

    from adaptation.outputs import write_json
    from infra.storage import filesystem, join, write_bytes_atomic
    from pipelines.reporting import json_safe, markdown_table

    rows = result_rows(result)
    gmean = [{"method": m, "geomean_relative_mase": v["mase"], "geomean_relative_wql": v["wql"]}
             for m, v in result.relative()["geometric_mean"].items()]
    fs, base = filesystem(root, storage_options)
    fs.makedirs(base, exist_ok=True)
    paths = {"markdown": join(root, "results.md"), "csv": join(root, "results.csv"), "json": join(root, "results.json")}
    text = markdown_table(rows, RESULT_COLUMNS) + "\n" + markdown_table(gmean)
    write_bytes_atomic(fs, filesystem(paths["markdown"], storage_options)[1], text.encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in json_safe(r).items()} for r in rows)
    write_bytes_atomic(fs, filesystem(paths["csv"], storage_options)[1], buffer.getvalue().encode())
    write_json(paths["json"], result.document(), storage_options)
    for split in result.splits:
        made = result.forecasts[split.dataset]
        fc = next((f for f in made if f.method == "factost"), made[0])
        paths[f"plot_{split.dataset}"] = url = join(root, f"forecasts_{split.dataset}.png")
        write_bytes_atomic(fs, filesystem(url, storage_options)[1], forecast_plot(split, fc, plot_series))
    return paths


def forecast_plot(split: Split, fc: Forecast, n: int) -> bytes:
    """A panel for each of the first ``n`` series: the last 3H context points, the test window, the bands."""
    from adaptation.outputs import plot_forecast

    keep = min(n, len(split.ids))
    width = 3 * split.horizon
    context = np.full((width, keep), np.nan)
    for i in range(keep):
        tail = split.contexts[i][-width:]
        context[width - len(tail) :, i] = tail
    title = f"{split.dataset} {fc.method} zero-shot, last {split.horizon} points"
    return plot_forecast(context, split.targets[:keep].T, fc.quantiles[:keep].transpose(1, 0, 2), fc.levels,
                         split.ids[:keep], title)
