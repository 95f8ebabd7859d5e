"""UTP backbone: sizes (Table VI), shapes, NaN handling, masking, scale arithmetic, pinned numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.forecast import forecast, forecast_median
from training.losses import pinball_loss
from training.model import BackboneConfig, FactoSTBackbone, rope_inverse_frequencies

# Paper Table VI, written out here on purpose (not imported) so a change in the module cannot move both sides.
TABLE_VI = {"minuscule": 2_510_192, "tiny": 4_378_928, "small": 12_172_336, "base": 30_387_632}
LEVELS = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


@pytest.fixture(scope="module")
def model() -> FactoSTBackbone:
    torch.manual_seed(0)
    return FactoSTBackbone(BackboneConfig.from_size("minuscule")).eval()


def sine_context(length: int, level: float = 10.0, amp: float = 3.0) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float32)
    return (level + amp * torch.sin(2 * math.pi * t / 12))[None]


@pytest.mark.parametrize("size", list(TABLE_VI))
def test_parameter_counts_equal_table_vi(size: str) -> None:
    cfg = BackboneConfig.from_size(size)
    assert FactoSTBackbone(cfg).num_parameters() == TABLE_VI[size]
    assert cfg.expected_num_parameters() == TABLE_VI[size]


def test_table_vi_formula_matches_closed_form() -> None:
    """N = d + 242 ff + 3 d ff + L (5 d^2 + 3 d ff + 2 d + 2 d / H) + 176 (docs/design.md) for every size."""
    for size in TABLE_VI:
        c = BackboneConfig.from_size(size)
        d, ff, n_layers, h = c.d_model, c.d_ff, c.num_layers, c.num_heads
        n = d + 242 * ff + 3 * d * ff + n_layers * (5 * d * d + 3 * d * ff + 2 * d + 2 * d // h) + 176
        assert n == TABLE_VI[size]


def test_config_defaults_and_validation() -> None:
    cfg = BackboneConfig.from_size("Tiny")
    assert (cfg.size, cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.num_heads) == ("tiny", 256, 1024, 3, 4)
    assert cfg.quantile_levels == LEVELS and cfg.patch_size == 16 and cfg.dropout == 0.1
    assert (cfg.max_context, cfg.max_horizon, cfg.rope_theta, cfg.rope_fraction) == (2048, 256, 10000, 0.75)
    assert BackboneConfig.from_size("tiny", dropout=0.0).size == "tiny"
    assert BackboneConfig.from_size("tiny", num_layers=1).size is None  # no longer the Table VI variant
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        BackboneConfig.from_size("huge")
    with pytest.raises(ValueError, match="extra"):
        BackboneConfig.from_size("tiny", colour="red")
    with pytest.raises(ValueError, match="not divisible"):
        BackboneConfig(d_model=100, d_ff=64, num_layers=1, num_heads=3)
    with pytest.raises(ValueError, match="must contain 0.5"):
        BackboneConfig(d_model=32, d_ff=64, num_layers=1, num_heads=2, quantile_levels=(0.1, 0.9))
    with pytest.raises(ValueError, match="size='tiny' expects"):
        BackboneConfig(size="tiny", d_model=32, d_ff=64, num_layers=1, num_heads=2)


def test_partial_rope_rotates_the_highest_frequency_three_quarters() -> None:
    inv = rope_inverse_frequencies(64, 10000.0, 0.75)
    assert inv.shape == (32,)
    assert torch.all(inv[:24] > 0) and torch.all(inv[24:] == 0)
    assert inv[0] == 1.0 and torch.all(inv[1:24] < inv[:23])  # pair 0 is the fastest
    # the tables the layers use agree with it, and nothing rotary is a (saveable, castable) buffer
    m = FactoSTBackbone(BackboneConfig.from_size("minuscule"))
    cos, sin = m._rotary(2048, torch.device("cpu"), torch.float32)
    angles = torch.arange(2048, dtype=torch.float64)[:, None] * inv[None, :]
    torch.testing.assert_close(cos.double(), angles.cos(), rtol=0, atol=2e-3)
    torch.testing.assert_close(sin.double(), angles.sin(), rtol=0, atol=2e-3)
    assert torch.all(cos[:, 24:] == 1) and torch.all(sin[:, 24:] == 0)
    assert list(m.buffers()) == []


@pytest.mark.parametrize("length", [1, 17, 40])
def test_forward_shapes(model: FactoSTBackbone, length: int) -> None:
    out = model(torch.randn(3, length), 2)
    p_ctx = math.ceil(length / 16)
    assert out.quantiles.shape == (3, 32, 11)
    assert out.loc.shape == (3, 1) and out.scale.shape == (3, 1)
    assert out.hidden.shape == (3, p_ctx + 1 + 2, 192)


def test_forecast_shapes_for_all_context_lengths_and_horizons(model: FactoSTBackbone) -> None:
    rng = np.random.default_rng(0)
    contexts = [rng.normal(size=n).astype(np.float32) for n in (1, 17, 2048, 5000)]
    for horizon in (1, 12, 96, 256, 300):
        q = forecast(model, contexts, horizon)
        assert q.shape == (4, horizon, 11) and q.dtype == np.float32
        assert np.isfinite(q).all()
        assert np.all(np.diff(q, axis=-1) >= 0)  # sorted levels: valid quantiles
    assert forecast_median(model, contexts, 12).shape == (4, 12)
    model.train()
    forecast(model, contexts[:1], 4)
    assert model.training  # the caller's mode is restored
    model.eval()


def test_forecast_is_independent_of_batch_mates_and_of_extra_history(model: FactoSTBackbone) -> None:
    """Left padding is masked exactly and RoPE is relative, so padding a series does not change its forecast;
    a context beyond max_context is cut to its last 2048 points."""
    rng = np.random.default_rng(1)
    long_series = rng.normal(size=5000).astype(np.float32)
    short = rng.normal(size=37).astype(np.float32)
    together = forecast(model, [long_series, short], 40)
    alone = forecast(model, [short], 40)
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5, atol=1e-5)
    cut = forecast(model, [long_series[-2048:]], 40)
    np.testing.assert_allclose(together[0], cut[0], rtol=1e-5, atol=1e-5)


def test_rolling_forecast_feeds_back_the_median() -> None:
    """With max_horizon 32, a 40-step forecast = 32 steps, then 8 from the context extended by their median."""
    torch.manual_seed(3)
    m = FactoSTBackbone(BackboneConfig.from_size("minuscule", max_horizon=32, max_context=64)).eval()
    ctx = sine_context(50).numpy()[0]
    q = forecast(m, [ctx], 40)
    first = forecast(m, [ctx], 32)
    second = forecast(m, [np.concatenate([ctx, first[0, :, 5]])[-64:]], 8)
    np.testing.assert_allclose(q[0, :32], first[0], rtol=1e-5)
    np.testing.assert_allclose(q[0, 32:], second[0], rtol=1e-5)


def test_outputs_are_on_the_original_scale(model: FactoSTBackbone) -> None:
    ctx = sine_context(64)
    with torch.no_grad():
        out = model(ctx, 1)
    values = ctx.numpy()[0].astype(np.float64)
    assert out.loc.item() == pytest.approx(values.mean(), rel=1e-6)
    assert out.scale.item() == pytest.approx(values.std(ddof=0), rel=1e-5)  # population std
    expected = np.sort(out.quantiles[0].numpy() * out.scale.item() + out.loc.item(), axis=-1)
    np.testing.assert_allclose(forecast(model, ctx, 16)[0], expected, rtol=1e-6)
    # affine equivariance: forecasting a*x + b gives a*q + b
    base = forecast(model, ctx, 16)
    shifted = forecast(model, 1000.0 * ctx + 5000.0, 16)
    np.testing.assert_allclose(shifted, 1000.0 * base + 5000.0, rtol=1e-5)
    # a constant level has std 0 -> floor 1e-5: the forecast stays at the level
    flat = forecast(model, np.full((1, 100), 1000.0, dtype=np.float32), 16)
    np.testing.assert_allclose(flat, 1000.0, atol=1e-2)


def test_all_nan_context_gives_finite_output(model: FactoSTBackbone) -> None:
    ctx = torch.full((2, 48), float("nan"))
    with torch.no_grad():
        out = model(ctx, 3)
    assert torch.isfinite(out.quantiles).all()
    assert out.loc.tolist() == [[0.0], [0.0]]
    torch.testing.assert_close(out.scale, torch.full((2, 1), 1e-5))
    assert np.isfinite(forecast(model, [np.full(5, np.nan)], 20)).all()


def test_unobserved_patch_has_no_influence(model: FactoSTBackbone) -> None:
    """A fully missing patch is masked out of attention: nothing added to its token reaches the output,
    NaN / +inf / -inf under it read the same, while the same perturbation of an observed patch does matter."""
    ctx = sine_context(64)
    ctx[0, 16:32] = float("nan")  # patch 1 of 4 unobserved
    bias = torch.zeros(1, 4 + 2, 192)
    with torch.no_grad():
        ref = model(ctx, 2).quantiles
        bias[0, 1] = 5.0 * torch.randn(192)
        masked = model(ctx, 2, token_bias=bias).quantiles
        bias.zero_()
        bias[0, 2] = 5.0 * torch.randn(192)
        observed = model(ctx, 2, token_bias=bias).quantiles
        inf_ctx = ctx.clone()
        inf_ctx[0, 16:24] = float("inf")
        inf_ctx[0, 24:32] = -float("inf")
        with_inf = model(inf_ctx, 2).quantiles
    torch.testing.assert_close(masked, ref, rtol=0, atol=0)
    torch.testing.assert_close(with_inf, ref, rtol=0, atol=0)
    assert (observed - ref).abs().max() > 1e-3


def test_prefix_tokens_attend_and_token_bias_shape_is_checked(model: FactoSTBackbone) -> None:
    ctx = sine_context(32)
    with torch.no_grad():
        ref = model(ctx, 1)
        zero_prefix = model(ctx, 1, prefix_tokens=torch.zeros(1, 3, 192))
        prompt = model(ctx, 1, prefix_tokens=torch.randn(1, 3, 192))
    assert zero_prefix.hidden.shape == (1, 3 + 2 + 1 + 1, 192)
    assert (prompt.quantiles - ref.quantiles).abs().max() > 1e-4
    with pytest.raises(ValueError, match="token_bias must have shape \\(1, 3, 192\\)"):
        model(ctx, 1, token_bias=torch.zeros(1, 2, 192))
    with pytest.raises(ValueError, match="prefix_tokens"):
        model(ctx, 1, prefix_tokens=torch.zeros(1, 3, 7))
    with pytest.raises(ValueError, match="prefix_gate must be \\[3, 3\\]"):
        model(ctx, 1, prefix_tokens=torch.randn(1, 3, 192), prefix_gate=torch.zeros(3))
    with pytest.raises(ValueError, match="num_future_patches"):
        model(ctx, 0)
    with pytest.raises(ValueError, match="\\[batch, length\\]"):
        model(ctx[0], 1)


def test_gated_prefix_at_zero_gate_is_exactly_no_prefix(model: FactoSTBackbone) -> None:
    """A zero gate keeps every real token's output as without prompts (they do not shift rotary positions
    either); an open gate lets the prompts change the forecast."""
    ctx = sine_context(40)
    prompts = torch.randn(1, 4, 192)
    with torch.no_grad():
        ref = model(ctx, 2)
        closed = model(ctx, 2, prefix_tokens=prompts, prefix_gate=torch.zeros(3, 3))
        half_open = model(ctx, 2, prefix_tokens=prompts, prefix_gate=torch.full((3, 3), 0.5))
    torch.testing.assert_close(closed.quantiles, ref.quantiles, rtol=0, atol=1e-6)
    torch.testing.assert_close(closed.hidden[:, 4:], ref.hidden, rtol=0, atol=1e-5)
    assert (half_open.quantiles - ref.quantiles).abs().max() > 1e-3


def test_pinball_loss_hand_computed() -> None:
    """levels (0.1, 0.5, 0.9); t0: y=1.5, preds (0, 1, 2); t1: y=0, preds (1, 1, 1); t2: y=NaN (skipped).

    t0: diffs y - q = (1.5, 0.5, -0.5) -> max(0.1*1.5, -0.9*1.5)=0.15, max(0.25, -0.25)=0.25,
        max(0.9*-0.5, -0.1*-0.5)=0.05 -> 0.45.
    t1: diffs (-1, -1, -1) -> max(-0.1, 0.9)=0.9, 0.5, max(-0.9, 0.1)=0.1 -> 1.5.
    mean over 2 observed points x 3 levels = (0.45 + 1.5) / 6 = 0.325.
    """
    q = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [100.0, -100.0, 7.0]]], requires_grad=True)
    y = torch.tensor([[1.5, 0.0, float("nan")]])
    levels = torch.tensor([0.1, 0.5, 0.9])
    loss = pinball_loss(q, y, levels)
    assert loss.item() == pytest.approx(0.325, abs=1e-7)
    loss.backward()
    assert torch.all(q.grad[0, 2] == 0)  # the NaN target contributes no gradient
    # changing the prediction under the NaN target does not change the loss
    q2 = q.detach().clone()
    q2[0, 2] = torch.tensor([-5.0, 3.0, 11.0])
    assert pinball_loss(q2, y, levels).item() == loss.item()


def test_pinball_all_nan_target_is_zero_with_gradient() -> None:
    q = torch.randn(2, 4, 3, requires_grad=True)
    loss = pinball_loss(q, torch.full((2, 4), float("nan")), torch.tensor([0.1, 0.5, 0.9]))
    assert loss.item() == 0.0
    loss.backward()
    assert q.grad is not None and torch.all(q.grad == 0)


def test_training_loss_normalises_target_and_skips_nan(model: FactoSTBackbone) -> None:
    ctx = sine_context(40)
    target = sine_context(60)[:, 40:]  # 20 points: padded to 2 patches inside
    target[0, 3] = float("nan")
    with torch.no_grad():
        loss = model.training_loss(ctx, target)
        out = model(ctx, 2)
    y = (target - out.loc) / out.scale
    manual = pinball_loss(out.quantiles[:, :20], y, torch.tensor(LEVELS))
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    # the loss is invariant to an affine change of the series (normalised by the context statistics)
    with torch.no_grad():
        scaled = model.training_loss(100.0 * ctx - 7.0, 100.0 * target - 7.0)
    assert scaled.item() == pytest.approx(loss.item(), rel=1e-4)


def test_fixed_seed_model_gives_pinned_numbers(model: FactoSTBackbone) -> None:
    """Regression pin: minuscule, torch.manual_seed(0), sine context of 40 points with one NaN."""
    ctx = sine_context(40)
    ctx[0, 5] = float("nan")
    with torch.no_grad():
        out = model(ctx, 1)
        target = sine_context(60)[:, 40:]
        loss = model.training_loss(ctx, target)
    got = out.quantiles[0, [0, 7, 15]][:, [0, 5, 10]]
    pinned = torch.tensor(
        [
            [0.5645939111709595, 0.5247361660003662, -0.2189357578754425],
            [0.28218862414360046, 0.7790452837944031, -0.10379354655742645],
            [-0.0034483671188354492, -0.015317603945732117, 0.11712745577096939],
        ]
    )
    torch.testing.assert_close(got, pinned, rtol=0, atol=1e-5)
    assert out.loc.item() == pytest.approx(10.143540382385254, abs=1e-5)
    assert out.scale.item() == pytest.approx(2.1300442218780518, abs=1e-5)
    assert loss.item() == pytest.approx(0.4594523012638092, abs=1e-5)


def test_a_few_optimizer_steps_reduce_the_loss() -> None:
    """Gradients reach every parameter and the model can fit: 40 AdamW steps on a noisy sine."""
    torch.manual_seed(0)
    m = FactoSTBackbone(BackboneConfig.from_size("minuscule", num_layers=1, dropout=0.0))
    gen = torch.Generator().manual_seed(0)
    series = sine_context(96).repeat(8, 1) + 0.1 * torch.randn(8, 96, generator=gen)
    ctx, target = series[:, :64], series[:, 64:]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    first = m.training_loss(ctx, target)
    first.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    opt.step()
    for _ in range(40):
        opt.zero_grad()
        loss = m.training_loss(ctx, target)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()


def test_bf16_weights_and_autocast_run(model: FactoSTBackbone) -> None:
    """DeepSpeed bf16 casts the weights; GPU training uses autocast: both must run and stay finite."""
    ctx = sine_context(40)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        auto = model(ctx, 1).quantiles
    half = FactoSTBackbone(model.cfg)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).eval()
    with torch.no_grad():
        q16 = half(ctx, 1).quantiles
        ref = model(ctx, 1).quantiles
    assert q16.dtype == torch.bfloat16 and torch.isfinite(q16).all() and torch.isfinite(auto).all()
    assert (q16.float() - ref).abs().max() < 0.1
