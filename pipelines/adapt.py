"""Prefect flow ``adapt``: one STA Ray task per (benchmark, mode); a failed benchmark never stops the others.

The flow only composes :func:`adaptation.fanout.adapt_benchmarks`; each unit resolves its benchmark (by name
under ``data_dir``, a synthetic preset, or a file path), runs its mode with its baselines on the Ray the
process is connected to and returns the rows of the results table. The run folder is
``{out}/runs/adapt/{run_id}``: one sub-folder per benchmark and run,
``results.md`` / ``results.csv`` across benchmarks (failed benchmarks as ``status=failed`` rows with the
reason) and ``run.json`` (checkpoint, benchmarks, config, code version). The results table is also a
Prefect markdown artifact.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from adaptation.config import ALL_MODES, AdaptConfig
from adaptation.fanout import adapt_benchmarks, ordered_rows
from adaptation.outputs import results_markdown, write_json, write_results_table
from infra.fingerprint import code_version, stable_hash
from infra.storage import join

RUNS_FOLDER = ("runs", "adapt")
ARTIFACT_KEY = "adapt-results"


def run_folder(out: str, run_id: str) -> str:
    return join(out, *RUNS_FOLDER, run_id)


def new_run_id(checkpoint: str, benchmarks: list[str], cfg: AdaptConfig) -> str:
    """UTC time plus a hash of what the run is, so ids sort by time and tell different runs apart."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    what = stable_hash(
        {"checkpoint": checkpoint, "benchmarks": benchmarks, "config": cfg.model_dump(mode="json")}
    )
    return f"{stamp}-{what[:8]}"


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
) -> dict[str, Any]:
    """Adapt ``checkpoint`` to every benchmark, one Ray task per (benchmark, mode); returns the run folder,
    table URLs, rows, failures and the units each Ray node ran."""
    if not benchmarks:
        raise ValueError("no benchmarks given")
    run_id = run_id or new_run_id(checkpoint, benchmarks, cfg)
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
        benchmarks, cfg, checkpoint, run_dir, data_dir, storage_options, max_in_flight=parallel
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
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=f"# STA results, run {run_id}\n\n" + results_markdown(rows),
        description=f"STA adaptation results of run {run_id}",
    )
    return {
        "run_id": run_id, "run_dir": run_dir, "tables": tables, "rows": rows, "failures": failures,
        "ray_nodes": ray_nodes,
    }


def run_adapt_flow(parallel: int | None = 1, **kwargs: Any) -> dict[str, Any]:
    """``adapt_flow`` with at most ``parallel`` (benchmark, mode) units at a time (None: as Ray schedules them;
    1 keeps the timings clean)."""
    if parallel is not None and parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    return adapt_flow(parallel=parallel, **kwargs)


def build_config(
    mode: str,
    horizon: str | None,
    config_path: str | None,
    overrides: list[str] | None,
) -> AdaptConfig:
    """AdaptConfig from an optional YAML file, then ``key=value`` overrides, then ``--mode``/``--horizon``."""
    import yaml

    from infra.config import validate_config

    data: dict[str, Any] = {}
    source = "adapt options"
    if config_path:
        from infra.storage import open_input

        with open_input(config_path) as fh:
            loaded = yaml.safe_load(fh.read()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_path}: an adapt config must be a mapping of AdaptConfig fields")
        data.update(loaded)
        source = config_path
    for pair in overrides or []:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: expected key=value")
        key, value = pair.split("=", 1)
        data[key.strip()] = yaml.safe_load(value)
    modes = [m.strip() for m in mode.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown or not modes:
        raise ValueError(f"--mode {mode!r}: expected a comma list of {', '.join(ALL_MODES)}")
    data["modes"] = modes
    if horizon:
        pairs = []
        for item in horizon.split(","):
            parts = item.replace("->", ":").split(":")
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"--horizon {item!r}: expected IN:OUT, e.g. 96:96")
            pairs.append((int(parts[0]), int(parts[1])))
        data["horizons"] = pairs
    return validate_config(AdaptConfig, data, source)


def adapt_command(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Backbone checkpoint folder (path or URL)")],
    benchmarks: Annotated[
        str, typer.Option(help="Comma list: names (etth2, pems08, synthetic-traffic) or paths")
    ],
    mode: Annotated[str, typer.Option(help="zero, few, full, or a comma list")] = "few",
    out: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding benchmark files")] = None,
    horizon: Annotated[
        str | None, typer.Option(help="IN:OUT pairs, e.g. 12:12,96:96 (default by frequency)")
    ] = None,
    config: Annotated[str | None, typer.Option(help="YAML file of AdaptConfig fields")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="AdaptConfig override key=value")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time + config hash)")] = None,
    parallel: Annotated[int, typer.Option(help="Benchmarks adapted at the same time")] = 1,
    profile: Annotated[str, typer.Option("--profile", "-p", help="Profile name or YAML path")] = "local",
) -> dict[str, Any]:
    """Adapt a checkpoint to benchmarks (zero/few/full-shot, baselines); prints the results path last."""
    from pipelines.profile import load_profile

    prof = load_profile(profile)
    root = out or prof.storage.root
    try:
        cfg = build_config(mode, horizon, config, set_)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    names = [b.strip() for b in benchmarks.split(",") if b.strip()]
    if not names:
        raise typer.BadParameter("no benchmark named", param_hint="--benchmarks")
    result = run_adapt_flow(
        parallel=parallel,
        checkpoint=checkpoint,
        benchmarks=names,
        cfg=cfg,
        out=root,
        run_id=run_id,
        data_dir=data_dir,
        storage_options=prof.storage.options or None,
    )
    for name, reason in result["failures"].items():
        typer.echo(f"FAILED {name}: {reason}", err=True)
    typer.echo(result["tables"]["markdown"])
    if result["failures"]:
        raise typer.Exit(code=1)
    return result
