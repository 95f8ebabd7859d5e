"""The STA adapter's modules (paper Sec. III-B): STMF, STF, DSPA and the CMR batch mixer.

Shapes: ``B`` windows, ``N`` nodes, ``P`` token positions (context patches then future patches, REG
excluded), ``d`` the backbone width, ``E`` the embedding width (32), ``F`` calendar features.

Cost is linear in ``N``: every tensor is at most ``B x N x P x max(d, M)``; the only cross-node term is the
time-lagged affinity, which goes through ``M`` latent prototypes (nodes -> M summaries -> nodes), never an
``N x N`` product.

Choices the paper and the facts file leave open, made here:

- STMF ``I_st = W_meta [E_n || E_c1 || ...]`` is linear, so "project, then mean-pool over the points of a
  patch" equals "mean-pool the calendar embeddings, then project"; the node part is constant over a patch.
  We compute it that way (the calendar part costs ``B x P`` rows, not ``B x N x P``). ``W_meta`` is
  zero-initialised (its bias too) so that an untrained STMF adds nothing: adaptation starts exactly from
  the pretrained backbone's behaviour, as LoRA's zero-initialised up-projection does.
- STF dot products are divided by ``sqrt(d)`` (the usual attention scaling), so the gate does not saturate
  at init for wide models. The time-lagged aggregation ``Agg_k`` is an inducing-point (Set Transformer
  ISAB) round trip: prototypes gather the lag-``k`` identifiers of all nodes with a softmax over nodes, and
  each node reads the M summaries back with a softmax over prototypes (same logits ``<I_st, P_m>``). The
  lag weights ``softplus(gamma)`` are per node and lag: the paper's Fig. 9 shows node-specific lag
  preferences. Positions with ``p < k`` have no lag-``k`` history and contribute 0.
- DSPA: ``P = Linear(U V^T)`` (Xavier, zero bias, as every backbone Linear). Prompt tokens that simply
  join the softmax are NOT inert even when they are zero vectors: they are always-attending keys with
  logit 0, which takes softmax mass from the real tokens (7.5% mean change of the median on ETTh2 with a
  small backbone). So by default (``dspa_gated``) the prompts are attended through a softmax of their own,
  scaled by a zero-initialised gate per layer and head and added to the usual attention output (the
  zero-init attention of LLaMA-Adapter): at init the model is exactly the backbone, and ``U`` can start
  random (small normal) so the gate gets a useful gradient from the first step. Ungated, ``U`` starts at
  zero (zero prompts), the closest to a no-op that design allows.
- Zero vectors and pre-norm do not mix smoothly: the backbone's future placeholders are zero vectors, and
  ``RMSNorm(delta)`` of a tiny ``delta`` is a unit-RMS vector (the norm divides by ``sqrt(mean(delta^2) +
  1e-6)``). So the first non-zero ``I_st`` on a future token (or, ungated, the first non-zero DSPA prompt)
  turns a "null" query/key into a full-size one: measured on ETTh2 96->96, ten adapter steps on a frozen
  pretrained minuscule backbone raised the validation loss from 0.329 to 0.356. The facts add ``I_st`` to
  context and future tokens and we keep that default (it is better on ETTh2 12->12 and synthetic traffic);
  ``stmf_future_tokens=False`` adds it to the context tokens only, which keeps the start smooth
  (docs/benchmarks/adapt.md has the ablation).
- CMR follows Eq. 11 (a fixed buffer of the first ``s`` share of the chronological sample stream); the
  "update memory" line of Algorithm 1 is not implemented, the buffer stays the early data the model would
  otherwise forget.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptation.config import ALL_AFFINITIES, Affinity

# Embedding tables start as N(0, 1/E): unit-norm rows, so dot products of pooled embeddings stay O(1).
EMBED_INIT_SCALE = 1.0


def patch_point_mask(context_len: int, horizon: int, patch_size: int) -> tuple[int, int, Tensor]:
    """(left pad, future patches, bool [P * patch_size]) marking the real points of each token's patch.

    The backbone left-pads the context with NaN to a multiple of the patch size and forecasts whole future
    patches; a pad point or a future point past the horizon has no calendar and is left out of the pooling.
    """
    pad = (-context_len) % patch_size
    n_fut = math.ceil(horizon / patch_size)
    total = (context_len + pad) + n_fut * patch_size
    mask = torch.zeros(total, dtype=torch.bool)
    mask[pad : pad + context_len + horizon] = True
    return pad, n_fut, mask


class STMF(nn.Module):
    """Spatio-temporal metadata fusion: node and calendar identifiers projected to ``d`` per (node, patch)."""

    def __init__(self, num_nodes: int, calendar_vocab: dict[str, int], embed_dim: int, d_model: int) -> None:
        super().__init__()
        if num_nodes < 1:
            raise ValueError(f"STMF needs at least one node, got {num_nodes}")
        self.feature_names = list(calendar_vocab)
        self.node_embedding = nn.Embedding(num_nodes, embed_dim)
        self.calendar_embeddings = nn.ModuleList(
            nn.Embedding(int(v), embed_dim) for v in calendar_vocab.values()
        )
        # W_meta split by input block: [E_n || E_cal] W^T + b == E_n W_n^T + E_cal W_c^T + b.
        self.proj_node = nn.Linear(embed_dim, d_model, bias=False)
        self.proj_calendar = (
            nn.Linear(embed_dim * len(self.feature_names), d_model, bias=True) if self.feature_names else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = EMBED_INIT_SCALE / math.sqrt(self.node_embedding.embedding_dim)
        nn.init.normal_(self.node_embedding.weight, std=std)
        for table in self.calendar_embeddings:
            nn.init.normal_(table.weight, std=std)
        nn.init.zeros_(self.proj_node.weight)
        if self.proj_calendar is not None:
            nn.init.zeros_(self.proj_calendar.weight)
            nn.init.zeros_(self.proj_calendar.bias)

    def pooled_calendar(self, calendar: Tensor, point_mask: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
        """Mean over each patch's real points of the concatenated and of the summed calendar embeddings.

        ``calendar`` [B, T, F] long for the T real points (context then horizon), ``point_mask`` [P*p] bool
        with T True entries. Returns ([B, P, F*E], [B, P, E]).
        """
        batch, steps, n_feat = calendar.shape
        if n_feat != len(self.feature_names):
            raise ValueError(f"calendar has {n_feat} features, STMF was built for {self.feature_names}")
        if int(point_mask.sum()) != steps:
            raise ValueError(f"calendar covers {steps} steps, the token layout has {int(point_mask.sum())}")
        embed_dim = self.node_embedding.embedding_dim
        parts = [table(calendar[..., i]) for i, table in enumerate(self.calendar_embeddings)]
        concat = torch.cat(parts, dim=-1)  # [B, T, F*E]
        summed = torch.stack(parts, dim=0).sum(dim=0)  # [B, T, E]
        total = point_mask.shape[0]
        n_tok = total // patch_size
        mask = point_mask.to(calendar.device)
        full = concat.new_zeros(batch, total, n_feat * embed_dim + embed_dim)
        full[:, mask] = torch.cat([concat, summed], dim=-1)
        counts = mask.view(n_tok, patch_size).sum(dim=1).clamp_min(1).to(full.dtype)
        pooled = full.view(batch, n_tok, patch_size, -1).sum(dim=2) / counts[None, :, None]
        return pooled[..., : n_feat * embed_dim], pooled[..., n_feat * embed_dim :]

    def forward(
        self, node_index: Tensor, calendar: Tensor, point_mask: Tensor, patch_size: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``I_st`` [B, N, P, d], plus node embeddings [N, E] and pooled calendar sums [B, P, E] for STF."""
        node_e = self.node_embedding(node_index)  # [N, E]
        node_part = self.proj_node(node_e)  # [N, d]
        if self.proj_calendar is not None:
            cal_concat, cal_sum = self.pooled_calendar(calendar, point_mask, patch_size)
            cal_part = self.proj_calendar(cal_concat)  # [B, P, d]
        else:
            batch, n_tok = calendar.shape[0], point_mask.shape[0] // patch_size
            cal_sum = node_e.new_zeros(batch, n_tok, node_e.shape[1])
            cal_part = node_e.new_zeros(batch, n_tok, node_part.shape[1])
        i_st = node_part[None, :, None, :] + cal_part[:, None, :, :]
        return i_st, node_e, cal_sum


