"""No benchmark leakage: the evaluation benchmarks' series never enter the training corpus.

Two checks, both applied where the BLAST stage reads its inputs (:mod:`corpus.blast.balance`):

- **identity**: a source that *is* a benchmark's dataset (its ``benchmark:`` field, its name, or every one of
  its paths named like the benchmark in some archive: ``PEMS08``, ``LOS_LOOP``, ``ETTh2.csv``, see
  ``BenchmarkSpec.aliases``) has all its series excluded;
- **content**: every benchmark series is cut into non-overlapping windows of ``window`` values, each value
  rounded to ``mantissa_bits`` significant bits of its float32 form, and each informative window (at least
  ``min_distinct`` distinct rounded values, so constant and near-constant stretches never match) hashed into a
  set. On the corpus side a rolling hash gives the same 64-bit hash at *every* offset of every series in O(n)
  numpy work, so a copy of at least ``2 * window - 1`` values, whatever its name, start offset, truncation or
  float width, contains an aligned benchmark window and is excluded.

The index (sorted hashes and which benchmark owns each) is built once in the driver, written beside the
storage root's work files under a content-addressed name and loaded once per worker process; the scoring
units match their own series against it. What was checked, and how, is part of the training corpus's
fingerprint. The method, its limits and its measured cost are described in ``docs/leakage.md``.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from infra.config import StrictModel
from infra.storage import filesystem, join, to_url, write_bytes_atomic

INDEX_FOLDER = "_work/leakage"  # under the storage root: every node of a cluster sees it
_CHUNK = 1 << 20  # offsets hashed at a time: bounds a worker's memory on very long series
_PREFILTER_BITS = 24  # a 2 MB bitmap of the hashes' top bits answers most lookups before the binary search
_BASE = 0x9E3779B97F4A7C15  # odd, so it is invertible modulo 2**64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_SALT = np.uint64(0x5851F42D4C957F2D)
_DATA_SUFFIXES = (".csv", ".npz", ".h5", ".hdf5", ".tsf", ".parquet", ".pq", ".arrow", ".json", ".txt")
_PACK_SUFFIXES = (".gz", ".bz2", ".xz", ".zip", ".zst")


class LeakageError(ValueError):
    """The leakage check cannot be made as configured; the message names the benchmark or source and the fix."""


class LeakageConfig(StrictModel):
    """How the training corpus is checked against the evaluation benchmarks (``benchmarks.names``)."""

    window: int = Field(
        64, ge=8, le=4096,
        description="values per fingerprinted window: any copy of at least 2 * window - 1 values is caught",
    )
    mantissa_bits: int = Field(
        12, ge=4, le=23, description="significant bits kept of each float32 value before hashing (12: ~3.6 digits)"
    )
    min_distinct: int = Field(
        8, ge=2, description="a benchmark window needs this many distinct rounded values to be fingerprinted"
    )
    unchecked: dict[str, str] = Field(
        default_factory=dict,
        description="benchmark -> reason: skip the content check of a benchmark whose data is not available here "
        "(recorded in the manifest as not checked); the identity check still applies",
    )

    @field_validator("unchecked")
    @classmethod
    def _reasons(cls, unchecked: dict[str, str]) -> dict[str, str]:
        empty = [name for name, reason in unchecked.items() if not str(reason).strip()]
        if empty:
            raise ValueError(f"give a reason for skipping the content check of {', '.join(empty)}")
        return unchecked

    def params(self) -> dict[str, int]:
        return {"window": self.window, "mantissa_bits": self.mantissa_bits, "min_distinct": self.min_distinct}


# --- fingerprints ----------------------------------------------------------------------------------------
def quantize(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint32 keys, finite mask): float32 bit patterns rounded to ``bits`` mantissa bits.

    Integer arithmetic on the bit pattern (no logarithms), so every machine rounds alike; a carry into the
    exponent is the correct rounding. A float64 input is cast to float32 first, as the corpus stores it.
    """
    x = np.ascontiguousarray(values, dtype=np.float32)
    ok = np.isfinite(x)
    drop = 23 - bits
    keys = x.view(np.uint32).copy()
    if drop:
        keys += np.uint32(1 << (drop - 1))
        keys &= np.uint32((0xFFFFFFFF >> drop) << drop)
    keys[x == 0] = 0  # -0.0 is 0.0
    return keys, ok


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit (uint64 arithmetic wraps)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@lru_cache(maxsize=4)
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``BASE**k`` and ``BASE**-k`` modulo 2**64 for k < n."""
    out = []
    for base in (_BASE, _BASE_INV):
        p = np.full(n, base, dtype=np.uint64)
        p[0] = 1
        out.append(np.cumprod(p, dtype=np.uint64))
    return out[0], out[1]


def _hash_chunk(values: np.ndarray, window: int, bits: int) -> np.ndarray:
    """Hash of the window at every offset of ``values`` (0 where a window holds a non-finite value)."""
    keys, ok = quantize(values, bits)
    n = len(keys)
    m = n - window + 1
    pw, ipw = _powers(1 << max(n - 1, 1).bit_length())
    prefix = np.zeros(n + 1, dtype=np.uint64)
    np.cumsum(_mix(keys.astype(np.uint64) + _SALT) * pw[:n], out=prefix[1:])
    # sum_j token[o + j] * BASE**j, whatever o: the same window hashes alike at any offset
    h = _mix((prefix[window:] - prefix[:m]) * ipw[:m])
    bad = np.concatenate([[0], np.cumsum(~ok)])
    h[(bad[window:] - bad[:m]) > 0] = 0
    return h


def window_hashes(values: np.ndarray, window: int, bits: int) -> np.ndarray:
    """64-bit hash of the ``window`` values at every offset (``len - window + 1`` of them), chunk by chunk."""
    values = np.asarray(values)
    m = len(values) - window + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    parts = [_hash_chunk(values[s : s + _CHUNK + window - 1], window, bits) for s in range(0, m, _CHUNK)]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def benchmark_windows(values: np.ndarray, cfg: LeakageConfig) -> np.ndarray:
    """Hashes of the informative non-overlapping windows of every column of ``values [T, N]``."""
    w = cfg.window
    out = []
    for col in np.asarray(values, dtype=np.float32).T:
        n = len(col) // w
        if n == 0:
            continue
        col = col[: n * w]
        h = window_hashes(col, w, cfg.mantissa_bits)[::w]
        keys = np.sort(quantize(col, cfg.mantissa_bits)[0].reshape(n, w), axis=1)
        distinct = 1 + (np.diff(keys, axis=1) != 0).sum(axis=1)
        out.append(h[(distinct >= cfg.min_distinct) & (h != 0)])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


@dataclass
class FingerprintIndex:
    """Sorted distinct window hashes of the benchmarks and which benchmark each belongs to (the first listed)."""

    names: tuple[str, ...]
    hashes: np.ndarray  # uint64, sorted, distinct
    owner: np.ndarray  # int16 index into names
    window: int
    bits: int
    _bitmap: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, per_benchmark: dict[str, np.ndarray], window: int, bits: int) -> FingerprintIndex:
        names = tuple(per_benchmark)
        all_h = np.concatenate([per_benchmark[n] for n in names] + [np.zeros(0, np.uint64)])
        owners = np.concatenate([np.full(len(per_benchmark[n]), i, np.int16) for i, n in enumerate(names)]
                                + [np.zeros(0, np.int16)])
        hashes, first = np.unique(all_h, return_index=True)
        return cls(names, hashes, owners[first], window, bits)

    def sha256(self) -> str:
        h = hashlib.sha256(json.dumps([self.names, self.window, self.bits]).encode())
        h.update(self.hashes.astype("<u8").tobytes())
        h.update(self.owner.astype("<i2").tobytes())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, hashes=self.hashes, owner=self.owner, names=np.array(self.names, dtype=str),
                 params=np.array([self.window, self.bits], dtype=np.int64))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FingerprintIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            window, bits = (int(v) for v in z["params"])
            return cls(tuple(str(n) for n in z["names"]), z["hashes"], z["owner"], window, bits)

    def _prefilter(self) -> np.ndarray:
        if self._bitmap is None:
            bitmap = np.zeros(1 << (_PREFILTER_BITS - 3), dtype=np.uint8)
            top = (self.hashes >> np.uint64(64 - _PREFILTER_BITS)).astype(np.int64)
            np.bitwise_or.at(bitmap, top >> 3, (1 << (top & 7)).astype(np.uint8))
            self._bitmap = bitmap
        return self._bitmap

    def matches(self, values: np.ndarray) -> np.ndarray:
        """Windows of ``values`` found in the index, per benchmark (counts in ``names`` order)."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        if len(self.hashes) == 0:
            return counts
        bitmap = self._prefilter()
        m = len(values) - self.window + 1
        for s in range(0, max(m, 0), _CHUNK):
            h = _hash_chunk(np.asarray(values[s : s + _CHUNK + self.window - 1]), self.window, self.bits)
            top = (h >> np.uint64(64 - _PREFILTER_BITS)).astype(np.int64)
            cand = h[((bitmap[top >> 3] >> (top & 7)) & 1).astype(bool) & (h != 0)]
            if cand.size:
                pos = np.minimum(np.searchsorted(self.hashes, cand), len(self.hashes) - 1)
                hit = self.hashes[pos] == cand
                counts += np.bincount(self.owner[pos[hit]], minlength=len(self.names))
        return counts

    def match(self, values: np.ndarray) -> str | None:
        """The benchmark most of the series' matching windows belong to, or None when none matches."""
        counts = self.matches(values)
        return self.names[int(np.argmax(counts))] if counts.any() else None


