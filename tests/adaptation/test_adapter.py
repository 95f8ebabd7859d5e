"""The STA adapter: shapes, zero-init behaviour, module switches, the modules' math, and linear cost in N."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from adaptation.adapter import STAModel
from adaptation.config import AdaptConfig, ablation_configs
from adaptation.modules import DSPA, STF, STMF, ReplayMixer, patch_point_mask
from training.model import BackboneConfig, FactoSTBackbone

VOCAB = {"minute_of_hour": 60, "time_of_day": 288, "day_of_week": 7}


def _backbone(seed: int = 0) -> FactoSTBackbone:
    torch.manual_seed(seed)
    return FactoSTBackbone(BackboneConfig.from_size("minuscule", dropout=0.0)).eval()


def _inputs(
    batch: int, length: int, horizon: int, nodes: int, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    x = torch.sin(t[None, :, None] / 5.0 + torch.rand(batch, 1, nodes, generator=gen) * 6.0)
    x = x + 0.1 * torch.randn(batch, length, nodes, generator=gen)
    x[0, 3, 0] = float("nan")  # a missing point
    steps = torch.arange(length + horizon)[None, :] + torch.randint(0, 5000, (batch, 1), generator=gen)
    calendar = torch.stack([steps % 12 * 5, steps % 288, (steps // 288) % 7], dim=-1)
    return x, calendar


def _perturb(model: STAModel, seed: int = 3, std: float = 0.5) -> None:
    """Give every adapter parameter non-trivial values (zero-initialised ones would hide a switch)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(std * torch.randn(p.shape, generator=gen))


def _model(cfg: AdaptConfig, nodes: int = 5, seed: int = 0) -> STAModel:
    torch.manual_seed(seed + 100)
    return STAModel(_backbone(seed), cfg, nodes, VOCAB).eval()


def test_output_shapes_for_any_lengths() -> None:
    model = _model(AdaptConfig())
    for length, horizon in ((12, 12), (40, 20), (96, 96)):
        x, cal = _inputs(2, length, horizon, 5)
        out = model(x, horizon, cal)
        assert out.quantiles.shape == (2, horizon, 5, 11)
        assert out.median.shape == (2, horizon, 5)
        assert torch.isfinite(out.quantiles).all()
        assert (out.quantiles.diff(dim=-1) >= 0).all()  # sorted quantiles


def _bare(
    backbone: FactoSTBackbone, x: torch.Tensor, horizon: int, prefix: torch.Tensor | None = None
) -> torch.Tensor:
    b, length, n = x.shape
    series = x.permute(0, 2, 1).reshape(b * n, length)
    pre = None if prefix is None else prefix.expand(b * n, -1, -1)
    out = backbone(series, math.ceil(horizon / 16), prefix_tokens=pre)
    q = out.quantiles[:, :horizon] * out.scale[:, :, None] + out.loc[:, :, None]
    return q.sort(dim=-1).values.view(b, n, horizon, -1).permute(0, 2, 1, 3)


def test_modules_off_equals_bare_backbone_exactly() -> None:
    model = _model(AdaptConfig().without_modules())
    x, cal = _inputs(3, 24, 12, 5)
    torch.testing.assert_close(model(x, 12, cal).quantiles, _bare(model.backbone, x, 12), rtol=0, atol=0)


def test_zero_init_adapter_is_exactly_the_backbone() -> None:
    """STMF's zero-initialised W_meta makes STMF+STF a no-op at init, and DSPA's zero-initialised prefix gate
    makes its (random, non-zero) prompts a no-op too: the full adapter at init is the bare backbone."""
    x, cal = _inputs(2, 30, 12, 5)
    stmf_only = _model(AdaptConfig(use_dspa=False))
    assert torch.count_nonzero(stmf_only.token_bias(cal, torch.arange(5), 30, 12)) == 0

    full = _model(AdaptConfig())
    assert full.dspa is not None and full.dspa.gate is not None
    assert full.dspa.gate.shape == (3, 3) and torch.count_nonzero(full.dspa.gate) == 0
    assert torch.count_nonzero(full.dspa()) > 0  # the prompts themselves are not zero
    torch.testing.assert_close(full(x, 12, cal).quantiles, _bare(full.backbone, x, 12), rtol=0, atol=1e-6)


def test_dspa_gate_learns_and_then_changes_the_output() -> None:
    """The gate gets a gradient at init (so the prompts can start to matter); once open, the prompts count."""
    full = _model(AdaptConfig(use_stmf=False, use_stf=False))
    x, cal = _inputs(2, 30, 12, 5)
    bare = _bare(full.backbone, x, 12)
    loss = full(x, 12, cal).median.square().mean()
    loss.backward()
    assert full.dspa is not None and full.dspa.gate is not None and full.dspa.gate.grad is not None
    assert full.dspa.gate.grad.abs().max() > 1e-6
    with torch.no_grad():
        full.dspa.gate.fill_(0.5)
    assert (full(x, 12, cal).quantiles - bare).abs().max() > 1e-3


