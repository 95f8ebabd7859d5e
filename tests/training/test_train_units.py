"""Pretraining pieces without Ray: config validation, window stream, batching/skip, metrics, storage mapping."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from infra.ray_runtime import local_num_cpus, pyarrow_filesystem
from training.config import PretrainConfig
from training.data import (
    DataPosition,
    ExactBatches,
    WindowSpec,
    corpus_rows,
    crop_windows,
    epoch_part_order,
    future_patches_for_step,
    open_corpus,
    planned_epochs,
    read_and_crop,
    window_acceptance,
    write_sine_corpus,
)
from training.deepspeed_config import build_ds_config, deepspeed_env_vars
from training.loop import LoopSettings, stream_skip
from training.metrics import MetricsWriter, count_restarts, loss_curve_png, read_metrics, step_records

SMALL = {"size": "minuscule", "steps": 20, "batch_size": 8, "context_length": 128, "max_horizon": 64}


# ---------------------------------------------------------------------------------------------- config (5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"batch_size": 10, "num_workers": 3}, "batch_size"),
        ({"precision": "bf16"}, "precision"),
        ({"zero_stage": 3}, "zero_stage"),
        ({"context_length": 100}, "context_length"),
        ({"context_length": 4096}, "context_length"),
        ({"max_horizon": 272}, "max_horizon"),
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"size": "huge"}, "size"),
        ({"warmup_steps": 15, "decay_share": 0.5}, "warmup_steps"),
        ({"l_min": 200}, "l_min"),
        ({"model_overrides": {"d_model": 100}}, "d_model"),
        ({"model_overrides": {"dropout": 0.2}}, "dropout"),
        ({"model_overrides": {"depth": 2}}, "depth"),
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"data": {"windows_per_sample": 0}}, "windows_per_sample"),
    ],
)
def test_bad_config_values_are_rejected_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        PretrainConfig(**{**SMALL, **overrides})
    assert field in str(info.value)


def test_config_derives_model_and_windows() -> None:
    cfg = PretrainConfig(**SMALL, num_workers=2, dropout=0.0)
    model = cfg.backbone_config()
    assert (model.d_model, model.num_layers, model.max_context, model.max_horizon, model.dropout) == (
        192, 3, 128, 64, 0.0)
    assert cfg.per_worker_batch == 4 and cfg.max_patches == 4
    assert cfg.window_config().context_length == 128
    ds = build_ds_config(cfg.model_copy(update={"zero_stage": 2}), world_size=2)
    assert ds["train_batch_size"] == 8 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["zero_optimization"]["stage"] == 2 and ds["gradient_clipping"] == 1.0
    assert not ds["bf16"]["enabled"]  # mixed precision is torch autocast, weights stay fp32
    with pytest.raises(ValueError, match="world_size=3"):
        build_ds_config(cfg, world_size=3)
    env = deepspeed_env_vars(use_gpu=False)
    assert env["DS_ACCELERATOR"] == "cpu" and "torch_extensions" in env["TORCH_EXTENSIONS_DIR"]
    assert "DS_ACCELERATOR" not in deepspeed_env_vars(use_gpu=True)


def test_local_ray_gets_more_logical_cpus_than_cores() -> None:
    assert local_num_cpus(2) == 4 and local_num_cpus(1) == 4 and local_num_cpus(16) == 32


# ---------------------------------------------------------------------------------------------- windows


def _rows(n: int = 6, length: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = np.sin(np.arange(length) / 5.0)[None, :] * rng.uniform(1, 3, (n, 1)) + rng.uniform(10, 20, (n, 1))
    values = values.astype(np.float32)
    values[0, 300:] = np.nan  # NaN padding of a shorter series
    values[1, :] = np.nan  # nothing observed: rejected
    return {"sample_id": np.arange(100, 100 + n, dtype=np.int64), "values": np.array(list(values), dtype=object)}


def test_crop_windows_is_a_pure_function_of_position() -> None:
    spec = WindowSpec.from_config(PretrainConfig(**SMALL, data={"windows_per_sample": 2}))
    a = crop_windows(_rows(), epoch=3, spec=spec)
    b = crop_windows(_rows(), epoch=3, spec=spec)
    c = crop_windows(_rows(), epoch=4, spec=spec)
    assert a["context"].shape == (10, 128) and a["target"].shape == (10, 64)  # 5 usable rows x 2 windows
    assert a["sample_id"].tolist() == [100, 100, 102, 102, 103, 103, 104, 104, 105, 105]
    assert set(a["epoch"].tolist()) == {3}
    np.testing.assert_array_equal(a["context"], b["context"])
    np.testing.assert_array_equal(a["target"], b["target"])
    assert not np.array_equal(np.nan_to_num(a["context"]), np.nan_to_num(c["context"]))
    # z-scored with the context's statistics (the rows sit at +10..+20), and the masked prefix is NaN
    observed = a["context"][np.isfinite(a["context"])]
    assert abs(float(observed.mean())) < 0.5 and np.isnan(a["context"][:, 0]).any()
    # one batch of rows at a time or all at once: the same windows (the rng does not depend on the batch)
    half = {k: v[3:] for k, v in _rows().items()}
    d = crop_windows(half, epoch=3, spec=spec)
    np.testing.assert_array_equal(d["context"], a["context"][4:])


def test_read_and_crop_yields_each_parts_windows_for_its_epoch(tmp_path) -> None:
    """A unit (epoch, part) reads that part and crops exactly what crop_windows gives its rows at that epoch,
    one block per map_batch_rows rows; parts are read in a seeded order of each epoch's own."""
    version = write_sine_corpus(str(tmp_path), n_series=20, length=200, part_max_rows=8)
    paths = [pyarrow_filesystem(u)[1] for u in version.part_urls]
    assert len(paths) == 3
    spec = WindowSpec.from_config(PretrainConfig(**SMALL))
    units = {"epoch": np.array([5, 2]), "part": np.array([1, 0])}
    blocks = list(read_and_crop(units, paths, None, spec, rows_per_block=3))
    assert [len(b["sample_id"]) for b in blocks] == [3, 3, 2, 3, 3, 2]  # parts of 8 rows in blocks of 3
    for part, epoch, got in ((1, 5, blocks[:3]), (0, 2, blocks[3:])):
        expected = crop_windows(corpus_rows(pq.read_table(paths[part])), epoch, spec)
        np.testing.assert_array_equal(np.concatenate([b["context"] for b in got]), expected["context"])
        assert set(np.concatenate([b["epoch"] for b in got]).tolist()) == {epoch}
    orders = [epoch_part_order(10, 0, e, shuffle=True) for e in range(4)]
    assert all(sorted(o) == list(range(10)) for o in orders) and len({tuple(o) for o in orders}) == 4
    assert orders[2] == epoch_part_order(10, 0, 2, shuffle=True) != epoch_part_order(10, 1, 2, shuffle=True)
    assert epoch_part_order(10, 0, 3, shuffle=False) == list(range(10))


