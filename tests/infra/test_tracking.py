"""Metric sinks: TensorBoard event files and a local MLflow store (SQLite), read back with each tool's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.tracking import TENSORBOARD_DIR, open_sinks
from pipelines.profile import TrackingConfig

STEPS = [(1, 2.5), (2, 1.75), (3, float("nan")), (4, 1.25)]  # a NaN is not a value: it is skipped


def _write(tracking: TrackingConfig, run: Path) -> None:
    sinks = open_sinks(tracking, str(run), "run-1", {"pretrain": {"steps": 4}, "seed": 1})
    for step, loss in STEPS:
        sinks.scalars(step, {"pretrain/loss": loss, "pretrain/lr": 0.1 * step, "note": "not a number"})
    sinks.close()


def test_tensorboard_events_hold_every_finite_value_per_step(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _write(TrackingConfig(), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / TENSORBOARD_DIR))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["pretrain/loss", "pretrain/lr"]
    assert [(e.step, e.value) for e in events.Scalars("pretrain/loss")] == [(1, 2.5), (2, 1.75), (4, 1.25)]


def test_mlflow_local_store_gets_params_and_metric_history(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="the optional tracking extra (mlflow-skinny) is not installed")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _write(TrackingConfig(tensorboard=False, mlflow_uri=uri, mlflow_experiment="tests"), tmp_path / "run")
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"
    assert run.data.params == {"pretrain.steps": "4", "seed": "1"}
    history = client.get_metric_history(run.info.run_id, "pretrain/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 1.75), (4, 1.25)]
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()


def test_a_tracking_uri_that_cannot_be_used_never_fails_the_run(tmp_path: Path, caplog) -> None:
    sinks = open_sinks(TrackingConfig(mlflow_uri="nosuchscheme://x"), str(tmp_path / "run"), "r")
    sinks.scalars(1, {"pretrain/loss": 1.0})
    sinks.close()
    assert "no metrics tracking by MLflow" in caplog.text
    assert (tmp_path / "run" / TENSORBOARD_DIR).is_dir()