class STF(nn.Module):
    """Spatio-temporal filtering: ``I_st <- sigmoid(a_s S_s + a_t S_t + a_d S_d) * I_st`` (paper Eq. 8)."""

    def __init__(
        self,
        num_nodes: int,
        embed_dim: int,
        d_model: int,
        num_prototypes: int,
        max_lag: int,
        affinities: Sequence[Affinity] = ALL_AFFINITIES,
    ) -> None:
        super().__init__()
        unknown = set(affinities) - set(ALL_AFFINITIES)
        if unknown or not affinities:
            raise ValueError(
                f"STF affinities must be a non-empty subset of {ALL_AFFINITIES}, got {affinities}"
            )
        self.affinities = tuple(affinities)
        self.d_model = d_model
        self.max_lag = max_lag
        self.proj_spatial = nn.Linear(embed_dim, d_model, bias=False)
        self.proj_temporal = nn.Linear(embed_dim, d_model, bias=False)
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, d_model))
        self.lag_logits = nn.Parameter(torch.zeros(num_nodes, max_lag))  # gamma, per node and lag
        self.fusion_logits = nn.Parameter(
            torch.zeros(len(ALL_AFFINITIES))
        )  # w_s, w_t, w_d (softmax -> alpha)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.proj_spatial.weight)
        nn.init.xavier_uniform_(self.proj_temporal.weight)
        nn.init.normal_(self.prototypes, std=1.0 / math.sqrt(self.d_model))
        nn.init.zeros_(self.lag_logits)
        nn.init.zeros_(self.fusion_logits)

    def fusion_weights(self) -> Tensor:
        """alpha over the active affinities (softmax of their logits), in ``self.affinities`` order."""
        idx = [ALL_AFFINITIES.index(a) for a in self.affinities]
        return torch.softmax(self.fusion_logits[idx], dim=0)

    def lagged_affinity(self, i_st: Tensor, node_index: Tensor) -> Tensor:
        """``S_d`` [B, N, P]: sum_k softplus(gamma_nk) <I_st(p), Agg_k(p)> through the M prototypes."""
        batch, nodes, n_tok, d = i_st.shape
        scale = 1.0 / math.sqrt(d)
        logits = torch.einsum("bnpd,md->bnpm", i_st, self.prototypes) * scale  # [B, N, P, M]
        gather = torch.softmax(logits, dim=1)  # each prototype's weights over the nodes
        summary = torch.einsum("bnpm,bnpd->bpmd", gather, i_st)  # [B, P, M, d]
        read = torch.softmax(logits, dim=-1)  # each node's weights over the prototypes
        lag_w = F.softplus(self.lag_logits[node_index])  # [N, K]
        total = i_st.new_zeros(batch, nodes, n_tok)
        for k in range(1, min(self.max_lag, n_tok - 1) + 1):
            # <I_st(n, p), sum_m read(n,p,m) summary(p-k, m)> for p >= k
            sim = torch.einsum("bnpd,bpmd->bnpm", i_st[:, :, k:], summary[:, :-k])  # [B, N, P-k, M]
            agg = (read[:, :, k:] * sim).sum(dim=-1) * scale  # [B, N, P-k]
            total[:, :, k:] = total[:, :, k:] + lag_w[None, :, k - 1, None] * agg
        return total

    def forward(self, i_st: Tensor, node_e: Tensor, cal_sum: Tensor, node_index: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(self.d_model)
        alpha = self.fusion_weights()
        score = i_st.new_zeros(i_st.shape[:3])
        for weight, name in zip(alpha, self.affinities, strict=True):
            if name == "spatial":
                ref = self.proj_spatial(node_e)  # [N, d]
                s = (i_st * ref[None, :, None, :]).sum(dim=-1) * scale
            elif name == "temporal":
                ref = self.proj_temporal(cal_sum)  # [B, P, d]
                s = (i_st * ref[:, None, :, :]).sum(dim=-1) * scale
            else:
                s = self.lagged_affinity(i_st, node_index)
            score = score + weight * s
        return torch.sigmoid(score).unsqueeze(-1) * i_st


class DSPA(nn.Module):
    """Domain-specific prompt alignment: K global prompts ``Linear(U V^T)`` prepended to every series.

    With ``gate_shape`` (the backbone's ``(num_layers, num_heads)``) it also owns the zero-initialised prefix
    gate the backbone scales the prompts' attention by; ``gate`` is None when ungated.
    """

    def __init__(
        self, num_prompts: int, rank: int, d_model: int, gate_shape: tuple[int, int] | None = None
    ) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.zeros(num_prompts, rank))
        self.v = nn.Parameter(torch.empty(d_model, rank))
        self.proj = nn.Linear(d_model, d_model)
        self.gate = nn.Parameter(torch.zeros(gate_shape)) if gate_shape is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.gate is None:
            nn.init.zeros_(self.u)
        else:
            nn.init.normal_(self.u, std=1.0 / math.sqrt(self.u.shape[1]))
            nn.init.zeros_(self.gate)
        nn.init.normal_(self.v, std=1.0 / math.sqrt(self.v.shape[0]))
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self) -> Tensor:
        """Prompt tokens [K, d]."""
        return self.proj(self.u @ self.v.T)