def test_future_patches_are_drawn_per_step_and_reproducible() -> None:
    draws = [future_patches_for_step(0, s, 16) for s in range(200)]
    assert draws == [future_patches_for_step(0, s, 16) for s in range(200)]
    assert min(draws) == 1 and max(draws) == 16 and len(set(draws)) == 16
    assert draws != [future_patches_for_step(1, s, 16) for s in range(200)]


def _torch_batches(sizes: list[int], epochs: list[int]) -> list[dict[str, torch.Tensor]]:
    out, start = [], 0
    for n, e in zip(sizes, epochs, strict=True):
        ids = torch.arange(start, start + n)
        out.append({"sample_id": ids, "epoch": torch.full((n,), e, dtype=torch.int32),
                    "context": ids[:, None].float().repeat(1, 3)})
        start += n
    return out


def test_exact_batches_rechunk_and_skip_to_a_position() -> None:
    raw = _torch_batches([4, 4, 4, 4, 4], [0, 0, 1, 1, 1])
    plain = list(ExactBatches(iter(raw), 4))
    assert [b["sample_id"].tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11],
                                                       [12, 13, 14, 15], [16, 17, 18, 19]]
    it = ExactBatches(iter(raw), 3, skip_epoch=1, skip_rows=2)
    got = [b["sample_id"].tolist() for b in it]
    assert got == [[10, 11, 12], [13, 14, 15], [16, 17, 18]]  # epoch 0 and the first 2 rows of epoch 1 skipped
    assert torch.equal(next(iter(ExactBatches(iter(raw), 3, 1, 2)))["context"][:, 0], torch.tensor([10.0, 11, 12]))
    assert it.passed == {0: 8, 1: 11}  # windows passed per epoch (skipped ones included); 1 row left over


