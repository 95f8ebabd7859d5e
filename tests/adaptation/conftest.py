"""Fixtures shared by the STA tests."""

from __future__ import annotations

import pytest
import torch

from training.io import save_pretrained
from training.model import BackboneConfig, FactoSTBackbone


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A freshly initialised minuscule backbone saved as a checkpoint (what the harness loads by URL)."""
    torch.manual_seed(0)
    url = str(tmp_path_factory.mktemp("ckpt") / "backbone")
    save_pretrained(FactoSTBackbone(BackboneConfig.from_size("minuscule")), url)
    return url
