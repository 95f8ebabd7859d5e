"""The corpus refresh flow: idempotent, incremental, retried on transient faults, atomic on failure."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import s3fs

from infra.versions import list_versions, read_table
from pipelines.refresh import corpus_refresh_flow
from tests.integration.tiny_profile import tiny_profile, write_long_csv
from tests.s3_server import NetworkGate, make_bucket, start_moto


def _sources(tmp_path: Path) -> list[dict]:
    return [{"name": name, "kind": "long", "paths": [str(tmp_path / f"{name}.csv")], "freq": "h"}
            for name in ("alpha", "beta")]


@pytest.mark.slow
def test_refresh_reuses_unchanged_work_and_reingests_only_the_changed_source(prefect_harness, tmp_path) -> None:
    write_long_csv(tmp_path / "alpha.csv", n_series=4, length=300, seed=0)
    write_long_csv(tmp_path / "beta.csv", n_series=4, length=300, seed=1)
    profile = tiny_profile(tmp_path / "root", _sources(tmp_path))

    first = corpus_refresh_flow(profile)
    assert not any(s["reused"] for s in first.sources) and not first.training_corpus["reused"]
    corpus = first.training_corpus["version"]
    assert read_table(list_versions(str(tmp_path / "root"), "training_corpus")[0]).num_rows == 240

    second = corpus_refresh_flow(profile)
    assert all(s["reused"] for s in second.sources)
    assert second.kernelsynth["reused"] and second.training_corpus["reused"]
    assert second.training_corpus["version"] == corpus
    assert len(list_versions(str(tmp_path / "root"), "training_corpus")) == 1

    write_long_csv(tmp_path / "beta.csv", n_series=5, length=300, seed=2)  # one source changes
    third = corpus_refresh_flow(profile)
    reused = {s["source"]: s["reused"] for s in third.sources}
    assert reused == {"alpha": True, "beta": False}
    assert third.kernelsynth["reused"] and not third.training_corpus["reused"]
    assert len(list_versions(str(tmp_path / "root"), "training_corpus")) == 2


@pytest.mark.slow
def test_refresh_retries_a_transient_fault_and_fails_cleanly_on_a_lasting_one(prefect_harness, tmp_path) -> None:
    write_long_csv(tmp_path / "alpha.csv", n_series=3, length=300, seed=0)
    server = start_moto()
    gate = NetworkGate(server.port)
    try:
        make_bucket(server, "refresh-bucket")
        fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
        fs.put(str(tmp_path / "alpha.csv"), "refresh-bucket/remote.csv")
        sources = [{"name": "remote", "kind": "long", "paths": ["s3://refresh-bucket/remote.csv"], "freq": "h"}]
        profile = tiny_profile(tmp_path / "root", sources)
        profile["storage"]["options"] = gate.endpoint_options(server)
        profile["ingest"]["retries"] = 3

        gate.close()  # the source's store is unreachable when the refresh starts, and comes back 2 s later

        def bring_back() -> None:
            time.sleep(2.0)
            gate.open()

        threading.Thread(target=bring_back, daemon=True).start()
        ok = corpus_refresh_flow(profile)
        assert ok.sources[0]["series"] == 3
        good = list_versions(str(tmp_path / "root"), "training_corpus")
        assert [v.url for v in good] == [ok.training_corpus["version"]]

        gate.close()  # now it stays down: a changed config needs the source read again
        profile["balance"]["seed"] = 2
        profile["ingest"]["min_length"] = 9
        profile["ingest"]["retries"] = 1
        with pytest.raises(Exception, match="remote.csv|Could not connect|connect"):
            corpus_refresh_flow(profile)
        after = list_versions(str(tmp_path / "root"), "training_corpus")
        assert [v.url for v in after] == [v.url for v in good]  # nothing new published
        assert read_table(after[0]).num_rows == 240  # the previous version is intact
    finally:
        gate.close()
        server.kill()


@pytest.mark.slow
def test_a_unit_that_keeps_failing_fails_the_refresh_naming_it(prefect_harness, tmp_path) -> None:
    from corpus.kernelsynth import KernelSynthConfig, kernelsynth_version_id
    from infra.versions import open_version

    write_long_csv(tmp_path / "alpha.csv", n_series=3, length=300, seed=0)
    profile = tiny_profile(tmp_path / "root", _sources(tmp_path)[:1])
    first = corpus_refresh_flow(profile)
    datasets = ("kernelsynth", "training_corpus")
    before = {ds: [v.url for v in list_versions(str(tmp_path / "root"), ds)] for ds in datasets}

    profile["synth"]["seed"] = 7  # a new KernelSynth version whose chunk 1 cannot be written
    work = tmp_path / "root" / "_work" / "kernelsynth" / kernelsynth_version_id(KernelSynthConfig(**profile["synth"]))
    (work / "chunk-000001.parquet").mkdir(parents=True)
    with pytest.raises(Exception, match=r"kernelsynth: chunk 1 \(series 120..239\) failed: IsADirectoryError"):
        corpus_refresh_flow(profile)
    after = {ds: [v.url for v in list_versions(str(tmp_path / "root"), ds)] for ds in datasets}
    assert after == before  # nothing published
    assert open_version(first.training_corpus["version"]).num_rows == 240  # the previous version intact
