"""Session-wide test setup: isolated Prefect home, Ray temp dir and the shared real-data folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

_session_tmp = Path(tempfile.mkdtemp(prefix="factost-tests-"))
os.environ["PREFECT_HOME"] = str(_session_tmp / "prefect")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(PROJECT_ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("RAY_TMPDIR", str(Path(tempfile.gettempdir()) / "factost-ray"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def shared_data(*parts: str) -> Path:
    """A path in ../shared/data, or skip the test with the reason when it is absent (a user's fresh clone)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared/data exists only on developer and CI machines)")
    return path


@pytest.fixture
def shared_data_path():
    return shared_data
