"""Pretraining windows: crop, reject, z-clip, mask, collate (docs/design.md, "UTP backbone and pretraining").

Pure numpy so that the data pipeline (Ray Data ``map_batches``) can build batches on CPU workers without torch.
Every knob is an argument with the paper's / public code's value as its default, gathered in ``WindowConfig``
for callers that take a typed config:

- a window is ``context_length`` (2048) points of history and ``horizon_length`` points of target, cropped at a
  random place; windows with under ``min_observed`` (50%) observed points are rejected;
- values are z-scored with the context statistics and points with ``|z| > z_clip`` (4) become NaN;
- random sequence masking sets a prefix of ``randint(0, max_context - l_min)`` points to NaN (``l_min`` = 48), so
  the backbone sees effective context lengths from 48 to 2048 (paper Eq. 2; the public code masks points, the
  paper says patches: points are the finer, public-code choice);
- the number of output patches is uniform in 1..16 per batch;
- ``collate`` left-pads contexts (right-pads targets) with NaN to a common multiple of the patch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from infra.config import StrictModel

Window = tuple[np.ndarray, np.ndarray]


class WindowConfig(StrictModel):
    """Knobs of pretraining window construction (defaults: the paper and the public code)."""

    model_config = ConfigDict(frozen=True)

    context_length: int = Field(2048, gt=0, description="max history points of a window (L_max)")
    max_patches: int = Field(16, gt=0, description="output patches are drawn from 1..max_patches per batch")
    patch_size: int = Field(16, gt=0)
    min_observed: float = Field(0.5, ge=0.0, le=1.0, description="reject windows with fewer observed points")
    min_context: int = Field(1, gt=0, description="fewest history points a window may have")
    z_clip: float | None = Field(4.0, gt=0.0, description="|z| above this becomes NaN; None disables")
    std_floor: float = Field(1e-5, gt=0.0, description="z-score std floor (same as the backbone's)")
    l_min: int = Field(48, gt=0, description="random masking keeps at least this many points (L_min)")
    random_mask: bool = True

    @model_validator(mode="after")
    def _check(self) -> WindowConfig:
        if self.l_min > self.context_length:
            raise ValueError(f"l_min={self.l_min} exceeds context_length={self.context_length}")
        if self.min_context > self.context_length:
            raise ValueError(f"min_context={self.min_context} exceeds context_length={self.context_length}")
        return self


def sample_window(
    values: np.ndarray,
    rng: np.random.Generator,
    context_length: int,
    horizon_length: int,
    min_observed: float = 0.5,
    min_context: int = 1,
) -> Window | None:
    """A random (context, target) crop of one series, or None when the series cannot give a usable window.

    A series of at least ``context_length + horizon_length`` points gives a full window at a uniform offset.
    A shorter one keeps all its history up to ``context_length`` points (the context may then be shorter) and
    a target of up to ``horizon_length`` points, right-padded with NaN to ``horizon_length`` (the loss skips
    NaN), so short series still train the model. Rejected (None): fewer than ``min_context + 1`` points, an
    observed share below ``min_observed`` over the window's real points, or no observed point in the context
    or in the target. Returns float32 arrays: context [<= context_length], target [horizon_length].
    """
    if context_length < 1 or horizon_length < 1:
        raise ValueError(f"context_length and horizon_length must be >= 1, got {context_length}, {horizon_length}")
    if not 1 <= min_context <= context_length:
        raise ValueError(f"min_context must be in 1..context_length={context_length}, got {min_context}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = x.shape[0]
    if n < min_context + 1:
        return None
    if n >= context_length + horizon_length:
        split = int(rng.integers(context_length, n - horizon_length + 1))
    else:
        lo = max(min_context, n - horizon_length)
        hi = min(context_length, n - 1)
        split = int(rng.integers(lo, hi + 1))
    context = x[max(0, split - context_length) : split]
    target = x[split : split + horizon_length]
    ctx_obs = np.isfinite(context)
    tgt_obs = np.isfinite(target)
    if not ctx_obs.any() or not tgt_obs.any():
        return None
    if (ctx_obs.sum() + tgt_obs.sum()) < min_observed * (context.size + target.size):
        return None
    padded_target = np.full(horizon_length, np.nan, dtype=np.float32)
    padded_target[: target.size] = target
    return context.astype(np.float32), padded_target


def random_sequence_mask(
    context: np.ndarray, rng: np.random.Generator, max_context: int = 2048, l_min: int = 48
) -> np.ndarray:
    """Copy of ``context`` with a random prefix set to NaN, so the model learns from every context length.

    ``l_mask ~ randint(0, max_context - l_min)`` (inclusive) is drawn on the full ``max_context`` frame aligned
    at the right end, so the kept length ``max_context - l_mask`` is uniform in ``[l_min, max_context]``; a shorter
    context loses only what lies before that kept suffix. The cut is then moved left if needed so the kept part
    holds at least ``min(l_min, observed points)`` observed points.
    """
    if l_min < 1 or l_min > max_context:
        raise ValueError(f"l_min must be in 1..max_context={max_context}, got {l_min}")
    x = np.array(context, dtype=np.float32, copy=True).reshape(-1)
    n = x.shape[0]
    keep = max_context - int(rng.integers(0, max_context - l_min + 1))
    n_mask = max(0, n - keep)
    if n_mask == 0:
        return x
    observed = np.isfinite(x)
    # observed_suffix[i] = observed points in x[i:]; the cut i may go no further right than keeps `need` of them.
    observed_suffix = np.cumsum(observed[::-1])[::-1]
    need = min(l_min, int(observed_suffix[0]))
    allowed = np.flatnonzero(observed_suffix >= need)
    n_mask = min(n_mask, int(allowed[-1]) if allowed.size else 0)
    x[:n_mask] = np.nan
    return x


def zscore_clip_outliers(
    context: np.ndarray, target: np.ndarray, z: float | None = 4.0, std_floor: float = 1e-5
) -> Window:
    """Z-score context and target with the context's NaN-aware mean and population std; ``|z| > z`` -> NaN.

    Returns the z-scored float32 arrays (statistics computed in float64, so series with a large offset keep
    their small variations, which float32 alone would lose). A context with no observed point has no statistics:
    both outputs are then all NaN. ``z=None`` only z-scores.
    """
    c = np.asarray(context, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    observed = np.isfinite(c)
    if not observed.any():
        return c.astype(np.float32), np.full(t.shape, np.nan, dtype=np.float32)
    mean = c[observed].mean()
    std = max(float(c[observed].std()), std_floor)
    cz = np.where(observed, (c - mean) / std, np.nan)
    tz = np.where(np.isfinite(t), (t - mean) / std, np.nan)
    if z is not None:
        with np.errstate(invalid="ignore"):
            cz[np.abs(cz) > z] = np.nan
            tz[np.abs(tz) > z] = np.nan
    return cz.astype(np.float32), tz.astype(np.float32)


def draw_num_future_patches(rng: np.random.Generator, max_patches: int = 16) -> int:
    """Output patches for one batch, uniform in 1..max_patches (one draw per batch keeps the batch rectangular)."""
    if max_patches < 1:
        raise ValueError(f"max_patches must be >= 1, got {max_patches}")
    return int(rng.integers(1, max_patches + 1))


def collate(windows: Sequence[Window], patch_size: int = 16) -> Window:
    """Stack windows: contexts left-padded, targets right-padded with NaN to multiples of ``patch_size``.

    Left padding keeps every context's last point next to the forecast; padding to whole patches means the
    backbone adds none, and whole NaN patches are masked out of attention.
    """
    if not windows:
        raise ValueError("collate needs at least one window")
    ctx_len = max(np.asarray(c).size for c, _ in windows)
    tgt_len = max(np.asarray(t).size for _, t in windows)
    width = -(-max(ctx_len, 1) // patch_size) * patch_size
    horizon = -(-max(tgt_len, 1) // patch_size) * patch_size
    context = np.full((len(windows), width), np.nan, dtype=np.float32)
    target = np.full((len(windows), horizon), np.nan, dtype=np.float32)
    for i, (c, t) in enumerate(windows):
        c = np.asarray(c, dtype=np.float32).reshape(-1)
        t = np.asarray(t, dtype=np.float32).reshape(-1)
        if c.size:
            context[i, width - c.size :] = c
        target[i, : t.size] = t
    return context, target


def build_batch(
    series: Sequence[np.ndarray], rng: np.random.Generator, cfg: WindowConfig | None = None
) -> Window | None:
    """One pretraining batch from raw series: draw F, crop, reject, z-clip, mask, collate.

    Returns (context [B, Lmax], target [B, F * patch_size]) float32, B <= len(series) (rejected series are
    dropped), or None when every series was rejected.
    """
    cfg = cfg or WindowConfig()
    horizon = draw_num_future_patches(rng, cfg.max_patches) * cfg.patch_size
    kept: list[Window] = []
    for values in series:
        window = sample_window(values, rng, cfg.context_length, horizon, cfg.min_observed, cfg.min_context)
        if window is None:
            continue
        context, target = zscore_clip_outliers(window[0], window[1], cfg.z_clip, cfg.std_floor)
        if cfg.random_mask:
            context = random_sequence_mask(context, rng, cfg.context_length, cfg.l_min)
        kept.append((context, target))
    if not kept:
        return None
    return collate(kept, cfg.patch_size)