def test_ungated_dspa_prompts_start_at_zero_and_take_attention_mass() -> None:
    """``dspa_gated=False``: U = 0 gives zero prompt tokens that join the softmax, so the model equals the
    backbone run with K zero prefix tokens, which is not the bare backbone."""
    x, cal = _inputs(2, 30, 12, 5)
    plain = _model(AdaptConfig(dspa_gated=False))
    assert plain.dspa is not None and plain.dspa.gate is None
    prompts = plain.dspa()
    assert prompts.shape == (3, 192) and torch.count_nonzero(prompts) == 0
    out = plain(x, 12, cal).quantiles
    torch.testing.assert_close(out, _bare(plain.backbone, x, 12, prefix=torch.zeros(1, 3, 192)), rtol=0, atol=1e-6)
    assert (out - _bare(plain.backbone, x, 12)).abs().max() > 1e-4


def test_every_switch_changes_the_output() -> None:
    base = AdaptConfig()
    full = _model(base)
    _perturb(full)
    x, cal = _inputs(2, 32, 16, 5)
    reference = full(x, 16, cal).quantiles
    variants = {k: v for k, v in ablation_configs(base).items() if k not in ("full", "no_cmr")}
    assert set(variants) == {
        "no_stmf",
        "no_stf",
        "no_dspa",
        "no_stf_spatial",
        "no_stf_temporal",
        "no_stf_lagged",
    }
    variants["context_only"] = base.model_copy(update={"stmf_future_tokens": False})
    for name, cfg in variants.items():
        variant = _model(cfg)
        missing, unexpected = variant.load_state_dict(full.state_dict(), strict=False)
        assert not missing, name  # every parameter of the variant comes from the full model
        diff = (variant(x, 16, cal).quantiles - reference).abs().max().item()
        assert diff > 1e-3, f"{name}: switching it off did not change the output ({diff})"


