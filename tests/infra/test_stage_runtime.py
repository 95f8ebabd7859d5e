"""The stage runtime on a real (in-process, local) Ray: order, failures, transient retries, BLAS pinning, tally."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.ray_runtime import check_reachable, ensure_ray
from infra.stage_runtime import StageRun, StageWorkError, collect_units, run_units
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> None:
    ensure_ray(num_cpus=4)


def slow_square(x: int) -> int:
    time.sleep(0.05 * (5 - x))  # later units finish first
    return x * x


def test_results_come_back_in_unit_order_and_are_tallied_per_node() -> None:
    import ray

    results, tally = collect_units(slow_square, list(range(6)), stage="squares", max_in_flight=6, progress=False)
    assert results == [0, 1, 4, 9, 16, 25]
    assert tally.node_counts() == {ray.get_runtime_context().get_node_id(): 6}
    assert tally.total == 6 and tally.transient_retries == 0


def mark_then_fail_on_zero(args: tuple[int, str]) -> int:
    i, folder = args
    Path(folder, f"ran-{i}").touch()
    if i == 0:
        raise ValueError("unit zero is bad input")
    time.sleep(0.5)
    return i


def test_a_failing_unit_is_named_and_the_queued_units_never_run(tmp_path: Path) -> None:
    units = [(i, str(tmp_path)) for i in range(40)]
    with pytest.raises(StageWorkError, match=r"^demo: file-0\.csv failed: ValueError: unit zero is bad input$"):
        list(run_units(mark_then_fail_on_zero, units, stage="demo", describe=lambda i, _u: f"file-{i}.csv",
                       max_in_flight=2, progress=False))
    assert len(list(tmp_path.glob("ran-*"))) < 10


def flaky(folder: str) -> str:
    """Fails with a connection error the first time it runs, then succeeds."""
    marker = Path(folder, "attempted")
    if not marker.exists():
        marker.touch()
        raise ConnectionError("connection reset by peer")
    return "ok"


def test_a_transient_error_is_retried_in_place(tmp_path: Path) -> None:
    tally: StageRun[str] = StageRun("flaky", 1)
    assert list(run_units(flaky, [str(tmp_path)], stage="flaky", progress=False, tally=tally)) == ["ok"]
    assert tally.transient_retries == 1


def not_transient(folder: str) -> str:
    Path(folder, f"attempt-{time.monotonic_ns()}").touch()
    raise FileNotFoundError("input gone")


def test_a_missing_file_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(StageWorkError, match="FileNotFoundError: input gone"):
        list(run_units(not_transient, [str(tmp_path)], stage="gone", progress=False))
    assert len(list(tmp_path.glob("attempt-*"))) == 1


def blas_threads(_unit: int) -> int:
    from threadpoolctl import threadpool_info

    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_every_unit_runs_with_one_blas_thread() -> None:
    assert set(run_units(blas_threads, list(range(4)), stage="blas", progress=False)) == {1}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_address_fails_in_seconds_naming_it() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at '{address}'"):
        check_reachable(address)
    assert time.monotonic() - t0 < 6
    with pytest.raises(ValueError, match="expected host:port"):
        check_reachable("not-an-address")


def test_the_refresh_command_fails_fast_on_an_unreachable_cluster(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    factost = str(Path(sys.executable).parent / "factost")
    t0 = time.monotonic()
    proc = subprocess.run(
        [factost, "run", "refresh", "--set", f"ray.address={address}", "--set", f"storage.root={tmp_path}"],
        cwd=PROJECT_ROOT, env={**os.environ, "RAY_ADDRESS": ""}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert address in proc.stderr
    assert time.monotonic() - t0 < 60  # the CLI's own start-up included; the reach check itself takes < 6 s
    assert not (tmp_path / "training_corpus").exists()
