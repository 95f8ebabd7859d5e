"""What an STA run leaves behind, written through fsspec so a run folder may be local or ``s3://``.

Per (benchmark, method, mode, horizon) folder:

- ``metrics.json``: metrics on the original scale (MAE, RMSE, MAPE in percent, CRPS, WQL, coverage of the
  80% and 98% intervals, per-horizon MAE/RMSE/MAPE) and on the train z-score scale (``metrics_normalized``,
  the LTSF convention), train and inference time, parameter counts, the training history and the config.
  NaN is written as ``null`` (strict JSON).
- ``predictions.npz``: quantiles ``[S, H, N, Q]`` on the original scale, targets, observed mask, window
  starts and levels, for ``predictions_max_windows`` evenly spaced test windows (not all: PEMS07's whole
  test split would be gigabytes).
- ``forecast.png``: context, target, median and the 80% / 98% bands for a few nodes of one test window.

At a run (or benchmark) folder: ``results.md`` and ``results.csv``, one row per run; a value that does not apply
(e.g. the validation loss of seasonal naive) is ``-`` in the markdown and empty in the CSV, never ``nan``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from adaptation.windows import SeriesArrays
from infra.storage import filesystem, join, write_bytes_atomic
from pipelines.reporting import json_safe, markdown_table

RESULT_COLUMNS = (
    "benchmark",
    "method",
    "mode",
    "horizon",
    "mae",
    "rmse",
    "mape",
    "crps",
    "coverage_80",
    "coverage_98",
    "norm_mae",
    "norm_rmse",
    "val_loss",
    "train_s",
    "infer_s",
    "trainable_params",
    "total_params",
    "adapted",
    "status",
    "error",
)
BANDS = ((0.01, 0.99, 0.18), (0.1, 0.9, 0.35))  # (low level, high level, fill alpha): 98% and 80% intervals
PLOT_DPI = 100


def write_json(url: str, obj: Any, storage_options: dict[str, Any] | None = None) -> str:
    fs, path = filesystem(url, storage_options)
    write_bytes_atomic(fs, path, json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False).encode())
    return url


def write_predictions(
    url: str, arrays: dict[str, np.ndarray], storage_options: dict[str, Any] | None = None
) -> str:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    fs, path = filesystem(url, storage_options)
    write_bytes_atomic(fs, path, buffer.getvalue())
    return url


def plot_forecast(
    context: np.ndarray,
    target: np.ndarray,
    quantiles: np.ndarray,
    levels: Sequence[float],
    node_names: Sequence[str],
    title: str,
) -> bytes:
    """PNG of one window: ``context`` [L, n], ``target`` [H, n], ``quantiles`` [H, n, Q]; a panel per node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [float(v) for v in levels]
    n = len(node_names)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n), squeeze=False, sharex=True)
    L, H = context.shape[0], target.shape[0]
    t_ctx, t_fut = np.arange(-L, 0), np.arange(H)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(t_ctx, context[:, i], color="black", lw=1.0, label="context")
        ax.plot(t_fut, target[:, i], color="black", lw=1.0, ls="--", label="target")
        for low, high, alpha in BANDS:
            if low in levels and high in levels:
                ax.fill_between(
                    t_fut,
                    quantiles[:, i, levels.index(low)],
                    quantiles[:, i, levels.index(high)],
                    color="tab:blue",
                    alpha=alpha,
                    lw=0,
                    label=f"{round((high - low) * 100)}% interval",
                )
        ax.plot(t_fut, quantiles[:, i, levels.index(0.5)], color="tab:blue", lw=1.2, label="median")
        ax.set_ylabel(str(node_names[i]))
        ax.axvline(0, color="grey", lw=0.5)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", fontsize="small", ncol=5)
    axes[-1, 0].set_xlabel("steps from the forecast origin")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    plt.close(fig)
    return buffer.getvalue()