def test_stmf_pooling_equals_project_then_mean() -> None:
    """I_st = mean over a patch's real points of W_meta [E_n || E_c...] (the public STA code's order of operations)."""
    torch.manual_seed(0)
    stmf = STMF(4, VOCAB, 8, 16)
    for p in stmf.parameters():
        torch.nn.init.normal_(p)
    length, horizon, patch = 20, 7, 16
    _, cal = _inputs(2, length, horizon, 4)
    pad, n_fut, mask = patch_point_mask(length, horizon, patch)
    assert (pad, n_fut, int(mask.sum()), mask.numel()) == (12, 1, 27, 48)
    i_st, _, _ = stmf(torch.arange(4), cal, mask, patch)
    w = torch.cat([stmf.proj_node.weight, stmf.proj_calendar.weight], dim=1)
    for b in range(2):
        for n in range(4):
            per_point = []
            for t in range(length + horizon):
                feats = [stmf.node_embedding.weight[n]]
                feats += [tab.weight[cal[b, t, i]] for i, tab in enumerate(stmf.calendar_embeddings)]
                per_point.append(w @ torch.cat(feats) + stmf.proj_calendar.bias)
            per_point = torch.stack(per_point)
            positions = torch.nonzero(mask).squeeze(1)
            for p in range(3):
                rows = [i for i, pos in enumerate(positions.tolist()) if pos // patch == p]
                torch.testing.assert_close(i_st[b, n, p], per_point[rows].mean(dim=0), rtol=1e-4, atol=1e-4)


def test_stf_matches_a_naive_loop() -> None:
    """Gate = sigmoid(sum_a alpha_a S_a) with S_d through the prototypes, checked against explicit loops."""
    torch.manual_seed(0)
    b, n, p, d, e, m, lags = 2, 3, 5, 8, 4, 2, 3
    stf = STF(n, e, d, m, lags)
    with torch.no_grad():
        stf.lag_logits.normal_()
        stf.fusion_logits.normal_()
    i_st, node_e, cal_sum = torch.randn(b, n, p, d), torch.randn(n, e), torch.randn(b, p, e)
    out = stf(i_st, node_e, cal_sum, torch.arange(n))
    alpha = torch.softmax(stf.fusion_logits, 0)
    s = 1 / math.sqrt(d)
    expected = torch.empty_like(i_st)
    for bi in range(b):
        for ni in range(n):
            for pi in range(p):
                x = i_st[bi, ni, pi]
                s_s = x @ stf.proj_spatial(node_e[ni]) * s
                s_t = x @ stf.proj_temporal(cal_sum[bi, pi]) * s
                s_d = torch.zeros(())
                read = torch.softmax(torch.stack([x @ stf.prototypes[j] * s for j in range(m)]), 0)
                for k in range(1, lags + 1):
                    if pi - k < 0:
                        continue
                    lagged = i_st[bi, :, pi - k]  # all nodes at p - k
                    agg = torch.zeros(d)
                    for j in range(m):
                        gather = torch.softmax(lagged @ stf.prototypes[j] * s, 0)  # over nodes
                        agg = agg + read[j] * (gather[:, None] * lagged).sum(0)
                    s_d = s_d + F.softplus(stf.lag_logits[ni, k - 1]) * (x @ agg) * s
                gate = torch.sigmoid(alpha[0] * s_s + alpha[1] * s_t + alpha[2] * s_d)
                expected[bi, ni, pi] = gate * x
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_dspa_is_low_rank() -> None:
    torch.manual_seed(0)
    dspa = DSPA(3, 1, 16)
    with torch.no_grad():
        dspa.u.normal_()
    prompts = dspa()
    centred = prompts - dspa.proj.bias  # Linear(U V^T) - bias = U (W V)^T: rank <= r
    assert torch.linalg.matrix_rank(centred).item() == 1


def test_replay_mixer_composition() -> None:
    rng = np.random.default_rng(0)
    mixer = ReplayMixer(100, 10, memory_fraction=0.2, replay_ratio=0.3, enabled=True, rng=rng)
    assert mixer.memory.tolist() == list(range(20)) and mixer.stream[0] == 20
    batches = list(mixer.epoch())
    assert len(batches) == 8 == mixer.steps_per_epoch()
    for batch in batches:
        assert (batch < 20).sum() == 3  # floor(0.3 * 10) replaced by memory samples
    current = np.concatenate([b[b >= 20] for b in batches])
    assert len(set(current.tolist())) == current.size == 56  # 80 - 8 * 3, each current sample at most once
    off = ReplayMixer(100, 10, 0.2, 0.3, enabled=False, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(list(off.epoch())).tolist()) == list(range(100))


class _ShapeRecorder(TorchFunctionMode):
    """Records the shape of every tensor a torch function returns inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.shapes.append(tuple(item.shape))
        return out


def _peak_elements(nodes: int) -> tuple[int, list[tuple[int, ...]]]:
    model = _model(AdaptConfig(), nodes=nodes)
    x, cal = _inputs(2, 48, 24, nodes)
    recorder = _ShapeRecorder()
    with torch.no_grad(), recorder:
        model(x, 24, cal)
    return max(math.prod(s) for s in recorder.shapes), recorder.shapes


def test_cost_is_linear_in_nodes_no_n_by_n_tensor() -> None:
    small, _ = _peak_elements(37)
    large, shapes = _peak_elements(148)
    for shape in shapes:  # 148 is no other dimension's size: two such axes would be an N x N tensor
        assert sum(dim == 148 for dim in shape) < 2, shape
        assert sum(dim == 148 * 148 for dim in shape) == 0, shape
    assert large / small == pytest.approx(4.0, rel=0.05)


def test_node_subset_and_bad_inputs() -> None:
    model = _model(AdaptConfig())
    _perturb(model)
    x, cal = _inputs(2, 24, 12, 5)
    sub = torch.tensor([1, 3])
    out = model(x[:, :, sub], 12, cal, node_index=sub)
    assert out.quantiles.shape == (2, 12, 2, 11)
    with pytest.raises(ValueError, match="built for 5"):
        model(x[:, :, :4], 12, cal)
    with pytest.raises(ValueError, match="calendar"):
        model(x, 12, None)
    with pytest.raises(ValueError, match="max_horizon"):
        model(x, 300, cal)
    with pytest.raises(ValueError, match="use_stf needs use_stmf"):
        AdaptConfig(use_stmf=False)


def test_context_only_stmf_leaves_the_future_placeholders_zero() -> None:
    model = _model(AdaptConfig(stmf_future_tokens=False))
    _perturb(model)
    x, cal = _inputs(2, 40, 20, 5)
    bias = model.token_bias(cal, torch.arange(5), 40, 20)
    assert bias.shape == (2, 5, 3 + 2, 192)  # 40 points -> 3 context patches, 20 -> 2 future patches
    assert torch.count_nonzero(bias[:, :, 3:]) == 0 and torch.count_nonzero(bias[:, :, :3]) > 0


def test_backbone_chunks_over_series_give_the_same_forecast_and_gradients() -> None:
    """``series_per_pass`` only bounds the working set: 2 windows x 5 nodes in passes of 3 series (a ragged
    last pass) give the forecast and the adapter's gradients of one pass."""
    x, cal = _inputs(2, 30, 12, 5)
    results = []
    for per_pass in (1024, 3):
        model = _model(AdaptConfig(series_per_pass=per_pass))
        _perturb(model)
        out = model(x, 12, cal)
        out.median.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.quantiles.detach(), grads))
    (q_one, g_one), (q_chunked, g_chunked) = results
    torch.testing.assert_close(q_chunked, q_one, rtol=0, atol=1e-5)
    assert g_one.keys() == g_chunked.keys() and any(k.startswith("dspa.") for k in g_one)
    for name in g_one:
        torch.testing.assert_close(g_chunked[name], g_one[name], rtol=1e-4, atol=1e-6, msg=name)
