"""End to end: the one-click pretrain-then-adapt flow on a tiny profile, its report, `runs`, and `rerun`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adaptation.datasets import make_synthetic_benchmark, save_generic
from infra.versions import open_version
from pipelines.one_click import pretrain_then_adapt_flow
from pipelines.rerun import RerunRefused, rerun_flow
from pipelines.runs import list_runs, read_run_manifest
from tests.integration.cli_helpers import run_factost
from tests.integration.tiny_profile import tiny_profile, write_long_csv

MANIFEST_KEYS = {"run_id", "kind", "status", "started_at", "duration_s", "profile", "refresh", "seeds", "corpus",
                 "pretrain", "results", "adapt", "plots", "report", "code_version", "git_commit", "libraries"}


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory, prefect_harness):
    work = tmp_path_factory.mktemp("one-click")
    write_long_csv(work / "sensors.csv", n_series=4, length=300, seed=0)
    benchmarks = []
    for name, freq in (("road", "5min"), ("grid", "h")):
        ds = make_synthetic_benchmark("synthetic-traffic", num_nodes=6, num_steps=800, freq=freq, seed=3)
        npz, _ = save_generic(ds, str(work / f"{name}.npz"))
        benchmarks.append(npz)
    sources = [{"name": "sensors", "kind": "long", "paths": [str(work / "sensors.csv")], "freq": "h"}]
    profile = tiny_profile(work / "root", sources, benchmarks)
    (work / "profile.json").write_text(json.dumps(profile))
    result = pretrain_then_adapt_flow(profile)
    return work, profile, result


@pytest.mark.slow
def test_report_and_manifest_are_complete(recorded_run) -> None:
    work, profile, result = recorded_run
    root = profile["storage"]["root"]
    manifest = read_run_manifest(root, result.run_id)
    assert manifest["status"] == "ok", manifest.get("error") or manifest["adapt"]["failures"]
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["libraries"]["torch"].startswith("2.") and manifest["seeds"]["pretrain"] == 1

    corpus = manifest["corpus"]
    assert set(corpus["sources"]) == {"sensors"}
    assert corpus["sources"]["sensors"]["inputs"][0]["path"].endswith("sensors.csv")
    training = open_version(corpus["training_corpus"]["url"])
    assert {p["file"]: p["sha256"] for p in training.manifest["parts"]} == corpus["training_corpus"]["parts"]
    assert Path(manifest["pretrain"]["url"], "model.safetensors").exists()

    rows = manifest["results"]
    ours = [r for r in rows if r["method"] == "factost"]
    assert len({r["benchmark"] for r in ours}) == 2 and {r["mode"] for r in ours} == {"zero", "few"}
    assert {r["method"] for r in rows} >= {"factost", "scratch", "seasonal_naive"}
    for row in rows:
        for metric in ("mae", "rmse", "crps", "coverage_80", "coverage_98"):
            assert math.isfinite(float(row[metric])), (row, metric)

    plots = manifest["plots"]
    assert sum(p.endswith("forecast.png") for p in plots) >= 4
    assert any(p.endswith("loss_curve.png") for p in plots)
    assert any(p.endswith("balance_map.png") for p in plots)
    assert all(Path(p).stat().st_size > 1000 for p in plots)
    report = Path(manifest["report"]).read_text()
    assert "## Adaptation results" in report and "seasonal_naive" in report and "loss_curve.png" in report

    listed = run_factost("runs", "--profile", str(_write_yaml(work, profile)))
    assert result.run_id in listed.stdout and "ok" in listed.stdout
    assert [r["run_id"] for r in list_runs(root)] == [result.run_id]


@pytest.mark.slow
def test_rerun_reproduces_shards_and_metrics_and_refuses_without_inputs(recorded_run) -> None:
    work, profile, result = recorded_run
    outcome = rerun_flow(result.run_id, profile)
    assert outcome["shard_problems"] == [] and outcome["metric_problems"] == []
    assert outcome["comparison"] and all(row["ok"] == "yes" for row in outcome["comparison"])

    (work / "sensors.csv").unlink()
    with pytest.raises(RerunRefused, match=r"recorded input .*sensors.csv of source 'sensors' is gone"):
        rerun_flow(result.run_id, profile)


def _write_yaml(work: Path, profile: dict) -> Path:
    import yaml

    path = work / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.slow
def test_runs_show_and_tensorboard_report_the_recorded_run(recorded_run) -> None:
    from pipelines.reporting import fmt
    from tests.integration.test_stage_cli import tensorboard_scalars

    work, profile, result = recorded_run
    root = Path(profile["storage"]["root"])
    manifest = read_run_manifest(str(root), result.run_id)
    rows, report = manifest["results"], Path(manifest["report"]).read_text()
    listed = json.loads(run_factost("runs", "--profile", str(_write_yaml(work, profile)), "--json").stdout)
    assert [r["run_id"] for r in listed] == [result.run_id] and listed[0]["status"] == "ok"
    assert listed[0]["duration_s"] == manifest["duration_s"]
    lines = listed[0]["metrics"]
    ours = [r for r in rows if r["method"] == "factost"]
    assert len(lines) == len(ours) == 4
    for line, row in zip(lines, ours, strict=True):
        assert (line["benchmark"], line["horizon"], line["mode"]) == (row["benchmark"], row["horizon"], row["mode"])
        assert [line[m] for m in ("mae", "rmse", "crps")] == [row[m] for m in ("mae", "rmse", "crps")]
        assert all(f"| {fmt(row[m])} |" in report for m in ("mae", "rmse"))
        rivals = [r for r in rows if r["method"] != "factost" and (r["benchmark"], r["horizon"]) ==
                  (row["benchmark"], row["horizon"])]
        best = min(rivals, key=lambda r: r["mae"])
        assert (line["baseline"]["method"], line["baseline"]["mae"]) == (best["method"], best["mae"])

    card = json.loads(run_factost("show", manifest["corpus"]["training_corpus"]["url"], "--json").stdout)
    made = {(d["kind"], d.get("run")) for d in card["lineage"]["down"]}
    assert ("pretrain-then-adapt", result.run_id) in made and any(k == "pretrain" for k, _ in made)

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    # other runs (the module's rerun test, earlier modules) make artifacts under the same keys: keep those made
    # while this run ran, by it or by its subflows
    from datetime import datetime, timedelta

    started = datetime.fromisoformat(manifest["started_at"])
    ended = started + timedelta(seconds=manifest["duration_s"] + 5)
    artifacts = [a for a in artifacts if a.created is not None and started <= a.created <= ended]
    by_key = {a.key: a for a in artifacts if a.key}
    assert by_key["pretrain-then-adapt-report-file"].data == f"[report of run {result.run_id}](file://{manifest['report']})"
    assert f"](file://{manifest['pretrain']['url']})" in by_key["pretrain-then-adapt-checkpoint"].data  # a link
    assert "data:image/png;base64," in by_key["pretrain-then-adapt-report"].data  # images render in the UI
    assert by_key["adapt-results"].type == "table" and by_key["pretrain-summary"].type == "table"
    progress = [a for a in artifacts if a.type == "progress" and "pretrain" in (a.description or "")]
    assert progress and progress[-1].data == 100.0  # followed the steps while it ran, ended at 100 %

    events = root / "runs" / "adapt" / result.run_id / "tensorboard"
    for row in ours:
        tag = f"{row['benchmark']}/factost-{row['mode']}-{row['horizon'].replace('->', 'to')}/test_mae"
        assert [v for _, v in tensorboard_scalars(events, tag)] == [row["mae"]]
