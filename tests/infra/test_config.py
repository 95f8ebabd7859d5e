"""Profiles: YAML loading, env interpolation, and errors that name the offending key."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import ConfigError
from pipelines.profile import load_profile


def test_local_profile_loads_with_embedded_defaults() -> None:
    prof = load_profile("local")
    assert prof.name == "local"
    assert prof.storage.root == ".factost"
    assert prof.ray.address is None


def test_cluster_profile_takes_secrets_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("FACTOST_BUCKET", "my-bucket")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    prof = load_profile("cluster")
    assert prof.storage.root == "s3://my-bucket/prod"
    assert prof.storage.options["key"] == "AKIAEXAMPLE"
    assert prof.ray.address == "ray://head:10001"
    assert prof.ingest.sources[0].paths[0] == "s3://my-bucket/raw/m4/Hourly-train.csv"


def test_cluster_profile_without_credentials_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(ConfigError, match="storage.options.key: environment variable AWS_ACCESS_KEY_ID is not set"):
        load_profile("cluster")


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
