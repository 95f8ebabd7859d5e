"""A synthetic spatio-temporal benchmark: a sensor graph whose signals cycle daily and weekly and diffuse.

Why: the embedded demo and the tests need a benchmark that exists without a download, is small, and has
the structure the STA adapter is meant to exploit (periodicity, spatial correlation along edges, incidents
that spread to neighbours), with known ground truth.

Generative model, for nodes ``i`` at random positions in the unit square:

- graph: a random geometric graph, edges between nodes closer than ``r = sqrt(k / (pi (N - 1)))`` (expected
  degree ``k``), each node joined to at least its nearest neighbour; weight ``exp(-(d / r)^2)``, self-loops 1;
- drive ``u_t,i = level_i * (1 + amp_i * week_t * cycle(t, phi_i)) * weekend_level_t`` where ``cycle`` is a
  daily sine plus a second harmonic (morning and evening peaks), ``phi_i`` varies smoothly with the node's
  x coordinate (nearby sensors peak together) and ``week_t`` damps the cycle on Saturdays and Sundays;
- diffusion: ``s_t+1 = rho * ((1 - a) s_t + a * P s_t) + (1 - rho) * u_t+1 + noise`` with ``P`` the
  row-normalised adjacency (no self-loops), so deviations spread along edges;
- incidents: at random (node, time) the value drops by a factor for a while; each neighbour sees a weaker
  drop ``delay`` steps later;
- missing readings: blocks of zeros (``null_value="zero"``, traffic) or NaN.

Every component draws from its own child of ``SeedSequence(seed)``, so switching one off (e.g.
``incident_rate=0``) leaves the others bit-identical.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field

from adaptation.datasets.calendar import index_timestamps, steps_per_day
from adaptation.datasets.dataset import SpatioTemporalDataset
from infra.config import StrictModel
from infra.freq import normalize_freq

SYNTHETIC_PREFIX = "synthetic-"
SYNTHETIC_START = "2024-01-01"  # a Monday


class SyntheticConfig(StrictModel):
    """Every knob of the generator; relative sizes are fractions of a node's level."""

    model_config = ConfigDict(frozen=True)

    num_nodes: int = Field(40, ge=2)
    num_steps: int = Field(8064, ge=2)
    freq: str = "5min"
    seed: int = 0
    start: str = SYNTHETIC_START
    null_value: Literal["zero", "nan"] = "zero"
    split: str = "6:2:2"
    scaler_per_node: bool = False
    mean_degree: float = Field(4.0, gt=0)
    level_range: tuple[float, float] = (150.0, 350.0)
    amplitude_range: tuple[float, float] = (0.3, 0.6)
    second_harmonic: float = Field(0.5, ge=0)
    phase_span: float = Field(0.25, ge=0, description="fraction of a day the peak time shifts across the map")
    phase_jitter: float = Field(0.03, ge=0, description="per-node random phase, fraction of a day")
    weekend_amplitude_range: tuple[float, float] = (0.5, 0.8)
    weekend_level: float = Field(0.85, gt=0)
    persistence: float = Field(0.8, ge=0, lt=1)
    diffusion: float = Field(0.5, ge=0, le=1)
    noise_std: float = Field(0.05, ge=0)
    incident_rate: float = Field(0.2, ge=0, description="incidents per node per day")
    incident_drop_range: tuple[float, float] = (0.3, 0.7)
    incident_duration_range: tuple[int, int] = (6, 36)
    incident_spread: float = Field(0.5, ge=0, le=1, description="share of the drop each neighbour sees")
    incident_delay_steps: int = Field(2, ge=0)
    missing_rate: float = Field(0.002, ge=0, lt=1, description="fraction of values in missing blocks")
    missing_block_steps: int = Field(12, ge=1)
    min_value: float = Field(1.0, gt=0, description="floor so a real reading is never mistaken for a null 0")


