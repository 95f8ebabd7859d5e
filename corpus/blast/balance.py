"""The BLAST stage: canonical corpus versions in, a balanced ``training_corpus`` of fixed-size shards out.

Two streaming passes over the inputs, so the corpus may be far larger than memory:

1. **Score**: every row group of every input part is read in batches of ``feature_batch_rows`` series and
   scored (:mod:`corpus.blast.features`); only a locator (input, part, row), the 61-bit packed feature
   vector and the observed span length are kept per series (24 bytes), and a quarantine row (id, reason)
   for a series that cannot be scored.
2. **Project and plan** (in memory, on the compact arrays): UMAP on a uniform sample, cells, long-tail merge,
   and the complete sample plan: which samples are mixups, every balanced draw, mixup weights, window starts.
3. **Write**: only the parts holding drawn series are read again, one Ray task per part; each drawn series
   is z-scored, cut to its sample window and written, bucketed by the output shard its draw belongs to, under
   ``{out_root}/_work/training_corpus/{version}/shard-SSSSSS/from-TTTTTT.npz`` (on the storage root, so on a
   cluster every node sees it). One Ray task per shard then gathers its buckets, mixes where the plan says so,
   and returns the shard, written in sample-id order as Parquet parts of exactly ``shard_rows`` samples.

Peak memory (main process): 24 B per scored series + ~24 B per draw for the plan, the cells and the cell
index (~16 B per series), the distinct drawn series' ids, one quarantine row per unscoreable series, one
output shard (``shard_rows x sample_length x 4`` B, held about three times while it is read, mixed and
encoded), and the cached STL weights (< 256 MB; a few MB per series length). The projection runs as one Ray
task: its worker holds the UMAP fit on its sample (``umap_sample_share`` of the vectors, between
``umap_min_sample`` and ``umap_max_sample``; n_neighbors x sample for its graph) and the transform of the
distinct vectors (an n_neighbors graph per distinct vector, ~13 KB each). Per scoring worker: one input row
group's Arrow buffers plus one scoring batch. Nothing grows with the series' lengths or the corpus' values.
The buckets need ``draws x sample_length x 4`` B on the storage root while the stage runs.

Determinism: batches, tasks and every random stream are fixed by (inputs, config, seed), never by the worker
count, the nodes or completion order, and BLAS runs single-threaded, so a rerun writes byte-identical shards
wherever it runs. ``stats.ray_nodes`` counts the units (row groups, parts, shards) each Ray node completed.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus.blast.config import BlastConfig
from corpus.blast.features import compute_metrics, prepare_series
from corpus.blast.plot import balance_map_png
from corpus.blast.projection import Projection, project
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
from corpus.leakage import LeakageFilter, load_index, match_series
from infra.fingerprint import code_version
from infra.schemas import BLAST_QUARANTINE_SCHEMA, TRAINING_CORPUS_SCHEMA
from infra.stage_runtime import StageRun, collect_units, merge_node_counts, run_units
from infra.storage import filesystem, join, write_bytes_atomic
from infra.versions import (
    DatasetVersion,
    VersionRecord,
    VersionWriter,
    open_version,
    publish_version,
    version_fingerprint,
)

log = logging.getLogger(__name__)

DATASET = "training_corpus"
# independent random streams, one per decision, all derived from cfg.seed
_STREAM_UMAP_SAMPLE, _STREAM_DRAWS, _STREAM_MIXUP, _STREAM_WINDOWS = 1, 2, 3, 4
_FLOAT32_BYTES = 4
_NO_BYTE_LIMIT = 2**62  # shards roll over on rows only

T = TypeVar("T")
R = TypeVar("R")


# --- helpers ---------------------------------------------------------------------------------------------
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


def blast_version_id(versions: list[DatasetVersion], cfg: BlastConfig, leakage: LeakageFilter | None = None) -> str:
    """Fingerprint of (input versions, the output-determining config, the leakage filter, the corpus and infra
    code): another benchmark list is another training corpus."""
    identity: dict[str, Any] = {
        "inputs": [[v.dataset, v.version_id] for v in versions],
        "config": cfg.fingerprint(),
        "code": code_version("corpus", "infra"),
    }
    if leakage is not None:
        identity["leakage"] = leakage.fingerprint()
    return version_fingerprint(identity)


# --- pass 1: score ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ScoreTask:
    input_idx: int
    part_idx: int
    part_url: str
    storage_options: dict[str, Any]
    row_group: int
    row_offset: int  # row (within the part) of the unit's first row
    skip_rows: int  # rows of the row group before the unit (a multiple of batch_rows)
    num_rows: int  # rows of the unit
    min_length: int
    window: int
    batch_rows: int
    offbyone: bool
    leak_identity: str | None = None  # the benchmark whose dataset this input is: every row is excluded
    leak_index: str | None = None  # the benchmarks' window index every row is matched against


@dataclass
class _ScoreResult:
    rows: np.ndarray  # row within the part
    packed: np.ndarray
    span_len: np.ndarray
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)  # (series_id, reason, length)
    n_rows: int = 0
    cpu_seconds: float = 0.0
    excluded: list[tuple[str, str, str]] = field(default_factory=list)  # (series_id, benchmark, matched_by)


def _score_task(task: _ScoreTask) -> _ScoreResult:
    t0 = time.process_time()
    fs, path = filesystem(task.part_url, task.storage_options)
    rows_out: list[np.ndarray] = []
    packed_out: list[np.ndarray] = []
    span_out: list[np.ndarray] = []
    quarantine: list[tuple[str, str, int]] = []
    excluded: list[tuple[str, str, str]] = []
    options = json.dumps(task.storage_options, sort_keys=True, default=str)
    index = load_index(task.leak_index, options) if task.leak_index else None
    row = task.row_offset
    seen = 0  # rows of the row group read so far
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        for batch in pf.iter_batches(
            batch_size=task.batch_rows, row_groups=[task.row_group], columns=["series_id", "target"]
        ):
            seen += batch.num_rows
            if seen <= task.skip_rows:
                continue  # a batch of an earlier unit of this row group
            if seen - batch.num_rows >= task.skip_rows + task.num_rows:
                break
            ids = batch.column(0).to_pylist()
            values, offsets, nulls = _targets(batch)
            windows: list[np.ndarray] = []
            kept: list[int] = []
            spans: list[int] = []
            for i, sid in enumerate(ids):
                length = int(offsets[i + 1] - offsets[i])
                target = values[offsets[i] : offsets[i + 1]]
                leaked = task.leak_identity or (None if nulls[i] else match_series(index, target))
                if leaked:  # an evaluation benchmark's series: neither scored nor drawn
                    excluded.append((sid, leaked, "identity" if task.leak_identity else "content"))
                    continue
                if nulls[i]:
                    quarantine.append((sid, "target is null", 0))
                    continue
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
        excluded,
    )


def _score_tasks(
    versions: list[DatasetVersion], cfg: BlastConfig, so: dict[str, Any], leakage: LeakageFilter | None = None
) -> list[_ScoreTask]:
    """Units of about ``score_unit_rows`` rows (whole scoring batches) of every row group of every part.

    Row groups of published parts hold up to 16,384 series: one unit each would leave all but a few cores idle
    on a small corpus. Only footers are read here.
    """
    unit_rows = -(-cfg.score_unit_rows // cfg.feature_batch_rows) * cfg.feature_batch_rows
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
                group_rows = meta.row_group(g).num_rows
                for skip in range(0, group_rows, unit_rows):
                    tasks.append(
                        _ScoreTask(
                            i, j, url, so, g, offset + skip, skip, min(unit_rows, group_rows - skip),
                            cfg.min_length, cfg.window, cfg.feature_batch_rows, cfg.reproduce_reference_offbyone,
                            leakage.identity_of(v.dataset) if leakage else None,
                            leakage.index_url if leakage else None,
                        )
                    )
                offset += group_rows
    return tasks


# --- pass 2: the drawn series' windows, bucketed by output shard ---------------------------------------
@dataclass(frozen=True)
class _SpillTask:
    index: int  # the task's number: its bucket files are named by it
    part_url: str
    storage_options: dict[str, Any]
    rows: np.ndarray  # sorted rows (within the part) of the drawn series
    slot_offsets: np.ndarray  # CSR into slots/starts per row
    slots: np.ndarray
    starts: np.ndarray
    slot_shards: np.ndarray  # the output shard of every slot
    work_url: str
    sample_length: int
    offbyone: bool


def bucket_url(work_url: str, shard: int, task: int) -> str:
    """The file holding spill task ``task``'s windows for output shard ``shard`` (under the storage root)."""
    return join(work_url, f"shard-{shard:06d}", f"from-{task:06d}.npz")


