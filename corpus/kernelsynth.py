"""KernelSynth: synthetic series drawn from Gaussian-process priors with randomly composed kernels.

What it does (the Chronos reference, made fast, seeded and restartable): for series ``i`` draw ``j`` uniformly
from ``1..max_kernels``, pick ``j`` kernels of the 33-kernel bank (:mod:`corpus.kernels`) uniformly with
replacement, fold them left to right with ``+`` or ``*`` (``*`` with ``product_probability``) and draw one
sample of the zero-mean GP prior with covariance ``K = k(x, x)`` on ``x = linspace(0, 1, length)``.

Why it is fast and still exact. The reference factors every 1024 x 1024 ``K`` with an SVD (about 0.5 s).
Here the expression is expanded into a sum of products of base kernels (``(a + b) * c = a*c + b*c``) and each
product is drawn independently (independent Gaussians add their covariances, so the sum has covariance
exactly ``K``), each by the cheapest exact route:

- *diagonal*: a product holding a white kernel is diagonal (``White * k = diag(noise * k(x_i, x_i))``):
  ``sqrt(diag) * z``.
- *features*: every other base kernel is numerically low rank on the grid (rank <= 32 at L = 1024). Its
  factor ``F`` (``F F^T = K_b``) comes once per process from LAPACK's pivoted Cholesky (``dpstrf``), which
  stops when the largest remaining pivot is below ``L * eps * max(diag)``: the neglected part is PSD with
  entries at the float64 round-off of ``K_b`` itself. The Hadamard product of kernels is the Gram matrix of
  the row-wise Kronecker product of their factors, so ``sum_n prod_i F_i[x, n_i] z[n]`` has covariance
  exactly ``prod_i K_i``; it is contracted with one matrix product without forming ``K``.
- *dense*: products whose feature count exceeds ``max_features`` (three or more wide kernels) are summed into
  one dense matrix (Toeplitz rows multiplied, then the linear factors) and factored by Cholesky (``dpotrf``;
  success means ``L L^T = K`` up to LAPACK's backward error) or, if ``K`` is singular to working precision,
  by pivoted Cholesky (``dpstrf``, exact for a semidefinite ``K`` up to the same round-off). No jitter is
  added unless ``jitter`` asks for it (then it is an explicit independent white term, documented, not a
  silent fix).

A covariance whose factorization leaves a residual diagonal below ``-psd_rtol * max(diag)`` or yields
non-finite values is a genuine linear-algebra failure: the kernel is redrawn from the series' next
deterministic sub-stream and the attempt is recorded in the row's attributes, as the reference redraws.

Reproducibility: series ``i``, attempt ``a`` uses ``numpy.random.SeedSequence(seed, spawn_key=(i, a))`` for
its kernel draw and its normals, and BLAS runs single-threaded in every task (parallelism comes from Ray tasks,
one per chunk, on whichever nodes the cluster has: :mod:`infra.stage_runtime`), so series ``i`` is
bit-identical whatever ``workers``, ``chunk_size`` or the nodes; published parts are cut by ``part_rows``
alone, so their bytes are identical too. The manifest's ``stats.ray_nodes`` says how many chunks each Ray
node computed.

Restartability: each chunk of ``chunk_size`` series is written atomically to
``{out_root}/_work/kernelsynth/{version_id}/chunk-NNNNNN.parquet`` (under the storage root, so every node of a
cluster sees it: on S3 it is on S3); a chunk whose node died is recomputed elsewhere; a killed run restarts
from the chunks it has; the version is then assembled in index order through
:class:`infra.versions.VersionWriter` and the work folder removed. ``freq`` is None by default: the periods
are defined in samples on a unit grid (24 samples is "daily at hourly frequency" only if one reads it so),
and the corpus mixes them, so no calendar is claimed.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ConfigDict, Field
from scipy.linalg import lapack, toeplitz

from corpus.kernels import BaseKernel, KernelExpr, Op, kernel_bank
from corpus.schema import content_hash
from infra.config import StrictModel
from infra.fingerprint import code_version
from infra.schemas import KERNELSYNTH_SCHEMA
from infra.stage_runtime import StageRun, run_units
from infra.storage import filesystem, join, write_bytes_atomic
from infra.versions import DatasetVersion, VersionRecord, VersionWriter, publish_version, version_fingerprint

DATASET = "kernelsynth"
SOURCE = "kernelsynth"
DOMAIN = "synthetic"
CHUNK_RANGE_KEY = b"kernelsynth.range"
CHUNK_STATS_KEY = b"kernelsynth.stats"
# Fields that change how the work is run, never what is written: left out of the version fingerprint.
EXECUTION_FIELDS = frozenset({"workers", "chunk_size"})


class KernelSynthConfig(StrictModel):
    """Everything that decides the synthetic series, plus how the work is split (``workers``, ``chunk_size``)."""

    model_config = ConfigDict(frozen=True)

    n_series: int = Field(1_000_000, ge=1, description="series to synthesize (the paper uses 1,000,000)")
    length: int = Field(1024, ge=1, description="points per series; the grid is linspace(0, 1, length)")
    max_kernels: int = Field(5, ge=1, description="j is drawn uniformly from 1..max_kernels")
    product_probability: float = Field(0.5, ge=0.0, le=1.0, description="chance of '*' (else '+') per step")
    seed: int = Field(0, ge=0, description="root seed; series i uses SeedSequence(seed, spawn_key=(i, attempt))")
    workers: int | None = Field(
        None, ge=1, description="chunks computed at once (Ray tasks); None: as many as the Ray cluster has CPUs"
    )
    chunk_size: int = Field(1000, ge=1, description="series per work unit (one resumable chunk file)")
    part_rows: int = Field(16384, ge=1, description="rows per published Parquet part")
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = Field(
        "zstd", description="Parquet codec of the parts and chunk files"
    )
    start: datetime = Field(datetime(2000, 1, 1), description="start timestamp of every series (the reference's)")
    freq: str | None = Field(None, description="frequency written to rows; None: periods are in samples")
    jitter: float = Field(
        0.0,
        ge=0.0,
        description="variance of an extra white term, relative to the mean of diag(K); 0 keeps samples exact. "
        "Only for reproducing regularised GP samplers: the factorizations here need no jitter.",
    )
    rank_rtol: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="pivoted-Cholesky stopping pivot relative to max(diag); None: LAPACK's length * eps, "
        "the float64 round-off of the matrix itself",
    )
    psd_rtol: float = Field(
        1e-8,
        gt=0.0,
        lt=1.0,
        description="a residual diagonal below -psd_rtol * max(diag) means K is not PSD beyond round-off: redraw",
    )
    max_features: int = Field(
        65536,
        ge=1,
        description="largest product of factor ranks drawn through features; wider products go dense",
    )
    max_redraws: int = Field(16, ge=0, description="redraws allowed per series after linear-algebra failures")
    random_walk_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="chance that a series also gets an independent Wiener-process term (covariance "
        "s^2 min(x, y)): the unit-root behaviour of prices and rates, which no kernel of the bank has; "
        "0 keeps the Chronos reference",
    )

    def fingerprint(self) -> dict[str, Any]:
        """The fields that decide the output (execution-only fields excluded)."""
        return self.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))


# --------------------------------------------------------------------------------------------------------------
# Drawing kernels


def draw_kernel(rng: np.random.Generator, bank_size: int, max_kernels: int, product_probability: float) -> KernelExpr:
    """j ~ U{1..max_kernels}, j bank indices with replacement, then j - 1 operators, in that order of draws."""
    j = int(rng.integers(1, max_kernels, endpoint=True))
    kernels = tuple(int(k) for k in rng.integers(0, bank_size, size=j))
    ops: tuple[Op, ...] = tuple("*" if u < product_probability else "+" for u in rng.random(j - 1))
    return KernelExpr(kernels, ops)


def series_rng(seed: int, index: int, attempt: int) -> np.random.Generator:
    """The generator of series ``index``, attempt ``attempt``: independent of chunking and worker count."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, attempt)))


