"""The BLAST stage: canonical corpus versions in, a balanced ``training_corpus`` of fixed-size shards out.

Two streaming passes over the inputs, so the corpus may be far larger than memory:

1. **Score**: every row group of every input part is read in batches of ``feature_batch_rows`` series and
   scored (:mod:`corpus.blast.features`); only a locator (input, part, row), the 61-bit packed feature
   vector and the observed span length are kept per series (24 bytes), and a quarantine row (id, reason)
   for a series that cannot be scored.
2. **Project and plan** (in memory, on the compact arrays): UMAP on a uniform sample, cells, long-tail merge,
   and the complete sample plan: which samples are mixups, every balanced draw, mixup weights, window starts.
3. **Write**: only the parts holding drawn series are read again; each drawn series is z-scored, cut to its
   sample window and written at its draw's slot of a local spill file (positional writes: parallel-safe,
   order-free). The spill is then read slot-range by slot-range, which is sample-id order, mixed where the
   plan says so, and written as Parquet shards of exactly ``shard_rows`` samples.

Peak memory (main process): 24 B per scored series + ~24 B per draw for the plan, the distinct drawn
series' ids, one quarantine row per unscoreable series, the UMAP fit on its sample (``umap_sample_share`` of
the vectors, at least ``umap_min_sample``; n_neighbors x sample for its graph) and the transform of the
distinct vectors, one output shard (``shard_rows x sample_length x 4`` B, held about three times while it is
read, mixed and encoded), and the cached STL weights (< 256 MB; a few MB per series length). Per worker: one
input row group's Arrow buffers plus one scoring batch. Nothing grows with the series' lengths or the
corpus' values. The spill file needs ``draws x sample_length x 4`` B of local disk.

Determinism: batches, tasks and every random stream are fixed by (inputs, config, seed), never by the worker
count or completion order, and BLAS runs single-threaded, so a rerun writes byte-identical shards.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus.blast.config import BlastConfig
from corpus.blast.features import compute_metrics, prepare_series
from corpus.blast.plot import balance_map_png
from corpus.blast.projection import project
from corpus.blast.sampling import (
    MIXUP_CELL,
    CellIndex,
    cut_sample,
    entropy_bits,
    longtail_merge,
    mixup,
    normalized_span,
    observed_span,
    plan_samples,
    window_starts,
)
from corpus.blast.vectors import encode, pack
from infra.fingerprint import code_version, stable_hash
from infra.storage import filesystem
from infra.versions import DatasetVersion, VersionWriter, find_version, open_version

log = logging.getLogger(__name__)

DATASET = "training_corpus"
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("source_series_ids", pa.list_(pa.string()), nullable=False),
        pa.field("grid_cell", pa.int32(), nullable=False),
        pa.field("values", pa.list_(pa.float32()), nullable=False),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.string()),
        pa.field("input", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("length", pa.int64()),
    ]
)
# independent random streams, one per decision, all derived from cfg.seed
_STREAM_UMAP_SAMPLE, _STREAM_DRAWS, _STREAM_MIXUP, _STREAM_WINDOWS = 1, 2, 3, 4
_FLOAT32_BYTES = 4
_NO_BYTE_LIMIT = 2**62  # shards roll over on rows only

T = TypeVar("T")
R = TypeVar("R")


# --- helpers ---------------------------------------------------------------------------------------------
@contextmanager
def _single_thread_blas() -> Iterator[None]:
    """One BLAS thread: results do not depend on the thread count (and 2 cores are not oversubscribed)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _worker_init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _run(fn: Callable[[T], R], tasks: list[T], workers: int) -> Iterator[R]:
    """Results of ``fn`` over ``tasks`` in task order, in ``workers`` spawned processes (inline for 1)."""
    if workers <= 1 or len(tasks) <= 1:
        with _single_thread_blas():
            for t in tasks:
                yield fn(t)
        return
    ctx = multiprocessing.get_context("spawn")
    ex = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_worker_init)
    try:
        yield from ex.map(fn, tasks)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)  # on an error, do not run the remaining tasks first


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[Iterable[T], int, str], Iterator[T]]]:
    from rich.progress import Progress

    with Progress(transient=True, disable=not enabled) as bar:

        def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
            bar.remove_task(task)

        yield track