def _spill_task(task: _SpillTask) -> list[str]:
    """Cut every slot's sample window of this part's drawn series; write them bucketed by shard; return ids."""
    fs, path = filesystem(task.part_url, task.storage_options)
    ids: list[str] = []
    samples = np.empty((len(task.slots), task.sample_length), dtype="<f4")
    order = np.empty(len(task.slots), dtype=np.int64)  # position in ``samples`` of each CSR slot
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        bounds = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
        groups = sorted(set(np.searchsorted(bounds, task.rows, side="right") - 1))
        pos = filled = 0
        for g in groups:
            row = int(bounds[g])
            for batch in pf.iter_batches(batch_size=1024, row_groups=[g], columns=["series_id", "target"]):
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
                            samples[filled] = cut_sample(span, int(task.starts[s]), task.sample_length)
                            order[s] = filled
                            filled += 1
                pos = hi
                row = end
    if len(ids) != len(task.rows):
        raise RuntimeError(f"{task.part_url}: expected {len(task.rows)} drawn rows, found {len(ids)}")
    for shard in np.unique(task.slot_shards):
        mine = np.flatnonzero(task.slot_shards == shard)
        buf = io.BytesIO()
        np.savez(buf, slots=task.slots[mine], values=samples[order[mine]])
        sfs, spath = filesystem(bucket_url(task.work_url, int(shard), task.index), task.storage_options)
        write_bytes_atomic(sfs, spath, buf.getvalue())
    return ids


