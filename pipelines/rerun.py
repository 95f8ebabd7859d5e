"""Prefect flow ``rerun``: execute a recorded run again from its manifest and compare with what it recorded.

The rerun writes into a fresh folder (``{root}/reruns/{run_id}/{rerun id}``) so that nothing is reused from the
original outputs: the corpus is rebuilt, the backbone retrained, the benchmarks re-adapted. It then checks that
every corpus shard has the recorded sha256 (bit for bit) and every metric is within the relative tolerance, and
fails otherwise. It refuses to start when a recorded input is gone, and, unless forced, when an input's content
or the code version differs from the recording.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import flow

from infra.fingerprint import code_version, file_fingerprint
from infra.storage import filesystem, join
from pipelines.one_click import pretrain_then_adapt_flow
from pipelines.profile import Profile, as_profile
from pipelines.runs import new_run_id, read_run_manifest

COMPARED_METRICS = ("mae", "rmse", "crps", "coverage_80", "coverage_98")
DEFAULT_TOLERANCE = 0.05  # relative, per metric: CPU float reductions may reorder across thread counts


class RerunRefused(RuntimeError):
    """A recorded run that cannot be executed again as recorded."""


class RerunMismatch(RuntimeError):
    """A rerun whose shards or metrics differ from the recording beyond the tolerance."""

    def __init__(self, message: str, outcome: dict[str, Any]) -> None:
        super().__init__(message)
        self.outcome = outcome


def check_rerunnable(manifest: dict[str, Any], storage_options: dict[str, Any], force: bool) -> list[str]:
    """Refuse (raise) when an input is gone; return the differences that ``force`` lets through."""
    differences = []
    if manifest.get("code_version") != code_version():
        differences.append(f"code version {code_version()} differs from the recorded {manifest.get('code_version')}")
    for source, record in (manifest.get("corpus") or {}).get("sources", {}).items():
        for item in record.get("inputs", []):
            url = item["path"]
            fs, path = filesystem(url, storage_options)
            if not fs.exists(path):
                raise RerunRefused(f"recorded input {url} of source {source!r} is gone; cannot rerun "
                                   f"{manifest['run_id']}")
            if file_fingerprint(fs, path)["sha256"] != item["sha256"]:
                differences.append(f"recorded input {url} of source {source!r} has changed since the run")
    if differences and not force:
        raise RerunRefused("; ".join(differences) + " (pass --force to rerun anyway)")
    return differences


def compare_shards(recorded: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """Every corpus version's part hashes must be identical."""
    problems = []
    pairs = [("training_corpus", recorded.get("training_corpus"), rerun.get("training_corpus")),
             ("kernelsynth", recorded.get("kernelsynth"), rerun.get("kernelsynth"))]
    pairs += [(f"source {name}", rec, rerun.get("sources", {}).get(name))
              for name, rec in recorded.get("sources", {}).items()]
    for label, rec, new in pairs:
        if rec is None:
            continue
        if new is None:
            problems.append(f"{label}: not rebuilt")
        elif rec["parts"] != new["parts"]:
            problems.append(f"{label}: shard hashes differ ({len(rec['parts'])} recorded, {len(new['parts'])} now)")
    return problems


def row_key(row: dict[str, Any]) -> tuple[str, ...]:
    return (str(row.get("benchmark")), str(row.get("method")), str(row.get("mode")), str(row.get("horizon")))


def compare_metrics(recorded: list[dict[str, Any]], rerun: list[dict[str, Any]],
                    tolerance: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Side-by-side rows and the metrics outside ``tolerance`` (relative to the recorded value)."""
    new_rows = {row_key(r): r for r in rerun}
    table, problems = [], []
    for row in recorded:
        key = row_key(row)
        new = new_rows.get(key)
        for metric in COMPARED_METRICS:
            if metric not in row:
                continue
            before = float(row[metric])
            after = float(new[metric]) if new is not None and metric in new else float("nan")
            both_nan = math.isnan(before) and math.isnan(after)
            rel = 0.0 if both_nan or before == after else abs(after - before) / max(abs(before), 1e-12)
            ok = both_nan or rel <= tolerance
            table.append({"benchmark": key[0], "method": key[1], "mode": key[2], "horizon": key[3],
                          "metric": metric, "recorded": before, "rerun": after, "rel_diff": rel,
                          "ok": "yes" if ok else "NO"})
            if not ok:
                problems.append(f"{'/'.join(key)} {metric}: recorded {before:.6g}, rerun {after:.6g} "
                                f"({rel:.1%} > {tolerance:.1%})")
    return table, problems


@flow(name="rerun", log_prints=True)
def rerun_flow(
    run_id: str,
    profile: str | Profile = "local",
    force: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Execute recorded run ``run_id`` again; returns the comparison and raises on any mismatch."""
    prof = as_profile(profile)
    root, options = prof.storage.root, prof.storage.options
    manifest = read_run_manifest(root, run_id, options)
    if manifest.get("status") == "running":
        raise RerunRefused(f"run {run_id} never finished (status running); nothing recorded to compare")
    differences = check_rerunnable(manifest, options, force)
    for line in differences:
        print(f"warning: {line}")
    recorded_profile = Profile.model_validate(manifest["profile"])
    rerun_id = new_run_id()
    rerun_root = join(manifest["profile"]["storage"]["root"], "reruns", run_id, rerun_id)
    rerun_profile = recorded_profile.model_copy(
        update={"storage": recorded_profile.storage.model_copy(update={"root": rerun_root})}
    )
    recorded_corpus = manifest.get("corpus") or {}
    result = pretrain_then_adapt_flow(
        rerun_profile, refresh=manifest.get("refresh", True), run_id=rerun_id,
        training_corpus=None if manifest.get("refresh", True) else recorded_corpus["training_corpus"]["url"],
    )
    new_manifest = read_run_manifest(rerun_root, rerun_id, options)
    shard_problems = compare_shards(recorded_corpus, new_manifest.get("corpus") or {})
    table, metric_problems = compare_metrics(manifest.get("results") or [], result.results, tolerance)
    outcome = {"run_id": run_id, "rerun_id": rerun_id, "rerun_root": rerun_root, "comparison": table,
               "shard_problems": shard_problems, "metric_problems": metric_problems, "tolerance": tolerance,
               "report": result.report, "forced_over": differences}
    for row in table:
        print(f"{row['benchmark']} {row['method']} {row['mode']} {row['horizon']} {row['metric']}: "
              f"recorded {row['recorded']:.6g} rerun {row['rerun']:.6g} ({row['rel_diff']:.2%}) {row['ok']}")
    if shard_problems or metric_problems:
        raise RerunMismatch("rerun differs from the recording: " + "; ".join(shard_problems + metric_problems),
                            outcome)
    return outcome