def test_exact_batches_skip_the_first_windows_of_the_stream_whatever_their_epoch() -> None:
    """A restarted worker replays its own stream: skipping its own count of windows lands on its next window."""
    raw = _torch_batches([4, 4, 4, 4, 4], [0, 1, 0, 1, 2])  # epochs interleaved, as Ray Data deals them
    it = ExactBatches(iter(raw), 3, skip_first=6)
    assert [b["sample_id"].tolist() for b in it] == [[6, 7, 8], [9, 10, 11], [12, 13, 14], [15, 16, 17]]
    assert it.passed == {0: 8, 1: 8, 2: 2} and sum(it.passed.values()) == 18  # 6 skipped + 12 served


def test_stream_skip_only_for_a_checkpoint_of_the_same_launch_and_world() -> None:
    settings = LoopSettings("m.jsonl", {}, 0, "run", launch_id="L1")
    state = {"launch_id": "L1", "stream_windows": [80, 72]}
    assert [stream_skip(state, settings, rank, 2) for rank in (0, 1)] == [80, 72]
    assert stream_skip({**state, "launch_id": "L0"}, settings, 0, 2) is None  # a rerun built a new dataset
    assert stream_skip(state, settings, 0, 4) is None  # another world size splits the stream otherwise
    assert stream_skip({"launch_id": "L1"}, settings, 0, 2) is None  # a checkpoint from before this field


def test_data_position_combines_workers() -> None:
    assert DataPosition.combine([{0: 128, 1: 10}, {0: 120}]) == DataPosition(0, 248)
    assert DataPosition.combine([{2: 5}, {2: 7}]) == DataPosition(2, 12)
    assert DataPosition.combine([{}, {}]) == DataPosition(0, 0)


def test_sine_corpus_acceptance_and_epoch_plan(tmp_path) -> None:
    version = write_sine_corpus(str(tmp_path), n_series=16, length=300, part_max_rows=8)
    assert len(version.part_urls) == 2 and open_corpus(version.url).num_rows == 16
    assert write_sine_corpus(str(tmp_path), n_series=16, length=300, part_max_rows=8).url == version.url
    cfg = PretrainConfig(**SMALL, data={"windows_per_sample": 2, "extra_epochs": 1})
    assert window_acceptance(version, cfg) == 1.0
    assert planned_epochs(16, 1.0, cfg, windows_needed=100) == 4 + 1  # 32 windows per epoch
    assert planned_epochs(16, 0.5, cfg, windows_needed=100) == 7 + 1
    with pytest.raises(ValueError, match="no usable window"):
        planned_epochs(16, 0.0, cfg, 100)
    sparse = _write_rows(tmp_path / "sparse", observed_share=0.3)  # 70% missing: under min_observed=0.5
    assert window_acceptance(sparse, cfg) == 0.0


