"""The paper's protocol by default: both horizons, MAPE in percent, the step-0 flag, horizons the backbone
cannot serve, unknown benchmark names, and ``paper_faithful`` as it shows on the built adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from adaptation.adapter import STAModel
from adaptation.benchmark_options import load_benchmark
from adaptation.config import PAPER_FORM, PAPER_HORIZONS, PROJECT_FORM, AdaptConfig
from adaptation.datasets import make_synthetic_benchmark, resolve_benchmark
from adaptation.harness import (
    NOT_ADAPTED,
    optimizer_groups,
    prepare_benchmark,
    run_adaptation,
    train_model,
)
from adaptation.metrics import evaluate
from adaptation.modules import ReplayMixer
from adaptation.windows import make_windows
from pipelines.one_click import report_markdown
from pipelines.reporting import json_document
from training.model import BackboneConfig, FactoSTBackbone

LEVELS = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


def _exchange_rate(folder: Path) -> str:
    """The registry's exchange-rate benchmark as its LTSF csv (8 daily series, 7588 days), seeded values."""
    rng = np.random.default_rng(0)
    values = np.exp(0.003 * np.cumsum(rng.normal(size=(7588, 8)), axis=0)) * np.linspace(0.5, 2.0, 8)  # > 0
    frame = pd.DataFrame(values, columns=[*map(str, range(7)), "OT"])
    frame.insert(0, "date", pd.date_range("1990-01-01", periods=7588, freq="D").strftime("%Y/%m/%d %H:%M"))
    frame.to_csv(folder / "exchange_rate.csv", index=False)
    return str(folder)


def test_default_horizons_give_both_paper_rows_with_mape_in_percent(checkpoint: str, tmp_path: Path) -> None:
    dataset = resolve_benchmark("exchange-rate", _exchange_rate(tmp_path))
    cfg = AdaptConfig(modes=("zero",), baselines=("seasonal_naive",), eval_stride=16, predictions_max_windows=1000)
    assert cfg.horizons is None and cfg.horizon_pairs() == PAPER_HORIZONS == ((12, 12), (96, 96))
    with pytest.raises(ValidationError, match="horizons is empty"):
        AdaptConfig(horizons=[])
    result = run_adaptation(checkpoint, dataset, cfg, str(tmp_path / "out"))
    rows = {(r["method"], r["horizon"]): r for r in result["rows"]}
    assert set(rows) == {(m, h) for m in ("factost", "seasonal_naive") for h in ("12->12", "96->96")}
    for (method, horizon), row in rows.items():
        tag = horizon.replace("->", "to")
        folder = tmp_path / "out" / "exchange-rate" / (f"zero-{tag}" if method == "factost" else f"{method}-{tag}")
        preds = np.load(folder / "predictions.npz")
        point, target = preds["quantiles"][..., LEVELS.index(0.5)], preds["target"].astype(np.float64)
        keep = preds["observed"].astype(bool)
        fraction = float(np.mean(np.abs(point - target)[keep] / np.abs(target[keep])))
        assert row["mape"] == pytest.approx(100 * fraction, rel=1e-5)  # percent, from the saved forecasts
        assert 0.1 < row["mape"] < 100  # exchange rates near 1: a few percent, not a few hundredths
        assert evaluate(preds["quantiles"], target, LEVELS, "nan", keep)["mape"] == pytest.approx(row["mape"], rel=1e-5)
        assert row["adapted"] is None and row["status"] == "ok"  # zero-shot and naive are not trained
    assert (tmp_path / "out" / "exchange-rate" / "zero-96to96" / "metrics.json").exists()


def test_horizon_the_backbone_cannot_serve_fails_before_training(checkpoint: str, tmp_path: Path) -> None:
    dataset = make_synthetic_benchmark("synthetic-grid", num_nodes=3)
    too_long = AdaptConfig(modes=("few",), horizons=((24, 12), (96, 300)))
    with pytest.raises(ValueError, match=r"96->300: output length 300 exceeds the backbone's max_horizon 256"):
        run_adaptation(checkpoint, dataset, too_long, str(tmp_path))
    too_wide = AdaptConfig(modes=("few",), horizons=((24, 12), (4096, 24)))
    with pytest.raises(ValueError, match=r"input length 4096 exceeds the backbone's max_context 2048"):
        run_adaptation(checkpoint, dataset, too_wide, str(tmp_path))
    assert not any(tmp_path.iterdir())  # the valid 24->12 pair did not run either: nothing was written


