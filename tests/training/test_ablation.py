"""Table X ablation switches: each one reaches the built backbone, its loss or the pretraining windows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from training.config import PretrainConfig
from training.data import WindowSpec, crop_windows
from training.io import from_pretrained, save_pretrained
from training.losses import median_l1_loss, pinball_loss
from training.model import AblationConfig, BackboneConfig, FactoSTBackbone

SMALL = {"d_model": 64, "d_ff": 128, "num_heads": 2, "num_layers": 2}


def backbone(**switches: bool) -> FactoSTBackbone:
    torch.manual_seed(0)
    cfg = BackboneConfig(**SMALL, dropout=0.0, ablation=AblationConfig(**switches))
    return FactoSTBackbone(cfg).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch: two sine contexts of 96 points (one with a gap) and 20-point targets (one NaN)."""
    t = torch.arange(116, dtype=torch.float32)
    rows = torch.stack([5 + 2 * torch.sin(2 * math.pi * t / 24), -3 + torch.cos(2 * math.pi * t / 12)])
    context, target = rows[:, :96].clone(), rows[:, 96:].clone()
    context[1, 10:30] = float("nan")
    target[0, 7] = float("nan")
    return context, target


def test_full_model_is_the_default_and_matches_table_vi() -> None:
    assert AblationConfig().disabled() == []
    assert PretrainConfig().backbone_config().ablation == AblationConfig()
    assert FactoSTBackbone(BackboneConfig.from_size("tiny")).num_parameters() == 4_378_928


def test_without_gate_attention_has_no_gate_parameters() -> None:
    full, plain = backbone(), backbone(gated_attention=False)
    d, layers = SMALL["d_model"], SMALL["num_layers"]
    for block in plain.layers:
        assert block.attn.gated is False and tuple(block.attn.q_proj.weight.shape) == (d, d)
    assert tuple(full.layers[0].attn.q_proj.weight.shape) == (2 * d, d)
    # the gate's half of the query projection is gone, d*d per layer, and the closed form agrees
    assert full.num_parameters() - plain.num_parameters() == layers * d * d
    assert plain.num_parameters() == plain.cfg.expected_num_parameters()
    context, _ = inputs()
    assert torch.isfinite(plain(context, 2).quantiles).all()


def test_without_qk_norm_there_is_no_q_norm() -> None:
    full, plain = backbone(), backbone(qk_norm=False)
    assert all(b.attn.q_norm is None and b.attn.k_norm is None for b in plain.layers)
    assert not any("q_norm" in n or "k_norm" in n for n, _ in plain.named_parameters())
    head_dim, layers = SMALL["d_model"] // SMALL["num_heads"], SMALL["num_layers"]
    assert full.num_parameters() - plain.num_parameters() == layers * 2 * head_dim
    assert plain.num_parameters() == plain.cfg.expected_num_parameters()
    # query/key scale now reaches the scores: the outputs differ from the normed model with the same weights
    context, _ = inputs()
    assert not torch.allclose(full(context, 1).quantiles, plain(context, 1).quantiles)