def _write_rows(root, observed_share: float, n: int = 8, length: int = 300):
    import pyarrow as pa

    from infra.versions import VersionWriter

    rng = np.random.default_rng(0)
    values = np.sin(np.arange(length) / 4.0)[None, :].repeat(n, 0).astype(np.float32)
    values[rng.random(values.shape) > observed_share] = np.nan
    schema = pa.schema([("sample_id", pa.int64()), ("values", pa.list_(pa.float32()))])
    w = VersionWriter(str(root), "training_corpus", "v1", schema)
    w.write(pa.table({"sample_id": pa.array(np.arange(n), pa.int64()),
                      "values": pa.array(list(values), pa.list_(pa.float32()))}, schema=schema))
    return w.commit(config={}, inputs=[], code_version="t")


def test_open_corpus_rejects_a_table_without_values(tmp_path) -> None:
    import pyarrow as pa

    from infra.versions import VersionWriter

    w = VersionWriter(str(tmp_path), "training_corpus", "v1", pa.schema([("sample_id", pa.int64())]))
    w.write(pa.table({"sample_id": pa.array([1, 2], pa.int64())}))
    version = w.commit(config={}, inputs=[], code_version="t")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['values'\]"):
        open_corpus(version.url)


# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_writer_resume_drops_uncheckpointed_steps(tmp_path) -> None:
    url = str(tmp_path / "run" / "metrics.jsonl")
    w = MetricsWriter(url)
    for s in range(1, 6):
        w.append({"step": s, "loss": 1.0 / s, "lr": 0.1})
    w.close()
    w = MetricsWriter(url, resume_step=3)  # steps 4, 5 were not in the checkpoint: they are redone
    w.append({"step": 4, "loss": 0.3, "lr": 0.1})
    w.close()
    records = read_metrics(url)
    assert [r.get("event") for r in records] == [None, None, None, "resume", None]
    assert [r["step"] for r in step_records(records)] == [1, 2, 3, 4]
    assert step_records(records)[-1]["loss"] == 0.3
    with open(url, "a") as fh:
        fh.write('{"step": 5, "lo')  # a line torn by a kill
    assert len(read_metrics(url)) == 5
    png = loss_curve_png(records)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_writer_records_worker_restarts_apart_from_reruns(tmp_path) -> None:
    url = str(tmp_path / "run" / "metrics.jsonl")

    def attempt(launch: str, resume_step: int | None, steps: range) -> None:
        w = MetricsWriter(url, resume_step=resume_step, launch=launch)
        for s in steps:
            w.append({"step": s, "loss": 1.0})
        w.close()

    attempt("A", None, range(1, 3))  # killed before its first checkpoint
    attempt("A", None, range(1, 6))  # Ray Train restarts it: no checkpoint yet, so from step 0
    attempt("A", 4, range(5, 7))  # a worker dies again after the checkpoint at step 4; step 5 is redone
    attempt("B", 6, range(7, 9))  # the driver itself was rerun: a resume, not a restart
    records = read_metrics(url)
    starts = [(r["launch"], r["attempt"], r["restarts"], r["step"]) for r in records if r.get("event") == "start"]
    assert starts == [("A", 1, 0, 0), ("A", 2, 1, 0), ("A", 3, 2, 4), ("B", 1, 2, 6)]
    steps = step_records(records)
    assert [(r["step"], r["attempt"], r["restarts"]) for r in steps] == [
        (1, 2, 1), (2, 2, 1), (3, 2, 1), (4, 2, 1), (5, 3, 2), (6, 3, 2), (7, 1, 2), (8, 1, 2)]
    assert count_restarts(records) == 2


def test_cluster_profile_restarts_lost_workers_and_the_embedded_default_does_not() -> None:
    from pipelines.profile import load_profile

    assert load_profile("cluster").pretrain.max_failures == 3
    assert load_profile("local").pretrain.max_failures == PretrainConfig().max_failures == 0