@lru_cache(maxsize=4)
def load_index(url: str, storage_options_json: str) -> FingerprintIndex:
    """The index at ``url``, read once per process (scoring units of one stage share it)."""
    fs, path = filesystem(url, json.loads(storage_options_json))
    with fs.open(path, "rb") as fh:
        return FingerprintIndex.from_bytes(fh.read())


# --- declared identity -----------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _file_name(path: str) -> str:
    """A path's last component without compression suffixes (``PEMS08.npz.gz`` -> ``PEMS08.npz``)."""
    base = posixpath.basename(str(path).rstrip("/"))
    while base.lower().endswith(_PACK_SUFFIXES):
        base = base.rsplit(".", 1)[0]
    return base


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if name.lower().endswith(_DATA_SUFFIXES) else name


@dataclass(frozen=True)
class BenchmarkIdentity:
    """What a source may be called when it is this benchmark's dataset: archive names and exact file names."""

    name: str
    aliases: frozenset[str]  # normalised: lower case, letters and digits only
    files: frozenset[str]  # lower-case file names

    def names_path(self, path: str) -> bool:
        base = _file_name(path)
        return base.lower() in self.files or _norm(_stem(base)) in self.aliases

    def names_source(self, name: str) -> bool:
        return _norm(name) in self.aliases


