"""The ``adapt`` Prefect flow through its CLI function: one failing benchmark does not stop the others."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer

from pipelines.adapt import ARTIFACT_KEY, adapt_command, build_config


def test_build_config_parses_cli_options(tmp_path: Path) -> None:
    yaml_file = tmp_path / "adapt.yaml"
    yaml_file.write_text("batch_size: 8\nuse_cmr: false\n")
    cfg = build_config(
        "zero,few", "12:12,96->96", str(yaml_file), ["max_epochs=2", "stf_affinities=[spatial]"]
    )
    assert cfg.modes == ("zero", "few") and cfg.horizons == ((12, 12), (96, 96))
    assert (
        cfg.batch_size == 8 and not cfg.use_cmr and cfg.max_epochs == 2 and cfg.stf_affinities == ("spatial",)
    )
    with pytest.raises(ValueError, match="--mode"):
        build_config("fewest", None, None, None)
    with pytest.raises(ValueError, match="unknown key"):
        build_config("few", None, None, ["no_such_field=1"])


def test_failing_benchmark_does_not_stop_the_others(
    prefect_harness: None, checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nowhere" / "missing_matrix.csv")
    with pytest.raises(typer.Exit) as exit_info:
        adapt_command(
            checkpoint=checkpoint,
            benchmarks=f"{missing},synthetic-grid",
            mode="zero",
            out=str(tmp_path / "root"),
            horizon="24:12",
            set_=["eval_stride=16", "predictions_max_windows=4", "baselines=[seasonal_naive]"],
            run_id="test-run",
        )
    assert exit_info.value.exit_code == 1
    captured = capsys.readouterr()
    run_dir = tmp_path / "root" / "runs" / "adapt" / "test-run"
    assert captured.out.strip().splitlines()[-1] == str(run_dir / "results.md")
    assert "missing_matrix.csv" in captured.err

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
    assert any("test-run" in (a.data or "") and "failed" in (a.data or "") for a in artifacts)
