"""The distributed path end to end: Ray Data -> Ray Train (2 CPU workers, gloo) -> DeepSpeed ZeRO -> checkpoints.

One scenario, run once per module (a Ray Train run costs 30-60 s on 2 cores): a 2-worker run is started in a
subprocess and killed (driver and all) once a checkpoint exists, then rerun under the same name in this process.
(1) the run as a whole learns (loss falls with a margin), follows the schedule, and exports a backbone that
``from_pretrained`` loads and forecasts with; (2) the rerun resumed at the checkpoint's step, schedule position
and data position, and the metrics file reads as one run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from infra.storage import join
from training.config import PretrainConfig
from training.data import build_dataset, epoch_part_order, sine_series, write_sine_corpus
from training.forecast import forecast_median
from training.io import from_pretrained
from training.metrics import read_metrics, step_records
from training.model import FactoSTBackbone
from training.schedule import WSDSchedule
from training.trainer import ResumePoint, RunPaths, latest_checkpoint, pretrain

pytestmark = pytest.mark.slow

BASE = {
    "size": "minuscule", "batch_size": 16, "lr": 3e-3, "context_length": 256, "max_horizon": 64,
    "num_workers": 2, "zero_stage": 1, "warmup_steps": 3, "decay_share": 0.3, "dropout": 0.0, "log_every": 5,
    "data": {"windows_per_sample": 4},
}


RUNNER = textwrap.dedent(
    """
    import json, sys
    from training.config import PretrainConfig
    from training.trainer import pretrain
    corpus, out, name, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    print(pretrain(corpus, PretrainConfig.model_validate(cfg), out, run_name=name, progress=True).checkpoint_url)
    """
)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run we started: its process group and every descendant (Ray's own processes start their
    own sessions), each by pid."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


@dataclass(frozen=True)
class Scenario:
    cfg: PretrainConfig
    corpus: str
    out: str
    paths: RunPaths
    checkpoint: ResumePoint  # the one that existed when the first run was killed
    killed_at: int  # last step the killed run logged
    final_url: str


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = write_sine_corpus(str(tmp / "store"), n_series=64, length=512, seed=0).url
    cfg = PretrainConfig(**BASE, steps=40, checkpoint_every=10)
    out = str(tmp / "out")
    paths = RunPaths.make(out, "resumable")
    script = tmp / "runner.py"
    script.write_text(RUNNER)
    log_path = tmp / "first_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), corpus, out, "resumable", cfg.model_dump_json()],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 240
            checkpoint = None
            while time.monotonic() < deadline and proc.poll() is None:
                checkpoint = latest_checkpoint(paths, None)
                if checkpoint is not None:
                    break
                time.sleep(0.2)
        finally:
            alive = proc.poll() is None
            _kill_tree(proc)
    assert checkpoint is not None and alive, log_path.read_text()[-3000:]
    assert not Path(paths.final_url).exists()
    killed_at = max(r["step"] for r in step_records(read_metrics(paths.metrics_url)))
    url = pretrain(corpus, cfg, out, run_name="resumable", progress=False).checkpoint_url
    return Scenario(cfg, corpus, out, paths, checkpoint, killed_at, url)


def test_two_worker_deepspeed_run_learns_and_exports(killed_and_resumed: Scenario) -> None:
    sc = killed_and_resumed
    cfg, paths, url = sc.cfg, sc.paths, sc.final_url
    assert url == paths.final_url == join(sc.out, "checkpoints", "resumable", "final")

    records = step_records(read_metrics(paths.metrics_url))
    assert [r["step"] for r in records] == list(range(1, cfg.steps + 1))
    schedule = WSDSchedule.from_config(cfg)
    assert [r["lr"] for r in records] == pytest.approx([schedule(s) for s in range(cfg.steps)])
    first, last = np.mean([r["loss"] for r in records[:5]]), np.mean([r["loss"] for r in records[-5:]])
    assert last < 0.6 * first, (first, last)
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in records)
    assert Path(paths.loss_curve_url).read_bytes()[:4] == b"\x89PNG"
    assert json.loads(Path(paths.config_url).read_text())["config"]["num_workers"] == 2

    # the last Ray Train checkpoint holds both ranks' ZeRO shards, the train state and the model
    final = latest_checkpoint(paths, None)
    assert final is not None and final.step == cfg.steps
    ckpt = Path(paths.ray_run_url) / final.checkpoint_dir
    shards = sorted(p.name for p in (ckpt / "ds").iterdir())
    assert "mp_rank_00_model_states.pt" in shards and sum("optim_states" in s for s in shards) == 2
    assert json.loads((ckpt / "train_state.json").read_text())["step"] == cfg.steps

    model = from_pretrained(url)
    assert model.num_parameters() == cfg.backbone_config().expected_num_parameters()
    values, _ = sine_series(8, 320, seed=99)
    pred = forecast_median(model, values[:, :256], 40)
    assert pred.shape == (8, 40) and np.isfinite(pred).all()
    # the export is the checkpoint's model, and it is trained (not the seed's initial weights)
    np.testing.assert_array_equal(forecast_median(from_pretrained(str(ckpt / "model")), values[:, :256], 40), pred)
    torch.manual_seed(cfg.seed)
    fresh = FactoSTBackbone(cfg.backbone_config())
    assert not torch.equal(fresh.head.down.weight, model.head.down.weight)

    from pipelines.pretrain import run_summary

    summary = run_summary(url)
    assert summary["steps"] == cfg.steps and summary["run"] == "resumable"
    assert summary["final loss (mean of last 10)"] == pytest.approx(np.mean([r["loss"] for r in records[-10:]]))

    # a finished run is not trained again; a different config under the same name is refused
    t0 = time.monotonic()
    assert pretrain(sc.corpus, cfg, sc.out, run_name="resumable", progress=False).checkpoint_url == url
    assert time.monotonic() - t0 < 5
    with pytest.raises(ValueError, match=r"different config \(field\(s\) \['lr'\]\)"):
        pretrain(sc.corpus, cfg.model_copy(update={"lr": 1e-3}), sc.out, run_name="resumable", progress=False)


def test_killed_run_resumes_at_checkpoint_step_schedule_and_data(killed_and_resumed: Scenario) -> None:
    sc = killed_and_resumed
    cfg, checkpoint = sc.cfg, sc.checkpoint
    assert checkpoint.step % cfg.checkpoint_every == 0 and checkpoint.step <= sc.killed_at < cfg.steps
    records = read_metrics(sc.paths.metrics_url)
    assert [r for r in records if r.get("event") == "resume"] == [{"event": "resume", "step": checkpoint.step}]
    steps = step_records(records)
    assert [r["step"] for r in steps] == list(range(1, cfg.steps + 1))  # continues; no restart at 0, no duplicate
    after = steps[checkpoint.step]  # the first update of the resumed run
    assert records.index(after) == records.index({"event": "resume", "step": checkpoint.step}) + 1
    assert after["step"] == checkpoint.step + 1
    assert after["lr"] == pytest.approx(WSDSchedule.from_config(cfg)(checkpoint.step))
    assert after["epoch"] >= checkpoint.position.epoch
    # the weights and optimizer were restored: the loss goes on from its level, far below a fresh start's
    start = np.mean([r["loss"] for r in steps[:5]])
    resumed = np.mean([r["loss"] for r in steps[checkpoint.step : checkpoint.step + 5]])
    assert resumed < 0.75 * start, (resumed, start)
    # and the data position moved on from the one resumed from
    final = latest_checkpoint(sc.paths, None)
    assert final is not None
    assert (final.position.epoch, final.position.windows_into_epoch) > (
        checkpoint.position.epoch, checkpoint.position.windows_into_epoch)


def test_prefect_flow_returns_the_finished_run(killed_and_resumed: Scenario, prefect_harness: None) -> None:
    """The flow wrapper: a finished run is found again (no training) and its summary artifact is written."""
    from prefect.client.orchestration import get_client

    from pipelines.pretrain import pretrain_flow

    sc = killed_and_resumed
    assert pretrain_flow(sc.corpus, sc.cfg, sc.out, run_name="resumable", progress=False).checkpoint_url == sc.final_url

    async def artifact() -> str:
        async with get_client() as client:
            found = await client.read_latest_artifacts()
            return next(a.data for a in found if a.key == "pretrain-summary")

    import asyncio

    assert "resumable" in asyncio.run(artifact())


def test_corpus_and_checkpoints_on_s3(s3_bucket: tuple[str, dict]) -> None:
    """The cluster layout: corpus read from S3 by Ray Data (pyarrow's S3 client), Ray Train checkpoints from both
    ranks merged on S3, metrics rewritten on S3, the final backbone exported there."""
    import s3fs

    root, so = s3_bucket
    corpus = write_sine_corpus(f"{root}/store", n_series=32, length=400, storage_options=so).url
    cfg = PretrainConfig(**{**BASE, "log_every": 2}, steps=8, checkpoint_every=4)
    url = pretrain(corpus, cfg, f"{root}/out", run_name="s3", storage_options=so, progress=False).checkpoint_url
    paths = RunPaths.make(f"{root}/out", "s3")
    assert url == paths.final_url and url.startswith("s3://")
    assert from_pretrained(url, so).num_parameters() == cfg.backbone_config().expected_num_parameters()
    assert [r["step"] for r in step_records(read_metrics(paths.metrics_url, so))] == list(range(1, 9))
    final = latest_checkpoint(paths, so)
    assert final is not None and final.step == 8
    fs = s3fs.S3FileSystem(**so, skip_instance_cache=True)
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(f"{paths.ray_run_url}/{final.checkpoint_dir}/ds")]
    assert sum("optim_states" in n for n in names) == 2
    assert fs.exists(paths.loss_curve_url)


def test_stream_delivers_the_epochs_in_order(tmp_path: Path) -> None:
    """Through Ray Data as the trainer reads it (ordered streaming split): epoch by epoch from the start epoch,
    every row once per epoch, the parts of each epoch in that epoch's seeded order."""
    import ray.data

    from infra.ray_runtime import ensure_ray, shutdown_ray
    from infra.versions import open_version

    version = open_version(write_sine_corpus(str(tmp_path), n_series=40, length=300, part_max_rows=10).url)
    cfg = PretrainConfig(**{**BASE, "num_workers": 1, "steps": 10, "data": {"map_batch_rows": 4}})
    handle = ensure_ray(None, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        (shard,) = build_dataset(version, cfg, 2, 4).streaming_split(1, equal=True)
        batches = list(shard.iter_batches(batch_size=7, batch_format="numpy"))
    finally:
        shutdown_ray(handle)
    epochs = np.concatenate([b["epoch"] for b in batches])
    ids = np.concatenate([b["sample_id"] for b in batches])
    assert epochs.tolist() == sorted(epochs.tolist()) and sorted(set(epochs.tolist())) == [2, 3, 4, 5]
    for epoch in (2, 3, 4, 5):
        first_ids = ids[epochs == epoch][::10] // 10  # sample ids 0..39 in parts of 10 rows: id // 10 = part
        assert first_ids.tolist() == epoch_part_order(4, cfg.seed, epoch, shuffle=True)
        assert sorted(ids[epochs == epoch].tolist()) == list(range(40))