# --- pass 2b: shards -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ShardTask:
    shard: int
    s0: int
    s1: int
    offsets: np.ndarray  # plan.offsets[s0 : s1 + 1]
    is_mixup: np.ndarray
    slot_weight: np.ndarray  # weights of slots offsets[0]..offsets[-1]
    grid: np.ndarray  # grid cell of every sample
    slot_ids: list[str]  # source series id of every slot
    spill_tasks: list[int]  # spill tasks that wrote a bucket for this shard
    work_url: str
    storage_options: dict[str, Any]
    sample_length: int


def _shard_task(task: _ShardTask) -> pa.Table:
    """Gather one shard's windows from its buckets, mix where the plan says so, and build its table."""
    a, b = int(task.offsets[0]), int(task.offsets[-1])
    block = np.full((b - a, task.sample_length), np.nan, dtype="<f4")
    seen = 0
    for t in task.spill_tasks:
        fs, path = filesystem(bucket_url(task.work_url, task.shard, t), task.storage_options)
        with fs.open(path, "rb") as fh, np.load(io.BytesIO(fh.read())) as data:
            block[data["slots"] - a] = data["values"]
            seen += len(data["slots"])
    if seen != b - a:
        raise RuntimeError(f"shard {task.shard}: buckets hold {seen} windows, the plan has {b - a}")
    first = task.offsets[:-1] - a
    values = block[first].copy()
    for r in np.flatnonzero(task.is_mixup):
        lo, hi = int(task.offsets[r]) - a, int(task.offsets[r + 1]) - a
        values[r] = mixup(block[lo:hi], task.slot_weight[lo:hi])
    n = task.s1 - task.s0
    list_offsets = pa.array((task.offsets - a).astype(np.int32))
    value_offsets = pa.array(np.arange(0, (n + 1) * task.sample_length, task.sample_length, dtype=np.int32))
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(task.s0, task.s1, dtype=np.int64)),
            pa.ListArray.from_arrays(list_offsets, pa.array(task.slot_ids, type=pa.string())),
            pa.array(task.grid.astype(np.int32)),
            pa.ListArray.from_arrays(value_offsets, pa.array(values.reshape(-1))),
        ],
        schema=TRAINING_CORPUS_SCHEMA,
    )