SYNTHETIC_PRESETS: dict[str, SyntheticConfig] = {
    # 4 weeks of 5-minute traffic-like readings on 40 sensors: daily and weekly cycles, incidents, zeros.
    "synthetic-traffic": SyntheticConfig(),
    # 20 weeks of hourly load-like readings on 20 grid nodes: stronger weekly effect, NaN gaps, 7:1:2.
    "synthetic-grid": SyntheticConfig(
        num_nodes=20, num_steps=24 * 7 * 20, freq="h", null_value="nan", split="7:1:2", scaler_per_node=True,
        mean_degree=3.0, level_range=(50.0, 150.0), amplitude_range=(0.2, 0.4), second_harmonic=0.3,
        weekend_amplitude_range=(0.6, 0.9), weekend_level=0.8, persistence=0.6, noise_std=0.03,
        incident_rate=0.05, incident_duration_range=(2, 8), incident_delay_steps=1, missing_block_steps=6,
    ),
}


def synthetic_preset(name: str) -> SyntheticConfig:
    try:
        return SYNTHETIC_PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown synthetic benchmark {name!r}; known: {', '.join(SYNTHETIC_PRESETS)}") from None


def _graph(rng: np.random.Generator, num_nodes: int, mean_degree: float) -> tuple[np.ndarray, np.ndarray]:
    positions = rng.uniform(0.0, 1.0, size=(num_nodes, 2))
    dist = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    radius = float(np.sqrt(mean_degree / (np.pi * (num_nodes - 1))))
    edges = dist < radius
    np.fill_diagonal(edges, False)
    off = dist + np.diag(np.full(num_nodes, np.inf))
    nearest = off.argmin(axis=1)
    edges[np.arange(num_nodes), nearest] = True
    edges |= edges.T
    adjacency = np.where(edges, np.exp(-np.square(dist / radius)), 0.0)
    np.fill_diagonal(adjacency, 1.0)
    return positions, adjacency.astype(np.float32)


def _incidents(
    rng: np.random.Generator, cfg: SyntheticConfig, adjacency: np.ndarray, per_day: int
) -> tuple[np.ndarray, list[dict[str, int | float]]]:
    """Multiplicative factor ``[T, N]`` (1 = no incident) and the list of incidents drawn."""
    steps, nodes = cfg.num_steps, cfg.num_nodes
    factor = np.ones((steps, nodes))
    count = rng.poisson(cfg.incident_rate * nodes * steps / per_day)
    events: list[dict[str, int | float]] = []
    low, high = cfg.incident_duration_range
    for _ in range(count):
        node = int(rng.integers(nodes))
        start = int(rng.integers(steps))
        duration = int(rng.integers(low, high + 1))
        drop = float(rng.uniform(*cfg.incident_drop_range))
        factor[start:start + duration, node] *= 1.0 - drop
        neighbours = np.flatnonzero(adjacency[node] > 0)
        begin = start + cfg.incident_delay_steps
        for other in neighbours[neighbours != node]:
            factor[begin:begin + duration, other] *= 1.0 - cfg.incident_spread * drop
        events.append({"node": node, "start": start, "duration": duration, "drop": drop})
    return factor, events


