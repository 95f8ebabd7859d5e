"""The ``factost`` command line: one command per stage and per job, ``--help`` on each.

The contract every command keeps:

- its main result (a version folder, a checkpoint URL, a report path) is the last line on stdout; with
  ``--json`` stdout holds one JSON document instead and everything else goes to stderr;
- a usage error (missing or unknown argument or option, a value outside its choices, a bad ``--set``) exits 2
  with the usage line and a hint, as click does; a runtime failure exits 1 with a one-line reason; a command some
  of whose work failed (a benchmark, a source) finishes the rest, names what failed and exits 1;
- settings are changed one way: ``--set section.key=value`` (repeatable, typed and checked by the profile's
  models); the convenience flags (``--steps``, ``--out``...) are shorthands for such keys.

Heavy modules (torch, Ray, Prefect) are imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click as click  # typer's bundled click: the exceptions its parser raises

from pipelines import PROJECT_LOGGERS

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's own 20 s wait for its ephemeral API server ran out on a busy 2-core machine, failing the whole job.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# torch's OpenMP threads spin while waiting; on a small shared machine that made 2-thread runs 3-9x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# umap-learn's numba functions are cached on disk: later processes skip the ~25 s compile.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "numba"))
# The stage modules log through `logging`; Prefect forwards these loggers to the flow-run log.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(PROJECT_LOGGERS))

# Choices listed in --help without importing the modules that define them (tests keep them equal).
CONNECTOR_KINDS = ("tsf", "m4", "ltsf", "wiki", "lotsa", "long")
MODEL_SIZES = ("minuscule", "tiny", "small", "base")
ADAPT_MODES = ("zero", "few", "full")
ZERO_STAGES = ("0", "1", "2")

app = typer.Typer(help="FactoST pipeline: corpus -> UTP pretraining -> STA adaptation.", no_args_is_help=True)
run_app = typer.Typer(help="Run a whole job as a Prefect flow.", no_args_is_help=True)
app.add_typer(run_app, name="run")


def _console(stderr: bool = True) -> Any:
    """Rich output to stderr; piped into a file or a program, tables get room instead of cut cells."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 250)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"factost {version('factost')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """FactoST pipeline: corpus -> UTP pretraining -> STA adaptation."""


def usage_error(message: str, hint: str | None = None) -> click.UsageError:
    """A usage error bound to the running command, so it prints that command's usage line and exits 2."""
    ctx = click.globals.get_current_context(silent=True)
    return typer.BadParameter(message, ctx=ctx, param_hint=hint) if hint else click.UsageError(message, ctx=ctx)


def choice(values: Sequence[str], what: str, many: bool = False) -> Callable[[Any], Any]:
    """An option callback that accepts one of ``values`` (or a comma list of them) and names the choices."""

    def check(value: Any) -> Any:
        if value is None:
            return None
        items = [v.strip() for v in str(value).split(",") if v.strip()] if many else [str(value)]
        unknown = [v for v in items if v not in values]
        if unknown or not items:
            raise typer.BadParameter(f"unknown {what} {(unknown or [value])[0]!r}; known: {', '.join(values)}")
        return items if many else value

    return check


def _metavar(values: Sequence[str]) -> str:
    return "[" + "|".join(values) + "]"


ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="Profile name in configs/ or a YAML path")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE",
                 help="Override a profile setting (repeatable), e.g. --set pretrain.steps=20"),
]
OutOpt = Annotated[str | None, typer.Option("--out", help="Storage root (shorthand for --set storage.root=...)")]


def json_opt(fields: str) -> Any:
    """The ``--json`` option; its help names the fields the document holds."""
    return Annotated[bool, typer.Option("--json", help=f"Print one JSON document on stdout: {fields}")]