def _targets(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float values, offsets and null mask of a batch's ``target`` column (no per-row Python lists)."""
    col = batch.column(batch.schema.get_field_index("target"))
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values, col.offsets.to_numpy(), col.is_null().to_numpy(zero_copy_only=False)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def version_id_for(versions: list[DatasetVersion], cfg: BlastConfig) -> str:
    """Fingerprint of (input versions, the output-determining config, the corpus and infra code)."""
    return stable_hash(
        {
            "inputs": [[v.dataset, v.version_id] for v in versions],
            "config": cfg.fingerprint(),
            "code": code_version("corpus", "infra"),
        }
    )


# --- pass 1: score ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ScoreTask:
    input_idx: int
    part_idx: int
    part_url: str
    storage_options: dict[str, Any]
    row_group: int
    row_offset: int
    min_length: int
    window: int
    batch_rows: int
    offbyone: bool


@dataclass
class _ScoreResult:
    rows: np.ndarray  # row within the part
    packed: np.ndarray
    span_len: np.ndarray
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)  # (series_id, reason, length)
    n_rows: int = 0
    cpu_seconds: float = 0.0


def _score_task(task: _ScoreTask) -> _ScoreResult:
    t0 = time.process_time()
    fs, path = filesystem(task.part_url, task.storage_options)
    rows_out: list[np.ndarray] = []
    packed_out: list[np.ndarray] = []
    span_out: list[np.ndarray] = []
    quarantine: list[tuple[str, str, int]] = []
    row = task.row_offset
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        for batch in pf.iter_batches(
            batch_size=task.batch_rows, row_groups=[task.row_group], columns=["series_id", "target"]
        ):
            ids = batch.column(0).to_pylist()
            values, offsets, nulls = _targets(batch)
            windows: list[np.ndarray] = []
            kept: list[int] = []
            spans: list[int] = []
            for i, sid in enumerate(ids):
                length = int(offsets[i + 1] - offsets[i])
                if nulls[i]:
                    quarantine.append((sid, "target is null", 0))
                    continue
                target = values[offsets[i] : offsets[i + 1]]
                w, reason = prepare_series(target, task.min_length, task.window)
                if w is None:
                    quarantine.append((sid, reason or "unscoreable", length))
                    continue
                start, stop = observed_span(target, task.offbyone)
                windows.append(w)
                kept.append(i)
                spans.append(stop - start)
            if windows:
                metrics, errors = compute_metrics(windows)
                ok = np.array([e is None for e in errors])
                for j in np.flatnonzero(~ok):
                    i = kept[j]
                    quarantine.append((ids[i], errors[j] or "", int(offsets[i + 1] - offsets[i])))
                vecs = pack(encode(metrics))
                rows_out.append(row + np.asarray(kept, dtype=np.int64)[ok])
                packed_out.append(vecs[ok])
                span_out.append(np.asarray(spans, dtype=np.int64)[ok])
            row += batch.num_rows
    return _ScoreResult(
        _cat(rows_out, np.int64),
        _cat(packed_out, np.uint64),
        _cat(span_out, np.int64),
        quarantine,
        row - task.row_offset,
        time.process_time() - t0,
    )


def _score_tasks(versions: list[DatasetVersion], cfg: BlastConfig, so: dict[str, Any]) -> list[_ScoreTask]:
    """One task per row group of every part (footers only are read here)."""
    tasks = []
    for i, v in enumerate(versions):
        for j, url in enumerate(v.part_urls):
            fs, path = filesystem(url, so)
            with fs.open(path, "rb") as fh:
                pf = pq.ParquetFile(fh)
                meta, names = pf.metadata, set(pf.schema_arrow.names)
            if not {"series_id", "target"} <= names:
                raise ValueError(f"{url}: not a canonical corpus part (needs series_id and target columns)")
            offset = 0
            for g in range(meta.num_row_groups):
                tasks.append(
                    _ScoreTask(
                        i,
                        j,
                        url,
                        so,
                        g,
                        offset,
                        cfg.min_length,
                        cfg.window,
                        cfg.feature_batch_rows,
                        cfg.reproduce_reference_offbyone,
                    )
                )
                offset += meta.row_group(g).num_rows
    return tasks


