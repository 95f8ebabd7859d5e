"""Profiles: YAML loading, env interpolation, and errors that name the offending key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from infra.config import ConfigError
from infra.storage import filesystem
from pipelines.profile import Profile, load_profile


def test_local_profile_loads_with_embedded_defaults() -> None:
    prof = load_profile("local")
    assert prof.name == "local"
    assert prof.storage.root == ".factost"
    assert prof.ray.address is None


def test_zero_shot_recipe_profile_is_synthetic_only_and_fits_its_horizons() -> None:
    prof = load_profile("zero-shot")
    assert prof.ingest.sources == []  # nothing real in its corpus: every evaluated dataset is unseen
    backbone = prof.pretrain.backbone_config()
    assert (backbone.d_model, backbone.num_layers, backbone.dropout) == (128, 3, 0.0)
    assert backbone.max_horizon >= 48 and backbone.max_context == prof.pretrain.context_length == 512


def test_history_recipe_profile_holds_out_each_evaluation_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACTOST_DATA", "/data/real")
    prof = load_profile("zero-shot-history")
    holdout = {s.name: (s.holdout, s.paths[0]) for s in prof.ingest.sources}
    # each source holds out exactly the horizon bench_zero_shot evaluates it at, so no scored point is trained on
    assert {name: h for name, (h, _) in holdout.items()} == {
        "m4_hourly": 48, "ausgrid_weekly": 8, "exchange_rate": 30, "etth2": 48}
    assert holdout["etth2"][1] == "/data/real/ett/ETTh2.csv"
    # the synthetic-only recipe's backbone, optimiser and synthetic data, for half its steps: 3,750 pass 30 CPU-min
    assert prof.pretrain.model_dump(exclude={"steps"}) == load_profile("zero-shot").pretrain.model_dump(
        exclude={"steps"})
    assert prof.pretrain.steps == 2500 and prof.synth == load_profile("zero-shot").synth


def test_cluster_profile_leaves_credentials_to_the_standard_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("FACTOST_BUCKET", "my-bucket")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    prof = load_profile("cluster")
    assert prof.storage.root == "s3://my-bucket/prod"
    assert prof.storage.credentials == {}
    assert "AKIAEXAMPLE" not in json.dumps(prof.model_dump(mode="json"))
    assert prof.ray.address == "ray://head:10001"
    assert prof.ingest.sources[0].paths[0] == "s3://my-bucket/raw/m4/Hourly-train.csv"


def test_cluster_profile_loads_without_any_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert load_profile("cluster").storage.options == {"endpoint_url": "https://s3.amazonaws.com"}


def test_plain_text_secret_is_held_apart_and_never_dumped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("infra.storage._SECRET_OPTIONS", {})  # this process's registry, as a fresh process has it
    path = tmp_path / "p.yaml"
    path.write_text("storage:\n  root: s3://b/x\n  options:\n    key: PLAINKEY42\n    secret: PLAINSECRET42\n"
                    "    endpoint_url: http://127.0.0.1:1\n    client_kwargs: {aws_session_token: PLAINTOKEN42}\n")
    prof = load_profile(path)
    assert prof.storage.options == {"endpoint_url": "http://127.0.0.1:1", "client_kwargs": {}}
    assert sorted(prof.storage.credentials) == ["client_kwargs.aws_session_token", "key", "secret"]
    dumped = json.dumps(prof.model_dump(mode="json")) + json.dumps(prof.model_dump(), default=str) + repr(prof)
    assert not any(v in dumped for v in ("PLAINKEY42", "PLAINSECRET42", "PLAINTOKEN42"))
    assert os.environ["AWS_ACCESS_KEY_ID"] == "PLAINKEY42"  # resolved where processes look: the standard chain
    assert os.environ["AWS_SESSION_TOKEN"] == "PLAINTOKEN42"
    fs, _ = filesystem("s3://b/x", prof.storage.options)
    assert (fs.key, fs.secret) == ("PLAINKEY42", "PLAINSECRET42")
    assert Profile.model_validate(prof.model_dump(mode="json")).storage.credentials == {}


def test_unknown_key_is_rejected_by_name(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("storage:\n  root: /tmp/x\n  rooot: typo\n")
    with pytest.raises(ConfigError, match=r"storage\.rooot: unknown key"):
        load_profile(path)


def test_wrong_type_is_rejected_by_name(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("ingest:\n  min_length: many\n")
    with pytest.raises(ConfigError, match=r"ingest\.min_length: Input should be a valid integer"):
        load_profile(path)


def test_unknown_connector_kind_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("ingest:\n  sources:\n    - {name: a, kind: xls, paths: [a.xls]}\n")
    with pytest.raises(ConfigError, match=r"ingest\.sources\.0\.kind: .*unknown connector 'xls'"):
        load_profile(path)


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="not found .*local"):
        load_profile("nope")
