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


@run_app.command("refresh")
def run_refresh(profile: ProfileOpt = "local") -> None:
    """Corpus refresh: ingest every source of the profile (one Prefect task each); prints the versions."""
    from pipelines.ingest import ingest_flow
    from pipelines.reporting import rich_table

    prof = _profile(profile)
    summaries = ingest_flow(prof)
    console.print(rich_table([{k: v for k, v in s.items() if k != "version"} for s in summaries], title="sources"))
    for s in summaries:
        out.print(s["version"], soft_wrap=True)


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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn any failure into one line on stderr and exit code 1."""
    logging.basicConfig(level=os.environ.get("FACTOST_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
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
