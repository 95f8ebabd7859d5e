"""Metrics to the tools people watch runs with: TensorBoard event files beside the run, and MLflow when asked.

Why sinks and not one writer: the run folder's own records (``metrics.jsonl``, ``metrics.json``) stay the
source of truth; a sink only mirrors scalars into a viewer's format, and a viewer that is missing or fails never
fails the run (MLflow is an optional package; a sink that raises is logged and dropped).

TensorBoard: one event folder per run, ``<run folder>/tensorboard``, so ``tensorboard --logdir ROOT/runs`` shows
every pretraining and adaptation run of a store. Event files are appended locally; for an object-store run
folder they are staged in a local temporary folder and uploaded at every flush and at the end.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, Protocol

from infra.storage import filesystem, is_local, join

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"


class MetricSink(Protocol):
    def scalars(self, step: int, values: Mapping[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


class TensorBoardSink:
    """Scalars into TensorBoard event files under ``logdir_url`` (a local path or an object-store URL)."""

    def __init__(self, logdir_url: str, storage_options: dict[str, Any] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.url = logdir_url
        self.fs, self.path = filesystem(logdir_url, storage_options)
        self.staging = None if is_local(self.fs) else tempfile.mkdtemp(prefix="factost-tb-")
        local = self.path if self.staging is None else self.staging
        os.makedirs(local, exist_ok=True)
        self.writer = SummaryWriter(local, flush_secs=10)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        for key, value in _finite(values).items():
            self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self.writer.flush()
        if self.staging is not None:
            self.fs.put(self.staging.rstrip("/") + "/", self.path, recursive=True)

    def close(self) -> None:
        self.flush()
        self.writer.close()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


class MlflowSink:
    """Scalars (and the run's parameters) into an MLflow run; thread-safe through ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str, run_name: str, params: Mapping[str, Any] | None = None) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in _flat(params or {}).items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        for key, value in _finite(values).items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def flush(self) -> None:
        """MLflow logs each call at once."""

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


class Sinks:
    """Several sinks as one; a sink that fails is logged once and dropped, never failing the run."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def _each(self, method: str, *args: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a viewer must never fail the run
                log.warning("metrics to %s stopped: %s", type(sink).__name__, exc)
                self.sinks.remove(sink)

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        self._each("scalars", step, values)

    def flush(self) -> None:
        self._each("flush")

    def close(self) -> None:
        self._each("close")


def open_sinks(
    tracking: Any,
    run_url: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Sinks:
    """The sinks a profile's ``tracking`` section asks for, for the run whose folder is ``run_url``."""
    sinks: list[Any] = []
    makers: list[tuple[str, Any]] = []
    if tracking is None or tracking.tensorboard:
        makers.append(("TensorBoard", lambda: TensorBoardSink(join(run_url, TENSORBOARD_DIR), storage_options)))
    if tracking is not None and tracking.mlflow_uri:
        makers.append(("MLflow", lambda: MlflowSink(tracking.mlflow_uri, tracking.mlflow_experiment, run_name,
                                                    params)))
    for name, make in makers:
        try:
            sinks.append(make())
        except Exception as exc:  # noqa: BLE001 - e.g. mlflow not installed: say so, keep the run going
            log.warning("no metrics tracking by %s: %s: %s", name, type(exc).__name__, exc)
    return Sinks(sinks)
