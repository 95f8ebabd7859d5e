"""`factost report RUN_ID --paper` on a real small adapt run: the paper's tables, its numbers, ours beside them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adaptation.metrics import masked_mape
from pipelines.cli import main
from pipelines.paper_report import PAPER_TABLES, harness_mape_scale, paper_numbers, parse_paper_numbers, table_rows

ADAPT_SMALL = ["--set", "adapt.max_steps=2", "--set", "adapt.max_epochs=1", "--set", "adapt.eval_stride=32",
               "--set", "adapt.max_val_windows=8", "--set", "adapt.predictions_max_windows=2",
               "--set", "adapt.baselines=[seasonal_naive]", "--set", "adapt.batch_size=8"]


def cli_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as done:
        main([*args, "--json"])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    return json.loads(out)


def adapt_then_report(checkpoint: str, benchmarks: str, root: Path, run_id: str, capsys: pytest.CaptureFixture[str],
                      extra: list[str] | None = None) -> tuple[dict, dict[tuple[str, str, str], dict]]:
    """Adapt (zero and few, both paper horizons), then `report --paper`; returns the report and our rows."""
    adapt = cli_json(["adapt", "--checkpoint", checkpoint, "--benchmarks", benchmarks, "--mode", "zero,few",
                      "--horizon", "12:12,96:96", "--out", str(root), "--run-id", run_id, *ADAPT_SMALL,
                      *(extra or [])], capsys)
    ours = {(r["benchmark"], r["mode"], r["horizon"]): r for r in adapt["rows"] if r["method"] == "factost"}
    report = cli_json(["report", run_id, "--paper", "--out", str(root)], capsys)
    return report, ours


def check_paper_side(tables: dict[str, list[dict]]) -> None:
    """Every number of the data file for Tables VII-IX is in its table, in its row, unchanged."""
    numbers = [n for n in paper_numbers() if n.table in PAPER_TABLES]
    assert len(numbers) == 9 * 2 + 9 * 2 + 6 * 2
    for n in numbers:
        row = next(r for r in tables[n.table] if (r["benchmark"], r["horizon"]) == (n.benchmark, n.horizon))
        assert (row["MAE paper"], row["RMSE paper"], row["MAPE % paper"]) == (n.mae, n.rmse, None)


def test_report_paper_on_a_synthetic_run(prefect_harness: None, checkpoint: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    report, ours = adapt_then_report(checkpoint, "synthetic-grid", tmp_path / "root", "paper-run", capsys)
    tables = report["tables"]
    assert list(tables) == ["VII", "VIII", "IX"]
    check_paper_side(tables)
    # the run's benchmark is not in the paper: its rows come after the paper's, paper cells empty
    for table, mode in (("VII", "few"), ("IX", "zero")):
        mine = [r for r in tables[table] if r["benchmark"] == "synthetic-grid"]
        assert [r["horizon"] for r in mine] == ["12->12", "96->96"]
        assert tables[table][-2:] == mine
        for row in mine:
            run = ours[("synthetic-grid", mode, row["horizon"])]
            assert (row["MAE"], row["RMSE"]) == (run["mae"], run["rmse"]) and row["MAE"] > 0
            assert row["MAPE %"] == pytest.approx(run["mape"] * harness_mape_scale(), rel=1e-12)
            assert row["MAE paper"] is None and row["RMSE paper"] is None
    # no full-shot run: Table VIII has the paper's numbers and empty cells for ours
    assert all(r["MAE"] is None and r["RMSE"] is None for r in tables["VIII"])
    assert all(r["MAE"] is None for r in tables["IX"] if r["benchmark"] == "pems08")

    run_dir = tmp_path / "root" / "runs" / "adapt" / "paper-run"
    assert report["files"] == {"markdown": str(run_dir / "paper_tables.md"), "csv": str(run_dir / "paper_tables.csv")}
    markdown = (run_dir / "paper_tables.md").read_text()
    assert "## Table VII: few-shot" in markdown and "## Table IX: zero-shot" in markdown
    assert "| pems08 | 96->96 |  | 91.09 |" in markdown  # Table IX, PEMS-08 96->96: paper 91.09 / 127.28
    with open(run_dir / "paper_tables.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert len(lines) == sum(len(t) for t in tables.values())
    few = next(r for r in lines if r["table"] == "VII" and r["benchmark"] == "synthetic-grid"
               and r["horizon"] == "96->96")
    assert float(few["MAE"]) == ours[("synthetic-grid", "few", "96->96")]["mae"] and few["MAE paper"] == ""

    # the people's view: three rich tables on stdout, the markdown's path last
    with pytest.raises(SystemExit) as done:
        main(["report", "paper-run", "--paper", "--out", str(tmp_path / "root")])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "Table VIII: full-shot" in out and "24.9" in out and out.strip().splitlines()[-1] == report["files"][
        "markdown"]


def test_report_on_etth2_sets_ours_beside_the_paper(prefect_harness: None, checkpoint: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], real_data_path) -> None:
    data = real_data_path("ett", "ETTh2.csv").parent
    report, ours = adapt_then_report(checkpoint, "etth2", tmp_path / "root", "etth2-run", capsys,
                                     ["--data-dir", str(data)])
    few = {r["horizon"]: r for r in report["tables"]["VII"] if r["benchmark"] == "etth2"}
    assert (few["12->12"]["MAE paper"], few["12->12"]["RMSE paper"]) == (0.251, 0.405)
    assert (few["96->96"]["MAE paper"], few["96->96"]["RMSE paper"]) == (0.328, 0.535)
    for horizon, row in few.items():
        assert (row["MAE"], row["RMSE"]) == (ours[("etth2", "few", horizon)]["mae"], ours[("etth2", "few", horizon)]
                                             ["rmse"])
    zero = [r for r in report["tables"]["IX"] if r["benchmark"] == "etth2"]  # Table IX has no ETTh2 column
    assert len(zero) == 2 and all(r["MAE paper"] is None and r["MAE"] is not None for r in zero)


def test_unknown_run_and_bad_data_file_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "no-such-run", "--paper", "--out", str(tmp_path)])
    assert done.value.code == 1
    assert "run 'no-such-run' has no results" in capsys.readouterr().err
    header = "table,mode,horizon,benchmark,paper_column,paper_row,model,mae,rmse,mape,ablation\n"
    with pytest.raises(ValueError, match=r"paper\.csv line 2 mae: 'n/a' is not a number"):
        parse_paper_numbers(header + "VII,few,12->12,etth2,ETTh2,r,FactoST-v2,n/a,0.4,,\n", "paper.csv")
    with pytest.raises(ValueError, match=r"paper\.csv: missing column\(s\) \['rmse'\]"):
        parse_paper_numbers(header.replace(",rmse", ""), "paper.csv")
    with pytest.raises(ValueError, match="unknown table 'XI'"):
        parse_paper_numbers(header + "XI,few,12->12,etth2,ETTh2,r,FactoST-v2,0.3,0.4,,\n", "paper.csv")


def test_mape_is_shown_in_percent_whatever_the_rows_unit() -> None:
    # the harness's own unit: a 100% error reads 100 in percent, 1 as a fraction
    assert harness_mape_scale() == (1.0 if masked_mape([2.0], [1.0]) == 100.0 else 100.0)
    rows = [{"benchmark": "etth2", "method": "factost", "mode": "few", "horizon": "12->12", "mae": 0.3,
             "rmse": 0.5, "mape": 0.25, "mape_unit": "fraction", "status": "ok"},
            {"benchmark": "etth2", "method": "factost", "mode": "few", "horizon": "96->96", "mae": 0.4,
             "rmse": 0.6, "mape": "31.5", "mape_unit": "percent", "adapted": "False", "status": "ok"}]
    got = {r["horizon"]: r for r in table_rows(rows, "VII", paper_numbers(), mape_scale=7.0)
           if r["benchmark"] == "etth2"}
    assert (got["12->12"]["MAPE %"], got["96->96"]["MAPE %"]) == (25.0, 31.5)
    assert got["96->96"]["note"] == "not adapted: the step-0 weights scored best" and got["12->12"]["note"] == ""
    assert (got["12->12"]["MAE"], got["12->12"]["MAE paper"], got["96->96"]["RMSE paper"]) == (0.3, 0.251, 0.535)