# --------------------------------------------------------------------------------------------------------------
# Exact Gaussian sampling


def pivoted_cholesky(matrix: np.ndarray, rank_rtol: float | None, psd_rtol: float) -> np.ndarray:
    """``F`` (n x r) with ``F F^T = matrix`` up to round-off, for a positive semidefinite ``matrix``.

    LAPACK ``dpstrf`` with complete pivoting stops at the numerical rank; the neglected Schur complement is
    PSD with diagonal below the stopping pivot. Raises ``LinAlgError`` when the matrix is not PSD beyond
    ``psd_rtol`` (a residual diagonal that negative) or holds non-finite values.
    """
    diag = np.diag(matrix)
    if not np.all(np.isfinite(matrix)):
        raise np.linalg.LinAlgError("covariance holds non-finite values")
    scale = float(diag.max()) if diag.size else 0.0
    if scale <= 0.0:
        if scale < 0.0 or np.any(matrix != 0.0):
            raise np.linalg.LinAlgError(f"covariance has no positive diagonal (max {scale:.3g})")
        return np.zeros((matrix.shape[0], 0))
    tol = -1.0 if rank_rtol is None else rank_rtol * scale
    c, piv, rank, info = lapack.dpstrf(matrix, tol=tol, lower=1)
    if info < 0:
        raise np.linalg.LinAlgError(f"dpstrf: illegal argument {-info}")
    factor = np.empty((matrix.shape[0], rank))
    factor[piv - 1] = np.tril(c[:, :rank])
    residual = diag - np.einsum("ij,ij->i", factor, factor)
    if not np.all(np.isfinite(factor)) or residual.min() < -psd_rtol * scale:
        raise np.linalg.LinAlgError(
            f"covariance is not positive semidefinite: residual diagonal {residual.min():.3g} "
            f"(max diagonal {scale:.3g})"
        )
    return factor


