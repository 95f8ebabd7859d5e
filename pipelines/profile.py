"""The run profile: every stage's typed settings in one model, loaded from ``configs/<name>.yaml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from corpus.config import IngestConfig
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


class Profile(StrictModel):
    """A whole run's configuration. Flows take it as their parameter, as users write it in YAML."""

    name: str = "custom"
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)


def load_profile(profile: str | Path = "local", overrides: dict[str, Any] | None = None) -> Profile:
    """Load a profile by name or path, apply ``${ENV}`` interpolation, then nested ``overrides``."""
    path = resolve_profile_path(profile)
    data = interpolate_env(load_yaml(path))
    data.setdefault("name", path.stem)
    if overrides:
        data = deep_merge(data, overrides)
    return validate_config(Profile, data, str(path))
