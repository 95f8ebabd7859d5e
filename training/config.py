"""Typed configuration of UTP pretraining (paper Sec. IV; docs/design.md, "UTP backbone and pretraining").

One pydantic model that a YAML profile, the CLI and the Prefect flow all fill in; every knob of the pretraining
stage lives here with the paper's value as default, so nothing in the loop is a buried constant. ``extra="forbid"``
makes a misspelt key an error that names it, instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from infra.config import StrictModel
from training.model import MODEL_SIZES, AblationConfig, BackboneConfig
from training.windows import WindowConfig

ModelSize = Literal["minuscule", "tiny", "small", "base"]


class PretrainDataConfig(StrictModel):
    """How the Ray Data pipeline reads the corpus and feeds the workers."""

    model_config = ConfigDict(frozen=True)

    read_concurrency: int | None = Field(
        None, ge=1, description="max parallel read-and-crop tasks, one corpus part each (None: Ray Data decides)"
    )
    map_batch_rows: int = Field(
        32, ge=1, description="corpus rows per window-cropping task: small blocks keep the data position fine-grained"
    )
    prefetch_batches: int = Field(2, ge=0, description="batches each worker prefetches ahead of the step")
    windows_per_sample: int = Field(1, ge=1, description="independent windows cropped per corpus row per epoch")
    shuffle_files: bool = Field(True, description="shuffle the Parquet file order (seeded)")
    shuffle_buffer_rows: int = Field(
        0, ge=0, description="per-worker local shuffle buffer in windows (0: stream order)"
    )
    extra_epochs: int = Field(
        1, ge=0, description="epochs planned beyond the estimate, to absorb windows rejected by min_observed"
    )
    stall_warn_ratio: float = Field(
        0.25, gt=0.0, description="warn when waiting for data takes more than this share of a step"
    )


class PretrainConfig(StrictModel):
    """Everything that decides a pretraining run; saved as ``config.json`` in the run folder."""

    model_config = ConfigDict(frozen=True)

    # model
    size: ModelSize = Field("tiny", description="Table VI variant")
    model_overrides: dict[str, Any] = Field(
        default_factory=dict, description="BackboneConfig fields to override (e.g. d_model)"
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # optimisation
    steps: int = Field(10_000, ge=1, description="optimizer updates")
    batch_size: int = Field(512, ge=1, description="global batch (all workers together); paper 512")
    lr: float = Field(5e-4, gt=0.0, description="peak learning rate; paper 5e-4 (public code 1e-3)")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW decoupled decay on matrices (not norms, biases)")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    grad_clip: float = Field(1.0, ge=0.0, description="global gradient-norm clip; 0 disables")
    # Warmup-Stable-Decay
    warmup_steps: int | None = Field(None, ge=0, description="warmup updates; None: warmup_share * steps")
    warmup_share: float = Field(0.05, ge=0.0, le=1.0)
    warmup_start_ratio: float = Field(0.01, ge=0.0, le=1.0, description="warmup starts at lr * this (lr/100)")
    decay_share: float = Field(0.4, ge=0.0, le=1.0, description="share of the run spent decaying")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="decay ends at lr * this")
    # windows
    context_length: int = Field(2048, ge=16, le=2048, description="max history points (multiple of patch)")
    max_horizon: int = Field(256, ge=16, le=256, description="max target points (multiple of patch)")
    l_min: int = Field(48, ge=1, description="random masking keeps at least this many points")
    min_observed: float = Field(0.5, ge=0.0, le=1.0)
    zclip: float | None = Field(4.0, gt=0.0, description="|z| above this becomes NaN; None disables")
    ablation: AblationConfig = Field(
        default_factory=AblationConfig, description="Table X switches (all true: the full model); recorded in "
        "the checkpoint's config.json, random_masking also decides the windows"
    )
    seed: int = Field(0, ge=0)
    # distribution
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0.0)
    zero_stage: int = Field(1, ge=0, le=2, description="DeepSpeed ZeRO stage (0-2)")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 autocast is GPU only")
    # bookkeeping
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    keep_checkpoints: int | None = Field(2, ge=1, description="Ray Train checkpoints kept (None: all)")
    log_every: int = Field(10, ge=1, description="steps between progress lines")
    max_failures: int = Field(
        0, ge=-1, description="times Ray Train replaces a dead worker and resumes from the last checkpoint; "
        "-1: always; 0 fails at once, right on one machine (configs/cluster.yaml sets 3)",
    )
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("model_overrides")
    @classmethod
    def _overrides(cls, v: dict[str, Any]) -> dict[str, Any]:
        owned = {"dropout", "max_context", "max_horizon", "ablation"} & set(v)
        if owned:
            raise ValueError(f"set {sorted(owned)} through PretrainConfig's own fields, not model_overrides")
        unknown = set(v) - set(BackboneConfig.model_fields)
        if unknown:
            raise ValueError(f"unknown BackboneConfig field(s) {sorted(unknown)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        patch = int(self.model_overrides.get("patch_size", 16))
        for name in ("context_length", "max_horizon"):
            if getattr(self, name) % patch:
                raise ValueError(f"{name}={getattr(self, name)} is not a multiple of patch_size={patch}")
        if self.l_min > self.context_length:
            raise ValueError(f"l_min={self.l_min} exceeds context_length={self.context_length}")
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by num_workers={self.num_workers} "
                "(every worker takes an equal share of the global batch)"
            )
        if self.precision == "bf16" and not self.use_gpu:
            raise ValueError("precision='bf16' needs use_gpu=True (bf16 is slower than fp32 on CPUs here)")
        warmup, decay = self.warmup_total, self.decay_total
        if warmup + decay > self.steps:
            raise ValueError(
                f"warmup_steps ({warmup}) + decay steps ({decay}) exceed steps={self.steps}; "
                "lower warmup_steps/warmup_share or decay_share"
            )
        self.backbone_config()  # fail now, naming the field, not inside a Ray worker
        return self

    @property
    def warmup_total(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else round(self.warmup_share * self.steps)

    @property
    def decay_total(self) -> int:
        return round(self.decay_share * self.steps)

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers

    @property
    def max_patches(self) -> int:
        return self.max_horizon // self.backbone_config().patch_size

    def backbone_config(self) -> BackboneConfig:
        """The model this run trains: the Table VI size plus overrides, dropout and window limits."""
        if self.size not in MODEL_SIZES:  # pragma: no cover - Literal already guards
            raise ValueError(f"unknown size {self.size!r}")
        return BackboneConfig.from_size(
            self.size, dropout=self.dropout, max_context=self.context_length, max_horizon=self.max_horizon,
            ablation=self.ablation, **self.model_overrides,
        )

    def window_config(self) -> WindowConfig:
        """The window-construction knobs, in the form training.windows takes them."""
        return WindowConfig(
            context_length=self.context_length,
            max_patches=self.max_patches,
            patch_size=self.backbone_config().patch_size,
            min_observed=self.min_observed,
            z_clip=self.zclip,
            l_min=self.l_min,
            random_mask=self.ablation.random_masking,
        )