def factor_dense(matrix: np.ndarray, rank_rtol: float | None, psd_rtol: float) -> tuple[np.ndarray, str]:
    """A factor of a dense covariance: plain Cholesky when it succeeds, else pivoted Cholesky.

    Returns the factor and the route taken (``dense-cholesky`` or ``dense-pivoted``) for the statistics.
    """
    c, info = lapack.dpotrf(matrix, lower=1, clean=1)
    if info == 0 and np.all(np.isfinite(c)):
        return c, "dense-cholesky"
    return pivoted_cholesky(matrix, rank_rtol, psd_rtol), "dense-pivoted"


def sample_product(factors: list[np.ndarray], z: np.ndarray) -> np.ndarray:
    """``y[x] = sum_n prod_i F_i[x, n_i] z[n]``: a draw with covariance the Hadamard product of ``F_i F_i^T``.

    The last factor is contracted by one matrix product; the others are expanded row-wise (face-splitting
    product), so memory is ``L * prod(r_i) / r_last`` and work ``L * prod(r_i)``.
    """
    *head, last = factors
    if not head:
        return last @ z
    length = last.shape[0]
    expanded = reduce(lambda g, f: (g[:, :, None] * f[:, None, :]).reshape(length, -1), head[1:], head[0])
    mixed = expanded @ z.reshape(expanded.shape[1], last.shape[1])
    return np.einsum("ij,ij->i", mixed, last)