def test_unknown_benchmark_names_list_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown benchmark 'pems09'; known: pems03, .*los-loop.*synthetic-grid"):
        load_benchmark("pems09", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown synthetic benchmark 'synthetic-city'; known: synthetic-traffic"):
        load_benchmark("synthetic-city", str(tmp_path))


def _few_cfg(**update: object) -> AdaptConfig:
    base = {"modes": ("few",), "baselines": (), "horizons": ((24, 12),), "batch_size": 16, "max_steps": 6,
            "eval_every_steps": 2, "patience": 10, "max_val_windows": 32, "eval_stride": 8}
    return AdaptConfig(**{**base, **update})


def test_a_trained_row_that_keeps_its_step_0_weights_says_so(checkpoint: str, tmp_path: Path) -> None:
    ds = make_synthetic_benchmark("synthetic-grid", num_nodes=4)
    # a learning rate of 10 wrecks the model on the first step: no validation beats the untrained weights
    stuck = run_adaptation(checkpoint, ds, _few_cfg(lr=10.0, backbone_lr=10.0), str(tmp_path / "stuck"))["rows"][0]
    doc = json.loads((tmp_path / "stuck" / "synthetic-grid" / "few-24to12" / "metrics.json").read_text())
    history = doc["training"]["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    assert all(h["val_loss"] > doc["training"]["initial_val_loss"] for h in history)
    assert doc["training"]["best_step"] == 0 and doc["adapted"] is False and doc["training"]["adapted"] is False
    assert stuck["adapted"] is False and stuck["status"] == NOT_ADAPTED == "no improvement over step 0"
    assert stuck["val_loss"] == doc["training"]["initial_val_loss"]
    table = (tmp_path / "stuck" / "synthetic-grid" / "results.md").read_text()
    assert "| adapted | status |" in table and "| False | no improvement over step 0 |" in table

    improved = run_adaptation(checkpoint, ds, _few_cfg(lr=3e-3, backbone_lr=3e-4), str(tmp_path / "ok"))["rows"][0]
    assert improved["adapted"] is True and improved["status"] == "ok"
    assert improved["val_loss"] < 0.9 * stuck["val_loss"]

    # the run report and --json carry the flag too
    manifest = {"results": [stuck, improved], "started_at": "-", "duration_s": 1.0,
                "corpus": {"training_corpus": {"url": "memory://c", "rows": 1, "parts": {"a": "0"}}},
                "pretrain": {"summary": {"steps": 1}}}
    from pipelines.profile import load_profile

    report = report_markdown("r1", load_profile("local"), manifest, [])
    assert "| adapted | status |" in report and "| False | no improvement over step 0 |" in report
    assert "| True | ok |" in report and "MAPE in percent" in report
    rows = json.loads(json_document({"rows": [stuck, improved]}))["rows"]
    assert [(r["adapted"], r["status"]) for r in rows] == [(False, NOT_ADAPTED), (True, "ok")]


def test_paper_faithful_resolves_every_choice_and_names_conflicts() -> None:
    paper, default = AdaptConfig(paper_faithful=True), AdaptConfig()
    assert paper.choices() == PAPER_FORM and default.choices() == PROJECT_FORM
    assert all(PAPER_FORM[k] != PROJECT_FORM[k] for k in PAPER_FORM)
    assert AdaptConfig(paper_faithful=True, dspa_gated=False).choice("dspa_gated") is False  # the paper's value
    assert AdaptConfig(dspa_gated=False).choices() == {**PROJECT_FORM, "dspa_gated": False}  # one switch alone
    with pytest.raises(ValidationError, match=r"paper_faithful=true sets dspa_gated=False .* dspa_gated=True"):
        AdaptConfig(paper_faithful=True, dspa_gated=True)
    with pytest.raises(ValidationError, match=r"sets backbone_lr='lr' .* backbone_lr=0.0001 is given"):
        AdaptConfig.model_validate({"paper_faithful": "true", "backbone_lr": "1e-4"})
    with pytest.raises(ValidationError, match=r"time_of_day='hour' .* time_of_day='step'"):
        AdaptConfig(paper_faithful=True, time_of_day="step")
    with pytest.raises(ValidationError, match=r"trains the backbone too .* freeze_backbone=True is given"):
        AdaptConfig(paper_faithful=True, freeze_backbone=True)
    # a dump validates again to the same config, and switching paper_faithful on over a dump of the defaults
    # (what --set does) is no conflict: the defaults were never chosen
    assert AdaptConfig.model_validate(paper.model_dump(mode="json")) == paper
    switched = AdaptConfig.model_validate({**default.model_dump(mode="json"), "paper_faithful": True})
    assert switched.choices() == PAPER_FORM


def test_paper_faithful_profile_switch_and_its_conflict() -> None:
    from pipelines.profile import load_profile
    from pipelines.settings import OverrideError, apply_overrides

    prof = load_profile("local", {"adapt": {"paper_faithful": True}})
    assert prof.adapt.choices() == PAPER_FORM
    assert load_profile("paper").adapt.choices() == PAPER_FORM
    assert apply_overrides(load_profile("local"), {"adapt.paper_faithful": True}).adapt.choices() == PAPER_FORM
    with pytest.raises(Exception, match=r"paper_faithful=true sets stf_scaled=False .* stf_scaled=True"):
        load_profile("local", {"adapt": {"paper_faithful": True, "stf_scaled": True}})
    with pytest.raises(OverrideError, match=r"paper_faithful=true sets cmr_memory_update=True .*=False is given"):
        apply_overrides(load_profile("paper"), {"adapt.cmr_memory_update": False})


def _built(cfg: AdaptConfig, dataset_name: str = "synthetic-traffic") -> tuple[STAModel, object]:
    ds = make_synthetic_benchmark(dataset_name, num_nodes=3, num_steps=288 * 8)
    data = prepare_benchmark(ds, cfg)
    torch.manual_seed(0)
    backbone = FactoSTBackbone(BackboneConfig.from_size("minuscule", dropout=0.0))
    return STAModel(backbone, cfg, data.arrays.num_nodes, data.arrays.calendar_vocab), data


def test_paper_faithful_changes_the_built_adapter() -> None:
    default, _ = _built(AdaptConfig())
    paper, data = _built(AdaptConfig(paper_faithful=True))
    d = default.backbone.cfg.d_model
    # DSPA: the gate is gone, the prompts join the one softmax (and start at zero)
    bcfg = default.backbone.cfg
    assert default.dspa.gate is not None and default.dspa.gate.shape == (bcfg.num_layers, bcfg.num_heads)
    assert paper.dspa.gate is None and [name for name, _ in paper.dspa.named_parameters()] == ["u", "v", "proj.weight",
                                                                                               "proj.bias"]
    assert torch.count_nonzero(paper.dspa.u) == 0
    # STF: plain dot products
    assert default.stf.score_scale == pytest.approx(1 / math.sqrt(d)) and paper.stf.score_scale == 1.0
    # one learning rate for backbone and adapter
    groups = optimizer_groups(default, default.cfg)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    one = optimizer_groups(paper, paper.cfg)
    assert [g["lr"] for g in one] == [1e-3] and len(one[0]["params"]) == len(list(paper.parameters()))
    # calendar: time_of_day in hours (24), beside minute_of_hour (60) and day_of_week (7)
    assert [t.num_embeddings for t in default.stmf.calendar_embeddings] == [60, 288, 7]
    assert [t.num_embeddings for t in paper.stmf.calendar_embeddings] == [60, 24, 7]
    tod = data.arrays.calendar[:, list(data.arrays.calendar_vocab).index("time_of_day")]
    assert tod[:288].tolist() == [step // 12 for step in range(288)] and tod[288] == 0


def test_paper_faithful_cmr_buffer_is_fed_during_training() -> None:
    ds = make_synthetic_benchmark("synthetic-grid", num_nodes=3)
    reports = {}
    for name, cfg in {"default": _few_cfg(max_steps=8), "paper": _few_cfg(max_steps=8, paper_faithful=True)}.items():
        data = prepare_benchmark(ds, cfg)
        train = make_windows(data.arrays, data.few_slice, 24, 12, "train")
        val = make_windows(data.arrays, data.splits["val"], 24, 12, "val").evenly_spaced(16)
        torch.manual_seed(0)
        backbone = FactoSTBackbone(BackboneConfig.from_size("minuscule", dropout=0.0))
        model = STAModel(backbone, cfg, 3, data.arrays.calendar_vocab)
        reports[name] = (train_model(model, train, val, cfg, torch.device("cpu")), len(train))
    fixed, n = reports["default"]
    assert fixed.memory == {"policy": "fixed (Eq. 11)", "capacity": math.floor(0.2 * n), "size": math.floor(0.2 * n),
                            "updates": 0}
    fed, n = reports["paper"]
    assert fed.memory["policy"] == "updated (Algorithm 1)" and fed.memory["capacity"] == math.floor(0.2 * n)
    # 8 steps of 16 windows, 30% replayed once the buffer holds samples: the buffer filled up from the stream
    assert fed.memory["size"] == fed.memory["capacity"] and fed.memory["updates"] >= fed.memory["capacity"]


def test_algorithm_1_buffer_starts_empty_and_replays_only_what_it_has_seen() -> None:
    mixer = ReplayMixer(100, 10, memory_fraction=0.2, replay_ratio=0.3, enabled=True,
                        rng=np.random.default_rng(0), update_memory=True)
    assert mixer.memory.size == 0 and mixer.capacity == 20 and mixer.stream.size == 100
    seen: set[int] = set()
    replayed_total = 0
    for step, batch in enumerate(mixer.epoch()):
        fresh = [int(i) for i in batch if int(i) not in seen]
        replayed = batch.size - len(fresh)
        assert replayed == (0 if step == 0 else 3)  # nothing to replay before the first update
        assert set(mixer.memory.tolist()) <= seen  # the buffer holds only samples of earlier batches
        replayed_total += replayed
        seen.update(fresh)
    assert mixer.memory.size == 20 and len(set(mixer.memory.tolist())) == 20
    assert replayed_total == 27 and mixer.summary()["updates"] >= 20


def test_cli_json_flags_step_0_and_paper_faithful_conflicts_fail(
    prefect_harness: None, checkpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.cli_helpers import invoke

    root = str(tmp_path / "root")
    fast = ["--benchmarks", "synthetic-grid", "--mode", "few", "--horizon", "24:12", "--out", root,
            "--set", "adapt.eval_stride=16", "--set", "adapt.predictions_max_windows=4", "--set", "adapt.baselines=[]",
            "--set", "adapt.max_steps=4", "--set", "adapt.eval_every_steps=2", "--set", "adapt.max_val_windows=16"]
    code, out, err = invoke(capsys, "adapt", "--checkpoint", checkpoint, *fast, "--set", "adapt.lr=10",
                            "--set", "adapt.paper_faithful=true", "--run-id", "stuck", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["method"], r["adapted"], r["status"]) for r in rows] == [("factost", False, NOT_ADAPTED)]
    run_dir = tmp_path / "root" / "runs" / "adapt" / "stuck"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["paper_faithful"] is True and run["config"]["dspa_gated"] is None  # not chosen by hand
    metrics = json.loads((run_dir / "synthetic-grid" / "few-24to12" / "metrics.json").read_text())
    assert metrics["choices"] == PAPER_FORM and metrics["training"]["memory"]["policy"] == "updated (Algorithm 1)"

    code, out, err = invoke(capsys, "adapt", "--checkpoint", checkpoint, *fast, "--set", "adapt.paper_faithful=true",
                            "--set", "adapt.dspa_gated=true", "--run-id", "conflict")
    assert code != 0 and "paper_faithful=true sets dspa_gated=False" in err and "dspa_gated=True is given" in err
    assert not (tmp_path / "root" / "runs" / "adapt" / "conflict").exists()