# --- pass 2: spill the drawn series' windows -------------------------------------------------------------
@dataclass(frozen=True)
class _SpillTask:
    part_url: str
    storage_options: dict[str, Any]
    rows: np.ndarray  # sorted rows (within the part) of the drawn series
    slot_offsets: np.ndarray  # CSR into slots/starts per row
    slots: np.ndarray
    starts: np.ndarray
    spill_path: str
    sample_length: int
    offbyone: bool


def _spill_task(task: _SpillTask) -> list[str]:
    """Write every slot's sample window of this part's drawn series into the spill; return their ids."""
    fs, path = filesystem(task.part_url, task.storage_options)
    ids: list[str] = []
    row_bytes = task.sample_length * _FLOAT32_BYTES
    fd = os.open(task.spill_path, os.O_WRONLY)
    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            bounds = np.cumsum(
                [0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            )
            groups = sorted(set(np.searchsorted(bounds, task.rows, side="right") - 1))
            pos = 0
            for g in groups:
                row = int(bounds[g])
                for batch in pf.iter_batches(
                    batch_size=1024, row_groups=[g], columns=["series_id", "target"]
                ):
                    end = row + batch.num_rows
                    lo, hi = pos, int(np.searchsorted(task.rows, end))
                    if hi > lo:
                        values, offsets, _ = _targets(batch)
                        sid = batch.column(0)
                        for k in range(lo, hi):
                            i = int(task.rows[k]) - row
                            ids.append(sid[i].as_py())
                            span = normalized_span(values[offsets[i] : offsets[i + 1]], task.offbyone)
                            for s in range(task.slot_offsets[k], task.slot_offsets[k + 1]):
                                sample = cut_sample(span, int(task.starts[s]), task.sample_length)
                                os.pwrite(fd, sample.astype("<f4").tobytes(), int(task.slots[s]) * row_bytes)
                    pos = hi
                    row = end
    finally:
        os.close(fd)
    if len(ids) != len(task.rows):
        raise RuntimeError(f"{task.part_url}: expected {len(task.rows)} drawn rows, found {len(ids)}")
    return ids


# --- pass 2b: shards -------------------------------------------------------------------------------------
def _shard_table(
    fd: int, plan: Any, s0: int, s1: int, cells: np.ndarray, slot_ids: pa.Array, sample_length: int
) -> pa.Table:
    a, b = int(plan.offsets[s0]), int(plan.offsets[s1])
    row_bytes = sample_length * _FLOAT32_BYTES
    raw = os.pread(fd, (b - a) * row_bytes, a * row_bytes)
    block = np.frombuffer(raw, dtype="<f4").reshape(b - a, sample_length)
    first = plan.offsets[s0:s1] - a
    values = block[first].copy()
    is_mix = plan.is_mixup[s0:s1]
    for r in np.flatnonzero(is_mix):
        lo, hi = int(plan.offsets[s0 + r]), int(plan.offsets[s0 + r + 1])
        values[r] = mixup(block[lo - a : hi - a], plan.slot_weight[lo:hi])
    grid = np.where(is_mix, MIXUP_CELL, cells[plan.slot_series[plan.offsets[s0:s1]]]).astype(np.int32)
    n = s1 - s0
    list_offsets = pa.array((plan.offsets[s0 : s1 + 1] - a).astype(np.int32))
    value_offsets = pa.array(np.arange(0, (n + 1) * sample_length, sample_length, dtype=np.int32))
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(s0, s1, dtype=np.int64)),
            pa.ListArray.from_arrays(list_offsets, slot_ids),
            pa.array(grid),
            pa.ListArray.from_arrays(value_offsets, pa.array(values.reshape(-1))),
        ],
        schema=OUTPUT_SCHEMA,
    )


