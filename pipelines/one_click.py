"""Prefect flow ``pretrain_then_adapt``: the one-click job.

Optional corpus refresh -> UTP pretraining -> one STA task per benchmark -> a report (results table, plots,
run manifest) as files under ``{root}/runs/{run_id}/`` and as a Prefect artifact. Composition only; the run
manifest records everything ``rerun`` needs to execute the same work again.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from corpus.leakage import benchmark_name
from infra.fingerprint import file_fingerprint
from infra.ray_runtime import ensure_ray
from infra.storage import filesystem, join, to_url, write_bytes_atomic
from infra.versions import list_versions, open_version
from pipelines.adapt import run_adapt_flow
from pipelines.pretrain import pretrain_artifacts, pretrain_task
from pipelines.profile import Profile, as_profile, with_absolute_root
from pipelines.refresh import RefreshResult, corpus_refresh_flow
from pipelines.reporting import image_markdown, leakage_markdown, link_artifact, markdown_table
from pipelines.runs import environment_record, new_run_id, run_url, write_run_manifest

REPORT_COLUMNS = ["benchmark", "method", "mode", "horizon", "mae", "rmse", "mape", "crps", "coverage_80",
                  "coverage_98", "norm_mae", "norm_rmse", "train_s", "adapted", "status"]


@dataclass(frozen=True)
class OneClickResult:
    """A one-click run: its id, its status (``ok``, or ``failed`` when a benchmark failed), the report's URL and
    the results rows (as ``adapt`` writes them)."""

    run_id: str
    report: str
    results: list[dict[str, Any]]
    status: str

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return asdict(self)


def version_record(url: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a version's bytes: its id and the sha256 of every part."""
    version = open_version(url, storage_options)
    record = {"url": version.url, "version_id": version.version_id, "rows": version.num_rows,
              "parts": {p["file"]: p["sha256"] for p in version.manifest["parts"]},
              "inputs": version.manifest.get("inputs", [])}
    stats = version.manifest.get("stats", {})
    if "leakage_check" in stats:  # a training corpus: what it was checked against and what it excluded
        record["leakage"] = {"check": stats["leakage_check"], "excluded": stats.get("leakage_excluded")}
    return record


def leakage_section(prof: Profile, corpus: dict[str, Any]) -> list[str]:
    """The training corpus's leakage check, and any benchmark of this run it was not checked against."""
    leakage = corpus.get("leakage") or {}
    lines = ["### Benchmark leakage", "", leakage_markdown(leakage.get("check"), leakage.get("excluded"))]
    checked = {b["benchmark"] for b in (leakage.get("check") or {}).get("benchmarks", [])}
    missing = [n for n in prof.benchmarks.names if benchmark_name(n) not in checked]
    if missing:
        lines.append(f"**Warning:** this training corpus was not checked against {', '.join(missing)}: their "
                     "zero-shot rows may have seen their own series in pretraining (refresh the corpus).")
    return [*lines, ""]


def corpus_record(refresh: RefreshResult, storage_options: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": {s["source"]: version_record(s["version"], storage_options) for s in refresh.sources},
        "kernelsynth": version_record(refresh.kernelsynth["version"], storage_options),
        "training_corpus": version_record(refresh.training_corpus_url, storage_options),
    }


