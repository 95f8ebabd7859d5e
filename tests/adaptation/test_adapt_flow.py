"""The ``adapt`` Prefect flow through its CLI function: one failing benchmark does not stop the others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines.adapt import ARTIFACT_KEY
from pipelines.cli import main


def test_failing_benchmark_does_not_stop_the_others(
    prefect_harness: None, checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nowhere" / "missing_matrix.csv")
    with pytest.raises(SystemExit) as exit_info:
        main([
            "adapt", "--checkpoint", checkpoint, "--benchmarks", f"{missing},synthetic-grid", "--mode", "zero",
            "--out", str(tmp_path / "root"), "--horizon", "24:12", "--set", "adapt.eval_stride=16",
            "--set", "adapt.predictions_max_windows=4", "--set", "adapt.baselines=[seasonal_naive]",
            "--run-id", "test-run",
        ])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    run_dir = tmp_path / "root" / "runs" / "adapt" / "test-run"
    assert captured.out.strip().splitlines()[-1] == str(run_dir / "results.md")
    assert "missing_matrix.csv" in captured.err and "1 part(s) failed" in captured.err

    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    by_status = {(r["benchmark"], r["method"]): r for r in rows}
    failed = by_status[(missing, "-")]
    assert failed["status"] == "failed" and "missing_matrix.csv" in failed["error"]
    ok = by_status[("synthetic-grid", "factost")]
    assert (
        ok["status"] == "ok" and ok["mode"] == "zero" and ok["horizon"] == "24->12" and float(ok["mae"]) > 0
    )
    assert by_status[("synthetic-grid", "seasonal_naive")]["status"] == "ok"
    metrics = json.loads((run_dir / "synthetic-grid" / "zero-24to12" / "metrics.json").read_text())
    assert metrics["parameters"]["trainable"] == 0 and metrics["metrics"]["observed"] > 0
    assert (run_dir / "synthetic-grid" / "zero-24to12" / "forecast.png").exists()
    assert json.loads((run_dir / "run.json").read_text())["benchmarks"] == [missing, "synthetic-grid"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[ARTIFACT_KEY]))
        )
    table = next(a for a in artifacts if "test-run" in (a.description or ""))
    assert table.type == "table" and '"failed"' in table.data and "missing_matrix.csv" in table.data
