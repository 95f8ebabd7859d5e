"""The FactoST-v2 UTP backbone (paper Sec. III-A): an encoder-only patch Transformer with quantile outputs.

Token sequence ``[prefix prompts | context patches | REG | future placeholders]``. Each context patch of 16
points becomes 32 numbers (the instance-normalised values with NaN set to 0, and the observed mask), embedded by
a bias-free sigmoid-GLU; the future placeholders are zero vectors that only their rotary positions tell apart.
Blocks are pre-norm (RMSNorm) gated attention with QK-RMSNorm and partial RoPE, then a sigmoid-GLU FFN; there is
no final norm. A GLU head with biases maps every future token to 11 quantiles x 16 steps.

Details the paper leaves open follow its public code; ``BackboneConfig.expected_num_parameters`` reproduces the
paper's Table VI exactly, and the tests check it against the built module. ``AblationConfig`` switches off the
components Table X ablates. Where the paper says ``(x - mu) / (sigma + eps)`` (Eq. 1) we follow the
public code: the population std is floored at ``std_floor`` instead of shifted, so unit-scale series are unchanged.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import ConfigDict, Field, model_validator
from torch import Tensor, nn

from infra.config import StrictModel

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)

# Paper Table VI. Parameter counts are what the built module (and its model.safetensors) must hold.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "minuscule": {"d_model": 192, "d_ff": 768, "num_layers": 3, "num_heads": 3},
    "tiny": {"d_model": 256, "d_ff": 1024, "num_layers": 3, "num_heads": 4},
    "small": {"d_model": 384, "d_ff": 1536, "num_layers": 4, "num_heads": 6},
    "base": {"d_model": 512, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
}
TABLE_VI_PARAMETERS: dict[str, int] = {
    "minuscule": 2_510_192,
    "tiny": 4_378_928,
    "small": 12_172_336,
    "base": 30_387_632,
}

# The REG token is a free vector, not a Linear weight, so Xavier does not apply; a small normal keeps it on the
# scale of the embedded patches at initialisation (the usual choice for learned special tokens).
REG_INIT_STD = 0.02

_ARCH_KEYS = ("d_model", "d_ff", "num_layers", "num_heads")


class AblationConfig(StrictModel):
    """The UTP components Table X removes one at a time; all true is the full model (the default).

    ``gated_attention`` false: attention without the ``sigmoid(G)`` output gate (the query projection is d -> d);
    ``qk_norm`` false: no RMSNorm on queries and keys; ``partial_rope`` false: every rotary pair rotates (the
    ``rope_fraction`` is ignored); ``random_masking`` false: pretraining windows keep their whole context;
    ``quantile_loss`` false: the loss is L1 on the median output (the paper's point objective), and every
    quantile the model serves is that median, so its intervals have zero width.
    """

    model_config = ConfigDict(frozen=True)

    gated_attention: bool = True
    qk_norm: bool = True
    partial_rope: bool = True
    random_masking: bool = True
    quantile_loss: bool = True

    def disabled(self) -> list[str]:
        """Names of the switches that are off, in field order."""
        return [name for name in type(self).model_fields if not getattr(self, name)]


class BackboneConfig(StrictModel):
    """Architecture of the UTP backbone; saved verbatim in ``config.json`` next to the weights."""

    model_config = ConfigDict(frozen=True)

    size: str | None = Field(None, description="Table VI name when the dims match it, else None")
    d_model: int = Field(gt=0)
    d_ff: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    patch_size: int = Field(16, gt=0)
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    rope_theta: float = Field(10000.0, gt=0.0)
    rope_fraction: float = Field(0.75, ge=0.0, le=1.0, description="share of highest-frequency pairs rotated")
    max_context: int = Field(2048, gt=0, description="points; longer contexts are cut by the forecast API")
    max_horizon: int = Field(256, gt=0, description="points per forward pass; longer horizons roll forward")
    norm_eps: float = Field(1e-6, gt=0.0)
    std_floor: float = Field(1e-5, gt=0.0, description="instance-norm std below this is replaced by it")
    ablation: AblationConfig = Field(default_factory=AblationConfig, description="Table X component switches")

    @model_validator(mode="after")
    def _check(self) -> BackboneConfig:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if (self.d_model // self.num_heads) % 2:
            raise ValueError(f"head_dim={self.d_model // self.num_heads} must be even for rotary embeddings")
        levels = self.quantile_levels
        if not levels or any(not 0.0 < q < 1.0 for q in levels) or list(levels) != sorted(set(levels)):
            raise ValueError(f"quantile_levels must be strictly increasing inside (0, 1), got {levels}")
        if 0.5 not in levels:
            raise ValueError("quantile_levels must contain 0.5: the point forecast is the median")
        for name in ("max_context", "max_horizon"):
            if getattr(self, name) % self.patch_size:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of patch_size={self.patch_size}")
        if self.size is not None:
            if self.size not in MODEL_SIZES:
                raise ValueError(f"unknown size {self.size!r}; known: {sorted(MODEL_SIZES)}")
            table = MODEL_SIZES[self.size]
            wrong = {k: getattr(self, k) for k in _ARCH_KEYS if getattr(self, k) != table[k]}
            if wrong:
                raise ValueError(f"size={self.size!r} expects {table}, but got {wrong}; set size=None")
        return self

    @classmethod
    def from_size(cls, name: str, **overrides: Any) -> BackboneConfig:
        """Config for a Table VI variant; overriding a dimension drops the size label (it no longer applies)."""
        key = name.lower()
        if key not in MODEL_SIZES:
            raise ValueError(f"unknown model size {name!r}; known: {sorted(MODEL_SIZES)}")
        values: dict[str, Any] = {"size": key, **MODEL_SIZES[key]}
        if any(k in overrides and overrides[k] != MODEL_SIZES[key][k] for k in _ARCH_KEYS):
            values["size"] = None
        values.update(overrides)
        return cls(**values)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def num_quantiles(self) -> int:
        return len(self.quantile_levels)

    @property
    def median_index(self) -> int:
        return self.quantile_levels.index(0.5)

    @property
    def effective_rope_fraction(self) -> float:
        """Share of rotary pairs that rotate: ``rope_fraction``, or all of them when p-RoPE is ablated."""
        return self.rope_fraction if self.ablation.partial_rope else 1.0

    def expected_num_parameters(self) -> int:
        """Closed form of the parameter count; with p=16, Q=11 it reproduces Table VI.

        REG d; patch embedding 2*(2p)*ff + ff*d; quantile head 2*(d*ff + ff) + ff*Qp + Qp;
        per layer: Q (2d^2), K, V, O (d^2 each), two RMSNorms (2d), QK-norms (2*head_dim), FFN 3*d*ff.
        Without the output gate Q is d^2; without QK-norm the 2*head_dim go.
        """
        d, ff, p, q = self.d_model, self.d_ff, self.patch_size, self.num_quantiles
        embed = 2 * (2 * p) * ff + ff * d
        head = 2 * (d * ff + ff) + ff * q * p + q * p
        q_proj = 2 * d * d if self.ablation.gated_attention else d * d
        qk_norm = 2 * self.head_dim if self.ablation.qk_norm else 0
        layer = q_proj + 3 * d * d + 3 * d * ff + 2 * d + qk_norm
        return d + embed + head + self.num_layers * layer


class BackboneOutput(NamedTuple):
    """``quantiles`` [B, F*16, Q] on the normalised scale; multiply by ``scale`` and add ``loc`` ([B, 1])."""

    quantiles: Tensor
    loc: Tensor
    scale: Tensor
    hidden: Tensor  # final hidden states [B, K + P_ctx + 1 + F, d] (prefix | ctx | REG | fut), for analysis


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` that casts its weight to the input dtype, so bf16 activations under autocast keep the fused
    kernel (torch otherwise falls back, with a warning, to the unfused path)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.to(x.dtype)
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


class GatedMLP(nn.Module):
    """``down(sigmoid(gate(x)) * up(x))``: the sigmoid-GLU used for the patch embedding, FFN and quantile head."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(d_in, d_hidden, bias=bias)
        self.up = nn.Linear(d_in, d_hidden, bias=bias)
        self.down = nn.Linear(d_hidden, d_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(torch.sigmoid(self.gate(x)) * self.up(x))


def rope_inverse_frequencies(head_dim: int, theta: float, fraction: float) -> Tensor:
    """Per-pair angular frequencies (float64); the lowest-frequency ``1 - fraction`` pairs get 0 (no rotation).

    p-RoPE keeps the low-frequency subspace position-free so it can carry amplitude semantics (paper Eq. 4).
    """
    n_pairs = head_dim // 2
    inv = theta ** (-torch.arange(n_pairs, dtype=torch.float64) * 2.0 / head_dim)
    inv[round(fraction * n_pairs) :] = 0.0
    return inv


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs ``(x[..., j], x[..., j + hd/2])`` by position angles; ``cos``/``sin`` are [S, hd/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class SequenceLayout(NamedTuple):
    """What every layer needs to know about the token sequence: rotary tables [S, head_dim/2], the key mask
    [B, 1, 1, S] and how many leading prefix (prompt) tokens it holds."""

    cos: Tensor
    sin: Tensor
    attn_mask: Tensor
    n_prefix: int


class GatedAttention(nn.Module):
    """Multi-head attention whose output is gated by ``sigmoid(G)``, G computed beside the query (paper Eq. 5).

    The query projection is d -> 2d; per head it splits into the query and the gate. QK-RMSNorm over head_dim
    precedes the rotary embedding. The gate lets a head output nothing, which removes the need for an
    attention sink. The ablation switches drop the gate (``gate`` is then None, the projection d -> d) and the
    QK-norms (``q_norm``/``k_norm`` None).
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        d, hd = cfg.d_model, cfg.head_dim
        self.num_heads = cfg.num_heads
        self.head_dim = hd
        self.gated = cfg.ablation.gated_attention
        self.q_proj = nn.Linear(d, 2 * d if self.gated else d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.q_norm = RMSNorm(hd, eps=cfg.norm_eps) if cfg.ablation.qk_norm else None
        self.k_norm = RMSNorm(hd, eps=cfg.norm_eps) if cfg.ablation.qk_norm else None

    def forward(self, x: Tensor, layout: SequenceLayout, prefix_gate: Tensor | None = None) -> Tensor:
        """With ``prefix_gate`` [num_heads], the layout's prefix keys get a softmax of their own whose output
        is scaled by the gate and added (zero-init gated prefix attention): at gate 0 every other token's output
        is exactly what it is without the prefix. Without a gate the prefix keys join the one softmax."""
        cos, sin, attn_mask, n_prefix = layout
        b, s, d = x.shape
        h, hd = self.num_heads, self.head_dim
        gate: Tensor | None = None
        if self.gated:
            q, gate = self.q_proj(x).view(b, s, h, 2 * hd).split(hd, dim=-1)
        else:
            q = self.q_proj(x).view(b, s, h, hd)
        k = self.k_proj(x).view(b, s, h, hd)
        v = self.v_proj(x).view(b, s, h, hd).transpose(1, 2)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        if n_prefix and prefix_gate is not None:
            k_pre, k_main = k[:, :, :n_prefix], k[:, :, n_prefix:]
            v_pre, v_main = v[:, :, :n_prefix], v[:, :, n_prefix:]
            out = F.scaled_dot_product_attention(q, k_main, v_main, attn_mask=attn_mask[..., n_prefix:])
            prompt = F.scaled_dot_product_attention(q, k_pre, v_pre)
            out = out + prefix_gate.to(out.dtype).view(1, h, 1, 1) * prompt
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        if gate is not None:
            out = out * torch.sigmoid(gate.transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + drop(attn(norm(x))), then x + drop(ffn(norm(x)))."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = GatedAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = GatedMLP(cfg.d_model, cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, layout: SequenceLayout, prefix_gate: Tensor | None = None) -> Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), layout, prefix_gate))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


def instance_stats(x: Tensor, observed: Tensor, std_floor: float) -> tuple[Tensor, Tensor]:
    """NaN-aware mean and population std per row ([B, 1] each), std floored; an all-missing row gives (0, floor)."""
    count = observed.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)
    loc = torch.where(observed, x, 0.0).sum(dim=1, keepdim=True) / count
    var = torch.where(observed, x - loc, 0.0).square().sum(dim=1, keepdim=True) / count
    return loc, var.sqrt().clamp_min(std_floor)


class FactoSTBackbone(nn.Module):
    """The UTP temporal backbone ``T``; STA injects through ``token_bias`` and ``prefix_tokens`` of ``forward``."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.d_model
        self.patch_embed = GatedMLP(2 * p, cfg.d_ff, d, bias=False)
        self.reg_token = nn.Parameter(torch.empty(d))
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.num_layers))
        self.head = GatedMLP(d, cfg.d_ff, cfg.num_quantiles * p, bias=True)
        self.dropout = nn.Dropout(cfg.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform Linear weights with zero biases (the public code); RMSNorm weights 1; REG small normal."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)
        nn.init.normal_(self.reg_token, std=REG_INIT_STD)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def rotary_inverse_frequencies(self, device: torch.device | None = None) -> Tensor:
        """Angular frequency per rotary pair [head_dim/2] (float32); pairs past the rotated share are 0."""
        cfg = self.cfg
        n_pairs = cfg.head_dim // 2
        pair = torch.arange(n_pairs, device=device, dtype=torch.float32)
        inv = torch.exp(pair * (-2.0 * math.log(cfg.rope_theta) / cfg.head_dim))
        return torch.where(pair < round(cfg.effective_rope_fraction * n_pairs), inv, 0.0)

    def _rotary(
        self, seq_len: int, device: torch.device, dtype: torch.dtype, n_prefix: int = 0
    ) -> tuple[Tensor, Tensor]:
        """cos/sin tables [S, head_dim/2], computed per call from the config, never stored: a buffer would be
        saved or, worse, cast to bf16 with the weights (bf16 frequencies are off by up to 0.4%, which turns into
        radians of error at position 2000); 32 numbers and S angles cost nothing next to the layers."""
        inv = self.rotary_inverse_frequencies(device)
        # Prefix prompts sit at position 0 and the sequence keeps positions 0..S-1, so prompts never shift the
        # rotary angles of the real tokens (their attention among themselves is bit-identical with and without).
        positions = torch.cat(
            [
                torch.zeros(n_prefix, device=device, dtype=torch.float32),
                torch.arange(seq_len - n_prefix, device=device, dtype=torch.float32),
            ]
        )
        angles = positions[:, None] * inv[None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(
        self,
        context: Tensor,
        num_future_patches: int,
        token_bias: Tensor | None = None,
        prefix_tokens: Tensor | None = None,
        prefix_gate: Tensor | None = None,
    ) -> BackboneOutput:
        """Quantiles of the next ``num_future_patches * patch_size`` points of each context row.

        ``context`` [B, L]: NaN (or inf) marks a missing point; it is left-padded with NaN to a multiple of the
        patch size. ``token_bias`` [B, P_ctx + F, d] is added to the context and future tokens (not REG) before
        the first layer; ``prefix_tokens`` [B, K, d] take the first K positions and are always attended to:
        in the one softmax with the other keys, or, given ``prefix_gate`` [num_layers, num_heads], through a
        separate softmax scaled by the gate (so a zero gate leaves every real token's output unchanged).
        """
        cfg = self.cfg
        if context.dim() != 2:
            raise ValueError(f"context must be [batch, length], got shape {tuple(context.shape)}")
        if context.shape[1] < 1:
            raise ValueError("context must hold at least one time step")
        n_fut = int(num_future_patches)
        if n_fut < 1:
            raise ValueError(f"num_future_patches must be >= 1, got {num_future_patches}")
        p, d = cfg.patch_size, cfg.d_model
        batch = context.shape[0]
        x = context.float()
        pad = (-x.shape[1]) % p
        if pad:
            x = F.pad(x, (pad, 0), value=float("nan"))
        n_ctx = x.shape[1] // p
        observed = torch.isfinite(x)
        loc, scale = instance_stats(x, observed, cfg.std_floor)
        x_norm = torch.where(observed, (x - loc) / scale, 0.0)
        param_dtype = self.reg_token.dtype
        patches = torch.cat([x_norm.view(batch, n_ctx, p), observed.view(batch, n_ctx, p).float()], dim=-1)
        ctx_tokens = self.dropout(self.patch_embed(patches.to(param_dtype)))
        tokens = torch.cat([ctx_tokens, ctx_tokens.new_zeros(batch, n_fut, d)], dim=1)
        if token_bias is not None:
            expected = (batch, n_ctx + n_fut, d)
            if tuple(token_bias.shape) != expected:
                raise ValueError(f"token_bias must have shape {expected} (P_ctx + F), got {tuple(token_bias.shape)}")
            tokens = tokens + token_bias
        reg = self.reg_token.to(tokens.dtype).expand(batch, 1, d)
        parts = [tokens[:, :n_ctx], reg, tokens[:, n_ctx:]]
        n_prefix = 0
        if prefix_tokens is not None:
            if prefix_tokens.dim() != 3 or prefix_tokens.shape[0] != batch or prefix_tokens.shape[2] != d:
                raise ValueError(f"prefix_tokens must be [{batch}, K, {d}], got {tuple(prefix_tokens.shape)}")
            n_prefix = prefix_tokens.shape[1]
            parts.insert(0, prefix_tokens.to(tokens.dtype))
        if prefix_gate is not None and tuple(prefix_gate.shape) != (cfg.num_layers, cfg.num_heads):
            raise ValueError(
                f"prefix_gate must be [{cfg.num_layers}, {cfg.num_heads}] (layers, heads), "
                f"got {tuple(prefix_gate.shape)}"
            )
        hidden = torch.cat(parts, dim=1)
        ctx_ok = observed.view(batch, n_ctx, p).any(dim=-1)
        always = torch.ones(batch, 1, dtype=torch.bool, device=x.device)
        key_ok = torch.cat([always.expand(batch, n_prefix), ctx_ok, always.expand(batch, 1 + n_fut)], dim=1)
        # Key mask only: a masked token never influences any other token, and its own output is never read,
        # which is the same as excluding it as a query; every row keeps REG/future keys, so no row is all -inf.
        attn_mask = key_ok[:, None, None, :]
        cos, sin = self._rotary(hidden.shape[1], hidden.device, hidden.dtype, n_prefix)
        layout = SequenceLayout(cos, sin, attn_mask, n_prefix)
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, layout, None if prefix_gate is None else prefix_gate[i])
        fut = hidden[:, n_prefix + n_ctx + 1 :]
        q = self.head(fut).view(batch, n_fut, cfg.num_quantiles, p)
        quantiles = q.transpose(2, 3).reshape(batch, n_fut * p, cfg.num_quantiles)
        if not cfg.ablation.quantile_loss:
            # A point-loss model trains only the median output; serving it for every level keeps the quantiles
            # ordered and the point forecast what was trained (intervals then have zero width).
            quantiles = quantiles[..., cfg.median_index : cfg.median_index + 1].expand_as(quantiles)
        return BackboneOutput(quantiles=quantiles, loc=loc, scale=scale, hidden=hidden)

    def quantile_levels_tensor(self, device: torch.device | None = None) -> Tensor:
        return torch.tensor(self.cfg.quantile_levels, dtype=torch.float32, device=device)

    def training_loss(
        self,
        context: Tensor,
        target: Tensor,
        token_bias: Tensor | None = None,
        prefix_tokens: Tensor | None = None,
        prefix_gate: Tensor | None = None,
    ) -> Tensor:
        """Pinball loss of the next ``H`` points, normalised with the context's statistics (NaN targets skipped);
        L1 of the median when the quantile loss is ablated.

        ``H`` need not be a multiple of the patch size: the target is right-padded with NaN, which the loss skips.
        """
        from training.losses import median_l1_loss, pinball_loss

        if target.dim() != 2 or target.shape[0] != context.shape[0] or target.shape[1] < 1:
            raise ValueError(f"target must be [{context.shape[0]}, H>=1], got {tuple(target.shape)}")
        p = self.cfg.patch_size
        n_fut = math.ceil(target.shape[1] / p)
        y = target.float()
        if y.shape[1] % p:
            y = F.pad(y, (0, n_fut * p - y.shape[1]), value=float("nan"))
        out = self(context, n_fut, token_bias=token_bias, prefix_tokens=prefix_tokens, prefix_gate=prefix_gate)
        y_norm = (y - out.loc) / out.scale
        if not self.cfg.ablation.quantile_loss:
            return median_l1_loss(out.quantiles[..., self.cfg.median_index].float(), y_norm)
        return pinball_loss(out.quantiles.float(), y_norm, self.quantile_levels_tensor(y.device))
