"""A Ray Train worker killed mid-run: Ray Train replaces it (``max_failures``), the new worker group resumes from
the last checkpoint inside the same ``pretrain`` call, and the run ends at its planned step with the restart on
record.

The killed process is rank 0 (the pid its start event names): the worker that writes ``metrics.jsonl`` and exports
the model, so the file it left behind (lines past the checkpoint, maybe a torn last line) is what the new attempt
must clean up. The steps the dead attempt had done past the checkpoint are computed again; with the weights, the
optimizer state, the schedule and the data position restored they give the same losses as the first time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.pretrain import run_summary
from tests.training.test_train_ray import BASE
from training.config import PretrainConfig
from training.data import sine_series, write_sine_corpus
from training.forecast import forecast_median
from training.io import from_pretrained
from training.metrics import count_restarts, read_metrics, step_records
from training.schedule import WSDSchedule
from training.trainer import RunPaths, latest_checkpoint, pretrain

pytestmark = pytest.mark.slow

CFG = PretrainConfig(**{**BASE, "log_every": 1}, steps=30, checkpoint_every=10, max_failures=1)
KILL_PAST = 3  # steps logged past the first checkpoint before the kill: lines the restart must drop and redo


@dataclass
class Kill:
    """What the killer thread saw when it struck (or why it never did)."""

    pid: int | None = None
    checkpoint_step: int | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl at the kill
    error: str | None = None


def _kill_rank0_past_checkpoint(paths: RunPaths, kill: Kill, deadline_s: float = 150.0) -> None:
    """Wait for a registered checkpoint and ``KILL_PAST`` logged steps beyond it, then SIGKILL rank 0."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ckpt = latest_checkpoint(paths, None)
        records = read_metrics(paths.metrics_url)
        steps = [r["step"] for r in step_records(records)]
        starts = [r for r in records if r.get("event") == "start"]
        if ckpt is not None and steps and ckpt.step + KILL_PAST <= steps[-1] < CFG.steps and len(starts) == 1:
            kill.pid, kill.checkpoint_step, kill.seen = int(starts[0]["pid"]), ckpt.step, records
            os.kill(kill.pid, signal.SIGKILL)
            return
        time.sleep(0.05)
    kill.error = "no checkpoint and later steps within the deadline"


def test_killed_worker_is_restarted_and_the_run_completes(tmp_path: Path) -> None:
    corpus = write_sine_corpus(str(tmp_path / "store"), n_series=64, length=512, seed=0).url
    out = str(tmp_path / "out")
    paths = RunPaths.make(out, "restarted")
    kill = Kill()
    killer = threading.Thread(target=_kill_rank0_past_checkpoint, args=(paths, kill), daemon=True)
    killer.start()
    url = pretrain(corpus, CFG, out, run_name="restarted", progress=False).checkpoint_url
    killer.join(timeout=5)
    assert kill.error is None and kill.pid is not None, kill.error
    ckpt = kill.checkpoint_step
    assert ckpt is not None and ckpt % CFG.checkpoint_every == 0

    records = read_metrics(paths.metrics_url)
    steps = step_records(records)
    # one line per step, 1..steps: the dead attempt's lines past the checkpoint were dropped, then redone
    assert [r["step"] for r in steps] == list(range(1, CFG.steps + 1))
    starts = [r for r in records if r.get("event") == "start"]
    assert [(s["attempt"], s["restarts"], s["step"]) for s in starts] == [(1, 0, 0), (2, 1, ckpt)]
    assert starts[0]["launch"] == starts[1]["launch"] and starts[1]["pid"] != kill.pid
    assert [r for r in records if r.get("event") == "resume"] == [{"event": "resume", "step": ckpt}]
    assert [(r["attempt"], r["restarts"]) for r in steps] == [(1, 0)] * ckpt + [(2, 1)] * (CFG.steps - ckpt)
    assert count_restarts(records) == 1 and run_summary(url)["restarts"] == 1

    # the restart continued the schedule, the weights, the optimizer and each worker's data stream: the steps it
    # redid are the dead attempt's, to the last bit on CPU
    schedule = WSDSchedule.from_config(CFG)
    assert [r["lr"] for r in steps] == pytest.approx([schedule(s) for s in range(CFG.steps)])
    seen = {r["step"]: r for r in step_records(kill.seen) if r["step"] > ckpt}
    assert len(seen) >= KILL_PAST
    redone = [steps[s - 1] for s in seen]
    assert [r["future_patches"] for r in redone] == [r["future_patches"] for r in seen.values()]
    np.testing.assert_allclose([r["loss"] for r in redone], [r["loss"] for r in seen.values()], rtol=1e-6)
    first, last = np.mean([r["loss"] for r in steps[:5]]), np.mean([r["loss"] for r in steps[-5:]])
    assert last < 0.6 * first, (first, last)

    final = latest_checkpoint(paths, None)
    assert final is not None and final.step == CFG.steps and url == paths.final_url
    model = from_pretrained(url)
    assert model.num_parameters() == CFG.backbone_config().expected_num_parameters()
    values, _ = sine_series(4, 320, seed=99)
    assert np.isfinite(forecast_median(model, values[:, :256], 32)).all()
