"""Long-tail merging, balanced draws, sample rendering and grid mixup (BLAST steps 4-6).

Everything here is a pure function of its inputs and an explicit ``numpy.random.Generator``, so the stage's
output is a function of (inputs, config, seed) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATCH_ALL_CELL = -1  # the cell the long tail is merged into
MIXUP_CELL = -2  # grid_cell of a mixup sample (its sources come from several cells)


# --- step 4: long tail and draws -------------------------------------------------------------------------
@dataclass
class LongTail:
    cells: np.ndarray  # per series, CATCH_ALL_CELL for members of cropped cells
    minimal_prob: float  # cells with a smaller share were cropped
    cropped_cells: int  # non-empty cells merged into the catch-all
    catch_all_members: int


def longtail_merge(cells: np.ndarray, grid_size: int, threshold: float) -> LongTail:
    """The reference's crop: sort all cell shares ascending (empty cells included), accumulate until the sum
    exceeds ``threshold``; cells with a share below the share reached there are emptied into one catch-all.
    """
    cells = np.asarray(cells, dtype=np.int64)
    counts = np.bincount(cells, minlength=grid_size * grid_size)
    probs = counts / max(1, cells.size)
    ordered = np.sort(probs)
    hit = np.flatnonzero(np.cumsum(ordered) > threshold)
    minimal = float(ordered[hit[0]]) if hit.size else 0.0
    cropped = (probs < minimal) & (counts > 0)
    merged = np.where(cropped[cells], CATCH_ALL_CELL, cells).astype(np.int32)
    return LongTail(merged, minimal, int(cropped.sum()), int(counts[cropped].sum()))


@dataclass
class CellIndex:
    """Members of every non-empty (merged) cell, as sorted cell ids and CSR offsets into ``members``."""

    cell_ids: np.ndarray
    offsets: np.ndarray
    members: np.ndarray

    @classmethod
    def build(cls, merged_cells: np.ndarray) -> CellIndex:
        order = np.argsort(merged_cells, kind="stable")
        ids, counts = np.unique(merged_cells[order], return_counts=True)
        return cls(ids, np.concatenate([[0], np.cumsum(counts)]), order)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def balanced_draws(
    index: CellIndex, n: int, rng: np.random.Generator, anneal_progress: np.ndarray | None = None
) -> np.ndarray:
    """``n`` i.i.d. draws: a non-empty cell uniformly, then one of its members uniformly (with replacement).

    With ``anneal_progress`` (a in [0, 1] per draw) the cell distribution is (1 - a) uniform + a empirical,
    the reference's linear anneal from uniform to the cells' own shares.
    """
    sizes = index.sizes
    n_cells = len(sizes)
    cell = rng.integers(0, n_cells, size=n)
    if anneal_progress is not None:
        empirical = np.searchsorted(np.cumsum(sizes) / sizes.sum(), rng.random(n), side="right")
        empirical = np.minimum(empirical, n_cells - 1)
        cell = np.where(rng.random(n) < anneal_progress, empirical, cell)
    member = rng.integers(0, sizes[cell])
    return index.members[index.offsets[cell] + member]


# --- step 5: samples ------------------------------------------------------------------------------------
def observed_span(values: np.ndarray, reproduce_offbyone: bool = False) -> tuple[int, int]:
    """``(start, stop)`` of the first..last finite point; the reference's off-by-one drops the last one."""
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        return 0, 0
    stop = int(finite[-1]) + (0 if reproduce_offbyone else 1)
    return int(finite[0]), max(int(finite[0]), stop)


def normalized_span(values: np.ndarray, reproduce_offbyone: bool = False) -> np.ndarray:
    """The series z-scored over its finite values (NaN-aware; a zero std divides by 1), observed span only."""
    x = np.array(values, dtype=np.float64)
    x[~np.isfinite(x)] = np.nan
    start, stop = observed_span(x, reproduce_offbyone)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(0)
    std = finite.std()
    return (x[start:stop] - finite.mean()) / (std if std != 0 else 1.0)


def window_starts(span_lengths: np.ndarray, sample_length: int, rng: np.random.Generator) -> np.ndarray:
    """Random window start per draw: uniform in [0, len - L] for a span longer than L, else 0."""
    high = np.maximum(np.asarray(span_lengths, dtype=np.int64) - sample_length + 1, 1)
    return rng.integers(0, high)


def cut_sample(span: np.ndarray, start: int, sample_length: int) -> np.ndarray:
    """A span shorter than the sample is right-padded with NaN; a longer one gives the window at ``start``."""
    out = np.full(sample_length, np.nan, dtype=np.float32)
    piece = span[start : start + sample_length]
    out[: piece.size] = piece
    return out


# --- step 6: grid mixup ---------------------------------------------------------------------------------
def mixup(sources: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mix k rendered samples: NaN -> 0, z-score each, weighted sum; points missing everywhere stay NaN."""
    x = np.asarray(sources, dtype=np.float64)
    missing = np.isnan(x)
    x = np.where(missing, 0.0, x)
    std = x.std(axis=1, keepdims=True)
    x = (x - x.mean(axis=1, keepdims=True)) / np.where(std == 0, 1.0, std)
    mixed = np.asarray(weights, dtype=np.float64) @ x
    mixed[missing.all(axis=0)] = np.nan
    return mixed.astype(np.float32)


@dataclass
class SamplePlan:
    """Which balanced draws make which sample: ``k`` draws per sample, slots ``offsets[i]:offsets[i+1]``."""

    k: np.ndarray  # sources per sample
    is_mixup: np.ndarray
    offsets: np.ndarray  # int64, len n_samples + 1
    slot_series: np.ndarray  # series index of every slot (draw)
    slot_weight: np.ndarray  # mixup weight of every slot (1 for plain samples)

    @property
    def n_slots(self) -> int:
        return int(self.offsets[-1])


def plan_samples(
    index: CellIndex,
    n_samples: int,
    mixup_rate: float,
    max_k: int,
    alpha: float,
    anneal: bool,
    rng_mix: np.random.Generator,
    rng_draw: np.random.Generator,
) -> SamplePlan:
    """Choose the mixup samples (exactly ``round(rate * n)`` of them), their k and weights, and every draw."""
    n_mix = int(round(mixup_rate * n_samples))
    is_mix = np.zeros(n_samples, dtype=bool)
    if n_mix:
        is_mix[rng_mix.choice(n_samples, size=n_mix, replace=False)] = True
    k = np.ones(n_samples, dtype=np.int64)
    k[is_mix] = rng_mix.integers(1, max_k + 1, size=n_mix)
    offsets = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)
    weights = np.ones(int(offsets[-1]))
    mix_ids = np.flatnonzero(is_mix)
    for kk in range(1, max_k + 1):
        ids = mix_ids[k[mix_ids] == kk]
        if ids.size:
            w = rng_mix.dirichlet(np.full(kk, alpha), size=ids.size)
            weights[offsets[ids][:, None] + np.arange(kk)[None, :]] = w
    progress = None
    if anneal:
        progress = np.repeat(np.arange(n_samples, dtype=np.float64) / max(1, n_samples), k)
    slots = balanced_draws(index, int(offsets[-1]), rng_draw, progress)
    return SamplePlan(k, is_mix, offsets, slots, weights)


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of an occupancy histogram."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: a single cell gives 0.0, not -0.0
