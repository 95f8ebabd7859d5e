"""The run profile: every stage's typed settings in one model, loaded from ``configs/<name>.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from adaptation.benchmark_options import BenchmarkOptions
from adaptation.config import AdaptConfig
from corpus.blast.config import BlastConfig
from corpus.config import IngestConfig
from corpus.kernelsynth import KernelSynthConfig
from corpus.leakage import LeakageConfig
from infra.config import (
    RayConfig,
    StorageConfig,
    StrictModel,
    deep_merge,
    interpolate_env,
    load_yaml,
    resolve_profile_path,
    validate_config,
)
from training.config import PretrainConfig


class BenchmarksConfig(StrictModel):
    """Which benchmarks the STA stage adapts to, and where their files are looked up before any download."""

    names: list[str] = Field(
        default_factory=lambda: ["synthetic-traffic", "synthetic-grid"],
        min_length=1,
        description="Registry names (etth2, pems08, ...), synthetic presets, or paths of generic files",
    )
    data_dir: str | None = Field(None, description="Folder searched for the benchmarks' standard file names")
    parallel: int = Field(1, ge=1, description="Benchmarks adapted at the same time")
    options: dict[str, BenchmarkOptions] = Field(
        default_factory=dict, description="Conventions of generic benchmark files by name (the file's stem)"
    )


class TrackingConfig(StrictModel):
    """Where pretraining and adaptation metrics go besides the run folder's own files."""

    tensorboard: bool = Field(True, description="TensorBoard event files beside each run (ROOT/runs/...)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (needs the optional mlflow package)")
    mlflow_experiment: str = Field("factost", description="MLflow experiment the runs are logged under")


class Profile(StrictModel):
    """A whole run's configuration. Flows take it as their parameter, as users write it in YAML."""

    name: str = "custom"
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    synth: KernelSynthConfig = Field(default_factory=KernelSynthConfig)
    balance: BlastConfig = Field(default_factory=BlastConfig)
    leakage: LeakageConfig = Field(
        default_factory=LeakageConfig,
        description="How the training corpus is kept free of the evaluation benchmarks' series (docs/leakage.md)",
    )
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    benchmarks: BenchmarksConfig = Field(default_factory=BenchmarksConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)


def with_absolute_root(prof: Profile) -> Profile:
    """Ray workers and Prefect tasks may run elsewhere: make a relative local storage root absolute once."""
    root = prof.storage.root
    if "://" in root:
        return prof
    return prof.model_copy(update={"storage": prof.storage.model_copy(update={"root": str(Path(root).resolve())})})


def _activated(prof: Profile) -> Profile:
    """The profile, its own credentials (if it carries any) made usable where storage is opened."""
    prof.storage.activate()
    return prof


def load_profile(profile: str | Path = "local", overrides: dict[str, Any] | None = None) -> Profile:
    """Load a profile by name or path, apply ``${ENV}`` interpolation, then nested ``overrides``."""
    path = resolve_profile_path(profile)
    data = interpolate_env(load_yaml(path))
    data.setdefault("name", path.stem)
    if overrides:
        data = deep_merge(data, overrides)
    return _activated(validate_config(Profile, data, str(path)))


def as_profile(profile: str | Path | Profile | dict[str, Any], overrides: dict[str, Any] | None = None) -> Profile:
    """Flows accept a profile name (deployments), a path, a dict or a ready ``Profile`` (tests, composition).

    Flows are handed names or secret-free dumps, and credentials are resolved here, where the flow runs: from
    the standard chain, or from a profile file that names them (held as secrets, never dumped).
    """
    if isinstance(profile, Profile):
        if not overrides:
            return _activated(profile)
        merged = validate_config(Profile, deep_merge(profile.model_dump(mode="json"), overrides), "profile overrides")
        storage = merged.storage.model_copy(update={"credentials": profile.storage.credentials})
        return _activated(merged.model_copy(update={"storage": storage}))
    if isinstance(profile, dict):
        return _activated(validate_config(Profile, deep_merge(profile, overrides or {}), "profile"))
    return load_profile(profile, overrides)
