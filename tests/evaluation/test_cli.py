"""`factost evaluate`: the JSON document and --out files through the console script; errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_helpers import invoke, run_factost


def test_json_document_and_out_folder(checkpoint: str, long_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    done = run_factost("evaluate", "--checkpoint", checkpoint, "long", str(long_csv), "--horizon", "12",
                       "--seasonality", "4", "--methods", "factost,seasonal_naive", "--json", "--out", str(out),
                       env={"OMP_WAIT_POLICY": "PASSIVE"}, timeout=240)
    doc = json.loads(done.stdout)
    rows = {r["method"]: r for r in doc["results"]}
    assert set(rows) == {"factost", "seasonal_naive"}
    assert rows["seasonal_naive"]["n_series"] == 3 and rows["seasonal_naive"]["n_skipped"] == 2
    assert {"dataset", "mase", "wql", "crps", "coverage_80", "seconds"} <= set(rows["factost"])
    assert doc["relative"]["geometric_mean"]["factost"]["mase"] == pytest.approx(
        rows["factost"]["mase"] / rows["seasonal_naive"]["mase"])
    assert doc["skipped"]["hourly"]["all missing"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["forecasts_hourly.png", "results.csv", "results.json",
                                                   "results.md"]
    assert (out / "forecasts_hourly.png").read_bytes()[:4] == b"\x89PNG"
    assert "| hourly | factost |" in (out / "results.md").read_text()
    assert doc["outputs"]["markdown"] == str(out / "results.md")


def test_table_without_json_prints_the_results_path_last(capsys, checkpoint: str, long_csv: Path,
                                                          tmp_path: Path) -> None:
    code, out, err = invoke(capsys, "evaluate", "--checkpoint", checkpoint, "long", str(long_csv), "--horizon", "12",
                            "--methods", "seasonal_naive", "--out", str(tmp_path / "t"))
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "t" / "results.md")
    assert "seasonal_naive" in err and "geometric mean" in err


def test_bad_inputs_fail_in_one_line_naming_the_value(capsys, checkpoint: str, long_csv: Path,
                                                      tmp_path: Path) -> None:
    def fails(*args: str) -> str:
        code, out, err = invoke(capsys, "evaluate", "--checkpoint", *args)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
        return err.strip()

    assert fails(checkpoint, "long", str(long_csv), "--horizon", "5000") == (
        f"error: ValueError: horizon 5000 is more than {checkpoint} can roll out (max_context 2048)")
    assert "no backbone config here" in fails(str(tmp_path), "long", str(long_csv), "--horizon", "12")
    assert fails(checkpoint, "long", str(long_csv), "--horizon", "500", "--methods", "seasonal_naive").startswith(
        "error: ValueError: dataset 'hourly': no scorable series at horizon 500, season 24 (")
    code, _, err = invoke(capsys, "evaluate", "--checkpoint", checkpoint, "xls", "a.xls", "--horizon", "3")
    assert code == 2 and "unknown kind 'xls'" in err


def test_method_and_kind_lists_match_the_module() -> None:
    from corpus.sources.registry import CONNECTORS, load_builtin_connectors
    from pipelines.cli import EVAL_KINDS, EVAL_METHODS
    from training.evaluate import METHODS

    load_builtin_connectors()
    assert EVAL_METHODS == METHODS and set(EVAL_KINDS) == {*CONNECTORS, "version"}