@dataclass
class Outcome:
    """What a command reports: the JSON payload, what people read, and the parts of the work that failed."""

    payload: Any
    result_line: str | None = None
    tables: list[Any] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    listing: bool = False  # the tables are the result (runs, datasets, show): stdout, not stderr


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (ours, Prefect's, a library's, a subprocess's) to stderr meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def reports(fn: Callable[..., Outcome]) -> Callable[..., None]:
    """Run a command returning an :class:`Outcome`, print it (as JSON with ``--json``) and exit 1 on failures."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        from pipelines.reporting import json_document

        as_json = bool(kwargs.get("as_json"))
        with _stdout_to_stderr() if as_json else nullcontext():
            outcome = fn(*args, **kwargs)
        err = _console()
        for name, reason in outcome.failed.items():
            err.print(f"FAILED {name}: {reason}", highlight=False, markup=False)
        if as_json:
            sys.stdout.write(json_document(outcome.payload) + "\n")
        else:
            shown = _console(stderr=False) if outcome.listing else err
            for table in outcome.tables:
                shown.print(table)
            if outcome.result_line is not None:
                typer.echo(outcome.result_line)
        sys.stdout.flush()
        if outcome.failed:
            err.print(f"error: {len(outcome.failed)} part(s) failed: {', '.join(outcome.failed)}", markup=False)
            raise typer.Exit(code=1)

    return command


def settings(profile: str, sets: list[str] | None, shorthands: dict[Any, Any] | None = None) -> Any:
    """The profile with the shorthand flags and then the ``--set`` pairs applied; a bad pair is a usage error."""
    from pipelines.profile import load_profile
    from pipelines.settings import OverrideError, apply_overrides, parse_pairs

    prof = load_profile(profile)
    try:
        flat = {k: v for k, v in (shorthands or {}).items() if v is not None} | parse_pairs(sets or [])
        return apply_overrides(prof, flat)
    except OverrideError as exc:
        raise usage_error(str(exc), "'--set'") from None


def cluster_settings(profile: str, sets: list[str] | None, shorthands: dict[Any, Any] | None = None) -> Any:
    """``settings`` for a command that runs on Ray: a named cluster that does not answer fails here, in seconds,
    before Prefect or Ray start."""
    from infra.ray_runtime import check_reachable, cluster_address

    prof = settings(profile, sets, shorthands)
    if (address := cluster_address(prof.ray.address)) is not None:
        check_reachable(address)
    return prof


def _default_name(path: str) -> str:
    from infra.storage import inner_name

    stem = inner_name(path).rsplit(".", 1)[0] or "source"
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", stem)


def _source_config(fields: dict[str, Any], sets: list[str] | None) -> tuple[Any, list[str]]:
    """The ingest command's source (its ``source.*`` --set pairs applied) and the remaining pairs."""
    from corpus.config import SourceConfig
    from infra.config import validate_config
    from pipelines.settings import OverrideError, apply_overrides, parse_pairs

    source = validate_config(SourceConfig, fields, "ingest arguments")
    mine = [p for p in sets or [] if p.strip().startswith("source.")]
    try:
        flat = {k.split(".", 1)[1]: v for k, v in parse_pairs(mine).items()}
        return apply_overrides(source, flat), [p for p in sets or [] if p not in mine]
    except OverrideError as exc:
        raise usage_error(f"source.{exc}", "'--set'") from None


@app.command()
@reports
def ingest(
    kind: Annotated[str, typer.Argument(metavar="KIND", callback=choice(CONNECTOR_KINDS, "connector"),
                                        help=f"Connector: {', '.join(CONNECTOR_KINDS)}")],
    paths: Annotated[list[str], typer.Argument(help="Input file(s) or folder: path, s3://, https:// or hf:// URL")],
    out_root: OutOpt = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the first file's stem)")] = None,
    domain: Annotated[str, typer.Option(help="Domain label stored per series")] = "other",
    freq: Annotated[str | None, typer.Option(help="Pandas offset alias overriding the inferred one")] = None,
    min_length: Annotated[int | None, typer.Option(help="Quarantine series shorter than this (ingest.min_length)")
                          ] = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("source, series, points, quarantined, duplicates, bytes, reused, version") = False,
) -> Outcome:
    """Ingest one source into a versioned canonical table; prints the version folder last.

    Connector options are --set source.options.KEY=VALUE (e.g. source.options.id_column=item).
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from corpus.ingest import ingest_source
    from pipelines.reporting import rich_table

    source, rest = _source_config({"name": name or _default_name(paths[0]), "kind": kind, "paths": paths,
                                   "domain": domain, "freq": freq}, set_)
    prof = cluster_settings(profile, rest, {"storage.root": out_root, "ingest.min_length": min_length})
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=_console(),
                  transient=True) as progress:
        bar = progress.add_task(f"ingesting {source.name}", total=None)

        def report(series: int, points: int) -> None:
            progress.update(bar, description=f"ingesting {source.name}: {series:,} series, {points:,} points")

        result = ingest_source(source, prof.ingest, prof.storage.root, prof.storage.options, on_progress=report)
    summary = {**result.summary(), "reused": result.reused, "version": result.version.url}
    tables = [rich_table([{k: v for k, v in summary.items() if k != "version"}], title="ingest")]
    if result.reused:
        tables.append("inputs, config and code unchanged: nothing written, existing version reused")
    return Outcome(summary, result.version.url, tables)


@app.command()
@reports
def fetch(
    only: Annotated[list[str] | None, typer.Option("--only", metavar="NAME",
                                                   help="Fetch only this source (repeatable)")] = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("files: source, url, file, path, bytes, sha256, status; sources: source, licence, "
                      "expected_bytes, bytes, files, status") = False,
) -> Outcome:
    """Download the profile's https:// and hf:// sources into the cache (verified copies are kept); prints the cache.

    Each file's sha256 is recorded on first download and checked on every later one; a failed source is named
    with its reason (a 404 names the URL and the status) and the others are still fetched.
    """
    from corpus.fetch import cache_folder, fetch_source, select_sources
    from infra.fetch import progress_bars
    from pipelines.reporting import rich_table

    prof = settings(profile, set_)
    try:
        chosen = select_sources(prof.ingest.sources, only)
    except ValueError as exc:
        raise usage_error(str(exc), "'--only'") from None
    files: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    with progress_bars(prof.ingest.fetch.progress) as bars:
        for source in chosen:
            origin = source.origin
            row = {"source": source.name, "licence": origin.licence if origin else None,
                   "expected_bytes": origin.size_bytes if origin else None}
            try:
                got = fetch_source(source, prof.ingest, prof.storage.root, prof.storage.options, bars).files
            except Exception as exc:  # noqa: BLE001 - one source's failure is reported; the others go on
                failed[source.name] = _one_line(exc)
                sources.append(row | {"bytes": None, "files": 0, "status": "failed"})
                continue
            files.extend(got)
            status = "local, nothing to fetch" if not got else ", ".join(sorted({f["status"] for f in got}))
            sources.append(row | {"bytes": sum(f["bytes"] or 0 for f in got), "files": len(got), "status": status})
    cache = str(cache_folder(prof.ingest, prof.storage.root))
    tables = [rich_table(sources, title="fetch")]
    return Outcome({"cache": cache, "sources": sources, "files": files}, cache, tables, failed)


def _version_outcome(version: Any, title: str) -> Outcome:
    from pipelines.catalog import version_row
    from pipelines.reporting import rich_table

    row = version_row(version)
    return Outcome(row, version.url, [rich_table([{k: v for k, v in row.items() if k != "url"}], title=title)])


VERSION_FIELDS = "dataset, version_id, created, rows, bytes, inputs, url"


@app.command()
@reports
def synth(
    n: Annotated[int | None, typer.Option("--n", help="Series to synthesize (synth.n_series)")] = None,
    length: Annotated[int | None, typer.Option(help="Points per series (synth.length)")] = None,
    seed: Annotated[int | None, typer.Option(help="Root seed: series i is the same whatever the workers")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray tasks at a time (synth.workers)")] = None,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(VERSION_FIELDS) = False,
) -> Outcome:
    """KernelSynth: synthesize N series of length L into the corpus; prints the version folder last."""
    from corpus.kernelsynth import synthesize

    prof = cluster_settings(profile, set_, {"storage.root": out_root, "synth.n_series": n,
                                            "synth.length": length, "synth.seed": seed, "synth.workers": workers})
    version = synthesize(prof.synth, prof.storage.root, prof.storage.options, progress=True)
    return _version_outcome(version, "kernelsynth")


@app.command()
@reports
def balance(
    corpus: Annotated[list[str], typer.Option("--corpus", help="Corpus version folder(s) to balance")],
    samples: Annotated[int | None, typer.Option(help="Training samples to draw (balance.n_samples)")] = None,
    length: Annotated[int | None, typer.Option(help="Sample length, NaN-padded (balance.sample_length)")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (balance.seed)")] = None,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(VERSION_FIELDS) = False,
) -> Outcome:
    """BLAST: balance corpus versions into training shards; prints the training-corpus version folder last."""
    from corpus.blast.balance import balance as run_balance
    from pipelines.refresh import leakage_filter

    prof = cluster_settings(profile, set_, {"storage.root": out_root, "balance.n_samples": samples,
                                            "balance.sample_length": length, "balance.seed": seed})
    root, options = prof.storage.root, prof.storage.options  # the profile's benchmarks stay out, as in a refresh
    leakage = leakage_filter(prof.leakage, prof.benchmarks, prof.ingest.sources, root, options)
    version = run_balance(corpus, prof.balance, root, options, progress=True, leakage=leakage)
    return _version_outcome(version, "training corpus")


@app.command()
@reports
def pretrain(
    corpus: Annotated[str, typer.Option("--corpus", help="Training corpus version folder (local path or s3:// URL)")],
    size: Annotated[str | None, typer.Option(metavar=_metavar(MODEL_SIZES), callback=choice(MODEL_SIZES, "size"),
                                             help="Backbone size (pretrain.size)")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer updates (pretrain.steps)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size, all workers (pretrain.batch_size)")
                          ] = None,
    context: Annotated[int | None, typer.Option(help="Max context points, multiple of 16 (pretrain.context_length)")
                       ] = None,
    horizon: Annotated[int | None, typer.Option(help="Max horizon points, multiple of 16 (pretrain.max_horizon)")
                       ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (pretrain.lr)")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers (pretrain.num_workers)")] = None,
    gpu: Annotated[bool | None, typer.Option("--gpu/--cpu", help="Train on GPUs with NCCL and bf16")] = None,
    zero_stage: Annotated[str | None, typer.Option(metavar=_metavar(ZERO_STAGES),
                                                   callback=choice(ZERO_STAGES, "ZeRO stage"),
                                                   help="DeepSpeed ZeRO stage (pretrain.zero_stage)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Steps between checkpoints")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of init, windows and patch draws")] = None,
    run_name: Annotated[str | None, typer.Option(help="Run name; rerun the same name to resume")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (ray.address)")] = None,
    flow_run: Annotated[bool, typer.Option("--flow/--no-flow", help="Run as a Prefect flow")] = True,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("run, steps, final loss, tokens/s, restarts, checkpoint") = False,
) -> Outcome:
    """Pretrain the UTP backbone on a training corpus; prints the checkpoint folder URL last."""
    from pipelines.pretrain import pretrain_flow, run_summary
    from pipelines.reporting import rich_table

    precision = None if gpu is None else ("bf16" if gpu else "fp32")
    prof = cluster_settings(profile, set_, {
        "storage.root": out_root, "ray.address": ray_address, "pretrain.size": size, "pretrain.steps": steps,
        "pretrain.batch_size": batch_size, "pretrain.context_length": context, "pretrain.max_horizon": horizon,
        "pretrain.lr": lr, "pretrain.num_workers": workers, "pretrain.use_gpu": gpu, "pretrain.precision": precision,
        "pretrain.zero_stage": None if zero_stage is None else int(zero_stage),
        "pretrain.checkpoint_every": checkpoint_every, "pretrain.seed": seed,
    })
    if flow_run:
        runner = pretrain_flow
    else:
        from training.trainer import pretrain as runner
    options = prof.storage.options or None
    url = runner(corpus, prof.pretrain, prof.storage.root, run_name=run_name, storage_options=options,
                 ray_address=prof.ray.address, ray_num_cpus=prof.ray.num_cpus, tracking=prof.tracking).checkpoint_url
    summary = run_summary(url, options)
    return Outcome(summary, url, [rich_table([summary], title="pretraining")])


def _benchmark_overrides(pairs: list[str] | None) -> dict[Any, Any]:
    """``NAME.KEY=VALUE`` pairs as ``benchmarks.options.NAME.KEY`` settings (NAME may itself hold dots)."""
    from pipelines.settings import OverrideError, parse_pairs

    try:
        flat = parse_pairs(pairs or [])
    except OverrideError as exc:
        raise usage_error(str(exc).replace("section.key", "benchmark.key"), "'--benchmark-option'") from None
    keyed = {}
    for key, value in flat.items():
        if "." not in key:
            raise usage_error(f"{key!r}: expected BENCHMARK.KEY=VALUE, e.g. my_city.freq=15min",
                              "'--benchmark-option'")
        name, option = key.rsplit(".", 1)
        keyed[("benchmarks", "options", name, option)] = value
    return keyed


def _horizons(text: str | None) -> list[list[int]] | None:
    if not text:
        return None
    pairs = []
    for item in text.split(","):
        parts = item.replace("->", ":").split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise typer.BadParameter(f"{item!r}: expected IN:OUT, e.g. 96:96", param_hint="'--horizon'")
        pairs.append([int(parts[0]), int(parts[1])])
    return pairs


RESULT_FIELDS = "run_id, run_dir, tables, rows (benchmark, method, mode, horizon, metrics, status), failures"


@app.command()
@reports
def adapt(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Backbone checkpoint folder (path or URL)")],
    benchmarks: Annotated[str, typer.Option(help="Comma list: names (etth2, pems08, synthetic-traffic) or paths")],
    mode: Annotated[str | None, typer.Option(metavar=_metavar(ADAPT_MODES), callback=choice(ADAPT_MODES, "mode",
                                                                                           many=True),
                                             help="Mode or comma list of modes (adapt.modes)")] = "few",
    horizon: Annotated[str | None, typer.Option(help="IN:OUT pairs, e.g. 12:12,96:96 (adapt.horizons)")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding benchmark files (benchmarks.data_dir)")
                        ] = None,
    benchmark_option: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME.KEY=VALUE",
                     help="A generic file's convention (repeatable): freq, split, null_value, adjacency; NAME is "
                          "the file's stem, e.g. my_city.freq=15min (also read from NAME.yaml beside the file)"),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: time + config hash)")] = None,
    parallel: Annotated[int | None, typer.Option(help="Benchmarks adapted at once (benchmarks.parallel)")] = None,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(RESULT_FIELDS) = False,
) -> Outcome:
    """Adapt a checkpoint to benchmarks (zero/few/full-shot, baselines); prints the results path last."""
    from pipelines.adapt import run_adapt_flow

    names = [b.strip() for b in benchmarks.split(",") if b.strip()]
    if not names:
        raise usage_error("no benchmark named", "'--benchmarks'")
    prof = cluster_settings(profile, set_, {
        "storage.root": out_root, "adapt.modes": mode, "adapt.horizons": _horizons(horizon),
        "benchmarks.data_dir": data_dir, "benchmarks.parallel": parallel, **_benchmark_overrides(benchmark_option),
    })
    result = run_adapt_flow(
        parallel=prof.benchmarks.parallel, checkpoint=checkpoint, benchmarks=names, cfg=prof.adapt,
        out=prof.storage.root, run_id=run_id, data_dir=prof.benchmarks.data_dir,
        storage_options=prof.storage.options or None, benchmark_options=prof.benchmarks.model_dump()["options"],
        tracking=prof.tracking,
    )
    return Outcome(result.to_dict(), result.tables["markdown"], [_results_table(result.rows, result.run_id)],
                   failed=dict(result.failures))


RESULT_COLUMNS = ["benchmark", "method", "mode", "horizon", "mae", "rmse", "mape", "crps", "coverage_80",
                  "val_loss", "adapted", "status"]


def _results_table(rows: list[dict[str, Any]], run_id: str) -> Any:
    from pipelines.reporting import rich_table

    return rich_table(rows, title=f"run {run_id}", columns=[c for c in RESULT_COLUMNS if any(c in r for r in rows)])


EVAL_KINDS = (*CONNECTOR_KINDS, "version")
EVAL_METHODS = ("factost", "seasonal_naive", "auto_ets", "auto_theta")
EVAL_COLUMNS = ["dataset", "method", "mase", "wql", "crps", "coverage_80", "n_series", "n_skipped", "season",
                "seconds", "relative_mase", "relative_wql"]


@app.command()
@reports
def evaluate(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Backbone checkpoint folder (path or URL)")],
    kind: Annotated[str, typer.Argument(metavar="KIND", callback=choice(EVAL_KINDS, "kind"),
                                        help=f"Connector ({', '.join(CONNECTOR_KINDS)}) or 'version' for "
                                             "published version URLs")],
    paths: Annotated[list[str], typer.Argument(metavar="PATH...",
                                               help="One dataset per path: input file or folder as ingest takes "
                                                    "it, or a version URL")],
    horizon: Annotated[int, typer.Option("--horizon", min=1, help="H: the last H points of each series are scored")],
    seasonality: Annotated[int | None, typer.Option("--seasonality", min=1,
                                                    help="S for MASE and the baselines (default: from the frequency)")
                           ] = None,
    methods: Annotated[str, typer.Option(callback=choice(EVAL_METHODS, "method", many=True),
                                         help="Comma list of methods (seasonal_naive always runs)")
                       ] = ",".join(EVAL_METHODS),
    name: Annotated[str | None, typer.Option(help="Dataset name when one path is given (default: its stem)")] = None,
    freq: Annotated[str | None, typer.Option(help="Pandas offset alias overriding the inferred one")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Folder for results.csv/.md/.json and forecast plots")
                   ] = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("results (dataset, method, mase, wql, crps, coverage_80, n_series, n_skipped, season, "
                      "horizon, seconds), relative (per_dataset, geometric_mean), skipped") = False,
) -> Outcome:
    """Zero-shot forecast of every series' last H points against seasonal naive, AutoETS and AutoTheta.

    Connector options are --set source.options.KEY=VALUE, as for ingest. Prints the results table path last
    with --out.
    """
    from pipelines.reporting import rich_table
    from training.evaluate import evaluate as run_evaluation
    from training.evaluate import read_source, read_version, result_rows, write_outputs
    from training.io import from_pretrained

    if name and len(paths) > 1:
        raise usage_error("--name names one dataset; several paths were given", "'--name'")
    prof = cluster_settings(profile, [p for p in set_ or [] if not p.strip().startswith("source.")])
    options = prof.storage.options or None
    model = from_pretrained(checkpoint, options)
    data = []
    for path in paths:
        if kind == "version":
            data.append(read_version(path, options))
            continue
        source, _ = _source_config({"name": name or _default_name(path), "kind": kind, "paths": [path],
                                    "freq": freq}, set_)
        data.append(read_source(source, options))
    names = [d.name for d in data]
    if len(set(names)) < len(names):
        raise usage_error(f"two datasets named {next(n for n in names if names.count(n) > 1)!r}; give distinct files")
    result = run_evaluation(model, data, horizon, seasonality, methods, checkpoint=checkpoint)
    doc = result.document()
    written = write_outputs(result, out, options) if out else None
    if written:
        doc["outputs"] = written
    gmean = [{"method": m, "geomean_relative_mase": v["mase"], "geomean_relative_wql": v["wql"]}
             for m, v in doc["relative"]["geometric_mean"].items()]
    tables = [rich_table(result_rows(result), title=f"zero-shot, last {horizon} points", columns=EVAL_COLUMNS),
              rich_table(gmean, title="geometric mean of the ratio to seasonal naive")]
    return Outcome(doc, written["markdown"] if written else None, tables)


@run_app.command("refresh")
@reports
def run_refresh(
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("sources (source, series, points, quarantined, reused, version), kernelsynth, "
                      "training_corpus (stage, rows, bytes, reused, version)") = False,
) -> Outcome:
    """Corpus refresh flow: ingest every source, KernelSynth, BLAST; prints the training-corpus version last.

    A failed source does not stop the others; nothing is balanced then, the command names it and exits 1.
    """
    from pipelines.refresh import corpus_refresh_flow
    from pipelines.reporting import rich_table

    result = corpus_refresh_flow(cluster_settings(profile, set_))
    tables = [rich_table([result.kernelsynth, result.training_corpus], title="corpus")]
    if result.sources:
        tables.insert(0, rich_table([{k: v for k, v in s.items() if k != "version"} for s in result.sources],
                                    title="sources"))
    return Outcome(result.to_dict(), result.training_corpus_url, tables)


@run_app.command("pretrain-then-adapt")
@reports
def run_pretrain_then_adapt(
    data_dir: Annotated[str | None, typer.Option(help="Folder with real benchmark files (benchmarks.data_dir)")
                        ] = None,
    benchmarks: Annotated[str | None, typer.Option(help="Comma list overriding benchmarks.names")] = None,
    refresh: Annotated[bool, typer.Option("--refresh/--no-refresh", help="Refresh the corpus first")] = True,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("run_id, status, report, results (rows as in adapt)") = False,
) -> Outcome:
    """The one-click job: refresh -> pretrain -> adapt per benchmark -> report; prints the report path last."""
    from pipelines.one_click import pretrain_then_adapt_flow

    names = [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks else None
    prof = cluster_settings(profile, set_, {"benchmarks.data_dir": data_dir, "benchmarks.names": names})
    result = pretrain_then_adapt_flow(prof, refresh=refresh)
    failed = {str(r.get("benchmark")): str(r.get("error", "failed")) for r in result.results
              if r.get("status") == "failed"}
    return Outcome(result.to_dict(), result.report, [_results_table(result.results, result.run_id)], failed=failed)


@app.command()
@reports
def rerun(
    run_id: Annotated[str, typer.Argument(help="A recorded run id (see `factost runs`)")],
    force: Annotated[bool, typer.Option(help="Rerun even if the code version or an input's content changed")] = False,
    tolerance: Annotated[float, typer.Option(help="Allowed relative difference per metric")] = 0.05,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("run_id, rerun_id, comparison, shard_problems, metric_problems, report") = False,
) -> Outcome:
    """Execute a recorded run again and compare: shard hashes exactly, metrics within the tolerance."""
    from pipelines.reporting import rich_table
    from pipelines.rerun import RerunMismatch, rerun_flow

    prof = cluster_settings(profile, set_, {"storage.root": out_root})
    try:
        outcome = rerun_flow(run_id, prof, force=force, tolerance=tolerance)
    except RerunMismatch as exc:
        problems = exc.outcome["shard_problems"] + exc.outcome["metric_problems"]
        return Outcome(exc.outcome, None, [rich_table(exc.outcome["comparison"], title=f"rerun of {run_id}: MISMATCH")],
                       failed={f"check {i + 1}": p for i, p in enumerate(problems)})
    return Outcome(outcome, outcome["report"],
                   [rich_table(outcome["comparison"], title=f"rerun of {run_id}: reproduced")])


@app.command()
@reports
def runs(
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("a list of runs: run_id, kind, status, started, duration_s, failed, report, error, metrics "
                      "(benchmark, horizon, mode, mae, rmse, crps, baseline {method, mode, mae, rmse, crps})") = False,
) -> Outcome:
    """List recorded runs: status, duration, our MAE/RMSE/CRPS per benchmark and horizon beside the best baseline."""
    from pipelines.reporting import rich_table
    from pipelines.runs import headline, headline_table, list_runs

    prof = settings(profile, set_, {"storage.root": out_root})
    found = [headline(r) for r in list_runs(prof.storage.root, prof.storage.options)]
    table = rich_table(headline_table(found), title="runs") if found else "no recorded runs"
    return Outcome(found, None, [table], listing=True)


PAPER_TABLE_FIELDS = ("run_id, files {markdown, csv}, tables {VII, VIII, IX: rows of benchmark, horizon, MAE, "
                      "MAE paper, RMSE, RMSE paper, MAPE %, MAPE % paper, note}")


@app.command()
@reports
def report(
    run_id: Annotated[str, typer.Argument(help="A recorded run id (see `factost runs`): one-click or adapt")],
    paper: Annotated[bool, typer.Option("--paper", help="Tables VII (few), VIII (full), IX (zero) with the "
                                                        "paper's FactoST-v2 numbers beside ours")] = False,
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(f"without --paper: the result rows; with it: {PAPER_TABLE_FIELDS}") = False,
) -> Outcome:
    """A run's results; with --paper, writes paper_tables.md/.csv in the run folder and prints the markdown's path."""
    from pipelines.paper_report import COLUMNS, TABLE_TITLES, write_paper_report
    from pipelines.reporting import rich_table
    from pipelines.runs import run_results

    prof = settings(profile, set_, {"storage.root": out_root})
    rows, folder = run_results(prof.storage.root, run_id, prof.storage.options)
    if not paper:
        return Outcome(rows, None, [_results_table(rows, run_id)], listing=True)
    done = write_paper_report(run_id, rows, folder, prof.storage.options or None)
    tables = [rich_table(rows, title=f"{TABLE_TITLES[key]} - run {run_id}", columns=COLUMNS)
              for key, rows in done["tables"].items()]
    return Outcome(done, done["files"]["markdown"], tables, listing=True)


@app.command()
@reports
def versions(
    dataset: Annotated[str, typer.Argument(help="Dataset path under the root, e.g. corpus/m4_hourly")],
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(f"a list of versions: {VERSION_FIELDS}") = False,
) -> Outcome:
    """List the published versions of a dataset (only complete ones: those with a manifest); URLs last."""
    from infra.versions import list_versions
    from pipelines.catalog import version_row
    from pipelines.reporting import rich_table

    prof = settings(profile, set_, {"storage.root": out_root})
    rows = [version_row(v) for v in list_versions(prof.storage.root, dataset, prof.storage.options)]
    lines = "\n".join(r["url"] for r in rows) or None
    return Outcome(rows, lines, [rich_table([{k: v for k, v in r.items() if k != "url"} for r in rows],
                                            title=dataset)])


@app.command()
@reports
def datasets(
    out_root: OutOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(f"a list of datasets: dataset, versions ({VERSION_FIELDS})") = False,
) -> Outcome:
    """Every dataset under the storage root with its versions (id, created, rows, bytes, inputs)."""
    from pipelines.catalog import list_datasets
    from pipelines.reporting import rich_table

    prof = settings(profile, set_, {"storage.root": out_root})
    found = list_datasets(prof.storage.root, prof.storage.options)
    rows = [{**{k: v for k, v in row.items() if k not in ("url", "inputs", "created")},
             "created": row["created"][:19], "inputs": [i.rsplit("/", 1)[-1] for i in row["inputs"]]}
            for d in found for row in d["versions"]]
    table = rich_table(rows, title=f"datasets under {prof.storage.root}") if rows else "no datasets"
    return Outcome(found, None, [table], listing=True)


@app.command()
@reports
def show(
    version_url: Annotated[str, typer.Argument(help="A version folder (local path or s3:// URL)")],
    out_root: Annotated[str | None, typer.Option("--out", help="Store searched for what was made from it "
                                                                "(default: the one the version is in)")] = None,
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt(f"{VERSION_FIELDS}, code_version, parts, schema, stats, quarantined, files, "
                      "lineage {up, down}") = False,
) -> Outcome:
    """A version's card: schema, stats, quarantine count, and lineage up (inputs) and down (versions, runs)."""
    from pipelines.catalog import version_card
    from pipelines.reporting import rich_table

    prof = settings(profile, set_)
    card = version_card(version_url, out_root, prof.storage.options)
    head = {k: card[k] for k in ("dataset", "version_id", "created", "rows", "bytes", "parts", "quarantined",
                                 "code_version")}
    tables = [rich_table([head], title=card["url"]), rich_table(card["schema"], title="schema")]
    if card["stats"]:
        tables.append(rich_table([{"stat": k, "value": v} for k, v in card["stats"].items()], title="stats"))
    tables.append(rich_table(card["lineage"]["up"], title="made from") if card["lineage"]["up"] else "made from: -")
    tables.append(rich_table(card["lineage"]["down"], title="made from it") if card["lineage"]["down"]
                  else "made from it: -")
    return Outcome(card, None, tables, listing=True)


@app.command()
@reports
def verify(
    version_url: Annotated[str, typer.Argument(help="A version's URL (what a stage printed) or its folder")],
    set_: SetOpt = None,
    profile: ProfileOpt = "local",
    as_json: json_opt("url, dataset, version_id, files_checked, ok, problems") = False,
) -> Outcome:
    """Check every part, side table and file of a version against its manifest (size, sha256); exit 1 naming each
    mismatch."""
    from infra.versions import verify_report

    report = verify_report(version_url, settings(profile, set_).storage.options)
    failed = dict(problem.split(": ", 1) for problem in report["problems"])
    line = f"{report['url']}: all {report['files_checked']} files match the manifest" if report["ok"] else None
    return Outcome(report, line, [], failed)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def _orphaned_connection_error(record: logging.LogRecord) -> bool:
    """Keep an asyncio record unless it is a connection error of a write task nobody awaited: aiohttp (under
    s3fs) leaves those behind when a store goes away mid-request, and the request's own error already carries
    the failure to the one-line message below."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, ConnectionError) and record.getMessage().startswith("Task exception was never"))


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage errors exit 2 with the usage line, any other failure one line on stderr and exit 1."""
    level = os.environ.get("FACTOST_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncio").addFilter(_orphaned_connection_error)
    for handler in logging.getLogger().handlers:  # the terminal shows FACTOST_LOG_LEVEL and up; Prefect gets INFO
        handler.setLevel(level)
    try:
        code = app(args=argv, prog_name="factost", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI's contract: one line, exit 1
        if os.environ.get("FACTOST_DEBUG"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
