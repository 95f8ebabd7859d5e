"""The pretraining stage's named steps, each on its own: the run layout, the step logger, the worker start."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.config import PretrainConfig
from training.data import DataPosition
from training.loop import LoopSettings, StepLogger, StepResult, worker_start
from training.metrics import MetricsWriter, read_metrics, step_records
from training.schedule import WSDSchedule
from training.trainer import PretrainResult, RunPaths


@pytest.mark.parametrize("out_root", ["/data/out", "s3://bucket/prefix/out", "relative/out"])
def test_run_paths_from_the_final_checkpoint_are_the_run_s_paths(out_root: str) -> None:
    made = RunPaths.make(out_root, "utp-small-abc")
    assert made.final_url == f"{out_root}/checkpoints/utp-small-abc/final"
    assert RunPaths.from_checkpoint(made.final_url) == made
    assert RunPaths.from_checkpoint(made.final_url + "/") == made
    result = PretrainResult(made.final_url, "utp-small-abc", made, trained=True)
    assert result.metrics_url == f"{out_root}/runs/pretrain/utp-small-abc/metrics.jsonl"
    assert result.run_url == f"{out_root}/runs/pretrain/utp-small-abc"


@pytest.mark.parametrize("url", ["/data/out/checkpoints/r1/model", "/data/out/other/r1/final", "final",
                                 "checkpoints/r1/final"])
def test_run_paths_refuse_a_url_that_is_no_final_checkpoint(url: str) -> None:
    with pytest.raises(ValueError, match="not a pretraining run's final checkpoint"):
        RunPaths.from_checkpoint(url)


def _result(step: int, wait: float, took: float) -> StepResult:
    return StepResult(step=step, loss=1.0 / step, lr=1e-3, future_patches=2, step_time_s=took, data_wait_s=wait,
                      samples=8, tokens=8 * 20, epoch=0)


def test_step_logger_writes_every_step_flushes_every_log_every_and_warns_on_stalls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = PretrainConfig(size="minuscule", steps=6, log_every=2, batch_size=8, data={"stall_warn_ratio": 0.5})
    url = str(tmp_path / "metrics.jsonl")
    writer = MetricsWriter(url)
    steps_log = StepLogger(writer, cfg, start_step=0)
    with caplog.at_level(logging.WARNING, logger="training.loop"):
        records = [steps_log.record(_result(1, 0.9, 1.0)), steps_log.record(_result(2, 0.9, 1.0))]
        assert [r["step"] for r in step_records(read_metrics(url))] == [1, 2]  # flushed at log_every
        assert not caplog.records  # the first window is never judged (the pipeline starts up in it)
        steps_log.record(_result(3, 0.9, 1.0))
        assert [r["step"] for r in step_records(read_metrics(url))] == [1, 2]  # not flushed between
        steps_log.record(_result(4, 0.9, 1.0))
    assert [r.getMessage() for r in caplog.records] == [
        "data loader stalls training: 90% of step time spent waiting for batches"]
    assert (steps_log.window_wait, steps_log.window_time) == (0.0, 0.0)
    assert records[1]["loss"] == 0.5 and records[1]["samples_per_s"] == 8.0 and records[1]["tokens_per_s"] == 160.0
    writer.close()
    quiet = StepLogger(None, cfg, start_step=0)  # ranks > 0: records for their checkpoints, no file
    assert quiet.record(_result(1, 0.2, 1.0))["step"] == 1 and quiet.window_wait == 0.2


class _Checkpoint:
    """What ``ray.train.get_checkpoint()`` gives a worker: a folder it can open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.folder)


def test_worker_start_fresh_and_from_a_checkpoint(tmp_path: Path) -> None:
    cfg = PretrainConfig(size="minuscule", steps=10, batch_size=8)
    schedule = WSDSchedule.from_config(cfg)
    settings = LoopSettings(metrics_url="", storage_options={}, dataset_start_epoch=1, run_name="r", launch_id="L")
    with contextlib.ExitStack() as stack:
        fresh = worker_start(None, settings, schedule, 0, 2, stack)
        assert (fresh.step, fresh.position, fresh.resumed, fresh.skip_first) == (0, DataPosition(1, 0), False, None)
        state = {"format": 1, "step": 4, "data": {"epoch": 2, "windows_into_epoch": 16}, "launch_id": "L",
                 "stream_windows": [20, 12]}
        (tmp_path / "train_state.json").write_text(json.dumps(state))
        resumed = worker_start(_Checkpoint(tmp_path), settings, schedule, 1, 2, stack)
        assert (resumed.step, resumed.position, resumed.skip_first) == (4, DataPosition(2, 16), 12)
        assert resumed.resumed and resumed.directory == str(tmp_path)
        other_launch = LoopSettings(**{**settings.__dict__, "dataset_start_epoch": 3, "launch_id": "M"})
        moved = worker_start(_Checkpoint(tmp_path), other_launch, schedule, 1, 2, stack)
        assert (moved.position, moved.skip_first) == (DataPosition(3, 0), None)
