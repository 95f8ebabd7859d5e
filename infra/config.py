"""Typed configuration loaded from YAML profiles, with ``${ENV}`` interpolation and clear errors.

Profiles are pydantic models with ``extra="forbid"`` all the way down, so an unknown key or a wrong type is
rejected with a message that names the key path (``pretrain.batch_size: Input should be a valid integer``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from infra.storage import register_secret_options

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A profile that cannot be loaded; the message names the file and the key."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment too.

    A section whose values must not change once loaded (the stage configs) adds ``ConfigDict(frozen=True)``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Option names that hold credentials (s3fs, gcsfs, adlfs, sftp...), and words that mark one whatever its name.
SECRET_OPTION_NAMES = frozenset({"key", "secret", "token", "password", "passphrase", "account_key", "access_key",
                                 "secret_key", "session_token", "sas_token", "connection_string", "credentials",
                                 "aws_access_key_id", "aws_secret_access_key", "aws_session_token"})
SECRET_OPTION_WORDS = ("secret", "password", "token", "credential")
# Where the standard AWS chain looks for each s3fs credential: exported so that every process started from here
# (Ray workers, process pools) and every non-fsspec reader (pyarrow, polars) resolves the same credentials.
AWS_CHAIN_VARIABLES = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN",
                       "client_kwargs.aws_access_key_id": "AWS_ACCESS_KEY_ID",
                       "client_kwargs.aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
                       "client_kwargs.aws_session_token": "AWS_SESSION_TOKEN"}


def is_secret_option(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_OPTION_NAMES or any(word in lowered for word in SECRET_OPTION_WORDS)


def split_secret_options(options: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(options without secrets, secrets by dotted path) of a storage-options mapping, nested dicts included."""
    public: dict[str, Any] = {}
    hidden: dict[str, Any] = {}
    for name, value in options.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            public[name], inner = split_secret_options(value, f"{path}.")
            hidden.update(inner)
        elif is_secret_option(str(name)) and value not in (None, ""):
            hidden[path] = value
        else:
            public[name] = value
    return public, hidden


def nest(flat: Mapping[str | tuple[str, ...], Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}``; a tuple key is a path whose parts hold dots.

    A key used both as a value and as a section is a ``ValueError`` naming it.
    """
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".") if isinstance(key, str) else key
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                shown = key if isinstance(key, str) else ".".join(key)
                raise ValueError(f"{shown}: {part} is set to a value and used as a section at once")
            node = child
        node[leaf] = value
    return nested


class StorageConfig(StrictModel):
    """Where versions and runs live. ``options`` never holds a secret: a credential written in a profile is
    moved into ``credentials`` when the profile is read, which no dump, repr or log line includes."""

    root: str = Field(".factost", description="Storage root URL: a local folder or s3://bucket/prefix")
    options: dict[str, Any] = Field(default_factory=dict, description="fsspec storage options (e.g. S3 endpoint)")
    credentials: dict[str, SecretStr] = Field(
        default_factory=dict, exclude=True, repr=False,
        description="Secret storage options by dotted name; prefer the standard credential chain instead",
    )

    @model_validator(mode="before")
    @classmethod
    def _hold_secrets_apart(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
            return data
        public, hidden = split_secret_options(data["options"])
        return {**data, "options": public, "credentials": {**(data.get("credentials") or {}), **hidden}}

    def activate(self) -> None:
        """Make the profile's own credentials usable where storage is opened: registered for this process's
        filesystems, and exported to the standard AWS chain for the processes it starts."""
        if not self.credentials:
            return
        plain = {path: secret.get_secret_value() for path, secret in self.credentials.items()}
        register_secret_options(self.root.split("://", 1)[0].lower() if "://" in self.root else "file", nest(plain))
        for path, value in plain.items():
            if path in AWS_CHAIN_VARIABLES:
                os.environ[AWS_CHAIN_VARIABLES[path]] = value


class RayConfig(StrictModel):
    address: str | None = Field(None, description="Ray cluster address; None starts a local Ray in-process")
    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs for a local Ray (more than cores is fine)")
    dashboard: bool = Field(False, description="Start Ray's dashboard (http://127.0.0.1:8265) with a local Ray")


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
