"""The STA adapter's modules (paper Sec. III-B): STMF, STF, DSPA and the CMR batch mixer.

Shapes: ``B`` windows, ``N`` nodes, ``P`` token positions (context patches then future patches, REG
excluded), ``d`` the backbone width, ``E`` the embedding width (32), ``F`` calendar features.

Cost is linear in ``N``: every tensor is at most ``B x N x P x max(d, M)``; the only cross-node term is the
time-lagged affinity, which goes through ``M`` latent prototypes (nodes -> M summaries -> nodes), never an
``N x N`` product.

Choices the paper leaves open, made here:

- STMF ``I_st = W_meta [E_n || E_c1 || ...]`` is linear, so "project, then mean-pool over the points of a
  patch" equals "mean-pool the calendar embeddings, then project"; the node part is constant over a patch.
  We compute it that way (the calendar part costs ``B x P`` rows, not ``B x N x P``). ``W_meta`` is
  zero-initialised (its bias too) so that an untrained STMF adds nothing: adaptation starts exactly from
  the pretrained backbone's behaviour, as LoRA's zero-initialised up-projection does.
- STF's time-lagged aggregation ``Agg_k`` is an inducing-point (Set Transformer ISAB) round trip:
  prototypes gather the lag-``k`` identifiers of all nodes with a softmax over nodes, and each node reads the
  M summaries back with a softmax over prototypes (same logits ``<I_st, P_m> / sqrt(d)``). The lag weights
  ``softplus(gamma)`` are per node and lag (the paper's Fig. 9 shows node-specific lag preferences).
  Positions with ``p < k`` have no lag-``k`` history and contribute 0.
- DSPA: ``P = Linear(U V^T)`` (Xavier, zero bias, as every backbone Linear).

Where the defaults deviate from the paper's form (STF scores divided by ``sqrt(d)``, gated DSPA prompts, a
fixed CMR buffer) and why: docs/protocol.md, "Deviations"; ``AdaptConfig.paper_faithful`` restores the form.
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
        scaled: bool = True,
    ) -> None:
        super().__init__()
        unknown = set(affinities) - set(ALL_AFFINITIES)
        if unknown or not affinities:
            raise ValueError(
                f"STF affinities must be a non-empty subset of {ALL_AFFINITIES}, got {affinities}"
            )
        self.affinities = tuple(affinities)
        self.d_model = d_model
        # the affinity scores S_s, S_t, S_d: divided by sqrt(d) (default) or plain dot products (the paper)
        self.score_scale = 1.0 / math.sqrt(d_model) if scaled else 1.0
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
            agg = (read[:, :, k:] * sim).sum(dim=-1) * self.score_scale  # [B, N, P-k]
            total[:, :, k:] = total[:, :, k:] + lag_w[None, :, k - 1, None] * agg
        return total

    def forward(self, i_st: Tensor, node_e: Tensor, cal_sum: Tensor, node_index: Tensor) -> Tensor:
        scale = self.score_scale
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
    """CMR mini-batches over a chronological sample stream (paper Eq. 11, the mixing rule, Algorithm 1).

    Fixed buffer (default): the first ``floor(memory_fraction * n)`` samples form the memory buffer, the rest
    the current stream. Updated buffer (``update_memory``, Algorithm 1): the stream is every sample, the
    buffer starts empty (line 10) with room for ``floor(memory_fraction * n)`` samples, and after each batch
    its current samples enter it by reservoir sampling (line 28), so the buffer stays a uniform sample of the
    stream seen so far. Each epoch shuffles the stream into batches of ``batch_size``; in each batch
    ``floor(replay_ratio * b)`` samples (at most the updated buffer's size) are replaced by buffer samples. Without
    CMR (``enabled=False``) nothing is replaced. Yields arrays of sample indices.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        memory_fraction: float,
        replay_ratio: float,
        enabled: bool,
        rng: np.random.Generator,
        update_memory: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training stream is empty")
        self.batch_size = batch_size
        self.replay_ratio = replay_ratio if enabled else 0.0
        self.update_memory = update_memory and enabled
        capacity = int(math.floor(memory_fraction * num_samples)) if enabled else 0
        if self.update_memory:
            self.capacity = max(capacity, 1)
            self.memory = np.empty(0, dtype=np.int64)
            self.stream = np.arange(num_samples)
        else:
            self.capacity = min(capacity, num_samples - 1)  # keep at least one current sample
            self.memory = np.arange(self.capacity)
            self.stream = np.arange(self.capacity, num_samples)
            if self.memory.size == 0:
                self.replay_ratio = 0.0
        self.seen = 0  # current samples offered to an updated buffer so far
        self.updates = 0  # buffer slots written after the start
        self.rng = rng

    def steps_per_epoch(self) -> int:
        return math.ceil(self.stream.size / self.batch_size)

    def remember(self, current: np.ndarray) -> None:
        """Algorithm 1 line 28: offer a batch's current samples to the buffer (reservoir sampling)."""
        for sample in current:
            self.seen += 1
            if self.memory.size < self.capacity:
                self.memory = np.append(self.memory, sample)
                self.updates += 1
                continue
            slot = int(self.rng.integers(self.seen))
            if slot < self.capacity:
                self.memory[slot] = sample
                self.updates += 1

    def epoch(self) -> Iterator[np.ndarray]:
        order = self.rng.permutation(self.stream)
        for start in range(0, order.size, self.batch_size):
            current = order[start : start + self.batch_size]
            batch = current.copy()
            n_replace = int(math.floor(self.replay_ratio * batch.size))
            if self.update_memory:  # an empty or filling buffer lends what it has
                n_replace = min(n_replace, self.memory.size)
            keep = np.ones(batch.size, dtype=bool)
            if n_replace:
                slots = self.rng.choice(batch.size, size=n_replace, replace=False)
                batch[slots] = self.rng.choice(
                    self.memory, size=n_replace, replace=self.memory.size < n_replace
                )
                keep[slots] = False
            yield batch
            if self.update_memory:  # after the step on this batch, as in Algorithm 1
                self.remember(current[keep])

    def summary(self) -> dict[str, int | str]:
        """What the buffer is at this point: policy, capacity, size and the slots written after the start."""
        policy = "updated (Algorithm 1)" if self.update_memory else "fixed (Eq. 11)"
        return {"policy": policy, "capacity": int(self.capacity), "size": int(self.memory.size),
                "updates": int(self.updates)}