# --- the stage -------------------------------------------------------------------------------------------
@dataclass
class _Scores:
    """Pass 1's compact result: a locator, the packed vector and the span length of every scored series."""

    loc_input: np.ndarray
    loc_part: np.ndarray
    loc_row: np.ndarray
    packed: np.ndarray
    span_len: np.ndarray
    quarantine: list[tuple[str, str, str, int]]  # (series_id, input part, reason, length)
    n_rows: int
    cpu_seconds: float
    tally: StageRun[Any]
    excluded: list[tuple[str, str, str]] = field(default_factory=list)  # (series_id, benchmark, matched_by)
    leakage: LeakageFilter | None = None


@dataclass
class _Plan:
    """Projection, merged cells and every sampling decision, all fixed by (scores, config, seed)."""

    proj: Any
    tail: Any
    index: CellIndex
    samples: Any
    starts: np.ndarray
    tally: StageRun[Any]


def balance(
    corpus_urls: list[str],
    cfg: BlastConfig,
    out_root: str,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    leakage: LeakageFilter | None = None,
) -> DatasetVersion:
    """Score, project, balance and write ``corpus_urls`` (canonical corpus versions) as a training corpus.

    Returns the published ``training_corpus`` version; one that already exists for the same inputs, config
    and code is returned without any work. Both passes over the series run as Ray tasks
    (:mod:`infra.stage_runtime`); the pass-2 buckets live under ``{out_root}/_work/training_corpus/``.
    ``leakage`` excludes the evaluation benchmarks' series (:mod:`corpus.leakage`) in the scoring units.
    """
    if not corpus_urls:
        raise ValueError("balance: no input corpus versions given")
    storage = dict(storage_options or {})
    versions = [open_version(u, storage) for u in corpus_urls]
    vid = blast_version_id(versions, cfg, leakage)
    work_url = join(out_root, "_work", DATASET, vid)
    writing: list[bool] = []  # set once the write pass starts: from then on there may be buckets to remove

    def write(writer: VersionWriter) -> VersionRecord:
        return _balance_into(writer, versions, cfg, work_url, storage, progress, leakage, writing)

    try:
        published = publish_version(out_root, DATASET, vid, TRAINING_CORPUS_SCHEMA, write, storage,
                                    part_max_rows=cfg.shard_rows, part_max_bytes=_NO_BYTE_LIMIT)
    finally:
        if writing:  # after the commit or the abort: the buckets are only ever read by this run
            _remove_work(work_url, storage)
    if published.reused:
        log.info("training_corpus %s exists; nothing to do", vid)
    return published.version


def _balance_into(
    writer: VersionWriter, versions: list[DatasetVersion], cfg: BlastConfig, work_url: str, so: dict[str, Any],
    progress: bool, leakage: LeakageFilter | None, writing: list[bool],
) -> VersionRecord:
    """The three passes (score, plan, write; buckets under ``work_url``) and the report into ``writer``."""
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    with _progress(progress) as track:
        scores = score_pass(versions, cfg, so, track, leakage)
        timings["score_s"] = time.perf_counter() - t_start
        t0 = time.perf_counter()
        plan = plan_pass(scores, cfg)
        timings["project_s"] = time.perf_counter() - t0
        writing.append(True)
        passes = [
            scores.tally, plan.tally, *write_pass(plan, scores, versions, cfg, so, work_url, writer, track, timings)
        ]
        _write_report(writer, scores, plan, cfg)
        timings["total_s"] = time.perf_counter() - t_start
        stats = _stats(scores, plan, cfg, timings, passes)
    inputs = [{"url": v.url, "dataset": v.dataset, "version_id": v.version_id} for v in versions]
    return VersionRecord(cfg.fingerprint(), inputs, code_version("corpus", "infra"), stats)