def checkpoint_record(url: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    from training.io import WEIGHTS_NAME  # the checkpoint's layout is the training stage's

    fs, path = filesystem(join(url, WEIGHTS_NAME), storage_options)
    return {"url": url, "model_sha256": file_fingerprint(fs, path)["sha256"]}


def find_pngs(url: str, storage_options: dict[str, Any]) -> list[str]:
    fs, path = filesystem(url, storage_options)
    return sorted(to_url(fs, p) for p in fs.find(path) if p.endswith(".png")) if fs.exists(path) else []


def report_markdown(run_id: str, prof: Profile, manifest: dict[str, Any], images: list[str]) -> str:
    """The run's report; ``images`` are its markdown image lines (relative links in the file, inline in the UI)."""
    rows = manifest["results"]
    corpus = manifest["corpus"]["training_corpus"]
    lines = [
        f"# FactoST run {run_id}", "",
        f"Profile `{prof.name}`, storage `{prof.storage.root}`, started {manifest['started_at']}, "
        f"took {manifest['duration_s']:.0f} s.", "",
        "## Corpus", "",
        f"Training corpus `{corpus['url']}`: {corpus['rows']:,} samples in {len(corpus['parts'])} shard(s).", "",
        *leakage_section(prof, corpus),
        "## Pretraining", "",
        markdown_table([manifest["pretrain"]["summary"]]), "",
        "## Adaptation results (original scale, MAPE in percent; norm_* on the z-scored scale; adapted: false is a "
        "trained row that kept its step-0 weights)", "",
        markdown_table(rows, [c for c in REPORT_COLUMNS if any(c in r for r in rows)]), "",
        "## Plots", "",
    ]
    lines += images
    return "\n".join(lines) + "\n"


INLINE_IMAGES_MAX_BYTES = 4 * 1024 * 1024  # above this the UI's copy of the report links the images instead


def report_artifacts(run_id: str, prof: Profile, manifest: dict[str, Any], plots: list[str], report_url: str,
                     checkpoint: str) -> None:
    """The report as a markdown artifact (images inline, so they render in the Prefect UI), and links to the
    report file and the checkpoint."""
    options = prof.storage.options
    size = sum(fs.size(path) for fs, path in (filesystem(p, options) for p in plots))
    images = image_markdown(plots, report_url, inline=size <= INLINE_IMAGES_MAX_BYTES, storage_options=options)
    create_markdown_artifact(key="pretrain-then-adapt-report", markdown=report_markdown(run_id, prof, manifest,
                                                                                        images),
                             description=f"FactoST run {run_id}")
    link_artifact("pretrain-then-adapt-report-file", report_url, f"report of run {run_id}", "The run's report.md")
    link_artifact("pretrain-then-adapt-checkpoint", checkpoint, "backbone checkpoint", f"Checkpoint of run {run_id}")


@flow(name="pretrain-then-adapt", log_prints=True)
def pretrain_then_adapt_flow(
    profile: str | Profile = "local",
    refresh: bool = True,
    data_dir: str | None = None,
    benchmarks: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    training_corpus: str | None = None,
) -> OneClickResult:
    """Run the whole job; returns the run id, the report's URL and the results rows.

    Without ``refresh`` the job pretrains on ``training_corpus`` (a version URL), else on the latest version.
    """
    prof = with_absolute_root(as_profile(profile, overrides))
    if data_dir is not None or benchmarks:
        update = {k: v for k, v in {"data_dir": data_dir, "names": benchmarks}.items() if v}
        prof = prof.model_copy(update={"benchmarks": prof.benchmarks.model_copy(update=update)})
    root, options = prof.storage.root, prof.storage.options
    # corpus, pretraining and STA share the profile's Ray
    ensure_ray(prof.ray.address, num_cpus=prof.ray.num_cpus, include_dashboard=prof.ray.dashboard)
    log = get_run_logger()
    run_id = run_id or new_run_id()
    started = time.time()
    manifest: dict[str, Any] = {
        "run_id": run_id, "kind": "pretrain-then-adapt", "status": "running",
        "started_at": datetime.now(UTC).isoformat(), "profile": prof.model_dump(mode="json"),
        "refresh": refresh, "seeds": {"synth": prof.synth.seed, "balance": prof.balance.seed,
                                      "pretrain": prof.pretrain.seed, "adapt": prof.adapt.seed},
        **environment_record(),
    }
    write_run_manifest(root, run_id, manifest, options)
    try:
        if refresh:
            corpus = corpus_record(corpus_refresh_flow(prof), options)
        else:
            if training_corpus is None:
                latest = list_versions(root, "training_corpus", options)
                if not latest:
                    raise FileNotFoundError(f"{root}: no training corpus version yet; run with refresh")
                training_corpus = latest[-1].url
            corpus = {"sources": {}, "kernelsynth": None,
                      "training_corpus": version_record(training_corpus, options)}
        manifest["corpus"] = corpus
        log.info("pretraining on %s", corpus["training_corpus"]["url"])
        pretrained = pretrain_task(corpus["training_corpus"]["url"], prof.pretrain, root, None, options or None,
                                   prof.ray.address, prof.ray.num_cpus, True, prof.tracking)
        checkpoint = pretrained.checkpoint_url
        manifest["pretrain"] = {**checkpoint_record(checkpoint, options),
                                "summary": pretrain_artifacts(checkpoint, options or None)}
        adapt = run_adapt_flow(
            parallel=prof.benchmarks.parallel, checkpoint=checkpoint, benchmarks=prof.benchmarks.names,
            cfg=prof.adapt, out=root, run_id=run_id, data_dir=prof.benchmarks.data_dir,
            storage_options=options or None, benchmark_options=prof.benchmarks.model_dump()["options"],
            tracking=prof.tracking,
        )
        manifest["results"] = adapt.rows
        manifest["adapt"] = {"run_dir": adapt.run_dir, "tables": adapt.tables, "failures": adapt.failures}
        plots = find_pngs(adapt.run_dir, options)
        plots += find_pngs(pretrained.run_url, options)
        plots += find_pngs(open_version(corpus["training_corpus"]["url"], options).attempt_url, options)
        manifest["plots"] = plots
        manifest["duration_s"] = time.time() - started
        manifest["status"] = "failed" if adapt.failures else "ok"
        report_url = join(run_url(root, run_id), "report.md")
        report = report_markdown(run_id, prof, manifest, image_markdown(plots, report_url))
        fs, path = filesystem(report_url, options)
        write_bytes_atomic(fs, path, report.encode())
        manifest["report"] = report_url
        report_artifacts(run_id, prof, manifest, plots, report_url, checkpoint)
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}", duration_s=time.time() - started)
        write_run_manifest(root, run_id, manifest, options)
        raise
    write_run_manifest(root, run_id, manifest, options)
    return OneClickResult(run_id, manifest["report"], manifest["results"], manifest["status"])
