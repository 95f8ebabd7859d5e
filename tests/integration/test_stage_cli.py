"""The stage commands as a user chains them: synth -> balance -> pretrain, each printing its result last."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infra.versions import open_version, read_table
from tests.integration.cli_helpers import last_line, run_factost
from training.forecast import forecast
from training.io import from_pretrained


def tensorboard_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of ``tag`` in the TensorBoard event files under ``logdir``, read by TensorBoard's reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars(tag)]


def metrics_losses(root: str, run_name: str) -> list[tuple[int, float]]:
    from training.metrics import read_metrics, step_records
    from training.trainer import RunPaths

    records = step_records(read_metrics(RunPaths.make(root, run_name).metrics_url))
    return [(r["step"], r["loss"]) for r in records]


@pytest.mark.slow
def test_synth_balance_pretrain_chain(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    synth = run_factost("synth", "--n", "150", "--length", "256", "--workers", "1", "--out", root)
    synth_url = last_line(synth.stdout)
    version = open_version(synth_url)
    assert version.num_rows == 150 and version.dataset == "kernelsynth"
    kernels = read_table(version).column("kernel").to_pylist()
    assert all(k for k in kernels)
    assert last_line(run_factost("synth", "--n", "150", "--length", "256", "--out", root).stdout) == synth_url

    balanced = run_factost("balance", "--corpus", synth_url, "--samples", "120", "--length", "256", "--out", root,
                           timeout=600)
    corpus_url = last_line(balanced.stdout)
    corpus = open_version(corpus_url)
    table = read_table(corpus)
    assert table.num_rows == 120
    assert {len(v) for v in table.column("values").to_pylist()} == {256}
    assert "balance_map.png" in corpus.manifest["files"]

    pretrained = run_factost(
        "pretrain", "--corpus", corpus_url, "--size", "minuscule", "--steps", "3", "--batch-size", "8",
        "--context", "64", "--horizon", "16", "--workers", "1", "--no-flow", "--out", root, timeout=600,
    )
    checkpoint = last_line(pretrained.stdout)
    assert tensorboard_scalars(Path(root) / "runs" / "pretrain" / Path(checkpoint).parent.name / "tensorboard",
                               "pretrain/loss") == metrics_losses(root, Path(checkpoint).parent.name)
    model = from_pretrained(checkpoint)
    assert model.num_parameters() == 2_510_192
    out = forecast(model, [np.sin(np.arange(100) / 4.0)], horizon=20)
    assert out.shape == (1, 20, 11) and np.isfinite(out).all()