def _remove_work(work_url: str, so: dict[str, Any]) -> None:
    fs, path = filesystem(work_url, so)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _describe_score_task(_i: int, t: _ScoreTask) -> str:
    return f"{t.part_url} row group {t.row_group} rows {t.skip_rows}..{t.skip_rows + t.num_rows - 1}"


def score_pass(
    versions: list[DatasetVersion],
    cfg: BlastConfig,
    so: dict[str, Any],
    track: Callable[..., Iterator[Any]],
    leakage: LeakageFilter | None = None,
) -> _Scores:
    """Pass 1: every row group scored as a Ray task; only 24 B per scored series come back (and an id per
    series excluded as an evaluation benchmark's)."""
    tasks = _score_tasks(versions, cfg, so, leakage)
    tally: StageRun[Any] = StageRun("blast-score", len(tasks))
    results = run_units(
        _score_task, tasks, stage="blast-score", describe=_describe_score_task, max_in_flight=cfg.workers,
        progress=False, tally=tally,
    )
    loc_input, loc_part, loc_row, packed, span_len = [], [], [], [], []
    quarantine: list[tuple[str, str, str, int]] = []
    excluded: list[tuple[str, str, str]] = []
    n_rows, cpu = 0, 0.0
    for task, res in track(zip(tasks, results, strict=False), len(tasks), "score"):
        k = len(res.rows)
        loc_input.append(np.full(k, task.input_idx, np.int32))
        loc_part.append(np.full(k, task.part_idx, np.int32))
        loc_row.append(res.rows)
        packed.append(res.packed)
        span_len.append(res.span_len)
        quarantine.extend((sid, task.part_url, reason, length) for sid, reason, length in res.quarantine)
        excluded.extend(res.excluded)
        n_rows += res.n_rows
        cpu += res.cpu_seconds
    scores = _Scores(
        _cat(loc_input, np.int32), _cat(loc_part, np.int32), _cat(loc_row, np.int64), _cat(packed, np.uint64),
        _cat(span_len, np.int64), quarantine, n_rows, cpu, tally, excluded, leakage,
    )
    if len(scores.packed) == 0:
        reasons = Counter(r.split(":")[0] for _, _, r, _ in quarantine).most_common(3)
        urls = [v.url for v in versions]
        raise ValueError(f"balance: no series of {urls} could be scored ({n_rows} rows, {len(excluded)} excluded "
                         f"as evaluation benchmark series; reasons {reasons})")
    return scores


def _project_task(task: tuple[np.ndarray, BlastConfig]) -> Projection:
    packed, cfg = task
    return project(packed, cfg, np.random.default_rng([cfg.seed, _STREAM_UMAP_SAMPLE]))


def plan_pass(scores: _Scores, cfg: BlastConfig) -> _Plan:
    """Projection (a Ray task), grid, long-tail merge and the complete sample plan (on the compact arrays).

    The projection runs off the driver: UMAP's fit and the transform of every distinct vector need memory
    that grows with the corpus (the transform's neighbour graph), and the driver keeps only the cells.
    """
    (proj,), tally = collect_units(
        _project_task, [(scores.packed, cfg)], stage="blast-project", describe=lambda _i, _t: "UMAP projection",
        progress=False,
    )
    tail = longtail_merge(proj.cells, cfg.grid_size, cfg.longtail_threshold)
    index = CellIndex.build(tail.cells)
    samples = plan_samples(
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
        scores.span_len[samples.slot_series], cfg.sample_length, np.random.default_rng([cfg.seed, _STREAM_WINDOWS])
    )
    return _Plan(proj, tail, index, samples, starts, tally)


def _shard_bounds(plan: _Plan, cfg: BlastConfig) -> np.ndarray:
    """First slot of every output shard (and the total): a slot's shard is where it falls among these."""
    first_samples = np.arange(0, cfg.n_samples, cfg.shard_rows)
    return np.append(plan.samples.offsets[first_samples], plan.samples.n_slots)