def generate(cfg: SyntheticConfig, name: str = "synthetic") -> SpatioTemporalDataset:
    """Simulate ``cfg`` (see the module docstring for the model)."""
    freq = normalize_freq(cfg.freq)
    per_day = steps_per_day(freq)
    if per_day is None or per_day < 2:
        raise ValueError(f"synthetic benchmark needs a sub-daily frequency that divides a day, got {cfg.freq!r}")
    graph_ss, node_ss, noise_ss, incident_ss, missing_ss = np.random.SeedSequence(cfg.seed).spawn(5)
    steps, nodes = cfg.num_steps, cfg.num_nodes
    positions, adjacency = _graph(np.random.default_rng(graph_ss), nodes, cfg.mean_degree)

    rng = np.random.default_rng(node_ss)
    level = rng.uniform(*cfg.level_range, size=nodes)
    amplitude = rng.uniform(*cfg.amplitude_range, size=nodes)
    weekend_amp = rng.uniform(*cfg.weekend_amplitude_range, size=nodes)
    phase = 2 * np.pi * (cfg.phase_span * positions[:, 0] + cfg.phase_jitter * rng.standard_normal(nodes))

    timestamps = index_timestamps(steps, freq, cfg.start)
    step_index = np.arange(steps)
    angle = 2 * np.pi * (step_index % per_day) / per_day
    cycle = np.sin(angle[:, None] - phase[None, :]) + cfg.second_harmonic * np.sin(
        2 * angle[:, None] - 2 * phase[None, :]
    )
    day_of_week = ((timestamps - np.datetime64("1970-01-05")) // np.timedelta64(1, "D")) % 7  # Monday = 0
    weekend = (day_of_week >= 5)[:, None]
    week_amp = np.where(weekend, weekend_amp[None, :], 1.0)
    week_level = np.where(weekend, cfg.weekend_level, 1.0)
    drive = level[None, :] * (1.0 + amplitude[None, :] * week_amp * cycle) * week_level

    off_diag = adjacency.astype(np.float64) - np.eye(nodes)
    transition = off_diag / off_diag.sum(axis=1, keepdims=True)
    mix = (1.0 - cfg.diffusion) * np.eye(nodes) + cfg.diffusion * transition
    shocks = np.random.default_rng(noise_ss).standard_normal((steps, nodes)) * (cfg.noise_std * level)[None, :]
    state = np.empty((steps, nodes))
    state[0] = drive[0]
    carry = cfg.persistence * mix.T  # row-vector form: s @ mix.T == (mix @ s.T).T
    for t in range(1, steps):
        state[t] = state[t - 1] @ carry + (1.0 - cfg.persistence) * drive[t] + shocks[t]

    factor, events = _incidents(np.random.default_rng(incident_ss), cfg, adjacency, per_day)
    values = np.maximum(state * factor, cfg.min_value)

    missing = _missing_blocks(np.random.default_rng(missing_ss), cfg)
    values[missing] = 0.0 if cfg.null_value == "zero" else np.nan

    metadata: dict[str, Any] = {
        "generator": cfg.model_dump(mode="json"),
        "positions": positions,
        "incidents": events,
        "missing_fraction": float(missing.mean()),
    }
    return SpatioTemporalDataset(
        name=name, values=values.astype(np.float32), timestamps=timestamps, freq=freq, adjacency=adjacency,
        node_ids=[f"s{i:03d}" for i in range(nodes)], null_value=cfg.null_value, split=cfg.split,
        scaler_per_node=cfg.scaler_per_node, metadata=metadata,
    )


def _missing_blocks(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """Sensor outages: contiguous blocks covering about ``missing_rate`` of the values."""
    mask = np.zeros((cfg.num_steps, cfg.num_nodes), dtype=bool)
    blocks = int(round(cfg.missing_rate * cfg.num_steps * cfg.num_nodes / cfg.missing_block_steps))
    for _ in range(blocks):
        node = int(rng.integers(cfg.num_nodes))
        start = int(rng.integers(max(1, cfg.num_steps - cfg.missing_block_steps)))
        mask[start:start + cfg.missing_block_steps, node] = True
    return mask


def make_synthetic_benchmark(
    name: str = "synthetic-traffic",
    num_nodes: int | None = None,
    num_steps: int | None = None,
    freq: str | None = None,
    seed: int | None = None,
    config: SyntheticConfig | None = None,
) -> SpatioTemporalDataset:
    """The named preset (``synthetic-traffic``, ``synthetic-grid``) or ``config``, with the given overrides.

    Deterministic: the same arguments give bit-identical values on every run.
    """
    base = config if config is not None else synthetic_preset(name)
    overrides = {k: v for k, v in {"num_nodes": num_nodes, "num_steps": num_steps, "freq": freq,
                                   "seed": seed}.items() if v is not None}
    cfg = SyntheticConfig.model_validate({**base.model_dump(), **overrides})
    return generate(cfg, name=name)