def identity_of(name: str) -> BenchmarkIdentity:
    """The identity table entry of an evaluation benchmark (a registry name, a preset or a file path)."""
    from adaptation.datasets.registry import BENCHMARKS, canonical_name

    spec = BENCHMARKS.get(canonical_name(name))
    if spec is not None:
        return BenchmarkIdentity(spec.name, frozenset(_norm(a) for a in spec.aliases),
                                 frozenset(f.lower() for f in spec.data_files))
    if "/" in name or "." in posixpath.basename(name):  # a generic benchmark file: its own file name
        return BenchmarkIdentity(name, frozenset(), frozenset({_file_name(name).lower()}))
    return BenchmarkIdentity(name, frozenset(), frozenset())  # a synthetic preset is nobody's dataset


def benchmark_name(name: str) -> str:
    """The name a benchmark is recorded under: the registry's canonical name, else as given."""
    from adaptation.datasets.registry import BENCHMARKS, canonical_name

    return canonical_name(name) if canonical_name(name) in BENCHMARKS else name


def source_identity(source: Any, identities: list[BenchmarkIdentity]) -> str | None:
    """The evaluation benchmark ``source`` (a ``SourceConfig``) is the dataset of, or None.

    A source is a benchmark's dataset when it says so (``benchmark:``), when its name is one of the
    benchmark's names, or when every one of its paths is; a source only some of whose paths are benchmark
    datasets cannot be split by series afterwards, so it is an error naming them.
    """
    declared = getattr(source, "benchmark", None)
    if declared:
        wanted = benchmark_name(declared)
        return next((i.name for i in identities if i.name == wanted), None)
    by_name = [i.name for i in identities if i.names_source(source.name)]
    if by_name:
        return by_name[0]
    by_path = {p: [i.name for i in identities if i.names_path(p)] for p in source.paths}
    named = sorted({b for found in by_path.values() for b in found})
    if not named:
        return None
    if len(named) == 1 and all(by_path.values()):
        return named[0]
    which = ", ".join(f"{p} ({', '.join(b)})" for p, b in by_path.items() if b)
    raise LeakageError(
        f"source {source.name}: paths {which} are evaluation benchmark datasets and its other paths are not; "
        "list them as a source of their own (or set benchmark: on the source)"
    )


