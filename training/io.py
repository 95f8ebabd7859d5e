"""Backbone checkpoints as ``model.safetensors`` + ``config.json`` in a folder addressed by any fsspec URL.

safetensors holds raw tensors only, so loading never unpickles (a checkpoint from elsewhere cannot run code).
The file holds exactly the ``nn.Parameter``s: no buffers (the rotary table is derived from the config), no
optimizer state (that lives in the training loop's own checkpoints). ``config.json`` is written last, so a
folder with a config always has its weights beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from infra.storage import filesystem, join, write_bytes_atomic, write_json_atomic
from training.model import BackboneConfig, FactoSTBackbone

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_NAME = "factost-utp-backbone"
FORMAT_VERSION = 1


def save_weights(
    state: Mapping[str, Tensor],
    cfg: BackboneConfig,
    url: str,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write a parameter dict (e.g. consolidated from a DeepSpeed engine) and its config into folder ``url``.

    The dict is checked against the config first (keys and shapes, on the meta device: no memory), so a
    checkpoint that ``from_pretrained`` would refuse is never written.
    """
    with torch.device("meta"):
        reference = FactoSTBackbone(cfg)
    check_state_dict(reference, state, join(url, WEIGHTS_NAME))
    fs, root = filesystem(url, storage_options)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
    n_params = sum(t.numel() for t in tensors.values())
    metadata = {"format": "pt", "factost_format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    fs.makedirs(root, exist_ok=True)
    write_bytes_atomic(fs, join(root, WEIGHTS_NAME), st_save(tensors, metadata=metadata))
    write_json_atomic(
        fs,
        join(root, CONFIG_NAME),
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "num_parameters": n_params,
            "config": cfg.model_dump(mode="json"),
        },
    )


def save_pretrained(model: FactoSTBackbone, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Save the backbone's parameters and config into folder ``url`` (local path or ``s3://...``)."""
    save_weights(dict(model.named_parameters()), model.cfg, url, storage_options)


def load_config(url: str, storage_options: dict[str, Any] | None = None) -> BackboneConfig:
    """Read and validate ``config.json`` of a saved backbone, naming the file in every error."""
    fs, root = filesystem(url, storage_options)
    path = join(root, CONFIG_NAME)
    where = join(url, CONFIG_NAME)
    if not fs.exists(path):
        raise FileNotFoundError(f"{where}: no backbone config here (is {url!r} a save_pretrained folder?)")
    try:
        with fs.open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{where}: not a FactoST backbone config (format {doc.get('format')!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{where}: format_version {doc.get('format_version')!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    try:
        return BackboneConfig.model_validate(doc.get("config"))
    except ValidationError as exc:
        raise ValueError(f"{where}: invalid backbone config: {exc}") from exc


def check_state_dict(model: FactoSTBackbone, tensors: Mapping[str, Tensor], source: str) -> None:
    """Strict key and shape check, raising with the file and the first offending key."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(
            f"{source}: missing key {missing[0]!r} (expected shape {list(expected[missing[0]])})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(
            f"{source}: unexpected key {unexpected[0]!r} not in the backbone"
            + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
        )
    for name, shape in expected.items():
        got = tuple(tensors[name].shape)
        if got != shape:
            raise ValueError(f"{source}: key {name!r} has shape {list(got)}, the config expects {list(shape)}")
        if not tensors[name].is_floating_point():
            raise ValueError(f"{source}: key {name!r} has dtype {tensors[name].dtype}, expected a float tensor")


def from_pretrained(
    url: str,
    storage_options: dict[str, Any] | None = None,
    map_location: torch.device | str = "cpu",
) -> FactoSTBackbone:
    """Build a backbone from a ``save_pretrained`` folder; tensors are cast to float32 and moved to ``map_location``."""
    cfg = load_config(url, storage_options)
    fs, root = filesystem(url, storage_options)
    path = join(root, WEIGHTS_NAME)
    where = join(url, WEIGHTS_NAME)
    if not fs.exists(path):
        raise FileNotFoundError(f"{where}: weights file missing beside {CONFIG_NAME}")
    with fs.open(path, "rb") as fh:
        data = fh.read()
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError) as exc:
        raise ValueError(f"{where}: not a readable safetensors file ({exc})") from exc
    model = FactoSTBackbone(cfg)
    check_state_dict(model, tensors, where)
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location)
