"""Conventions of a user's own benchmark file: frequency, split rule, missing-value marker, adjacency.

A registry benchmark (``pems08``, ``etth2``) carries its conventions; a generic file (``my_city.npz``) may not
(an npz without timestamps has no frequency). They come, in this order of precedence, from the profile's
``benchmarks.options.<name>`` (which ``factost adapt --benchmark-option my_city.freq=15min`` fills in) and from a
small YAML beside the file, ``<stem>.yaml`` (``freq: 15min``, ``split: "6:2:2"``, ``null_value: zero``,
``adjacency: my_city_adj.csv``; a relative adjacency path is relative to the data file's folder).
"""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from pydantic import Field

from infra.config import StrictModel


class BenchmarkOptions(StrictModel):
    """How to read one generic benchmark file; unset fields keep the loader's defaults."""


    freq: str | None = Field(None, description="Pandas offset alias, e.g. 15min (needed without timestamps)")
    split: str | None = Field(None, description="train:val:test ratios, e.g. 6:2:2, or months 12/4/4")
    null_value: Literal["zero", "nan"] | None = Field(None, description="What marks a missing reading")
    adjacency: str | None = Field(None, description="Adjacency matrix file (path or URL)")


def benchmark_key(name_or_path: str) -> str:
    """The name options are keyed by: a file's stem (``/data/my_city.npz`` -> ``my_city``), else the name."""
    base = posixpath.basename(str(name_or_path).rstrip("/"))
    return base.split(".", 1)[0] if "." in base else base


def sidecar_options(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``<stem>.yaml`` beside a data file, if any, as option fields."""
    import yaml

    from infra.storage import filesystem

    folder, base = posixpath.split(str(path))
    sidecar = posixpath.join(folder, base.split(".", 1)[0] + ".yaml")
    fs, local = filesystem(sidecar, storage_options)  # a registry name (no suffix) has no sidecar
    if "." not in base or base.endswith((".yaml", ".yml")) or not fs.exists(local):
        return {}
    with fs.open(local, "rb") as fh:
        data = yaml.safe_load(fh.read()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{sidecar}: benchmark options must be a mapping (freq, split, null_value, adjacency)")
    if data.get("adjacency") and "://" not in data["adjacency"] and not posixpath.isabs(data["adjacency"]):
        data["adjacency"] = posixpath.join(folder, data["adjacency"])
    try:
        return BenchmarkOptions.model_validate(data).model_dump(exclude_none=True)
    except ValueError as exc:
        raise ValueError(f"{sidecar}: {exc}".splitlines()[0] + " " + str(exc).splitlines()[-1].strip()) from None


def options_for(
    name_or_path: str, configured: dict[str, Any] | None, storage_options: dict[str, Any] | None = None
) -> BenchmarkOptions:
    """The options of one benchmark: the sidecar YAML, overridden by the configured entry for its name."""
    entries = configured or {}
    entry = entries.get(name_or_path) or entries.get(benchmark_key(name_or_path)) or {}
    if isinstance(entry, BenchmarkOptions):
        entry = entry.model_dump(exclude_none=True)
    merged = {**sidecar_options(name_or_path, storage_options), **{k: v for k, v in entry.items() if v is not None}}
    return BenchmarkOptions.model_validate(merged)


def load_benchmark(
    name_or_path: str,
    data_dir: str | None,
    configured: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Resolve a benchmark (registry name, synthetic preset or file) with its conventions applied."""
    from adaptation.datasets import resolve_benchmark
    from adaptation.datasets.graph import read_weight_matrix

    opts = options_for(name_or_path, configured, storage_options)
    dataset = resolve_benchmark(
        name_or_path, data_dir, freq=opts.freq, split=opts.split, null_value=opts.null_value,
        storage_options=storage_options,
    )
    if opts.adjacency:  # read_weight_matrix checks the matrix against the node count
        dataset.adjacency = read_weight_matrix(opts.adjacency, dataset.num_nodes, storage_options).astype("float32")
        dataset.metadata["graph"] = opts.adjacency
    return dataset
