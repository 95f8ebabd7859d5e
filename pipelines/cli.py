"""The ``factost`` command line: one command per stage and per job, ``--help`` on each.

Every command prints its main result (a version folder, a checkpoint URL, a report path) on its last line so
scripts can capture it, and fails with a one-line reason and a non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# torch's OpenMP threads spin while waiting; on a small shared machine that made 2-thread runs 3-9x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# umap-learn's numba functions are cached on disk: later processes skip the ~25 s compile.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "numba"))

app = typer.Typer(help="FactoST pipeline: corpus -> UTP pretraining -> STA adaptation.", no_args_is_help=True)
run_app = typer.Typer(help="Run a whole job as a Prefect flow.", no_args_is_help=True)
app.add_typer(run_app, name="run")

console = Console(stderr=True)
out = Console()

ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Profile name in configs/ or a YAML path")]


def _profile(profile: str, overrides: dict[str, Any] | None = None) -> Any:
    from pipelines.profile import load_profile

    return load_profile(profile, overrides)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"{pair!r}: expected key=value", param_hint="--option")
        key, value = pair.split("=", 1)
        options[key] = yaml.safe_load(value) if value else value
    return options


def _default_name(path: str) -> str:
    from infra.storage import inner_name

    stem = inner_name(path).rsplit(".", 1)[0] or "source"
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", stem)


@app.command()
def ingest(
    kind: Annotated[str, typer.Argument(help="Connector: tsf, m4, ltsf, wiki, lotsa, long")],
    paths: Annotated[list[str], typer.Argument(help="Input file(s) or folder (local path or s3:// URL)")],
    out_root: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the first file's stem)")] = None,
    domain: Annotated[str, typer.Option(help="Domain label stored per series")] = "other",
    freq: Annotated[str | None, typer.Option(help="Pandas offset alias overriding the inferred one")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Connector option key=value")] = None,
    min_length: Annotated[int | None, typer.Option(help="Quarantine series shorter than this")] = None,
    profile: ProfileOpt = "local",
) -> None:
    """Ingest one source into a versioned canonical table; prints the version folder last."""
    from corpus.config import SourceConfig
    from corpus.ingest import ingest_source
    from infra.config import validate_config
    from pipelines.reporting import rich_table

    prof = _profile(profile)
    root = out_root or prof.storage.root
    ingest_cfg = prof.ingest if min_length is None else prof.ingest.model_copy(update={"min_length": min_length})
    source = validate_config(
        SourceConfig,
        {"name": name or _default_name(paths[0]), "kind": kind, "paths": paths, "domain": domain, "freq": freq,
         "options": _parse_options(option or [])},
        "ingest arguments",
    )
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        bar = progress.add_task(f"ingesting {source.name}", total=None)

        def report(series: int, points: int) -> None:
            progress.update(bar, description=f"ingesting {source.name}: {series:,} series, {points:,} points")

        result = ingest_source(source, ingest_cfg, root, prof.storage.options, on_progress=report)
    summary = result.summary()
    console.print(rich_table([{k: v for k, v in summary.items() if k != "version"}], title="ingest"))
    if result.reused:
        console.print("inputs, config and code unchanged: nothing written, existing version reused")
    out.print(result.version.url, soft_wrap=True)


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", help="Series to synthesize")] = 1000,
    length: Annotated[int, typer.Option(help="Points per series")] = 1024,
    seed: Annotated[int | None, typer.Option(help="Root seed (series i is the same whatever the workers)")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes")] = None,
    out_root: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    profile: ProfileOpt = "local",
) -> None:
    """KernelSynth: synthesize N series of length L into the corpus; prints the version folder last."""
    from corpus.kernelsynth import KernelSynthConfig, synthesize
    from infra.config import validate_config

    prof = _profile(profile)
    data = prof.synth.model_dump() | {"n_series": n, "length": length}
    data |= {k: v for k, v in {"seed": seed, "workers": workers}.items() if v is not None}
    cfg = validate_config(KernelSynthConfig, data, "synth arguments")
    version = synthesize(cfg, out_root or prof.storage.root, prof.storage.options, progress=True)
    out.print(version.url, soft_wrap=True)


@app.command()
def balance(
    corpus: Annotated[list[str], typer.Option("--corpus", help="Corpus version folder(s) to balance")],
    samples: Annotated[int, typer.Option(help="Training samples to draw")] = 10_000,
    length: Annotated[int | None, typer.Option(help="Sample length (NaN-padded)")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed")] = None,
    out_root: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    profile: ProfileOpt = "local",
) -> None:
    """BLAST: balance corpus versions into training shards; prints the training-corpus version folder last."""
    from corpus.blast.balance import balance as run_balance
    from corpus.blast.config import BlastConfig
    from infra.config import validate_config

    prof = _profile(profile)
    data = prof.balance.model_dump() | {"n_samples": samples}
    data |= {k: v for k, v in {"sample_length": length, "seed": seed}.items() if v is not None}
    cfg = validate_config(BlastConfig, data, "balance arguments")
    version = run_balance(corpus, cfg, out_root or prof.storage.root, prof.storage.options, progress=True)
    out.print(version.url, soft_wrap=True)


@run_app.command("refresh")
def run_refresh(profile: ProfileOpt = "local") -> None:
    """Corpus refresh flow: ingest every source, KernelSynth, BLAST; prints the training-corpus version last."""
    from pipelines.refresh import corpus_refresh_flow
    from pipelines.reporting import rich_table

    result = corpus_refresh_flow(_profile(profile))
    if result["sources"]:
        console.print(rich_table([{k: v for k, v in s.items() if k != "version"} for s in result["sources"]],
                                 title="sources"))
    console.print(rich_table([result["kernelsynth"], result["training_corpus"]], title="corpus"))
    out.print(result["training_corpus"]["version"], soft_wrap=True)


@run_app.command("pretrain-then-adapt")
def run_pretrain_then_adapt(
    profile: ProfileOpt = "local",
    data_dir: Annotated[str | None, typer.Option(help="Folder with real benchmark files (standard names)")] = None,
    benchmarks: Annotated[str | None, typer.Option(help="Comma list overriding the profile's benchmarks")] = None,
    refresh: Annotated[bool, typer.Option("--refresh/--no-refresh", help="Refresh the corpus first")] = True,
) -> None:
    """The one-click job: refresh -> pretrain -> adapt per benchmark -> report; prints the report path last."""
    from pipelines.one_click import pretrain_then_adapt_flow
    from pipelines.reporting import rich_table

    names = [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else None
    result = pretrain_then_adapt_flow(_profile(profile), refresh=refresh, data_dir=data_dir, benchmarks=names)
    cols = ["benchmark", "method", "mode", "horizon", "mae", "rmse", "crps", "coverage_80", "status"]
    console.print(rich_table(result["results"], title=f"run {result['run_id']}", columns=cols))
    out.print(result["report"], soft_wrap=True)


@app.command()
def rerun(
    run_id: Annotated[str, typer.Argument(help="A recorded run id (see `factost runs`)")],
    force: Annotated[bool, typer.Option(help="Rerun even if the code version or an input's content changed")] = False,
    tolerance: Annotated[float, typer.Option(help="Allowed relative difference per metric")] = 0.05,
    profile: ProfileOpt = "local",
) -> None:
    """Execute a recorded run again and compare: shard hashes exactly, metrics within the tolerance."""
    from pipelines.reporting import rich_table
    from pipelines.rerun import RerunMismatch, rerun_flow

    try:
        outcome = rerun_flow(run_id, _profile(profile), force=force, tolerance=tolerance)
    except RerunMismatch as exc:
        console.print(rich_table(exc.outcome["comparison"], title=f"rerun of {run_id}: MISMATCH"))
        raise
    console.print(rich_table(outcome["comparison"], title=f"rerun of {run_id}: reproduced"))
    out.print(outcome["report"], soft_wrap=True)


@app.command()
def runs(profile: ProfileOpt = "local") -> None:
    """List recorded runs with their status and headline metrics."""
    from pipelines.reporting import rich_table
    from pipelines.runs import headline, list_runs

    prof = _profile(profile)
    rows = [headline(r) for r in list_runs(prof.storage.root, prof.storage.options)]
    out.print(rich_table(rows, title="runs") if rows else "no recorded runs")


@app.command()
def versions(
    dataset: Annotated[str, typer.Argument(help="Dataset path under the root, e.g. corpus/m4_hourly")],
    out_root: Annotated[str | None, typer.Option("--out", help="Storage root (default: the profile's)")] = None,
    profile: ProfileOpt = "local",
) -> None:
    """List the published versions of a dataset (only complete ones: those with a manifest)."""
    from infra.versions import list_versions
    from pipelines.reporting import rich_table

    prof = _profile(profile)
    found = list_versions(out_root or prof.storage.root, dataset, prof.storage.options)
    rows = [{"version": v.version_id, "created": v.manifest["created_at"], "rows": v.num_rows, "url": v.url}
            for v in found]
    console.print(rich_table(rows, title=dataset))
    for v in found:
        out.print(v.url, soft_wrap=True)


def _register_stage_commands() -> None:
    """The pretrain and adapt commands live beside their flows; the CLI only registers them."""
    from pipelines.adapt import adapt_command
    from pipelines.pretrain import pretrain_command

    app.command("pretrain")(pretrain_command)
    app.command("adapt")(adapt_command)


_register_stage_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn any failure into one line on stderr and exit code 1."""
    logging.basicConfig(
        level=os.environ.get("FACTOST_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, non-zero exit
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(f"[red]error:[/red] {type(exc).__name__}: {message}", highlight=False, soft_wrap=True)
        if os.environ.get("FACTOST_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
