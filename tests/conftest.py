"""Test-run-wide setup: isolated Prefect home, Ray temp dir, the optional real data (``FACTOST_TEST_DATA``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.real_data import TEST_DATA_SETTING, real_data_root

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_session_tmp = Path(tempfile.mkdtemp(prefix="factost-tests-"))
os.environ["PREFECT_HOME"] = str(_session_tmp / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(PROJECT_ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir()) / "factost-ray"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NUMBA_CACHE_DIR", str(PROJECT_ROOT / ".cache" / "numba"))


def real_data(*parts: str) -> Path:
    """A file of the optional real data (``FACTOST_TEST_DATA``), or skip the test saying how to provide it."""
    path = real_data_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent: set {TEST_DATA_SETTING} to the folder that holds it")
    return path


@pytest.fixture
def real_data_path():
    return real_data


@pytest.fixture(scope="session")
def s3_server():
    """One moto server for the session; tests use distinct bucket names."""
    from tests.s3_server import start_moto

    server = start_moto()
    yield server
    server.kill()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the session's server; returns (root_url, storage_options)."""
    import re

    from tests.s3_server import make_bucket

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") or "bucket"
    make_bucket(s3_server, name)
    return f"s3://{name}/root", s3_server.storage_options


@pytest.fixture(scope="session")
def prefect_harness():
    """A throwaway Prefect API (SQLite under the session's PREFECT_HOME), started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly initialised minuscule backbone saved as a checkpoint (what the harness and `evaluate` load)."""
    import torch

    from training.io import save_pretrained
    from training.model import BackboneConfig, FactoSTBackbone

    torch.manual_seed(0)
    url = str(tmp_path_factory.mktemp("ckpt") / "backbone")
    save_pretrained(FactoSTBackbone(BackboneConfig.from_size("minuscule")), url)
    return url
