"""`factost datasets` and `factost show` on a store holding several datasets and versions, with lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from corpus.config import IngestConfig, SourceConfig
from corpus.ingest import ingest_source
from infra.versions import VersionWriter, open_version
from tests.integration.cli_helpers import invoke, run_factost
from tests.integration.tiny_profile import write_long_csv


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Two versions of `sensors` (its input changed), one of `meters` (one series quarantined) and a version
    derived from the second `sensors` version, the way a balanced training corpus names its inputs."""
    work = tmp_path_factory.mktemp("catalog")
    root = str(work / "root")
    cfg = IngestConfig(min_length=20)
    made = {}
    for seed in (0, 1):
        write_long_csv(work / "sensors.csv", n_series=3, length=48, seed=seed)
        source = SourceConfig(name="sensors", kind="long", paths=[str(work / "sensors.csv")], freq="h")
        made[f"sensors{seed}"] = ingest_source(source, cfg, root).version
    (work / "meters.csv").write_text("id,timestamp,value\n" + "".join(
        f"{sid},2024-01-01 {h:02d}:00:00,{h}\n" for sid, n in (("m0", 24), ("short", 5)) for h in range(n)))
    meters = SourceConfig(name="meters", kind="long", paths=[str(work / "meters.csv")], freq="h")
    made["meters"] = ingest_source(meters, cfg, root).version
    parent = made["sensors1"]
    writer = VersionWriter(root, "derived", "d1", pa.schema([("x", pa.int64())]))
    writer.write(pa.table({"x": [1, 2, 3]}))
    made["derived"] = writer.commit(
        config={}, inputs=[{"url": parent.url, "dataset": parent.dataset, "version_id": parent.version_id}],
        code_version="test")
    return {"root": root, "work": work, **made}


def test_datasets_lists_every_dataset_with_its_versions(store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(capsys, "datasets", "--out", store["root"], "--json")
    assert code == 0
    listed = {d["dataset"]: d["versions"] for d in json.loads(out)}
    assert sorted(listed) == ["corpus/meters", "corpus/sensors", "derived"]
    sensors = listed["corpus/sensors"]
    assert [v["version_id"] for v in sensors] == [store["sensors0"].version_id, store["sensors1"].version_id]
    assert all(v["rows"] == 3 and v["bytes"] > 0 and v["created"] for v in sensors)
    assert sensors[0]["inputs"] == [str(store["work"] / "sensors.csv")]
    assert listed["derived"][0]["inputs"] == [f"corpus/sensors@{store['sensors1'].version_id}"]
    code, out, _ = invoke(capsys, "datasets", "--out", store["root"])
    assert code == 0 and "corpus/meters" in out and store["sensors0"].version_id in out


def test_show_prints_the_card_with_lineage_up_and_down(store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(capsys, "show", store["sensors1"].url, "--json")
    assert code == 0
    card = json.loads(out)
    assert card["version_id"] == store["sensors1"].version_id and card["rows"] == 3
    assert {c["name"] for c in card["schema"]} >= {"series_id", "target"}
    assert card["stats"]["series"] == 3 and card["quarantined"] == 0
    assert card["lineage"]["up"][0]["input"].endswith("sensors.csv") and card["lineage"]["up"][0]["sha256"]
    assert card["lineage"]["down"] == [{"kind": "version", "version": "derived@d1", "url": store["derived"].url}]

    meters = json.loads(invoke(capsys, "show", store["meters"].url, "--json")[1])
    assert meters["quarantined"] == 1 and meters["lineage"]["down"] == []
    derived = json.loads(invoke(capsys, "show", store["derived"].url, "--json")[1])
    assert derived["lineage"]["up"] == [{"input": f"corpus/sensors@{store['sensors1'].version_id}"}]
    assert open_version(derived["url"]).version_id == "d1"


def test_show_of_what_is_no_version_says_so_in_one_line(store, tmp_path: Path) -> None:
    proc = run_factost("show", str(tmp_path), check=False, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and "not published" in lines[0] and str(tmp_path) in lines[0]
