"""fev and GIFT-Eval (gluonts) adapters: the libraries accept what they produce and, scoring it with their own
code, agree with the protocol's own MASE and WQL on the same forecasts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adaptation.metrics import weighted_quantile_loss
from training.benchmark_adapters import GluonTSPredictor, _require, fev_predictions
from training.evaluate import WQL_LEVELS, seasonal_scale
from training.pipeline import FactoSTPipeline

H, S = 24, 24


def _series() -> dict[str, np.ndarray]:
    """Hourly daily cycles with noise and a level per series, of several lengths (so contexts are ragged)."""
    rng = np.random.default_rng(11)
    out = {}
    for i, n in enumerate((200, 260, 333, 150, 410)):
        t = np.arange(n)
        out[f"item_{i}"] = 40 + 10 * i + 8 * np.sin(2 * np.pi * (t + 3 * i) / 24) + rng.normal(0, 1.5, n)
    return out


def _protocol_scores(pipe: FactoSTPipeline, windows: list[tuple[list[np.ndarray], np.ndarray]]) -> tuple[float, float]:
    """MASE and WQL averaged over windows, from the pipeline's forecasts and the protocol's own metric code."""
    mase, wql = [], []
    for contexts, targets in windows:
        q, _ = pipe.predict_quantiles(contexts, H, quantile_levels=WQL_LEVELS)
        q = q.double().numpy()
        mae = np.abs(q[:, :, WQL_LEVELS.index(0.5)] - targets).mean(axis=1)
        mase.append(float(np.mean(mae / np.array([seasonal_scale(c.astype(np.float64), S) for c in contexts]))))
        wql.append(weighted_quantile_loss(q, targets, WQL_LEVELS))
    return float(np.mean(mase)), float(np.mean(wql))


@pytest.fixture(scope="module")
def pipe(checkpoint: str) -> FactoSTPipeline:
    return FactoSTPipeline.from_pretrained(checkpoint, device_map="cpu")


def test_fev_scores_equal_the_protocol(pipe: FactoSTPipeline, tmp_path: Path) -> None:
    fev = pytest.importorskip("fev", reason="the benchmarks extra is not installed")
    import datasets

    series = _series()
    rows = {"id": list(series), "timestamp": [list(pd.date_range("2024-01-01", periods=len(v), freq="h"))
                                             for v in series.values()],
            "target": [v.tolist() for v in series.values()]}
    path = tmp_path / "hourly.parquet"
    datasets.Dataset.from_dict(rows).to_parquet(str(path))
    task = fev.Task(dataset_path=str(path), horizon=H, num_windows=2, seasonality=S, quantile_levels=list(WQL_LEVELS),
                    eval_metric="MASE", extra_metrics=["WQL"])
    predictions = fev_predictions(pipe, task, batch_size=2)
    assert len(predictions) == 2 and list(predictions[0]) == ["target"]
    assert set(predictions[0]["target"].column_names) == {"predictions", *map(str, WQL_LEVELS)}
    summary = task.evaluation_summary(predictions, model_name="factost")
    windows = []
    for end in (-2 * H, -H):  # fev's two windows: cutoffs at -2H and -H, in item-id order
        contexts = [v[:end].astype(np.float32) for v in series.values()]
        targets = np.stack([v[end:end + H if end + H else None] for v in series.values()])
        windows.append((contexts, targets))
    mase, wql = _protocol_scores(pipe, windows)
    assert summary["MASE"] == pytest.approx(mase, rel=1e-6)
    assert summary["WQL"] == pytest.approx(wql, rel=1e-6)
    assert summary["num_forecasts"] == 10


def test_gluonts_evaluate_model_equals_the_protocol(pipe: FactoSTPipeline) -> None:
    pytest.importorskip("gluonts", reason="the benchmarks extra is not installed")
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.model import evaluate_model
    from gluonts.model.forecast import QuantileForecast

    series = _series()
    start = pd.Period("2024-01-01 00:00", freq="h")
    data = [{"item_id": k, "start": start, "target": v} for k, v in series.items()]
    _, template = split(data, offset=-H)
    test_data = template.generate_instances(prediction_length=H, windows=1)
    predictor = GluonTSPredictor(pipe, H, batch_size=2)
    forecasts = list(predictor.predict(test_data.input))
    assert all(isinstance(f, QuantileForecast) for f in forecasts)
    first = forecasts[0]
    assert first.item_id == "item_0" and first.start_date == start + (200 - H)
    np.testing.assert_array_equal(first.mean, first.quantile(0.5))
    metrics = evaluate_model(predictor, test_data=test_data, seasonality=S, axis=None,
                             metrics=[MASE(), MeanWeightedSumQuantileLoss(quantile_levels=list(WQL_LEVELS))])
    contexts = [v[:-H].astype(np.float32) for v in series.values()]
    mase, wql = _protocol_scores(pipe, [(contexts, np.stack([v[-H:] for v in series.values()]))])
    assert float(metrics["MASE[0.5]"].iloc[0]) == pytest.approx(mase, rel=1e-6)
    assert float(metrics["mean_weighted_sum_quantile_loss"].iloc[0]) == pytest.approx(wql, rel=1e-6)


def test_nan_inside_a_context_is_forecast_not_dropped(pipe: FactoSTPipeline) -> None:
    pytest.importorskip("gluonts", reason="the benchmarks extra is not installed")
    values = _series()["item_2"].copy()
    values[[40, 41, 300]] = np.nan
    entry = {"item_id": "gappy", "start": pd.Period("2024-01-01", freq="h"), "target": values}
    (fc,) = GluonTSPredictor(pipe, H).predict([entry])
    np.testing.assert_array_equal(fc.quantile(0.5), pipe.predict([values.astype(np.float32)], H).numpy()[0])
    assert np.isfinite(fc.forecast_array).all()


def test_bad_input_gives_one_line_errors(pipe: FactoSTPipeline) -> None:
    pytest.importorskip("gluonts", reason="the benchmarks extra is not installed")
    too_long = pipe.model.cfg.max_context + 1
    with pytest.raises(ValueError, match=rf"horizon {too_long} is more than the backbone can roll out"):
        GluonTSPredictor(pipe, too_long)
    entry = {"item_id": "multi", "start": pd.Period("2024-01-01", freq="h"), "target": np.ones((2, 100))}
    with pytest.raises(ValueError, match=r"gluonts item 'multi': the backbone forecasts univariate series, "
                                         r"got a target of shape \(2, 100\)"):
        list(GluonTSPredictor(pipe, H).predict([entry]))
    hint = r'no_such_benchmark_lib is not installed; .*pip install -e "\.\[benchmarks\]"'
    with pytest.raises(ImportError, match=hint):
        _require("no_such_benchmark_lib")
