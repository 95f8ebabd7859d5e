"""Credentials are never written anywhere: not under the storage root, not in Prefect's database (flow-run
parameters, logs, artifacts), not in Ray's session logs, while the runs really read and write S3 with them.

Distinctive credential values are given the standard way (the environment) to the one-click job and a refresh
on moto's S3 server, and in plain text in a profile file to a second refresh; afterwards every byte of each of
those places is searched for them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import s3fs
import yaml
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, get_current_settings, temporary_settings

from infra.versions import list_versions, read_table
from pipelines.one_click import pretrain_then_adapt_flow
from pipelines.profile import load_profile
from pipelines.refresh import corpus_refresh_flow
from tests.integration.tiny_profile import tiny_profile, write_long_csv
from tests.s3_server import make_bucket

pytestmark = pytest.mark.slow
ENV_KEY, ENV_SECRET = "AKIAENVKEY7Q4ZX9", "envSecretValue-9f3c2a7b1d"
FILE_KEY, FILE_SECRET = "AKIAFILEKEY3M8WQ", "fileSecretValue-4e6d8c0a2b"


def occurrences(blob: bytes, secrets: tuple[str, ...]) -> list[str]:
    return [s for s in secrets if s.encode() in blob]


def scan_store(root: str, endpoint: str, secrets: tuple[str, ...]) -> dict[str, list[str]]:
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint, skip_instance_cache=True)
    objects = fs.find(root.removeprefix("s3://"))
    assert objects, "the run wrote nothing to S3"
    return {o: found for o in objects if (found := occurrences(fs.cat_file(o), secrets))}


def scan_files(folder: Path, secrets: tuple[str, ...]) -> dict[str, list[str]]:
    hits = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                blob = path.read_bytes()
            except OSError:  # sockets, files removed meanwhile
                continue
            if found := occurrences(blob, secrets):
                hits[str(path)] = found
    return hits


def prefect_database() -> Path:
    url = get_current_settings().server.database.connection_url.get_secret_value()
    return Path(url.split(":///", 1)[1])


def scan_prefect(secrets: tuple[str, ...]) -> dict[str, list[str]]:
    """The SQLite database behind the API (parameters, logs, artifacts, states), WAL included."""
    db = prefect_database()
    files = [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    assert files and db.stat().st_size > 0
    return {str(p): found for p in files if (found := occurrences(p.read_bytes(), secrets))}


async def prefect_records() -> tuple[int, int, int]:
    """How many flow runs, logs and artifacts the database holds: the scan covered real records."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (len(await client.read_flow_runs()), len(await client.read_logs()),
                len(await client.read_artifacts()))


def upload_source(fs: s3fs.S3FileSystem, bucket: str, tmp: Path) -> str:
    write_long_csv(tmp / "sensors.csv", n_series=4, length=300, seed=0)
    fs.put(str(tmp / "sensors.csv"), f"{bucket}/raw/sensors.csv")
    return f"s3://{bucket}/raw/sensors.csv"


def test_credentials_never_persist(s3_server, prefect_harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    import asyncio

    bucket = "secrets-scan"
    make_bucket(s3_server, bucket)
    admin = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    source = upload_source(admin, bucket, tmp_path)
    monkeypatch.setattr("infra.storage._SECRET_OPTIONS", {})
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)  # the standard chain, as on a cluster
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    sources = [{"name": "sensors", "kind": "long", "paths": [source], "freq": "h"}]
    profile = tiny_profile(tmp_path, sources)
    profile["storage"] = {"root": f"s3://{bucket}/env", "options": {"endpoint_url": s3_server.endpoint}}

    with temporary_settings({PREFECT_LOGGING_TO_API_ENABLED: True}):
        result = pretrain_then_adapt_flow(profile)
        refreshed = corpus_refresh_flow(profile)

        plain = dict(profile, storage={"root": f"s3://{bucket}/plain", "options": {
            "endpoint_url": s3_server.endpoint, "key": FILE_KEY, "secret": FILE_SECRET}})
        path = tmp_path / "plain.yaml"
        path.write_text(yaml.safe_dump(plain))
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        from_file = corpus_refresh_flow(load_profile(path))

    assert result.status == "ok" and refreshed.training_corpus["reused"]
    assert read_table(list_versions(f"s3://{bucket}/env", "training_corpus")[0]).num_rows == 240
    assert from_file.training_corpus["version"].startswith(f"s3://{bucket}/plain/")
    assert os.environ["AWS_ACCESS_KEY_ID"] == FILE_KEY  # the plain-text profile's key, resolved via the chain

    secrets = (ENV_KEY, ENV_SECRET, FILE_KEY, FILE_SECRET)
    assert scan_store(f"s3://{bucket}/env", s3_server.endpoint, secrets) == {}
    assert scan_store(f"s3://{bucket}/plain", s3_server.endpoint, secrets) == {}
    flow_runs, logs, artifacts = asyncio.run(prefect_records())
    assert flow_runs >= 3 and logs > 0 and artifacts >= 3
    assert scan_prefect(secrets) == {}
    ray_logs = Path(os.environ["RAY_TMPDIR"])
    assert any(ray_logs.rglob("*.log")) or any(ray_logs.rglob("*.out"))
    assert scan_files(ray_logs, secrets) == {}
    captured = capfd.readouterr()
    assert occurrences((captured.out + captured.err).encode(), secrets) == []