class GridSampler:
    """Exact GP prior draws on one grid; caches each base kernel's Toeplitz row and low-rank factor.

    One per process and configuration: the 31 non-white factors cost about 0.2-0.4 s at L = 1024 in all and
    are reused by every series.
    """

    def __init__(
        self,
        length: int,
        *,
        rank_rtol: float | None,
        psd_rtol: float,
        max_features: int,
        jitter: float,
    ) -> None:
        self.length = length
        self.bank: tuple[BaseKernel, ...] = kernel_bank(length)
        self.x = np.linspace(0.0, 1.0, length)
        self.distances = self.x - self.x[0]
        self.rank_rtol, self.psd_rtol = rank_rtol, psd_rtol
        self.max_features, self.jitter = max_features, jitter
        self._rows: dict[int, np.ndarray] = {}
        self._factors: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg: KernelSynthConfig) -> GridSampler:
        return cls(
            cfg.length,
            rank_rtol=cfg.rank_rtol,
            psd_rtol=cfg.psd_rtol,
            max_features=cfg.max_features,
            jitter=cfg.jitter,
        )

    def row(self, k: int) -> np.ndarray:
        """First row of a stationary base kernel's (Toeplitz) matrix on the grid."""
        if k not in self._rows:
            self._rows[k] = self.bank[k].profile(self.distances)
        return self._rows[k]

    def product_matrix(self, term: tuple[int, ...]) -> np.ndarray:
        """The dense Hadamard product of base kernels: stationary rows multiplied, one Toeplitz, then linears."""
        rows = [self.row(k) for k in term if self.bank[k].stationary]
        out = toeplitz(reduce(np.multiply, rows)) if rows else np.ones((self.length, self.length))
        for k in term:
            if not self.bank[k].stationary:
                out *= self.bank[k].param ** 2 + np.multiply.outer(self.x, self.x)
        return out

    def factor(self, k: int) -> np.ndarray:
        """The low-rank factor of base kernel ``k`` (pivoted Cholesky, computed once)."""
        if k not in self._factors:
            self._factors[k] = pivoted_cholesky(self.product_matrix((k,)), self.rank_rtol, self.psd_rtol)
        return self._factors[k]

    def term_diagonal(self, term: tuple[int, ...]) -> np.ndarray:
        return reduce(np.multiply, [self.bank[k].diagonal(self.x) for k in term])

    def sample(self, expr: KernelExpr, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """One draw of N(0, K_expr) and the route of each part (diagonal / features / dense-*)."""
        y = np.zeros(self.length)
        routes: list[str] = []
        dense: np.ndarray | None = None
        terms = expr.monomials()
        for term in terms:
            if any(self.bank[k].family == "white" for k in term):
                y += np.sqrt(self.term_diagonal(term)) * rng.standard_normal(self.length)
                routes.append("diagonal")
                continue
            factors = sorted((self.factor(k) for k in term), key=lambda f: f.shape[1])
            width = int(np.prod([f.shape[1] for f in factors]))
            if width <= self.max_features:
                y += sample_product(factors, rng.standard_normal(width))
                routes.append("features")
            else:
                matrix = self.product_matrix(term)
                dense = matrix if dense is None else np.add(dense, matrix, out=dense)
        if dense is not None:
            factor, route = factor_dense(dense, self.rank_rtol, self.psd_rtol)
            y += factor @ rng.standard_normal(factor.shape[1])
            routes.append(route)
        if self.jitter > 0.0:
            mean_var = float(np.mean(sum(self.term_diagonal(t) for t in terms)))
            y += np.sqrt(self.jitter * mean_var) * rng.standard_normal(self.length)
            routes.append("jitter")
        if not np.all(np.isfinite(y)):
            raise np.linalg.LinAlgError("draw holds non-finite values")
        return y, routes


_SAMPLERS: dict[tuple[Any, ...], GridSampler] = {}


def sampler_for(cfg: KernelSynthConfig) -> GridSampler:
    """The process-wide sampler for ``cfg``'s grid and numerical settings (base factors computed once)."""
    key = (cfg.length, cfg.rank_rtol, cfg.psd_rtol, cfg.max_features, cfg.jitter)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = GridSampler.from_config(cfg)
    return _SAMPLERS[key]


@dataclass(frozen=True)
class SynthSeries:
    """One synthesized series and how it was made."""

    index: int
    values: np.ndarray  # float64, the exact draw; stored as float32
    kernel: str
    redraws: int
    failures: tuple[str, ...]
    routes: tuple[str, ...]


def add_random_walk(
    values: np.ndarray, label: str, routes: list[str], cfg: KernelSynthConfig, index: int, attempt: int
) -> tuple[np.ndarray, str, list[str]]:
    """With ``random_walk_probability``, the draw plus ``s * W(x)``, W a Wiener process on the grid.

    Its own sub-stream (spawn key ``(index, attempt, 1)``) leaves the kernel draw and its normals as they are.
    ``s^2`` is the draw's mean square times a log-uniform factor in [0.1, 10], so the walk ranges from a slow
    drift under the kernel's pattern to the whole series.
    """
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(index, attempt, 1)))
    if rng.random() >= cfg.random_walk_probability:
        return values, label, routes
    scale = float(np.sqrt(max(np.mean(values**2), 1e-12) * 10.0 ** rng.uniform(-1.0, 1.0)))
    steps = rng.standard_normal(len(values) - 1) / np.sqrt(max(len(values) - 1, 1))  # the grid's spacing
    walk = np.concatenate([[0.0], np.cumsum(steps)])  # W(0) = 0, Var W(x) = x
    return values + scale * walk, f"{label} + RandomWalk", [*routes, "random-walk"]