class ReplayMixer:
    """CMR mini-batches over a chronological sample stream (paper Eq. 11 and the mixing rule after it).

    The first ``floor(memory_fraction * n)`` samples form the memory buffer, the rest the current stream.
    Each epoch shuffles the stream into batches of ``batch_size``; in each batch ``floor(replay_ratio * b)``
    samples are replaced by samples drawn from the buffer. Without CMR (``enabled=False``) every sample is in
    the stream and nothing is replaced. Yields arrays of sample indices.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        memory_fraction: float,
        replay_ratio: float,
        enabled: bool,
        rng: np.random.Generator,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training stream is empty")
        self.batch_size = batch_size
        self.replay_ratio = replay_ratio if enabled else 0.0
        memory = int(math.floor(memory_fraction * num_samples)) if enabled else 0
        if memory >= num_samples:  # keep at least one current sample
            memory = num_samples - 1
        self.memory = np.arange(memory)
        self.stream = np.arange(memory, num_samples)
        if self.memory.size == 0:
            self.replay_ratio = 0.0
        self.rng = rng

    def steps_per_epoch(self) -> int:
        return math.ceil(self.stream.size / self.batch_size)

    def epoch(self) -> Iterator[np.ndarray]:
        order = self.rng.permutation(self.stream)
        for start in range(0, order.size, self.batch_size):
            batch = order[start : start + self.batch_size].copy()
            n_replace = int(math.floor(self.replay_ratio * batch.size))
            if n_replace:
                slots = self.rng.choice(batch.size, size=n_replace, replace=False)
                batch[slots] = self.rng.choice(
                    self.memory, size=n_replace, replace=self.memory.size < n_replace
                )
            yield batch
