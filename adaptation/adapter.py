"""The STA model: the pretrained UTP backbone with the adapter's modules around it (paper Algorithm 1, STA).

Each node is its own series (channel independence): a window ``[B, L, N]`` runs through the backbone as
``B * N`` series, so the backbone costs ``O(N)``. The adapter's ``I_st`` (STMF, filtered by STF) is added to
the context and future token embeddings before the first layer (``H_fused = Z + I_st``) through the backbone's
``token_bias``; DSPA's prompts take the first positions through ``prefix_tokens`` (attended through
DSPA's zero-initialised ``prefix_gate`` by default; in the one softmax under ``dspa_gated=False``, see
docs/protocol.md). The backbone forecasts on
its instance-normalised scale; this model returns quantiles on the scale of its input (the benchmark's train
z-score), which is where the harness computes the loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from adaptation.config import AdaptConfig
from adaptation.modules import DSPA, STF, STMF, patch_point_mask
from training.model import FactoSTBackbone


class AdapterOutput(NamedTuple):
    """``quantiles`` [B, H, N, Q] on the input's scale, sorted along Q; ``median`` [B, H, N]."""

    quantiles: Tensor
    median: Tensor


class STAModel(nn.Module):
    """Backbone ``T`` plus adapter ``S`` (STMF, STF, DSPA as configured); CMR lives in the batch mixer."""

    def __init__(
        self,
        backbone: FactoSTBackbone,
        cfg: AdaptConfig,
        num_nodes: int,
        calendar_vocab: dict[str, int],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.num_nodes = num_nodes
        self.calendar_features = list(calendar_vocab)
        d = backbone.cfg.d_model
        self.stmf = STMF(num_nodes, calendar_vocab, cfg.embed_dim, d) if cfg.use_stmf else None
        self.stf = (
            STF(num_nodes, cfg.embed_dim, d, cfg.num_prototypes, cfg.max_lag_patches, cfg.stf_affinities,
                cfg.choice("stf_scaled"))
            if cfg.use_stf
            else None
        )
        gate_shape = (backbone.cfg.num_layers, backbone.cfg.num_heads) if cfg.choice("dspa_gated") else None
        self.dspa = DSPA(cfg.num_prompts, cfg.prompt_rank, d, gate_shape) if cfg.use_dspa else None
        self.backbone.requires_grad_(not cfg.freeze_backbone)

    def adapter_parameters(self) -> list[nn.Parameter]:
        """Parameters of the adapter modules (not the backbone)."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def parameter_counts(self) -> dict[str, int]:
        """Total, trainable, adapter and backbone parameter counts (reported in metrics.json)."""
        adapter = sum(p.numel() for p in self.adapter_parameters())
        backbone = sum(p.numel() for p in self.backbone.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": adapter + backbone, "trainable": trainable, "adapter": adapter, "backbone": backbone}

    def token_bias(
        self, calendar: Tensor | None, node_index: Tensor, context_len: int, horizon: int
    ) -> Tensor | None:
        """``I_st`` [B, N, P_ctx + F, d] (filtered by STF when on), or None without STMF."""
        if self.stmf is None:
            return None
        if calendar is None:
            raise ValueError("STMF is on, so the model needs the calendar features of context and horizon")
        patch = self.backbone.cfg.patch_size
        _, _, point_mask = patch_point_mask(context_len, horizon, patch)
        i_st, node_e, cal_sum = self.stmf(node_index, calendar, point_mask, patch)
        if self.stf is not None:
            i_st = self.stf(i_st, node_e, cal_sum, node_index)
        if not self.cfg.stmf_future_tokens:
            n_ctx = (context_len + (-context_len) % patch) // patch
            i_st = torch.cat([i_st[:, :, :n_ctx], torch.zeros_like(i_st[:, :, n_ctx:])], dim=2)
        return i_st

    def forward(
        self,
        x: Tensor,
        horizon: int,
        calendar: Tensor | None = None,
        node_index: Tensor | None = None,
    ) -> AdapterOutput:
        """Quantile forecasts of the next ``horizon`` steps of every node.

        ``x`` [B, L, N] float with NaN for missing points; ``calendar`` [B, L + horizon, F] int64 with the
        features in the order of ``calendar_vocab``; ``node_index`` [N] which of the benchmark's nodes the
        columns of ``x`` are (default: all, in order).
        """
        if x.dim() != 3:
            raise ValueError(f"x must be [batch, time, nodes], got shape {tuple(x.shape)}")
        batch, context_len, nodes = x.shape
        bcfg = self.backbone.cfg
        if horizon < 1 or horizon > bcfg.max_horizon:
            raise ValueError(
                f"horizon {horizon} must be in [1, {bcfg.max_horizon}] (the backbone's max_horizon)"
            )
        if context_len > bcfg.max_context:
            raise ValueError(
                f"input length {context_len} exceeds the backbone's max_context {bcfg.max_context}"
            )
        if node_index is None:
            if nodes != self.num_nodes:
                raise ValueError(f"x has {nodes} nodes, the adapter was built for {self.num_nodes}")
            node_index = torch.arange(nodes, device=x.device)
        elif node_index.shape != (nodes,):
            raise ValueError(f"node_index must be [{nodes}], got {tuple(node_index.shape)}")
        if calendar is not None and calendar.shape[:2] != (batch, context_len + horizon):
            raise ValueError(
                f"calendar must be [{batch}, {context_len + horizon}, F], got {tuple(calendar.shape)}"
            )
        n_fut = math.ceil(horizon / bcfg.patch_size)
        series = x.permute(0, 2, 1).reshape(batch * nodes, context_len)
        bias = self.token_bias(calendar, node_index, context_len, horizon)
        if bias is not None:
            bias = bias.reshape(batch * nodes, bias.shape[2], bias.shape[3])
        prompts = gate = None
        if self.dspa is not None:
            prompts, gate = self.dspa(), self.dspa.gate
        chunks = []
        for start in range(0, batch * nodes, self.cfg.series_per_pass):
            part = slice(start, min(start + self.cfg.series_per_pass, batch * nodes))
            rows = part.stop - part.start
            prefix = None if prompts is None else prompts.unsqueeze(0).expand(rows, -1, -1)
            out = self.backbone(
                series[part],
                n_fut,
                token_bias=None if bias is None else bias[part],
                prefix_tokens=prefix,
                prefix_gate=gate,
            )
            chunks.append(out.quantiles[:, :horizon].float() * out.scale[:, :, None] + out.loc[:, :, None])
        q = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)
        q = q.sort(dim=-1).values  # quantile heads can cross; sorting is a no-op when they do not
        q = q.view(batch, nodes, horizon, -1).permute(0, 2, 1, 3)
        return AdapterOutput(quantiles=q, median=q[..., bcfg.median_index])