# --- the filter the BLAST stage applies ------------------------------------------------------------------
@dataclass(frozen=True)
class LeakageFilter:
    """What the training-corpus build excludes: small and picklable (the index itself is a file)."""

    benchmarks: tuple[str, ...]  # the evaluation benchmarks, sorted
    identity: tuple[tuple[str, str], ...]  # (corpus dataset, benchmark) of sources that are a benchmark's dataset
    index_url: str | None  # None when no benchmark's content is checked
    index_sha256: str
    params: tuple[tuple[str, int], ...]
    checked: tuple[tuple[str, str, str], ...]  # (benchmark, "checked" | "not checked", detail)
    windows: tuple[tuple[str, int], ...] = ()  # fingerprinted windows per content-checked benchmark

    def identity_of(self, dataset: str) -> str | None:
        return dict(self.identity).get(dataset)

    def fingerprint(self) -> dict[str, Any]:
        """What the training corpus's version id covers: the list, the index's content, the identities."""
        return {"benchmarks": list(self.benchmarks), "identity": [list(p) for p in self.identity],
                "index_sha256": self.index_sha256, "params": dict(self.params),
                "content": [list(c) for c in self.checked]}

    def record(self) -> dict[str, Any]:
        """``stats.leakage_check`` of the manifest: what was checked and how."""
        windows = dict(self.windows)
        rows = []
        for name, state, detail in self.checked:
            row: dict[str, Any] = {"benchmark": name, "content": state,
                                   "identity_sources": [d for d, b in self.identity if b == name]}
            if state == "checked":
                row["windows"] = windows.get(name, 0)
            else:
                row["reason"] = detail
            rows.append(row)
        return {"benchmarks": rows, **dict(self.params), "index_sha256": self.index_sha256}


def build_filter(
    cfg: LeakageConfig,
    names: list[str],
    sources: list[Any],
    root: str,
    *,
    data_dir: str | None = None,
    benchmark_options: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> LeakageFilter:
    """Identities and the content index of the evaluation benchmarks ``names``, for ``sources``.

    Benchmarks are loaded one at a time and only their window hashes kept (8-10 B per window). A benchmark
    whose data is not here fails the check, naming it and how to get it, unless ``cfg.unchecked`` skips it.
    """
    from corpus.ingest import dataset_name

    benchmarks = sorted({benchmark_name(n) for n in names})
    identities = [identity_of(b) for b in benchmarks]
    identity = tuple(sorted((dataset_name(s), b) for s in sources if (b := source_identity(s, identities))))
    skip = {benchmark_name(k): v for k, v in cfg.unchecked.items()}
    per_benchmark: dict[str, np.ndarray] = {}
    checked = []
    missing: list[str] = []
    for name in benchmarks:
        if name in skip:
            checked.append((name, "not checked", str(skip[name]).strip()))
            continue
        try:
            values = _benchmark_values(name, data_dir, benchmark_options, storage_options)
        except LeakageError as exc:  # every benchmark without data is named in one error, not one per rerun
            missing.append(str(exc))
            continue
        per_benchmark[name] = benchmark_windows(values, cfg)
        checked.append((name, "checked", ""))
    if missing:
        raise LeakageError(missing[0] if len(missing) == 1 else
                           f"{len(missing)} benchmarks have no data here: " + " | ".join(missing))
    index = FingerprintIndex.build(per_benchmark, cfg.window, cfg.mantissa_bits)
    sha = index.sha256()
    url = None
    if per_benchmark:
        fs, path = filesystem(join(root, INDEX_FOLDER, f"index-{sha[:24]}.npz"), storage_options)
        url = to_url(fs, path)  # absolute: workers need not share the driver's working directory
        if not fs.exists(path):
            write_bytes_atomic(fs, path, index.to_bytes())
    return LeakageFilter(tuple(benchmarks), identity, url, sha, tuple(sorted(cfg.params().items())),
                         tuple(checked), tuple((n, int(len(h))) for n, h in per_benchmark.items()))


def _benchmark_values(
    name: str, data_dir: str | None, options: dict[str, Any] | None, storage_options: dict[str, Any] | None
) -> np.ndarray:
    """A benchmark's values ``[T, N]`` as the evaluation reads them, or the one-line error saying how to get them."""
    from adaptation.benchmark_options import load_benchmark

    try:
        return load_benchmark(name, data_dir, options, storage_options).values
    except FileNotFoundError as exc:
        reason = (str(exc).strip().splitlines() or [""])[0].split("; pass download=True")[0]
        raise LeakageError(
            f"leakage check: benchmark {name!r} has no data here to check the corpus against ({reason}); "
            f"{_where_to_get(name)}put its files under benchmarks.data_dir, or skip its content check with "
            f"leakage.unchecked: {{{name}: <reason>}}"
        ) from None


def _where_to_get(name: str) -> str:
    """``get ETTh2.csv from URL; `` for a registry benchmark with direct downloads (its notes otherwise)."""
    from adaptation.datasets.registry import BENCHMARKS

    spec = BENCHMARKS.get(name)
    if spec is None:
        return ""
    urls = [f"{d.filename} from {d.url}" for d in spec.downloads if d.url]
    return f"get {', '.join(urls)}; " if urls else ""


def match_series(index: FingerprintIndex | None, values: np.ndarray) -> str | None:
    """The benchmark a corpus series' values belong to by content, or None."""
    return None if index is None else index.match(values)
