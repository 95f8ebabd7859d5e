"""`factost evaluate` through the installed entry point: the JSON document, the --out files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def _factost(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=240)


def test_json_document_and_out_folder(checkpoint: str, long_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = _factost("evaluate", "--checkpoint", checkpoint, "long", str(long_csv), "--horizon", "12",
                    "--seasonality", "4", "--methods", "factost,seasonal_naive", "--json", "--out", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == {"factost", "seasonal_naive"}
    assert rows["seasonal_naive"]["n_series"] == 3 and rows["seasonal_naive"]["n_skipped"] == 2
    assert {"dataset", "mase", "wql", "crps", "coverage_80", "seconds"} <= set(rows["factost"])
    assert doc["relative"]["geometric_mean"]["factost"]["mase"] == rows["factost"]["mase"] / rows["seasonal_naive"][
        "mase"]
    assert sorted(p.name for p in out.iterdir()) == ["forecasts_hourly.png", "results.csv", "results.json",
                                                   "results.md"]
    assert (out / "forecasts_hourly.png").read_bytes()[:4] == b"\x89PNG"
    assert "| hourly | factost |" in (out / "results.md").read_text()


def test_bad_inputs_fail_in_one_line_naming_the_value(checkpoint: str, long_csv: Path, tmp_path: Path) -> None:
    too_long = _factost("evaluate", "--checkpoint", checkpoint, "long", str(long_csv), "--horizon", "5000")
    assert too_long.returncode == 1
    assert too_long.stderr.strip() == (f"error: ValueError: horizon 5000 is more than {checkpoint} can roll out "
                                       "(max_context 2048)")
    not_backbone = _factost("evaluate", "--checkpoint", str(tmp_path), "long", str(long_csv), "--horizon", "12")
    assert not_backbone.returncode == 1 and "no backbone config here" in not_backbone.stderr
    assert len(not_backbone.stderr.strip().splitlines()) == 1
    nothing = _factost("evaluate", "--checkpoint", checkpoint, "long", str(long_csv), "--horizon", "500",
                       "--methods", "seasonal_naive")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith(
        "error: ValueError: dataset 'hourly': no scorable series at horizon 500, season 24")
