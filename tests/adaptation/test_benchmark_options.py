"""A user's own benchmark file through `factost adapt`: conventions from the command line or a YAML beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from adaptation.benchmark_options import load_benchmark, options_for
from adaptation.datasets import make_synthetic_benchmark
from tests.integration.cli_helpers import invoke

FAST = ["--mode", "zero", "--horizon", "24:12", "--set", "adapt.eval_stride=16",
        "--set", "adapt.predictions_max_windows=4", "--set", "adapt.baselines=[seasonal_naive]"]


def _bare_npz(path: Path) -> Path:
    """A data array only: no timestamps, no stored frequency, no node ids (what a user exports from numpy)."""
    values = make_synthetic_benchmark("synthetic-traffic", num_nodes=4, num_steps=600, freq="15min", seed=2).values
    np.savez(path, data=values)
    return path


def test_sidecar_yaml_and_configured_options_merge(tmp_path: Path) -> None:
    data = _bare_npz(tmp_path / "my_city.npz")
    assert options_for(str(data), {}).freq is None
    (tmp_path / "my_city.yaml").write_text("freq: 15min\nsplit: '6:2:2'\nadjacency: my_city_graph.csv\n")
    np.savetxt(tmp_path / "my_city_graph.csv", np.eye(4), delimiter=",")
    opts = options_for(str(data), {"my_city": {"split": "7:1:2"}})
    assert (opts.freq, opts.split, opts.adjacency) == ("15min", "7:1:2", str(tmp_path / "my_city_graph.csv"))
    dataset = load_benchmark(str(data), None, {"my_city": {"null_value": "zero"}})
    assert dataset.freq == "15min" and dataset.null_value == "zero" and dataset.timestamps is None
    assert np.array_equal(dataset.adjacency, np.eye(4, dtype=np.float32))
    (tmp_path / "my_city.yaml").write_text("frequency: 15min\n")
    with pytest.raises(ValueError, match="my_city.yaml"):
        options_for(str(data), {})


def test_adapt_a_bare_npz_given_its_freq(
    prefect_harness: None, checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(_bare_npz(tmp_path / "my_city.npz"))
    root = str(tmp_path / "root")
    code, _, err = invoke(capsys, "adapt", "--checkpoint", checkpoint, "--benchmarks", data, "--out", root, *FAST,
                          "--run-id", "no-freq")
    assert code == 1 and "FAILED" in err and "pass freq" in err  # the command names what it could not do

    code, out, err = invoke(capsys, "adapt", "--checkpoint", checkpoint, "--benchmarks", data, "--out", root, *FAST,
                            "--benchmark-option", "my_city.freq=15min", "--run-id", "with-freq", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["run_id"] == "with-freq" and result["failures"] == {}
    ours = [r for r in result["rows"] if r["method"] == "factost"]
    assert ours and ours[0]["benchmark"] == "my_city" and ours[0]["mae"] > 0
    naive = next(r for r in result["rows"] if r["method"] == "seasonal_naive")
    assert naive["val_loss"] is None  # not applicable: null in JSON
    table = (tmp_path / "root" / "runs" / "adapt" / "with-freq" / "results.md").read_text()
    assert "nan" not in table and "| - |" in table