def generate_series(cfg: KernelSynthConfig, index: int, sampler: GridSampler | None = None) -> SynthSeries:
    """Series ``index`` of ``cfg``: the same values whatever process, chunk or order computes it."""
    sampler = sampler or sampler_for(cfg)
    failures: list[str] = []
    for attempt in range(cfg.max_redraws + 1):
        rng = series_rng(cfg.seed, index, attempt)
        expr = draw_kernel(rng, len(sampler.bank), cfg.max_kernels, cfg.product_probability)
        label = expr.label(sampler.bank)
        try:
            values, routes = sampler.sample(expr, rng)
        except np.linalg.LinAlgError as exc:
            failures.append(f"{label}: {exc}")
            continue
        if cfg.random_walk_probability > 0.0:
            values, label, routes = add_random_walk(values, label, routes, cfg, index, attempt)
        return SynthSeries(index, values, label, attempt, tuple(failures), tuple(routes))
    raise RuntimeError(
        f"kernelsynth series {index} (seed {cfg.seed}): all {cfg.max_redraws + 1} kernel draws failed: "
        + "; ".join(failures)
    )


def series_table(cfg: KernelSynthConfig, series: list[SynthSeries]) -> pa.Table:
    """Rows in :data:`KERNELSYNTH_SCHEMA` (the canonical schema plus the ``kernel`` formula)."""
    values = np.stack([s.values for s in series]) if series else np.zeros((0, cfg.length))
    values = values.astype(np.float32)
    offsets = pa.array(np.arange(len(series) + 1, dtype=np.int64) * cfg.length)
    attributes = []
    for s in series:
        attrs: dict[str, Any] = {"kernel": s.kernel, "seed": cfg.seed, "index": s.index, "redraws": s.redraws}
        if s.failures:
            attrs["failed_kernels"] = list(s.failures)
        attributes.append(json.dumps(attrs, sort_keys=True))
    n = len(series)
    columns = {
        "series_id": pa.array([f"{DATASET}/{s.index:09d}" for s in series], pa.string()),
        "source": pa.array([SOURCE] * n, pa.string()),
        "domain": pa.array([DOMAIN] * n, pa.string()),
        "freq": pa.array([cfg.freq] * n, pa.string()),
        "start": pa.array([cfg.start] * n, pa.timestamp("us")),
        "target": pa.LargeListArray.from_arrays(offsets, pa.array(values.reshape(-1), pa.float32())),
        "length": pa.array([cfg.length] * n, pa.int64()),
        "content_hash": pa.array([content_hash(v) for v in values], pa.string()),
        "attributes": pa.array(attributes, pa.string()),
        "kernel": pa.array([s.kernel for s in series], pa.string()),
    }
    return pa.Table.from_pydict(columns, schema=KERNELSYNTH_SCHEMA)