def test_metrics_writer_on_s3_rewrites_the_object(s3_bucket) -> None:
    root, so = s3_bucket
    url = f"{root}/runs/metrics.jsonl"
    w = MetricsWriter(url, so)
    w.append({"step": 1, "loss": 2.0, "lr": 0.1})
    w.flush()
    assert [r["step"] for r in read_metrics(url, so)] == [1]
    w.append({"step": 2, "loss": 1.0, "lr": 0.1})
    w.close()
    w2 = MetricsWriter(url, so, resume_step=1)
    w2.close()
    assert [json.dumps(r, sort_keys=True) for r in read_metrics(url, so)][-1] == '{"event": "resume", "step": 1}'


# ---------------------------------------------------------------------------------------------- storage


def test_pyarrow_filesystem_maps_storage_urls(tmp_path, s3_bucket) -> None:
    fs, path = pyarrow_filesystem(str(tmp_path / "x"))
    assert fs is None and path == str(tmp_path / "x")
    root, so = s3_bucket
    version = write_sine_corpus(f"{root}/corpus", n_series=4, length=64, storage_options=so)
    fs, path = pyarrow_filesystem(version.part_urls[0], so)
    assert fs.type_name == "s3" and not path.startswith("s3://")
    table = pq.read_table(path, filesystem=fs)  # what Ray Data's read_parquet does with it
    assert table.num_rows == 4 and table.column("sample_id").to_pylist() == [0, 1, 2, 3]
    args = fs.__reduce__()[1][0]
    assert args["endpoint_override"] == so["endpoint_url"].split("://")[1] and args["scheme"] == "http"


# ---------------------------------------------------------------------------------------------- CLI wiring


def test_pretrain_command_config_mapping() -> None:
    from pipelines.pretrain import default_checkpoint_url
    from pipelines.profile import Profile
    from pipelines.settings import OverrideError, apply_overrides

    base = Profile(pretrain=PretrainConfig(**SMALL))
    cfg = apply_overrides(base, {"pretrain.steps": 50, "pretrain.num_workers": 2}).pretrain
    assert (cfg.steps, cfg.lr, cfg.num_workers, cfg.batch_size, cfg.size) == (50, base.pretrain.lr, 2, 8, "minuscule")
    with pytest.raises(OverrideError, match="pretrain.zero_stage=5"):
        apply_overrides(base, {"pretrain.zero_stage": 5})
    assert default_checkpoint_url("s3://b/root", "r1") == "s3://b/root/checkpoints/r1/final"


def test_cpu_deepspeed_builds_no_shared_memory_op() -> None:
    """Without the hook, init_distributed on the CPU compiles the shm comm op (~90 s on 2 cores)."""
    import time

    from deepspeed.comm.torch import build_shm_op

    from training.deepspeed_config import prepare_deepspeed_environment

    prepare_deepspeed_environment(use_gpu=False)
    t0 = time.monotonic()
    assert build_shm_op() is None
    assert time.monotonic() - t0 < 5


def test_first_batch_is_fetched_in_background() -> None:
    from training.loop import FirstInBackground

    assert list(FirstInBackground(iter([1, 2, 3]))) == [1, 2, 3]
    assert list(FirstInBackground(iter([]))) == []

    def broken():
        raise OSError("shard unreadable")
        yield  # pragma: no cover

    with pytest.raises(OSError, match="shard unreadable"):
        next(FirstInBackground(broken()))


def test_resume_refuses_changes_that_alter_the_computation() -> None:
    from training.trainer import _config_diff

    old = PretrainConfig(**SMALL).model_dump(mode="json")
    safe = PretrainConfig(**SMALL, log_every=3, checkpoint_every=7, data={"prefetch_batches": 5})
    assert _config_diff(old, safe.model_dump(mode="json")) == []
    changed = PretrainConfig(**{**SMALL, "steps": 30}, num_workers=2, data={"windows_per_sample": 2})
    assert _config_diff(old, changed.model_dump(mode="json")) == ["num_workers", "steps", "data.windows_per_sample"]
