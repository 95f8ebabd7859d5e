"""The Prefect ingest flow: one task per source in parallel, retries on transient I/O only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import s3fs

from corpus.config import IngestConfig, SourceConfig
from corpus.errors import MalformedInputError
from infra.versions import list_versions, open_version
from pipelines.ingest import ingest_flow
from pipelines.profile import Profile
from tests.conftest import real_data
from tests.s3_server import ACCESS_KEY, SECRET_KEY, NetworkGate, make_bucket, start_moto


@pytest.fixture(scope="module", autouse=True)
def ray_with_store_credentials() -> Iterator[None]:
    """The module's own Ray, started with moto's keys in the standard AWS chain, as a cluster's nodes hold theirs.

    A profile's own credentials stay in the flow's process (never in task arguments); Ray's workers, like any
    process on a cluster node, find theirs in the environment they were started with. A Ray left by an earlier
    module was started without them, so it is replaced for this module and stopped after it.
    """
    import ray

    from infra.ray_runtime import ensure_ray

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        env.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        ray.shutdown()
        ensure_ray()
        yield
        ray.shutdown()


def test_flow_ingests_every_source_and_reports_each(prefect_harness, tmp_path: Path) -> None:
    sources = [
        SourceConfig(name="m4_hourly_tsf", kind="tsf", paths=[str(real_data("monash", "m4_hourly_dataset.tsf"))]),
        SourceConfig(name="etth2", kind="ltsf", paths=[str(real_data("ett", "ETTh2.csv"))], domain="energy"),
    ]
    profile = Profile(storage={"root": str(tmp_path)}, ingest=IngestConfig(sources=sources))
    summaries = ingest_flow(profile)
    by_source = {s["source"]: s for s in summaries}
    assert by_source["m4_hourly_tsf"]["series"] == 414
    assert by_source["etth2"]["series"] == 7 and by_source["etth2"]["points"] == 7 * 17420
    assert open_version(by_source["etth2"]["version"]).manifest["stats"]["quarantined"] == 0
    again = ingest_flow(profile)
    assert all(s["reused"] for s in again)


def test_transient_outage_is_retried_and_bad_input_is_not(prefect_harness, tmp_path: Path) -> None:
    server = start_moto()
    gate = NetworkGate(server.port)
    try:
        make_bucket(server, "flaky-bucket")
        fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
        fs.pipe("flaky-bucket/in.csv", b"id,timestamp,value\n" + b"".join(
            f"a,2024-01-01 {h:02d}:00:00,{h}\n".encode() for h in range(24)))
        gate.close()  # the store is unreachable when the flow starts, and comes back 2 s later

        def bring_back() -> None:
            time.sleep(2.0)
            gate.open()

        threading.Thread(target=bring_back, daemon=True).start()
        source = SourceConfig(name="flaky", kind="long", paths=["s3://flaky-bucket/in.csv"], freq="h")
        profile = Profile(
            storage={"root": str(tmp_path / "root"), "options": gate.endpoint_options(server)},
            ingest=IngestConfig(sources=[source], retries=3, retry_delay_seconds=1.0),
        )
        t0 = time.monotonic()
        summaries = ingest_flow(profile)
        assert summaries[0]["series"] == 1 and summaries[0]["points"] == 24
        assert time.monotonic() - t0 > 2.0  # it really waited for the store to come back
    finally:
        gate.close()
        server.kill()

    bad = tmp_path / "bad.tsf"
    bad.write_text("@relation x\n@frequency daily\n@data\n1,2,x\n")
    profile = Profile(
        storage={"root": str(tmp_path / "root2")},
        ingest=IngestConfig(sources=[SourceConfig(name="bad", kind="tsf", paths=[str(bad)])], retries=3,
                            retry_delay_seconds=5.0),
    )
    t0 = time.monotonic()
    with pytest.raises(MalformedInputError, match="bad.tsf"):
        ingest_flow(profile)
    assert time.monotonic() - t0 < 5.0  # failed at once: bad input is never retried
    assert list_versions(str(tmp_path / "root2"), "corpus/bad") == []