def blas_single_thread() -> Any:
    """BLAS limited to one thread: bit-identical factorizations in every process, no oversubscription."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def generate_range(cfg: KernelSynthConfig, start: int, stop: int) -> tuple[pa.Table, dict[str, Any]]:
    """Series ``start..stop-1`` as a table, with counts of the sampling routes and redraws."""
    t0 = time.perf_counter()
    with blas_single_thread():
        sampler = sampler_for(cfg)
        series = [generate_series(cfg, i, sampler) for i in range(start, stop)]
    routes = Counter(r for s in series for r in s.routes)
    stats = {
        "series": len(series),
        "redraws": sum(s.redraws for s in series),
        "routes": dict(sorted(routes.items())),
        "seconds": time.perf_counter() - t0,
    }
    return series_table(cfg, series), stats


# --------------------------------------------------------------------------------------------------------------
# Chunks: the resumable work units


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}.parquet"


def chunk_bounds(cfg: KernelSynthConfig, chunk: int) -> tuple[int, int]:
    return chunk * cfg.chunk_size, min(cfg.n_series, (chunk + 1) * cfg.chunk_size)


def compute_chunk(
    cfg_data: dict[str, Any], chunk: int, work_url: str, storage_options: dict[str, Any] | None
) -> dict[str, Any]:
    """Generate one chunk and write it atomically (runs in a worker process or in-process)."""
    cfg = KernelSynthConfig.model_validate(cfg_data)
    start, stop = chunk_bounds(cfg, chunk)
    table, stats = generate_range(cfg, start, stop)
    table = table.replace_schema_metadata(
        {CHUNK_RANGE_KEY: f"{start}:{stop}".encode(), CHUNK_STATS_KEY: json.dumps(stats).encode()}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=cfg.compression)
    fs, path = filesystem(join(work_url, chunk_name(chunk)), storage_options)
    write_bytes_atomic(fs, path, sink.getvalue().to_pybytes())
    return stats


def _reusable_chunk(fs: Any, path: str, start: int, stop: int) -> dict[str, Any] | None:
    """The stats of a finished chunk file for exactly ``start..stop``, or None (missing or another chunking)."""
    if not fs.exists(path):
        return None
    try:
        with fs.open(path, "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    if meta.get(CHUNK_RANGE_KEY) != f"{start}:{stop}".encode():
        return None
    return json.loads(meta[CHUNK_STATS_KEY])


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]kernelsynth[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )


@dataclass(frozen=True)
class ChunkUnit:
    """One chunk as a unit of stage work: the config, which chunk, and where its file goes."""

    cfg_data: dict[str, Any]
    chunk: int
    work_url: str
    storage_options: dict[str, Any] | None


def compute_chunk_unit(unit: ChunkUnit) -> dict[str, Any]:
    return compute_chunk(unit.cfg_data, unit.chunk, unit.work_url, unit.storage_options)


def _run_chunks(
    cfg: KernelSynthConfig,
    todo: list[int],
    work_url: str,
    storage_options: dict[str, Any] | None,
    on_done: Callable[[int, dict[str, Any]], None],
    tally: StageRun[Any],
) -> None:
    """Compute the missing chunks as Ray tasks (at most ``cfg.workers`` at a time when it is set)."""
    cfg_data = cfg.model_dump(mode="json")
    units = [ChunkUnit(cfg_data, chunk, work_url, storage_options) for chunk in todo]

    def describe(_i: int, unit: ChunkUnit) -> str:
        start, stop = chunk_bounds(cfg, unit.chunk)
        return f"chunk {unit.chunk} (series {start}..{stop - 1})"

    results = run_units(
        compute_chunk_unit, units, stage="kernelsynth", describe=describe, max_in_flight=cfg.workers,
        progress=False, tally=tally,
    )
    for unit, stats in zip(units, results, strict=False):
        on_done(unit.chunk, stats)


def kernelsynth_version_id(cfg: KernelSynthConfig) -> str:
    """Fingerprint of what decides the output: the config (execution fields excluded) and the code."""
    return version_fingerprint({"config": cfg.fingerprint(), "code_version": code_version("corpus", "infra")})


def synthesize(
    cfg: KernelSynthConfig,
    out_root: str,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> DatasetVersion:
    """Synthesize ``cfg.n_series`` series into the ``kernelsynth`` dataset under ``out_root``.

    Idempotent (an already published version is returned without work) and restartable (finished chunks in
    the work folder are reused). Returns the published version.
    """
    version_id = kernelsynth_version_id(cfg)
    work_url = join(out_root, "_work", DATASET, version_id)
    fs, work_path = filesystem(work_url, storage_options)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "memory" in protocols:
        raise ValueError(f"{out_root}: memory:// is private to one process; chunks are written by Ray workers")

    def write(writer: VersionWriter) -> VersionRecord:
        return _synthesize_into(writer, cfg, work_url, storage_options, progress)

    published = publish_version(
        out_root, DATASET, version_id, KERNELSYNTH_SCHEMA, write, storage_options,
        part_max_rows=cfg.part_rows,
        part_max_bytes=sys.maxsize,  # rows alone cut parts, so part bytes do not depend on the chunking
        compression=cfg.compression,
    )
    if not published.reused:
        fs.rm(work_path, recursive=True)
    return published.version


def _finished_chunks(cfg: KernelSynthConfig, fs: Any, work_path: str) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """(stats of the chunks a previous run finished, the chunks still to compute)."""
    chunk_stats: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for chunk in range(-(-cfg.n_series // cfg.chunk_size)):
        stats = _reusable_chunk(fs, join(work_path, chunk_name(chunk)), *chunk_bounds(cfg, chunk))
        if stats is None:
            todo.append(chunk)
        else:
            chunk_stats[chunk] = stats
    return chunk_stats, todo


def _synthesize_into(
    writer: VersionWriter,
    cfg: KernelSynthConfig,
    work_url: str,
    storage_options: dict[str, Any] | None,
    progress: bool,
) -> VersionRecord:
    """Compute the missing chunks into the work folder, then write them all, in order, into ``writer``."""
    fs, work_path = filesystem(work_url, storage_options)
    fs.makedirs(work_path, exist_ok=True)
    chunk_stats, todo = _finished_chunks(cfg, fs, work_path)
    t0 = time.perf_counter()
    with _progress(progress, cfg.n_series) as bar:
        task = bar.add_task("sampling", total=cfg.n_series) if bar else None
        if bar:
            bar.advance(task, sum(s["series"] for s in chunk_stats.values()))

        def on_done(chunk: int, stats: dict[str, Any]) -> None:
            chunk_stats[chunk] = stats
            if bar:
                bar.advance(task, stats["series"])

        tally: StageRun[Any] = StageRun("kernelsynth", len(todo))
        _run_chunks(cfg, todo, work_url, storage_options, on_done, tally)
        assemble = bar.add_task("writing", total=cfg.n_series) if bar else None
        stats = _synth_stats(cfg, chunk_stats, tally, time.perf_counter() - t0)
        _write_parts(writer, cfg, _iter_chunk_tables(fs, work_path, len(chunk_stats)),
                     lambda n: bar.advance(assemble, n) if bar else None)
    return VersionRecord(cfg.model_dump(mode="json"), [], code_version("corpus", "infra"), stats)


def _iter_chunk_tables(fs: Any, work_path: str, n_chunks: int) -> Iterator[pa.Table]:
    for chunk in range(n_chunks):
        with fs.open(join(work_path, chunk_name(chunk)), "rb") as fh:
            yield pq.read_table(fh).replace_schema_metadata(None)


def _write_parts(
    writer: VersionWriter, cfg: KernelSynthConfig, tables: Iterator[pa.Table], advance: Callable[[int], None]
) -> None:
    """Write the chunks, in index order, as parts of exactly ``part_rows`` rows (the last may be short)."""
    buffered: list[pa.Table] = []
    rows = 0
    for table in tables:
        buffered.append(table)
        rows += table.num_rows
        advance(table.num_rows)
        if rows >= cfg.part_rows:
            combined = pa.concat_tables(buffered).combine_chunks()
            full = rows - rows % cfg.part_rows
            for offset in range(0, full, cfg.part_rows):
                writer.write(combined.slice(offset, cfg.part_rows))
            buffered = [combined.slice(full)] if rows > full else []
            rows -= full
    if buffered:
        writer.write(pa.concat_tables(buffered).combine_chunks())


def _synth_stats(
    cfg: KernelSynthConfig, chunk_stats: dict[int, dict[str, Any]], tally: StageRun[Any], seconds: float
) -> dict[str, Any]:
    routes: Counter[str] = Counter()
    for s in chunk_stats.values():
        routes.update(s["routes"])
    return {
        "series": cfg.n_series,
        "redraws": sum(s["redraws"] for s in chunk_stats.values()),
        "routes": dict(sorted(routes.items())),
        "chunks": len(chunk_stats),
        "chunks_computed": tally.total,
        "chunks_reused": len(chunk_stats) - tally.total,
        "ray_nodes": tally.node_counts(),
        "transient_retries": tally.transient_retries,
        "sample_cpu_seconds": round(sum(s["seconds"] for s in chunk_stats.values()), 3),
        "wall_seconds": round(seconds, 3),
    }