def write_pass(
    plan: _Plan,
    scores: _Scores,
    versions: list[DatasetVersion],
    cfg: BlastConfig,
    so: dict[str, Any],
    work_url: str,
    writer: VersionWriter,
    track: Callable[..., Iterator[Any]],
    timings: dict[str, float],
) -> list[StageRun[Any]]:
    """Pass 2: cut the drawn windows into per-shard buckets, then mix and write the shards, all as Ray tasks."""
    t0 = time.perf_counter()
    shard_bounds = _shard_bounds(plan, cfg)
    spill_tasks = _spill_tasks(plan, scores, versions, so, work_url, cfg, shard_bounds)
    spill_tally: StageRun[Any] = StageRun("blast-samples", len(spill_tasks))
    ids: list[str] = []
    results = run_units(
        _spill_task, spill_tasks, stage="blast-samples", describe=lambda _i, t: t.part_url,
        max_in_flight=cfg.workers, progress=False, tally=spill_tally,
    )
    for res in track(results, len(spill_tasks), "samples"):
        ids.extend(res)
    needed = np.unique(plan.samples.slot_series)
    needed_ids = pa.array(ids, type=pa.string())
    timings["spill_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard_tasks = _shard_tasks(plan, cfg, so, work_url, spill_tasks, shard_bounds, needed, needed_ids)
    shard_tally: StageRun[Any] = StageRun("blast-shards", len(shard_tasks))
    results = run_units(
        _shard_task, shard_tasks, stage="blast-shards", describe=lambda _i, t: f"shard {t.shard}",
        max_in_flight=cfg.workers or 2, progress=False, tally=shard_tally,
    )
    for table in track(results, len(shard_tasks), "write"):
        writer.write(table)
    timings["write_s"] = time.perf_counter() - t0
    return [spill_tally, shard_tally]


def _spill_tasks(
    plan: _Plan,
    scores: _Scores,
    versions: list[DatasetVersion],
    so: dict[str, Any],
    work_url: str,
    cfg: BlastConfig,
    shard_bounds: np.ndarray,
) -> list[_SpillTask]:
    """One task per input part holding drawn series, in (input, part) order."""
    slot_series = plan.samples.slot_series
    order = np.argsort(slot_series, kind="stable")
    needed, counts = np.unique(slot_series[order], return_counts=True)
    slot_csr = np.concatenate([[0], np.cumsum(counts)])
    key_input, key_part = scores.loc_input[needed], scores.loc_part[needed]
    breaks = np.flatnonzero((np.diff(key_input) != 0) | (np.diff(key_part) != 0)) + 1
    tasks = []
    for g in np.split(np.arange(len(needed)), breaks):
        if g.size == 0:
            continue
        lo, hi = slot_csr[g[0]], slot_csr[g[-1] + 1]
        slots = order[lo:hi]
        tasks.append(
            _SpillTask(
                len(tasks),
                versions[int(key_input[g[0]])].part_urls[int(key_part[g[0]])],
                so,
                scores.loc_row[needed[g]],
                slot_csr[g[0] : g[-1] + 2] - lo,
                slots,
                plan.starts[slots],
                np.searchsorted(shard_bounds, slots, side="right") - 1,
                work_url,
                cfg.sample_length,
                cfg.reproduce_reference_offbyone,
            )
        )
    return tasks


def _shard_tasks(
    plan: _Plan,
    cfg: BlastConfig,
    so: dict[str, Any],
    work_url: str,
    spill_tasks: list[_SpillTask],
    shard_bounds: np.ndarray,
    needed: np.ndarray,
    needed_ids: pa.Array,
) -> list[_ShardTask]:
    """One task per output shard, naming the buckets that hold its windows."""
    writers_of: dict[int, list[int]] = {}
    for t in spill_tasks:
        for shard in np.unique(t.slot_shards):
            writers_of.setdefault(int(shard), []).append(t.index)
    p = plan.samples
    tasks = []
    for shard, s0 in enumerate(range(0, cfg.n_samples, cfg.shard_rows)):
        s1 = min(s0 + cfg.shard_rows, cfg.n_samples)
        a, b = int(p.offsets[s0]), int(p.offsets[s1])
        slot_ids = needed_ids.take(pa.array(np.searchsorted(needed, p.slot_series[a:b]))).to_pylist()
        is_mix = p.is_mixup[s0:s1]
        grid = np.where(is_mix, MIXUP_CELL, plan.tail.cells[p.slot_series[p.offsets[s0:s1]]])
        tasks.append(
            _ShardTask(
                shard, s0, s1, p.offsets[s0 : s1 + 1], is_mix, p.slot_weight[a:b], grid, slot_ids,
                writers_of.get(shard, []), work_url, so, cfg.sample_length,
            )
        )
    return tasks


def _write_report(writer: VersionWriter, scores: _Scores, plan: _Plan, cfg: BlastConfig) -> None:
    """The quarantine side table and the balance map beside the shards."""
    q = list(zip(*scores.quarantine, strict=True)) if scores.quarantine else [[], [], [], []]
    writer.write_side_table(
        "quarantine",
        pa.Table.from_arrays(
            [pa.array(list(c), type=f.type) for c, f in zip(q, BLAST_QUARANTINE_SCHEMA, strict=True)],
            schema=BLAST_QUARANTINE_SCHEMA,
        ),
    )
    before, after = _occupancy(plan, cfg)
    writer.write_file(
        "balance_map.png",
        balance_map_png(before, after, cfg.grid_size, entropy_bits(before), entropy_bits(after)),
    )


def _occupancy(plan: _Plan, cfg: BlastConfig) -> tuple[np.ndarray, np.ndarray]:
    cells_n = cfg.grid_size * cfg.grid_size
    before = np.bincount(plan.proj.cells, minlength=cells_n)
    after = np.bincount(plan.proj.cells[plan.samples.slot_series], minlength=cells_n)
    return before, after


def _stats(
    scores: _Scores, plan: _Plan, cfg: BlastConfig, timings: dict[str, float], passes: list[StageRun[Any]]
) -> dict[str, Any]:
    before, after = _occupancy(plan, cfg)
    q, cpu, n_rows = scores.quarantine, scores.cpu_seconds, scores.n_rows
    return {
        "series_in": n_rows,
        "series_scored": len(scores.packed),
        "series_quarantined": len(q),
        "quarantine_reasons": dict(Counter(r.split(":")[0] for _, _, r, _ in q)),
        "score_cpu_seconds": round(cpu, 3),
        "series_per_cpu_second": round(n_rows / cpu, 2) if cpu > 0 else None,
        "projection": plan.proj.method,
        "umap_sample_size": plan.proj.sample_size,
        "distinct_vectors": plan.proj.n_distinct,
        "cells_occupied_before": int((before > 0).sum()),
        "cells_after_merge": len(plan.index.cell_ids),
        "longtail_minimal_prob": plan.tail.minimal_prob,
        "longtail_cropped_cells": plan.tail.cropped_cells,
        "catch_all_members": plan.tail.catch_all_members,
        "occupancy_entropy_before_bits": round(entropy_bits(before), 6),
        "occupancy_entropy_after_bits": round(entropy_bits(after), 6),
        "cells_drawn": int((after > 0).sum()),
        "samples": cfg.n_samples,
        "mixup_samples": int(plan.samples.is_mixup.sum()),
        "draws": plan.samples.n_slots,
        "distinct_series_drawn": int(len(np.unique(plan.samples.slot_series))),
        "ray_nodes": merge_node_counts(*(p.node_counts() for p in passes)),
        "units": {p.stage: p.total for p in passes},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "leakage_excluded": {"count": len(scores.excluded), "series": [
            {"series_id": sid, "benchmark": b, "matched_by": by} for sid, b, by in scores.excluded]},
        "leakage_check": scores.leakage.record() if scores.leakage is not None else None,
    }
