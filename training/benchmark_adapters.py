"""Adapters that run a FactoST backbone inside fev and GIFT-Eval (gluonts), so its scores come from those
benchmarks' own code rather than from ours.

- :func:`fev_predictions` turns every window of a ``fev.Task`` into the predictions ``task.evaluation_summary``
  takes: one ``datasets.Dataset`` per target column with a ``predictions`` column (the median) and one column
  per quantile level the task asks for, named ``str(level)`` as fev's schema does.
- :class:`GluonTSPredictor` is a gluonts-style predictor, the object GIFT-Eval hands to
  ``gluonts.model.evaluate_model``: ``predict(dataset)`` yields one ``QuantileForecast`` per entry.

Both forecast through :class:`training.pipeline.FactoSTPipeline`, so batching, NaN handling and rollout are the
forecast API's. fev and gluonts are an optional extra (``pip install -e ".[benchmarks]"``) and are imported only
when an adapter is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from training.evaluate import check_horizon
from training.pipeline import FactoSTPipeline

EXTRA_HINT = 'pip install -e ".[benchmarks]"'


def _require(module: str) -> Any:
    """Import an optional benchmark library, or fail in one line that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is not installed; the benchmark adapters need it: {EXTRA_HINT}") from err


def _levels_with_median(levels: Iterable[float]) -> list[float]:
    """The requested levels plus 0.5 (the point forecast), sorted and without repeats."""
    return sorted({float(q) for q in levels} | {0.5})


def _as_context(values: Any, where: str) -> np.ndarray:
    """One 1-D float32 context; missing points (None or NaN) stay NaN, which the backbone masks."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"{where}: the backbone forecasts univariate series, got a target of shape {arr.shape}")
    return arr


def fev_window_predictions(pipeline: FactoSTPipeline, window: Any, quantile_levels: Sequence[float],
                           batch_size: int = 256) -> Any:
    """Predictions for one ``fev.EvaluationWindow``: a ``DatasetDict`` keyed by target column."""
    datasets = _require("datasets")
    past, _future = window.get_input_data()
    levels = _levels_with_median(quantile_levels)
    out = {}
    for column in window.target_columns:
        contexts = [_as_context(v, f"fev item {item_id!r}, column {column!r}")
                    for item_id, v in zip(past[window.id_column], past[column], strict=True)]
        q, median = pipeline.predict_quantiles(contexts, window.horizon, quantile_levels=levels, batch_size=batch_size)
        q64 = q.double().numpy()
        columns: dict[str, list[list[float]]] = {"predictions": median.double().numpy().tolist()}
        for i, level in enumerate(levels):
            if level in quantile_levels:
                columns[str(level)] = q64[:, :, i].tolist()
        out[column] = datasets.Dataset.from_dict(columns)
    return datasets.DatasetDict(out)


def fev_predictions(pipeline: FactoSTPipeline, task: Any, batch_size: int = 256) -> list[Any]:
    """Predictions for every window of ``task``, in the order ``task.evaluation_summary`` reads them."""
    _require("fev")
    check_horizon(pipeline.model, task.horizon, "the backbone")
    return [fev_window_predictions(pipeline, window, list(task.quantile_levels), batch_size)
            for window in task.iter_windows()]


class GluonTSPredictor:
    """A gluonts predictor (``prediction_length``, ``predict(dataset)``) yielding ``QuantileForecast``s.

    Each forecast holds the requested quantiles under ``str(level)`` and the median under ``"mean"`` (a quantile
    model has no mean head), starts one period after the entry's last point and carries its ``item_id``. A 2-D
    (multivariate) target is refused: GIFT-Eval builds univariate datasets for univariate models
    (``to_univariate=True``).
    """

    def __init__(self, pipeline: FactoSTPipeline, prediction_length: int,
                 quantile_levels: Sequence[float] = tuple(round(0.1 * i, 1) for i in range(1, 10)),
                 batch_size: int = 256) -> None:
        forecast_module = _require("gluonts.model.forecast")
        check_horizon(pipeline.model, prediction_length, "the backbone")
        self._quantile_forecast = forecast_module.QuantileForecast
        self.pipeline = pipeline
        self.prediction_length = prediction_length
        self.lead_time = 0
        self.quantile_levels = _levels_with_median(quantile_levels)
        self.batch_size = batch_size

    def predict(self, dataset: Iterable[dict[str, Any]], **_kwargs: Any) -> Iterator[Any]:
        """Forecasts for every entry, ``batch_size`` entries per forward pass, in the dataset's order."""
        batch: list[dict[str, Any]] = []
        for entry in dataset:
            batch.append(entry)
            if len(batch) == self.batch_size:
                yield from self._predict_batch(batch)
                batch = []
        if batch:
            yield from self._predict_batch(batch)

    def _predict_batch(self, entries: list[dict[str, Any]]) -> Iterator[Any]:
        contexts = [_as_context(e["target"], f"gluonts item {e.get('item_id')!r}") for e in entries]
        q, median = self.pipeline.predict_quantiles(contexts, self.prediction_length,
                                                    quantile_levels=self.quantile_levels, batch_size=self.batch_size)
        keys = [str(level) for level in self.quantile_levels] + ["mean"]
        for entry, context, quantiles, point in zip(entries, contexts, q.double().numpy(), median.double().numpy(),
                                                    strict=True):
            arrays = np.concatenate([quantiles.T, point[None, :]], axis=0)
            yield self._quantile_forecast(forecast_arrays=arrays, start_date=entry["start"] + len(context),
                                          forecast_keys=keys, item_id=entry.get("item_id"))
