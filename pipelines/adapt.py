"""Prefect flow ``adapt``: one STA Ray task per (benchmark, mode); a failed benchmark never stops the others.

The flow only composes :func:`adaptation.fanout.adapt_benchmarks`; each unit resolves its benchmark (by name
under ``data_dir``, a synthetic preset, or a file path), runs its mode with its baselines on the Ray the
process is connected to and returns the rows of the results table. The run folder is
``{out}/runs/adapt/{run_id}``: one sub-folder per benchmark and run,
``results.md`` / ``results.csv`` across benchmarks (failed benchmarks as ``status=failed`` rows with the
reason) and ``run.json`` (checkpoint, benchmarks, config, code version). The results table is also a
Prefect table artifact, and the runs' losses and metrics are mirrored to TensorBoard (``tensorboard/``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow

from adaptation.config import AdaptConfig
from adaptation.fanout import adapt_benchmarks, ordered_rows
from adaptation.outputs import RESULT_COLUMNS, track_adaptation, write_json, write_results_table
from infra.fingerprint import code_version, stable_hash
from infra.ids import timestamped_id
from infra.storage import join
from pipelines.reporting import table_artifact

RUNS_FOLDER = ("runs", "adapt")
ARTIFACT_KEY = "adapt-results"


@dataclass(frozen=True)
class AdaptResult:
    """What an adapt run made: its folder, the results tables' URLs, every row, the failures by benchmark and
    the units each Ray node ran."""

    run_id: str
    run_dir: str
    tables: dict[str, str]
    rows: list[dict[str, Any]]
    failures: dict[str, str]
    ray_nodes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return asdict(self)


def run_folder(out: str, run_id: str) -> str:
    return join(out, *RUNS_FOLDER, run_id)


def adapt_run_id(checkpoint: str, benchmarks: list[str], cfg: AdaptConfig) -> str:
    """An adapt run's id: its start time and a hash of what it adapts, so ids tell different runs apart."""
    what = stable_hash({"checkpoint": checkpoint, "benchmarks": benchmarks, "config": cfg.model_dump(mode="json")})
    return timestamped_id(what[:8])


def _failure_row(benchmark: str, error: str, mode: str = "-") -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "method": "-",
        "mode": mode,
        "horizon": "-",
        "status": "failed",
        "error": error.strip().splitlines()[-1][:300] if error.strip() else "failed",
    }


@flow(name="adapt", log_prints=True)
def adapt_flow(
    checkpoint: str,
    benchmarks: list[str],
    cfg: AdaptConfig,
    out: str,
    run_id: str | None = None,
    data_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    parallel: int | None = 1,
    benchmark_options: dict[str, Any] | None = None,
    tracking: Any = None,
) -> AdaptResult:
    """Adapt ``checkpoint`` to every benchmark, one Ray task per (benchmark, mode); returns the run folder,
    table URLs, rows, failures and the units each Ray node ran."""
    if not benchmarks:
        raise ValueError("no benchmarks given")
    run_id = run_id or adapt_run_id(checkpoint, benchmarks, cfg)
    run_dir = run_folder(out, run_id)
    write_json(
        join(run_dir, "run.json"),
        {
            "run_id": run_id,
            "checkpoint": checkpoint,
            "benchmarks": benchmarks,
            "data_dir": data_dir,
            "config": cfg.model_dump(mode="json"),
            "code_version": code_version(),
        },
        storage_options,
    )
    results, ray_nodes = adapt_benchmarks(
        benchmarks, cfg, checkpoint, run_dir, data_dir, storage_options, max_in_flight=parallel,
        benchmark_options=benchmark_options,
    )
    rows = ordered_rows(results, cfg)
    for bench in dict.fromkeys(str(r["benchmark"]) for r in rows):
        write_results_table(join(run_dir, bench), [r for r in rows if r["benchmark"] == bench], storage_options)
    failures: dict[str, str] = {}
    for res in results:
        if res.error is not None:
            key = res.benchmark if res.benchmark not in failures else f"{res.benchmark} ({res.mode})"
            failures[key] = res.error
            rows.append(_failure_row(res.benchmark, res.error, res.mode))
            print(f"benchmark {res.benchmark} ({res.mode}) failed: {res.error}")
    tables = write_results_table(run_dir, rows, storage_options)
    track_adaptation(run_dir, run_id, tracking, storage_options)
    table_artifact(ARTIFACT_KEY, rows, [c for c in RESULT_COLUMNS if any(c in r for r in rows)],
                   f"STA adaptation results of run {run_id}")
    return AdaptResult(run_id, run_dir, tables, rows, failures, ray_nodes)


def run_adapt_flow(parallel: int | None = 1, **kwargs: Any) -> AdaptResult:
    """``adapt_flow`` with at most ``parallel`` (benchmark, mode) units at a time (None: as Ray schedules them;
    1 keeps the timings clean)."""
    if parallel is not None and parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    return adapt_flow(parallel=parallel, **kwargs)
