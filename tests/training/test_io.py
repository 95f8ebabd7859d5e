"""save_pretrained / from_pretrained: exact parameters only, identical forecasts, clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from training.forecast import forecast
from training.io import from_pretrained, save_pretrained
from training.model import BackboneConfig, FactoSTBackbone

TABLE_VI = {"minuscule": 2_510_192, "tiny": 4_378_928, "small": 12_172_336, "base": 30_387_632}


@pytest.fixture(scope="module")
def model() -> FactoSTBackbone:
    torch.manual_seed(1)
    return FactoSTBackbone(BackboneConfig.from_size("minuscule", dropout=0.05))


@pytest.mark.parametrize("size", list(TABLE_VI))
def test_saved_file_holds_exactly_the_table_vi_parameters(size: str, tmp_path: Path) -> None:
    m = FactoSTBackbone(BackboneConfig.from_size(size))
    save_pretrained(m, str(tmp_path))
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
        total = sum(int(np.prod(fh.get_slice(k).get_shape())) for k in keys)
    assert total == TABLE_VI[size]
    assert keys == {name for name, _ in m.named_parameters()}
    assert not any("rope" in k for k in keys)  # rotary tables are derived, never saved
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["format_version"] == 1 and doc["num_parameters"] == TABLE_VI[size]
    assert doc["config"]["size"] == size and doc["config"]["d_model"] == m.cfg.d_model


def test_round_trip_gives_identical_forecasts(model: FactoSTBackbone, tmp_path: Path) -> None:
    save_pretrained(model, str(tmp_path / "ckpt"))
    loaded = from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.cfg == model.cfg
    contexts = [np.sin(np.arange(n) / 3.0).astype(np.float32) * 50 + 7 for n in (20, 100)]
    np.testing.assert_array_equal(forecast(loaded, contexts, 40), forecast(model, contexts, 40))
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_round_trip_through_an_fsspec_memory_url(model: FactoSTBackbone) -> None:
    save_pretrained(model, "memory://factost-io-test/ckpt")
    loaded = from_pretrained("memory://factost-io-test/ckpt")
    assert torch.equal(loaded.head.down.bias, model.head.down.bias)


def test_round_trip_on_s3(model: FactoSTBackbone, s3_bucket) -> None:
    root, opts = s3_bucket
    save_pretrained(model, f"{root}/backbone", storage_options=opts)
    loaded = from_pretrained(f"{root}/backbone", storage_options=opts)
    assert torch.equal(loaded.reg_token, model.reg_token)


def _tamper(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def test_tampered_files_fail_with_the_file_and_key_named(model: FactoSTBackbone, tmp_path: Path) -> None:
    wrong_shape, missing, extra = tmp_path / "shape", tmp_path / "missing", tmp_path / "extra"
    for folder in (wrong_shape, missing, extra):
        save_pretrained(model, str(folder))
    _tamper(wrong_shape, lambda t: t.__setitem__("layers.1.attn.k_proj.weight", torch.zeros(192, 191)))
    _tamper(missing, lambda t: t.pop("head.up.bias"))
    _tamper(extra, lambda t: t.__setitem__("optimizer.step", torch.zeros(1)))
    with pytest.raises(ValueError, match=r"shape/model\.safetensors: key 'layers\.1\.attn\.k_proj\.weight' has shape"):
        from_pretrained(str(wrong_shape))
    with pytest.raises(ValueError, match=r"missing/model\.safetensors: missing key 'head\.up\.bias'"):
        from_pretrained(str(missing))
    with pytest.raises(ValueError, match=r"unexpected key 'optimizer\.step'"):
        from_pretrained(str(extra))


def test_save_refuses_a_state_dict_that_does_not_match_the_config(model: FactoSTBackbone, tmp_path: Path) -> None:
    from training.io import save_weights

    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # a wrapped model's names
    with pytest.raises(ValueError, match=r"bad/model\.safetensors: missing key"):
        save_weights(state, model.cfg, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_bad_config_and_missing_files_are_reported(model: FactoSTBackbone, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json: no backbone config"):
        from_pretrained(str(tmp_path / "nowhere"))
    save_pretrained(model, str(tmp_path / "a"))
    doc = json.loads((tmp_path / "a" / "config.json").read_text())
    doc["config"]["d_model"] = 100
    (tmp_path / "a" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="config.json: invalid backbone config"):
        from_pretrained(str(tmp_path / "a"))
    doc["format_version"] = 99
    (tmp_path / "a" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        from_pretrained(str(tmp_path / "a"))
    save_pretrained(model, str(tmp_path / "b"))
    (tmp_path / "b" / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        from_pretrained(str(tmp_path / "b"))
