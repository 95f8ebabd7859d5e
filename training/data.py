"""The pretraining data pipeline: corpus shards -> Ray Data (read, crop, mask, z-clip) -> exact per-worker batches.

Shape of the stream. The run's dataset is one map over the ``(epoch, part)`` units of the epochs it needs: each
task reads one corpus part and crops its rows' windows for that epoch (``crop_windows``), the parts of an epoch
in a seeded order of their own; it runs once, streaming, in order (``preserve_order``), split evenly over the
workers.
Each window's crop, mask and clip come from an rng seeded by ``(seed, epoch, sample_id, j)``, so a window is a
pure function of its data position, whichever worker or task happens to build it.

Data position. Every window carries its ``epoch``; a worker counts the windows it has passed per epoch, and a
checkpoint stores the global position ``(epoch, windows_into_epoch)``. A resumed run builds its dataset from that
epoch and each worker skips its share of the windows already consumed in it. The global window sequence is
deterministic; which worker receives which block is not (Ray Data hands blocks to whichever split asks first), so
after a resume the same number of windows of the epoch is skipped, not necessarily the very same ones.

The number of future patches is drawn per global step from ``(seed, step)``, so every worker (and a resumed run)
uses the same value for the same step without communicating.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from infra.ray_runtime import pyarrow_filesystem
from infra.storage import filesystem
from infra.versions import DatasetVersion, open_version
from training.windows import (
    WindowConfig,
    draw_num_future_patches,
    random_sequence_mask,
    sample_window,
    zscore_clip_outliers,
)

if TYPE_CHECKING:  # the map tasks import this module: keep torch (via training.config) out of it
    from training.config import PretrainConfig

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("sample_id", "values")
# Distinct stream tags keep the per-step patch draw independent of the per-window draws.
FUTURE_PATCH_STREAM = 0x5EED_F0
FILE_SHUFFLE_STREAM = 1_000_003
ACCEPTANCE_PROBE_ROWS = 512


@dataclass(frozen=True)
class WindowSpec:
    """What ``crop_windows`` needs, picklable and small (it travels with every map task): the run's window knobs
    (``PretrainConfig.window_config``) plus the seed, the target width and how many windows each row yields."""

    seed: int
    horizon: int
    windows_per_sample: int
    windows: WindowConfig

    @classmethod
    def from_config(cls, cfg: PretrainConfig) -> WindowSpec:
        return cls(
            seed=cfg.seed,
            horizon=cfg.max_horizon,
            windows_per_sample=cfg.data.windows_per_sample,
            windows=cfg.window_config(),
        )


def window_rng(seed: int, epoch: int, sample_id: int, j: int) -> np.random.Generator:
    """The rng of window ``j`` of ``sample_id`` in ``epoch``: the same wherever and whenever it is built."""
    return np.random.default_rng([seed, epoch, int(sample_id) % 2**63, j])


def _trim_padding(values: np.ndarray) -> np.ndarray:
    """Drop the NaN padding at both ends of a fixed-length corpus row (missing points inside are kept)."""
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        return values[:0]
    return values[finite[0] : finite[-1] + 1]


def crop_windows(batch: dict[str, np.ndarray], epoch: int, spec: WindowSpec) -> dict[str, np.ndarray]:
    """Ray Data map: corpus rows -> fixed-shape windows (context [n, L], target [n, H_max]) of one epoch.

    Per row and window: crop (``sample_window``, rejecting under-observed windows), z-score with the context's
    statistics and clip ``|z| > zclip`` to NaN, then random prefix masking. Contexts are left-padded and targets
    right-padded with NaN (the layout of ``training.windows.collate``) to the run's fixed widths, so every block
    has one shape and the workers' batches concatenate.
    """
    ids = np.asarray(batch["sample_id"])
    values = batch["values"]
    contexts: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    kept_ids: list[int] = []
    knobs = spec.windows
    for i, sid in enumerate(ids):
        series = _trim_padding(np.asarray(values[i], dtype=np.float32).reshape(-1))
        for j in range(spec.windows_per_sample):
            rng = window_rng(spec.seed, epoch, int(sid), j)
            window = sample_window(series, rng, knobs.context_length, spec.horizon, knobs.min_observed)
            if window is None:
                continue
            context, target = zscore_clip_outliers(window[0], window[1], knobs.z_clip)
            if knobs.random_mask:
                context = random_sequence_mask(context, rng, knobs.context_length, knobs.l_min)
            contexts.append(context)
            targets.append(target)
            kept_ids.append(int(sid))
    n = len(kept_ids)
    context_out = np.full((n, knobs.context_length), np.nan, dtype=np.float32)
    target_out = np.full((n, spec.horizon), np.nan, dtype=np.float32)
    for k, (c, t) in enumerate(zip(contexts, targets, strict=True)):
        if c.size:
            context_out[k, knobs.context_length - c.size :] = c
        target_out[k, : t.size] = t
    return {
        "context": context_out,
        "target": target_out,
        "sample_id": np.asarray(kept_ids, dtype=np.int64),
        "epoch": np.full(n, epoch, dtype=np.int32),
    }


def future_patches_for_step(seed: int, step: int, max_patches: int) -> int:
    """Output patches of global step ``step``: one draw per global batch, identical on every worker."""
    return draw_num_future_patches(np.random.default_rng([seed, FUTURE_PATCH_STREAM, step]), max_patches)


def open_corpus(corpus_url: str, storage_options: dict[str, Any] | None = None) -> DatasetVersion:
    """Open the training corpus version and check it has the columns the pipeline reads."""
    version = open_version(corpus_url, storage_options)
    names = {c["name"] for c in version.manifest.get("schema", [])}
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{corpus_url}: training corpus lacks column(s) {missing} (has {sorted(names)})")
    if not version.part_urls or version.num_rows == 0:
        raise ValueError(f"{corpus_url}: training corpus has no rows")
    return version


def corpus_rows(batch: Any) -> dict[str, np.ndarray]:
    """The columns ``crop_windows`` reads, from an Arrow record batch or table of corpus rows."""
    return {"sample_id": batch.column("sample_id").to_numpy(),
            "values": batch.column("values").to_numpy(zero_copy_only=False)}


def window_acceptance(version: DatasetVersion, cfg: PretrainConfig, rows: int = ACCEPTANCE_PROBE_ROWS) -> float:
    """Share of windows the first rows of the corpus yield: to plan enough epochs, and to fail early on 0."""
    fs, path = filesystem(version.part_urls[0], version.storage_options)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        batch = next(pf.iter_batches(batch_size=rows, columns=list(REQUIRED_COLUMNS)), None)
    if batch is None or batch.num_rows == 0:
        return 0.0
    spec = WindowSpec.from_config(cfg)
    out = crop_windows(corpus_rows(batch), 0, spec)
    return len(out["sample_id"]) / (batch.num_rows * spec.windows_per_sample)


def planned_epochs(num_rows: int, acceptance: float, cfg: PretrainConfig, windows_needed: int) -> int:
    """Epochs the dataset must hold to supply ``windows_needed`` windows, with ``cfg.data.extra_epochs`` spare."""
    per_epoch = num_rows * cfg.data.windows_per_sample * acceptance
    if per_epoch <= 0:
        raise ValueError("the corpus yields no usable window (series too short or under min_observed)")
    return max(1, math.ceil(windows_needed / per_epoch)) + cfg.data.extra_epochs


def epoch_part_order(n_parts: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The order epoch ``epoch`` reads the corpus parts in: a seeded permutation per epoch, or file order."""
    if not shuffle:
        return list(range(n_parts))
    return np.random.default_rng([seed, FILE_SHUFFLE_STREAM, epoch]).permutation(n_parts).tolist()


