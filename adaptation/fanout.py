"""The STA fan-out: one Ray task per (benchmark, mode), each asking Ray for the resources its run needs.

Why per mode and not per benchmark: a benchmark's zero-, few- and full-shot runs (and the from-scratch
baseline that goes with each trained mode) share nothing but the loaded data, and full-shot is far longer
than the others; split, they spread over a cluster's nodes and GPUs. Seasonal naive needs no training and runs
with the benchmark's first mode. Every run seeds itself (``AdaptConfig.seed``) as the sequential harness does,
so the rows do not depend on where or in which order the units ran.

A unit that fails returns its reason instead of raising: one broken benchmark never stops the others; the
caller reports the failures and exits non-zero.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from adaptation.config import AdaptConfig
from infra.stage_runtime import StageRun, WorkResources, run_units

log = logging.getLogger(__name__)

STAGE = "sta"
_METHOD_ORDER = {"factost": 0, "scratch": 1, "seasonal_naive": 2}


@dataclass(frozen=True)
class AdaptUnit:
    """One benchmark in one mode (with the baselines that belong to it)."""

    benchmark: str
    mode: str
    cfg: AdaptConfig
    checkpoint: str
    run_dir: str
    data_dir: str | None
    storage_options: dict[str, Any] | None
    benchmark_options: dict[str, Any] | None = None  # generic files' conventions by name


@dataclass
class AdaptUnitResult:
    benchmark: str
    mode: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def plan_units(
    benchmarks: list[str],
    cfg: AdaptConfig,
    checkpoint: str,
    run_dir: str,
    data_dir: str | None,
    storage_options: dict[str, Any] | None,
    benchmark_options: dict[str, Any] | None = None,
) -> list[AdaptUnit]:
    """Benchmark-major units; seasonal naive rides with each benchmark's first mode."""
    units = []
    for name in benchmarks:
        for i, mode in enumerate(cfg.modes):
            baselines = tuple(b for b in cfg.baselines if b != "seasonal_naive" or i == 0)
            unit_cfg = cfg.model_copy(update={"modes": (mode,), "baselines": baselines})
            units.append(AdaptUnit(name, mode, unit_cfg, checkpoint, run_dir, data_dir, storage_options,
                                   benchmark_options))
    return units


def run_unit(unit: AdaptUnit) -> AdaptUnitResult:
    """Load the benchmark and run its mode; a failure is returned with its reason (last line of the error)."""
    from adaptation.benchmark_options import load_benchmark
    from adaptation.harness import run_adaptation

    say = logging.getLogger("adaptation").info
    try:
        dataset = load_benchmark(unit.benchmark, unit.data_dir, unit.benchmark_options, unit.storage_options)
        say(f"{dataset.name} ({unit.mode}): {dataset.num_steps} steps x {dataset.num_nodes} nodes at {dataset.freq}")
        result = run_adaptation(
            unit.checkpoint, dataset, unit.cfg, unit.run_dir, unit.storage_options, log=say, write_table=False
        )
    except Exception as exc:
        log.error("benchmark %s (%s) failed:\n%s", unit.benchmark, unit.mode, traceback.format_exc())
        return AdaptUnitResult(unit.benchmark, unit.mode, error=f"{type(exc).__name__}: {exc}")
    return AdaptUnitResult(unit.benchmark, unit.mode, rows=result["rows"])


def unit_resources(cfg: AdaptConfig) -> WorkResources:
    """A GPU per unit when the config asks for CUDA (or 'auto' on a cluster that has GPUs)."""
    import ray

    from infra.ray_runtime import ensure_ray

    ensure_ray()
    wants_gpu = cfg.device.startswith("cuda") or (
        cfg.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0
    )
    return WorkResources(num_cpus=1.0, num_gpus=1.0 if wants_gpu else 0.0)


def ordered_rows(results: list[AdaptUnitResult], cfg: AdaptConfig) -> list[dict[str, Any]]:
    """The sequential harness's row order: benchmark, horizon, mode, then our method before its baselines."""
    mode_pos = {m: i for i, m in enumerate(cfg.modes)}
    out: list[dict[str, Any]] = []
    for bench in dict.fromkeys(r.benchmark for r in results):
        rows = [row for r in results if r.benchmark == bench for row in r.rows]
        horizons = {h: i for i, h in enumerate(dict.fromkeys(str(row["horizon"]) for row in rows))}
        out.extend(
            sorted(
                rows,
                key=lambda row: (
                    horizons[str(row["horizon"])],
                    mode_pos.get(str(row["mode"]), len(mode_pos)),
                    _METHOD_ORDER.get(str(row["method"]), len(_METHOD_ORDER)),
                ),
            )
        )
    return out


def adapt_benchmarks(
    benchmarks: list[str],
    cfg: AdaptConfig,
    checkpoint: str,
    run_dir: str,
    data_dir: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_in_flight: int | None = None,
    benchmark_options: dict[str, Any] | None = None,
) -> tuple[list[AdaptUnitResult], dict[str, int]]:
    """Run every (benchmark, mode) unit on Ray; returns the unit results in unit order and ``ray_nodes``."""
    units = plan_units(benchmarks, cfg, checkpoint, run_dir, data_dir, storage_options, benchmark_options)
    tally: StageRun[Any] = StageRun(STAGE, len(units))
    results = list(
        run_units(
            run_unit, units, stage=STAGE, describe=lambda _i, u: f"benchmark {u.benchmark} ({u.mode})",
            resources=unit_resources(cfg), max_in_flight=max_in_flight, blas_threads=None, progress=False,
            tally=tally,
        )
    )
    return results, tally.node_counts()
