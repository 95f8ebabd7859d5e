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
    assert nightly["concurrency_limit"] == 1  # overlapping nightly refreshes wait for each other
    assert all(d["work_pool_name"] == "factost-process" for d in deployments.values())