def read_and_crop(
    units: dict[str, np.ndarray], paths: list[str], fs: Any, spec: WindowSpec, rows_per_block: int
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data map over ``(epoch, part)`` units: read the part and yield its windows for that epoch, one block
    per ``rows_per_block`` corpus rows (``crop_windows`` on each)."""
    for epoch, part in zip(units["epoch"].tolist(), units["part"].tolist(), strict=True):
        source = paths[part] if fs is None else fs.open_input_file(paths[part])
        with pq.ParquetFile(source) as parquet:  # closes the part (and a remote stream) once read
            for batch in parquet.iter_batches(batch_size=rows_per_block, columns=list(REQUIRED_COLUMNS)):
                yield crop_windows(corpus_rows(batch), epoch, spec)


def build_dataset(
    version: DatasetVersion, cfg: PretrainConfig, start_epoch: int, num_epochs: int
) -> Any:  # ray.data.Dataset (Ray imported lazily: this module is also used without Ray)
    """The run's window stream: epochs ``start_epoch .. start_epoch + num_epochs - 1``, lazily, in order.

    One map over ``(epoch, part)`` units rather than one read-and-map per epoch joined by ``union``: the plan
    has two operators whatever the number of epochs, where a union of E branches made Ray Data's scheduler
    walk 2E operators on every step (2.4x the pipeline's CPU at 32 epochs; docs/benchmarks/pretrain.md).
    """
    import ray.data
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # Ray Data's per-operator progress bars flood a training log (the driver shows the run's own progress).
    ctx.enable_progress_bars = False

    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    fs, _ = pyarrow_filesystem(version.part_urls[0], version.storage_options)
    paths = [pyarrow_filesystem(u, version.storage_options)[1] for u in version.part_urls]
    units = [{"epoch": epoch, "part": part}
             for epoch in range(start_epoch, start_epoch + num_epochs)
             for part in epoch_part_order(len(paths), cfg.seed, epoch, cfg.data.shuffle_files)]
    spec = WindowSpec.from_config(cfg)
    return ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        read_and_crop, fn_kwargs={"paths": paths, "fs": fs, "spec": spec, "rows_per_block": cfg.data.map_batch_rows},
        batch_size=1, batch_format="numpy", concurrency=cfg.data.read_concurrency,
    )


@dataclass
class DataPosition:
    """Global position of the stream: the earliest unfinished epoch and the windows passed in it."""

    epoch: int = 0
    windows_into_epoch: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "windows_into_epoch": self.windows_into_epoch}

    @classmethod
    def combine(cls, per_rank: list[dict[int, int]]) -> DataPosition:
        """Merge the workers' per-epoch counters: the earliest epoch any worker is in, and all windows of it."""
        current = [max(c) for c in per_rank if c]
        if not current:
            return cls()
        epoch = min(current)
        return cls(epoch, sum(c.get(epoch, 0) for c in per_rank))


class ExactBatches:
    """Exactly ``batch_size``-row batches from Ray's torch batches, skipping to a data position first.

    Skips windows of epochs before ``skip_epoch`` and the first ``skip_rows`` windows of ``skip_epoch`` (a resumed
    worker's share), or the first ``skip_first`` windows of the stream whatever their epoch (a worker restarted on
    the same dataset: its stream repeats, so its own count is exact), counts the windows passed per epoch
    (``passed``), and re-chunks when a skip left a partial batch. A final partial batch is dropped, as every worker
    has the same number of rows (even split).
    """

    def __init__(
        self, batches: Iterator[dict[str, Any]], batch_size: int, skip_epoch: int = 0, skip_rows: int = 0,
        skip_first: int = 0,
    ):
        self._it = iter(batches)
        self.batch_size = batch_size
        self.skip_epoch = skip_epoch
        self._skip_left = skip_rows
        self._skip_first = skip_first
        self._carry: dict[str, Any] | None = None
        self.passed: dict[int, int] = {}

    def _count(self, epochs: Any) -> None:
        values, counts = np.unique(np.asarray(epochs), return_counts=True)
        for e, c in zip(values.tolist(), counts.tolist(), strict=True):
            self.passed[int(e)] = self.passed.get(int(e), 0) + int(c)

    def _drop_skipped(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        import torch

        epoch = batch["epoch"]
        keep = epoch >= self.skip_epoch
        if self._skip_first > 0:
            n = min(self._skip_first, int(keep.numel()))
            keep[:n] = False
            self._skip_first -= n
        if self._skip_left > 0:
            in_skip = torch.nonzero(epoch == self.skip_epoch).flatten()
            drop = in_skip[: self._skip_left]
            keep[drop] = False
            self._skip_left -= int(drop.numel())
        dropped = ~keep
        if bool(dropped.any()):
            self._count(epoch[dropped].numpy())
            if not bool(keep.any()):
                return None
            return {k: v[keep] for k, v in batch.items()}
        return batch

    def _rows(self, batch: dict[str, Any]) -> int:
        return int(batch["epoch"].shape[0])

    def __iter__(self) -> ExactBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        import torch

        while True:
            if self._carry is not None and self._rows(self._carry) >= self.batch_size:
                out = {k: v[: self.batch_size] for k, v in self._carry.items()}
                rest = {k: v[self.batch_size :] for k, v in self._carry.items()}
                self._carry = rest if self._rows(rest) else None
                self._count(out["epoch"].numpy())
                return out
            nxt = next(self._it, None)
            if nxt is None:
                raise StopIteration
            nxt = self._drop_skipped(nxt)
            if nxt is None:
                continue
            if self._carry is None and self._rows(nxt) == self.batch_size:
                self._count(nxt["epoch"].numpy())
                return nxt
            self._carry = nxt if self._carry is None else {
                k: torch.cat([self._carry[k], nxt[k]]) for k in nxt
            }




def sine_series(
    n_series: int, length: int, seed: int, periods: tuple[int, ...] = (12, 24, 48), noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines (random period from ``periods``, phase, amplitude, offset): (values [n, length], periods).

    Learnable structure with a known seasonal period, so a short run must beat seasonal naive on them.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    period = rng.choice(np.asarray(periods), size=n_series)
    phase = rng.uniform(0, 2 * np.pi, size=n_series)
    amp = rng.uniform(0.5, 2.0, size=n_series)
    offset = rng.uniform(-1.0, 1.0, size=n_series)
    clean = offset[:, None] + amp[:, None] * np.sin(2 * np.pi * t[None, :] / period[:, None] + phase[:, None])
    values = clean + noise * amp[:, None] * rng.standard_normal((n_series, length))
    return values.astype(np.float32), period.astype(np.int64)


def write_sine_corpus(
    root: str,
    n_series: int = 64,
    length: int = 512,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
    part_max_rows: int = 32,
    noise: float = 0.2,
) -> DatasetVersion:
    """A small "training corpus" version of noisy sines, in the corpus stage's layout (for tests, benchmarks
    and smoke runs of the pretraining stage without building a real corpus)."""
    import pyarrow as pa

    from infra.schemas import TRAINING_CORPUS_SCHEMA
    from infra.versions import VersionRecord, VersionWriter, publish_version, version_fingerprint

    config = {"kind": "sine", "n_series": n_series, "length": length, "seed": seed, "noise": noise}

    def write(writer: VersionWriter) -> VersionRecord:
        values, _ = sine_series(n_series, length, seed, noise=noise)
        writer.write(pa.table({
            "sample_id": pa.array(np.arange(n_series), pa.int64()),
            "source_series_ids": pa.array([[f"sine/{i}"] for i in range(n_series)], pa.list_(pa.string())),
            "grid_cell": pa.array(np.zeros(n_series), pa.int32()),
            "values": pa.array(list(values), pa.list_(pa.float32())),
        }, schema=TRAINING_CORPUS_SCHEMA))
        return VersionRecord(config, [], "synthetic")

    return publish_version(root, "training_corpus", version_fingerprint(config), TRAINING_CORPUS_SCHEMA, write,
                           storage_options, part_max_rows=part_max_rows).version
