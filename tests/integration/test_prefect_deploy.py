"""`prefect deploy --all` accepts prefect.yaml, against a real local Prefect server started by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.s3_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture
def prefect_server(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_ENABLED": "false"}
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("prefect server exited") from None
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("prefect server did not start in 120 s")
    yield env
    proc.terminate()
    proc.wait(timeout=30)


def _prefect(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, "--no-prompt", *args], env=env, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_deploy_all_registers_the_three_jobs_with_the_nightly_schedule(prefect_server) -> None:
    env = {**prefect_server, "FACTOST_HOME": str(PROJECT_ROOT)}
    pool = _prefect(env, "work-pool", "create", "factost-process", "--type", "process")
    assert pool.returncode == 0, (pool.stdout + pool.stderr)[-3000:]
    deployed = _prefect(env, "deploy", "--all")
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-3000:]

    api = env["PREFECT_API_URL"]
    req = urllib.request.Request(f"{api}/deployments/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    deployments = {d["name"]: d for d in json.loads(urllib.request.urlopen(req, timeout=30).read())}
    assert set(deployments) == {"nightly-corpus-refresh", "pretrain-then-adapt", "rerun"}
    nightly = deployments["nightly-corpus-refresh"]
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["parameters"] == {"profile": "local"}
    # overlapping nightly refreshes wait for each other (Prefect keeps the limit as a global concurrency limit)
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert all(d["work_pool_name"] == "factost-process" for d in deployments.values())


def _api(env: dict[str, str], path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", data=json.dumps(body or {}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def _trigger_and_wait(env: dict[str, str], profile: Path, timeout: float = 600) -> dict:
    """`prefect deployment run` as the schedule would start it; returns the flow run once it is final."""
    before = {r["id"] for r in _api(env, "flow_runs/filter")}
    started = _prefect(env, "deployment", "run", "corpus-refresh/nightly-corpus-refresh",
                       "--param", f"profile={profile}")
    assert started.returncode == 0, (started.stdout + started.stderr)[-3000:]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in _api(env, "flow_runs/filter") if r["id"] not in before]
        if runs and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"the nightly refresh did not finish in {timeout:.0f} s")


def _flow_run_logs(env: dict[str, str], flow_run_id: str) -> list:
    """The flow run's log records, read back through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as c:
        return c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))


@pytest.mark.slow
def test_a_process_worker_runs_the_nightly_refresh_as_scheduled(prefect_server, tmp_path: Path) -> None:
    import yaml

    from infra.versions import list_versions
    from tests.integration.tiny_profile import tiny_profile, write_long_csv

    env = {**prefect_server, "FACTOST_HOME": str(PROJECT_ROOT), "PREFECT_LOGGING_TO_API_ENABLED": "true",
           "PREFECT_WORKER_QUERY_SECONDS": "2"}
    data = tmp_path / "sensors.csv"
    write_long_csv(data, n_series=3, length=200, seed=0)
    with data.open("a") as fh:  # one series too short for ingest.min_length: its quarantine is logged
        fh.writelines(f"short,2024-01-01 {h:02d}:00:00,{h}.0\n" for h in range(4))
    root = tmp_path / "root"
    profile = tmp_path / "tiny.yaml"
    sources = [{"name": "sensors", "kind": "long", "paths": [str(data)], "freq": "h"}]
    profile.write_text(yaml.safe_dump(tiny_profile(root, sources)))

    # as the README says: create the pool, deploy everything, start a worker
    assert _prefect(env, "work-pool", "create", "factost-process", "--type", "process").returncode == 0
    deployed = _prefect(env, "deploy", "--all")
    assert deployed.returncode == 0, (deployed.stdout + deployed.stderr)[-3000:]
    nightly = next(d for d in _api(env, "deployments/filter") if d["name"] == "nightly-corpus-refresh")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert "`0 2 * * *`" in (PROJECT_ROOT / "README.md").read_text()  # the documented schedule
    log_file = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "factost-process"], env=env, cwd=tmp_path,
                              stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _trigger_and_wait(env, profile)
        assert first["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-5000:]
        published = list_versions(str(root), "training_corpus")
        assert len(published) == 1
        logs = _flow_run_logs(env, first["id"])
        quarantine = [r for r in logs if r.name == "corpus.ingest" and "quarantined" in r.message]
        assert quarantine and quarantine[0].level == 30, [(r.name, r.message) for r in logs][-20:]

        second = _trigger_and_wait(env, profile)
        assert second["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-5000:]
        assert [v.url for v in list_versions(str(root), "training_corpus")] == [published[0].url]
        assert len(list_versions(str(root), "corpus/sensors")) == 1
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
        log_file.close()
