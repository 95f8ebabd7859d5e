"""`factost run refresh` with one broken source: the others finish, the command names the broken one, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.versions import list_versions
from tests.integration.cli_helpers import run_factost
from tests.integration.tiny_profile import tiny_profile, write_long_csv


@pytest.mark.slow
def test_refresh_with_a_failed_source_finishes_the_rest_and_names_it(tmp_path: Path) -> None:
    write_long_csv(tmp_path / "good.csv", n_series=3, length=200, seed=0)
    (tmp_path / "bad.csv").write_text("id,timestamp,value\ns0,not a time,1.0\n")
    sources = [{"name": "good", "kind": "long", "paths": [str(tmp_path / "good.csv")], "freq": "h"},
               {"name": "bad", "kind": "long", "paths": [str(tmp_path / "bad.csv")], "freq": "h"}]
    root = tmp_path / "root"
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(tiny_profile(root, sources)))

    proc = run_factost("run", "refresh", "--profile", str(profile), "--json", check=False, timeout=900)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: SourcesFailed: 1 of 2 source(s) failed") and "bad: " in error, error
    assert "good:" not in error
    assert len(list_versions(str(root), "corpus/good")) == 1  # the good source was ingested all the same
    assert list_versions(str(root), "training_corpus") == []  # nothing balanced from a partial corpus

    (tmp_path / "bad.csv").unlink()
    profile.write_text(yaml.safe_dump(tiny_profile(root, sources[:1])))
    done = json.loads(run_factost("run", "refresh", "--profile", str(profile), "--json", timeout=900).stdout)
    assert done["sources"][0]["reused"] and done["training_corpus"]["version"].startswith(str(root))