# --- the stage -------------------------------------------------------------------------------------------
def balance(
    corpus_urls: list[str],
    cfg: BlastConfig,
    out_root: str,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> DatasetVersion:
    """Score, project, balance and write ``corpus_urls`` (canonical corpus versions) as a training corpus.

    Returns the published ``training_corpus`` version; one that already exists for the same inputs, config
    and code is returned without any work.
    """
    if not corpus_urls:
        raise ValueError("balance: no input corpus versions given")
    so = dict(storage_options or {})
    versions = [open_version(u, so) for u in corpus_urls]
    vid = version_id_for(versions, cfg)
    existing = find_version(out_root, DATASET, vid, so)
    if existing is not None:
        log.info("training_corpus %s exists; nothing to do", vid)
        return existing
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    with _progress(progress) as track:
        # pass 1 ------------------------------------------------------------------------------------------
        tasks = _score_tasks(versions, cfg, so)
        loc_input, loc_part, loc_row, packed, span_len = [], [], [], [], []
        quarantine: list[tuple[str, str, str, int]] = []
        n_rows = 0
        cpu = 0.0
        for task, res in track(
            zip(tasks, _run(_score_task, tasks, cfg.workers), strict=True), len(tasks), "score"
        ):
            k = len(res.rows)
            loc_input.append(np.full(k, task.input_idx, np.int32))
            loc_part.append(np.full(k, task.part_idx, np.int32))
            loc_row.append(res.rows)
            packed.append(res.packed)
            span_len.append(res.span_len)
            quarantine.extend((sid, task.part_url, reason, length) for sid, reason, length in res.quarantine)
            n_rows += res.n_rows
            cpu += res.cpu_seconds
        li, lp, lr = _cat(loc_input, np.int32), _cat(loc_part, np.int32), _cat(loc_row, np.int64)
        packed_all, span_all = _cat(packed, np.uint64), _cat(span_len, np.int64)
        del loc_input, loc_part, loc_row, packed, span_len
        timings["score_s"] = time.perf_counter() - t_start
        n_scored = len(packed_all)
        if n_scored == 0:
            reasons = Counter(r.split(":")[0] for _, _, r, _ in quarantine).most_common(3)
            raise ValueError(
                f"balance: no series of {corpus_urls} could be scored ({n_rows} rows; reasons {reasons})"
            )

        # projection and plan -----------------------------------------------------------------------------
        t0 = time.perf_counter()
        proj = project(packed_all, cfg, np.random.default_rng([cfg.seed, _STREAM_UMAP_SAMPLE]))
        timings["project_s"] = time.perf_counter() - t0
        tail = longtail_merge(proj.cells, cfg.grid_size, cfg.longtail_threshold)
        index = CellIndex.build(tail.cells)
        plan = plan_samples(
            index,
            cfg.n_samples,
            cfg.mixup_rate,
            cfg.mixup_max_k,
            cfg.mixup_alpha,
            cfg.anneal,
            np.random.default_rng([cfg.seed, _STREAM_MIXUP]),
            np.random.default_rng([cfg.seed, _STREAM_DRAWS]),
        )
        starts = window_starts(
            span_all[plan.slot_series], cfg.sample_length, np.random.default_rng([cfg.seed, _STREAM_WINDOWS])
        )

        # pass 2 ------------------------------------------------------------------------------------------
        t0 = time.perf_counter()
        spill_dir = tempfile.mkdtemp(prefix="blast-spill-", dir=cfg.spill_dir)
        writer: VersionWriter | None = None
        try:
            spill_path = os.path.join(spill_dir, "slots.f32")
            with open(spill_path, "wb") as fh:
                fh.truncate(plan.n_slots * cfg.sample_length * _FLOAT32_BYTES)
            needed, needed_ids = _spill(plan, starts, li, lp, lr, versions, so, spill_path, cfg, track)
            timings["spill_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            writer = VersionWriter(
                out_root,
                DATASET,
                vid,
                OUTPUT_SCHEMA,
                storage_options=so,
                part_max_rows=cfg.shard_rows,
                part_max_bytes=_NO_BYTE_LIMIT,
            )
            fd = os.open(spill_path, os.O_RDONLY)
            try:
                shard_starts = list(range(0, cfg.n_samples, cfg.shard_rows))
                for s0 in track(shard_starts, len(shard_starts), "write"):
                    s1 = min(s0 + cfg.shard_rows, cfg.n_samples)
                    a, b = int(plan.offsets[s0]), int(plan.offsets[s1])
                    slot_ids = needed_ids.take(pa.array(np.searchsorted(needed, plan.slot_series[a:b])))
                    writer.write(_shard_table(fd, plan, s0, s1, tail.cells, slot_ids, cfg.sample_length))
            finally:
                os.close(fd)
            timings["write_s"] = time.perf_counter() - t0

            # side table, plot, stats ---------------------------------------------------------------------
            cells_n = cfg.grid_size * cfg.grid_size
            before = np.bincount(proj.cells, minlength=cells_n)
            after = np.bincount(proj.cells[plan.slot_series], minlength=cells_n)
            h_before, h_after = entropy_bits(before), entropy_bits(after)
            q = list(zip(*quarantine, strict=True)) if quarantine else [[], [], [], []]
            writer.write_side_table(
                "quarantine",
                pa.Table.from_arrays(
                    [pa.array(list(c), type=f.type) for c, f in zip(q, QUARANTINE_SCHEMA, strict=True)],
                    schema=QUARANTINE_SCHEMA,
                ),
            )
            writer.write_file(
                "balance_map.png", balance_map_png(before, after, cfg.grid_size, h_before, h_after)
            )
            timings["total_s"] = time.perf_counter() - t_start
            stats = {
                "series_in": n_rows,
                "series_scored": n_scored,
                "series_quarantined": len(quarantine),
                "quarantine_reasons": dict(Counter(r.split(":")[0] for _, _, r, _ in quarantine)),
                "score_cpu_seconds": round(cpu, 3),
                "series_per_cpu_second": round(n_rows / cpu, 2) if cpu > 0 else None,
                "projection": proj.method,
                "umap_sample_size": proj.sample_size,
                "distinct_vectors": proj.n_distinct,
                "cells_occupied_before": int((before > 0).sum()),
                "cells_after_merge": len(index.cell_ids),
                "longtail_minimal_prob": tail.minimal_prob,
                "longtail_cropped_cells": tail.cropped_cells,
                "catch_all_members": tail.catch_all_members,
                "occupancy_entropy_before_bits": round(h_before, 6),
                "occupancy_entropy_after_bits": round(h_after, 6),
                "cells_drawn": int((after > 0).sum()),
                "samples": cfg.n_samples,
                "mixup_samples": int(plan.is_mixup.sum()),
                "draws": plan.n_slots,
                "distinct_series_drawn": len(needed),
                "timings_s": {k: round(v, 3) for k, v in timings.items()},
            }
            inputs = [{"url": v.url, "dataset": v.dataset, "version_id": v.version_id} for v in versions]
            return writer.commit(
                config=cfg.fingerprint(),
                inputs=inputs,
                code_version=code_version("corpus", "infra"),
                stats=stats,
            )
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)