def write_run_outputs(
    folder: str,
    run: dict[str, Any],
    predictions: dict[str, np.ndarray],
    arrays: SeriesArrays,
    input_len: int,
    node_ids: Sequence[str],
    plot_nodes: int,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write metrics.json, predictions.npz and forecast.png into ``folder``; returns their URLs."""
    paths = {
        "metrics": join(folder, "metrics.json"),
        "predictions": join(folder, "predictions.npz"),
        "plot": join(folder, "forecast.png"),
    }
    write_predictions(
        paths["predictions"], {**predictions, "node_ids": np.asarray(node_ids, dtype=str)}, storage_options
    )
    q = predictions["quantiles"]
    pick = q.shape[0] // 2
    observed_share = predictions["observed"][pick].mean(axis=0)
    nodes = np.argsort(-observed_share, kind="stable")[: min(plot_nodes, q.shape[2])]
    start = int(predictions["starts"][pick])
    context = np.where(
        arrays.observed[start : start + input_len], arrays.original[start : start + input_len], np.nan
    )[:, nodes]
    target = np.where(predictions["observed"][pick], predictions["target"][pick], np.nan)[:, nodes]
    title = (
        f"{run['benchmark']} {run['method']} {run['mode']} {run['input_len']}->{run['output_len']} "
        f"(test window at step {start})"
    )
    png = plot_forecast(
        context, target, q[pick][:, nodes], predictions["levels"], [node_ids[i] for i in nodes], title
    )
    fs, path = filesystem(paths["plot"], storage_options)
    write_bytes_atomic(fs, path, png)
    write_json(paths["metrics"], {**run, "outputs": paths}, storage_options)
    return paths


def results_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] = RESULT_COLUMNS) -> str:
    """A markdown table of ``rows`` (MAPE in percent, times in seconds)."""
    if not rows:
        return "_(no results)_\n"
    return markdown_table(rows, [c for c in columns if any(c in r for r in rows)])


def write_results_table(
    folder: str, rows: Sequence[dict[str, Any]], storage_options: dict[str, Any] | None = None
) -> dict[str, str]:
    """``results.md`` and ``results.csv`` in ``folder``; returns their URLs."""
    md_url, csv_url = join(folder, "results.md"), join(folder, "results.csv")
    fs, md_path = filesystem(md_url, storage_options)
    write_bytes_atomic(fs, md_path, results_markdown(rows).encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in json_safe(dict(row)).items()})
    _, csv_path = filesystem(csv_url, storage_options)
    write_bytes_atomic(fs, csv_path, buffer.getvalue().encode())
    return {"markdown": md_url, "csv": csv_url}


HEADLINE_METRICS = ("mae", "rmse", "crps", "coverage_80", "coverage_98")


def run_records(run_dir: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every run record (``<benchmark>/<run>/metrics.json``) under an adaptation run folder, in path order."""
    fs, path = filesystem(run_dir, storage_options)
    records = []
    for file in sorted(fs.glob(join(path, "*", "*", "metrics.json"))):
        with fs.open(file, "rb") as fh:
            records.append(json.loads(fh.read()))
    return records


def track_adaptation(
    run_dir: str, run_id: str, tracking: Any = None, storage_options: dict[str, Any] | None = None
) -> None:
    """Mirror an adaptation run into TensorBoard (``run_dir/tensorboard``) and MLflow when the profile asks.

    Per run (``benchmark/method-mode-IN-OUT``): the training and validation loss per step, then the test
    metrics at the last step, so the curves and the final numbers sit side by side.
    """
    from infra.tracking import open_sinks

    records = run_records(run_dir, storage_options)
    if not records:
        return
    sinks = open_sinks(tracking, run_dir, f"adapt-{run_id}", {"run_id": run_id, "runs": len(records)},
                       storage_options)
    try:
        for rec in records:
            tag = f"{rec['benchmark']}/{rec['method']}-{rec['mode']}-{rec['input_len']}to{rec['output_len']}"
            history = (rec.get("training") or {}).get("history") or []
            for point in history:
                sinks.scalars(int(point["step"]), {f"{tag}/{k}": v for k, v in point.items() if k != "step"})
            last = int(history[-1]["step"]) if history else 0
            sinks.scalars(last, {f"{tag}/test_{k}": rec["metrics"].get(k) for k in HEADLINE_METRICS})
    finally:
        sinks.close()
