"""Typed configuration loaded from YAML profiles, with ``${ENV}`` interpolation and clear errors.

Profiles are pydantic models with ``extra="forbid"`` all the way down, so an unknown key or a wrong type is
rejected with a message that names the key path (``pretrain.batch_size: Input should be a valid integer``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A profile that cannot be loaded; the message names the file and the key."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(StrictModel):
    root: str = Field(".factost", description="Storage root URL: a local folder or s3://bucket/prefix")
    options: dict[str, Any] = Field(default_factory=dict, description="fsspec storage options (e.g. S3 endpoint)")


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray in-process")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs for a local Ray (more than cores is fine)")


def interpolate_env(value: Any, where: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in strings; a missing variable without default is an error."""
    if isinstance(value, dict):
        return {k: interpolate_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {name} is not set")

        return _ENV_PATTERN.sub(replace, value)
    return value


def format_validation_error(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{key}: {msg}")
    return f"{source}: invalid config: " + "; ".join(problems)


def validate_config(model: type[M], data: dict[str, Any], source: str = "config") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def resolve_profile_path(profile: str | Path) -> Path:
    """A profile is a YAML path or the name of a file in ``configs/`` (``local`` -> ``configs/local.yaml``)."""
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    named = CONFIG_DIR / f"{profile}.yaml"
    if named.exists():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"profile {profile!r} not found (a YAML path or one of: {known})")


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of sections")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