def _spill(
    plan: Any,
    starts: np.ndarray,
    li: np.ndarray,
    lp: np.ndarray,
    lr: np.ndarray,
    versions: list[DatasetVersion],
    so: dict[str, Any],
    spill_path: str,
    cfg: BlastConfig,
    track: Callable[[Iterable[T], int, str], Iterator[T]],
) -> tuple[np.ndarray, pa.Array]:
    """Pass 2: read only the parts holding drawn series; returns the drawn series (sorted) and their ids."""
    order = np.argsort(plan.slot_series, kind="stable")
    needed, counts = np.unique(plan.slot_series[order], return_counts=True)
    slot_csr = np.concatenate([[0], np.cumsum(counts)])
    key_input, key_part = li[needed], lp[needed]
    breaks = np.flatnonzero((np.diff(key_input) != 0) | (np.diff(key_part) != 0)) + 1
    groups = np.split(np.arange(len(needed)), breaks)
    tasks = []
    for g in groups:
        if g.size == 0:
            continue
        lo, hi = slot_csr[g[0]], slot_csr[g[-1] + 1]
        slots = order[lo:hi]
        tasks.append(
            _SpillTask(
                versions[int(key_input[g[0]])].part_urls[int(key_part[g[0]])],
                so,
                lr[needed[g]],
                slot_csr[g[0] : g[-1] + 2] - lo,
                slots,
                starts[slots],
                spill_path,
                cfg.sample_length,
                cfg.reproduce_reference_offbyone,
            )
        )
    ids: list[str] = []
    for res in track(_run(_spill_task, tasks, cfg.workers), len(tasks), "samples"):
        ids.extend(res)
    return needed, pa.array(ids, type=pa.string())