def test_without_partial_rope_every_pair_rotates() -> None:
    full, plain = backbone(), backbone(partial_rope=False)
    head_dim = SMALL["d_model"] // SMALL["num_heads"]
    expected = 10000.0 ** (-torch.arange(head_dim // 2, dtype=torch.float64) * 2 / head_dim)
    inv = plain.rotary_inverse_frequencies()
    assert inv.shape == (16,) and bool((inv > 0).all())
    torch.testing.assert_close(inv.double(), expected, rtol=1e-6, atol=0)
    # the full model keeps the lowest-frequency quarter (4 of 16 pairs) position-free
    assert int((full.rotary_inverse_frequencies() == 0).sum()) == 4
    cos, sin = plain._rotary(64, torch.device("cpu"), torch.float32)
    assert bool((sin[1:] != 0).all())  # every position past 0 turns every pair


def test_without_random_masking_sampled_contexts_keep_every_point() -> None:
    rng = np.random.default_rng(3)
    rows = {"sample_id": np.arange(64), "values": np.array([rng.normal(size=700) for _ in range(64)], dtype=object)}

    def nan_share(random_masking: bool) -> float:
        cfg = PretrainConfig(
            size="minuscule", model_overrides=SMALL, steps=10, batch_size=8, context_length=256, max_horizon=64,
            l_min=48, zclip=None, ablation={"random_masking": random_masking}, seed=0,
        )
        assert cfg.window_config().random_mask is random_masking
        batch = crop_windows(rows, 0, WindowSpec.from_config(cfg))
        assert batch["context"].shape == (64, 256)
        return float(np.isnan(batch["context"]).mean())

    # kept length uniform in [48, 256]: on average (256 - 48) / 2 of 256 points masked, about 0.41
    assert 0.3 < nan_share(True) < 0.5
    assert nan_share(False) == 0.0


def test_point_loss_is_l1_of_the_median_and_serves_it_for_every_level() -> None:
    context, target = inputs()
    point, full = backbone(quantile_loss=False), backbone()
    out = point(context, 2)
    median = out.quantiles[..., point.cfg.median_index]
    assert torch.equal(out.quantiles, median[..., None].expand_as(out.quantiles))
    y = torch.nn.functional.pad(target, (0, 12), value=float("nan"))
    y_norm = ((y - out.loc) / out.scale).numpy()
    expected = float(np.nanmean(np.abs(y_norm - median.detach().numpy())))
    assert point.training_loss(context, target).item() == pytest.approx(expected, rel=1e-6)
    # the full model's loss is still the pinball loss of all levels
    fo = full(context, 2)
    pin = pinball_loss(fo.quantiles, (y - fo.loc) / fo.scale, full.quantile_levels_tensor())
    assert full.training_loss(context, target).item() == pytest.approx(pin.item(), rel=1e-6)
    loss = point.training_loss(context, target)
    loss.backward()
    assert point.head.down.weight.grad is not None and torch.isfinite(point.head.down.weight.grad).all()


def test_median_l1_loss_hand_computed() -> None:
    median = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[1.5, float("nan"), 1.0], [-1.0, float("nan"), float("nan")]])
    assert median_l1_loss(median, target).item() == pytest.approx((0.5 + 2.0 + 1.0) / 3)
    assert median_l1_loss(median, torch.full_like(target, float("nan"))).item() == 0.0
    with pytest.raises(ValueError, match=r"median and target must both be \[B, H\]"):
        median_l1_loss(median, target[:, :2])


def test_checkpoint_records_the_ablation_and_rebuilds_the_same_model(tmp_path) -> None:
    switches = {"gated_attention": False, "qk_norm": False, "partial_rope": False, "quantile_loss": False}
    model = backbone(**switches)
    save_pretrained(model, str(tmp_path))
    doc = json.loads((tmp_path / "config.json").read_text())
    assert doc["config"]["ablation"] == {**switches, "random_masking": True}
    loaded = from_pretrained(str(tmp_path)).eval()
    assert loaded.cfg.ablation.disabled() == ["gated_attention", "qk_norm", "partial_rope", "quantile_loss"]
    context, _ = inputs()
    assert torch.equal(loaded(context, 2).quantiles, model(context, 2).quantiles)
    # a config written before the switches existed loads as the full model
    del doc["config"]["ablation"]
    assert BackboneConfig.model_validate(doc["config"]).ablation == AblationConfig()


def test_ablation_config_errors_name_the_switch() -> None:
    with pytest.raises(ValueError, match="gated_atention"):
        PretrainConfig(ablation={"gated_atention": False})
    with pytest.raises(ValueError, match="ablation.qk_norm"):
        PretrainConfig(ablation={"qk_norm": "maybe"})
    with pytest.raises(ValueError, match=r"set \['ablation'\] through PretrainConfig's own fields"):
        PretrainConfig(model_overrides={"ablation": {"qk_norm": False}})
    cfg = PretrainConfig(ablation={"gated_attention": False, "random_masking": False})
    assert cfg.backbone_config().ablation.disabled() == ["gated_attention", "random_masking"]
    # the run's config.json (what workers and reruns read back) keeps the switches
    again = PretrainConfig.model_validate(json.loads(cfg.model_dump_json()))
    assert again == cfg and again.window_config().random_mask is False
