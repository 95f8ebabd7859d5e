"""Typed settings of the STA stage: which adapter modules run, how they are sized, and how a run trains.

Sizes follow the paper (Sec. III-B, Algorithm 1): calendar/node embeddings of width 32, M = 32 latent
prototypes, lags of 1..3 patches, K = 3 rank-1 prompts, a CMR buffer of 20% of the training stream with 30%
of each mini-batch replaced, learning rate 1e-3; every benchmark runs at 12->12 and 96->96. The defaults that
deviate from the paper's form, why, and what each costs are in docs/protocol.md; ``paper_faithful: true``
switches all of them to the paper's form at once (:data:`PAPER_FORM`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, PositiveFloat, model_validator

from infra.config import StrictModel

Mode = Literal["zero", "few", "full"]
Affinity = Literal["spatial", "temporal", "lagged"]
Baseline = Literal["seasonal_naive", "scratch"]
LossName = Literal["l1", "pinball"]
TimeOfDay = Literal["step", "hour"]

ALL_MODES: tuple[Mode, ...] = ("zero", "few", "full")
ALL_AFFINITIES: tuple[Affinity, ...] = ("spatial", "temporal", "lagged")
# Input -> output lengths when none are configured: both of the paper's rows for every benchmark (Tables VII-IX).
SHORT_HORIZON: tuple[int, int] = (12, 12)
LONG_HORIZON: tuple[int, int] = (96, 96)
PAPER_HORIZONS: tuple[tuple[int, int], ...] = (SHORT_HORIZON, LONG_HORIZON)
# The choices ``paper_faithful`` switches: each in the paper's form, and the project's default form
# (docs/protocol.md, "Deviations"). A field left unset (None) takes one of the two; ``choice`` resolves it.
PAPER_FORM: dict[str, Any] = {
    "dspa_gated": False,  # Eq. 10: the prompts are prepended and join the one softmax
    "stf_scaled": False,  # Sec. III-B: S_s, S_t, S_d are plain dot products
    "backbone_lr": "lr",  # Algorithm 1 line 27: one learning rate for Theta = {theta, phi}
    "cmr_memory_update": True,  # Algorithm 1 lines 10, 15, 28: the buffer starts empty, fed from B_curr
    "time_of_day": "hour",  # Sec. IV-G: time_of_day (24) beside minute_of_hour (60) and day_of_week (7)
}
PROJECT_FORM: dict[str, Any] = {
    "dspa_gated": True,
    "stf_scaled": True,
    "backbone_lr": 1e-4,
    "cmr_memory_update": False,
    "time_of_day": "step",
}


class AdaptConfig(StrictModel):
    """One STA run per (mode, horizon) of a benchmark, plus the baselines, all with these settings."""

    model_config = ConfigDict(frozen=True)

    # --- adapter modules (each switchable for ablations) ---
    use_stmf: bool = Field(True, description="spatio-temporal metadata fusion (node + calendar identifiers)")
    use_stf: bool = Field(True, description="spatio-temporal filtering gate on the STMF identifiers")
    use_dspa: bool = Field(True, description="domain-specific prompt tokens prepended to the sequence")
    use_cmr: bool = Field(True, description="continual memory replay in the mini-batch mixer")
    stf_affinities: tuple[Affinity, ...] = Field(
        ALL_AFFINITIES, description="affinities fused by the STF gate"
    )
    stmf_future_tokens: bool = Field(
        True, description="add I_st to the future placeholders too (public STA code), not only to the context tokens"
    )
    embed_dim: int = Field(32, gt=0, description="width of the node and of each calendar embedding table")
    num_prototypes: int = Field(32, gt=0, description="M latent prototypes of the time-lagged affinity")
    max_lag_patches: int = Field(3, gt=0, description="lags 1..this (in patches) of the time-lagged affinity")
    num_prompts: int = Field(3, gt=0, description="K DSPA prompt tokens")
    prompt_rank: int = Field(1, gt=0, description="rank r of P = U V^T")
    dspa_gated: bool | None = Field(
        None,
        description="True: prompts attended through a zero-initialised gate per layer and head (exact no-op at "
        "init); False: prompts join the one softmax with the other tokens (Eq. 10); unset: True (paper: False)",
    )
    stf_scaled: bool | None = Field(
        None, description="STF affinity scores divided by sqrt(d); False: plain dot products as in Sec. III-B; "
        "unset: True (paper: False)",
    )
    memory_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="CMR buffer size as a share of the training samples"
    )
    replay_ratio: float = Field(0.3, ge=0.0, le=1.0, description="CMR: share of each batch drawn from memory")
    cmr_memory_update: bool | None = Field(
        None,
        description="False: the buffer is the first memory_fraction of the chronological stream (Eq. 11), "
        "fixed; True: Algorithm 1, an empty buffer filled from each batch's current samples (reservoir); "
        "unset: False (paper: True)",
    )
    time_of_day: TimeOfDay | None = Field(
        None, description="time_of_day feature: the step within the day (288 for 5 min) or the hour (24); "
        "unset: step (paper: hour)",
    )
    paper_faithful: bool = Field(
        False, description="every PAPER_FORM choice left unset takes the paper's form; one set otherwise is an error"
    )

    # --- task ---
    modes: tuple[Mode, ...] = Field(("zero", "few"), min_length=1)
    horizons: tuple[tuple[int, int], ...] | None = Field(
        None, description="(input_len, output_len) pairs; None: the paper's 12->12 and 96->96"
    )
    few_shot_fraction: float = Field(
        0.1, gt=0.0, le=1.0, description="few-shot: last share of the train split"
    )
    loss: LossName = Field("l1", description="l1 on the median (point benchmarks) or pinball (probabilistic)")
    baselines: tuple[Baseline, ...] = ("seasonal_naive", "scratch")

    # --- optimisation ---
    freeze_backbone: bool = False
    lr: float = Field(1e-3, gt=0.0, description="adapter learning rate (AdamW)")
    backbone_lr: PositiveFloat | Literal["lr"] | None = Field(
        None, description="backbone learning rate when it is fine-tuned; 'lr': the adapter's (one parameter "
        "group); unset: 1e-4 (paper: 'lr')",
    )
    scratch_lr: float = Field(1e-3, gt=0.0, description="backbone learning rate of the from-scratch baseline")
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    batch_size: int = Field(
        32, gt=0, description="windows per step; each window carries all (or nodes_per_batch)"
    )
    nodes_per_batch: int | None = Field(
        None, gt=0, description="random node subset per training step (big graphs)"
    )
    series_per_pass: int = Field(
        1024,
        gt=0,
        description="the backbone runs over at most this many (window, node) series at a time: the working set "
        "stays the same at any node count, so time grows linearly in N instead of falling out of cache",
    )
    max_epochs: int = Field(20, gt=0)
    max_steps: int | None = Field(None, gt=0, description="hard cap on optimizer steps (the budget)")
    eval_every_steps: int | None = Field(None, gt=0, description="validate this often; None: once per epoch")
    patience: int = Field(3, ge=1, description="early stopping: validations without improvement")
    max_val_windows: int | None = Field(
        512, gt=0, description="evenly spaced val windows used for early stopping"
    )
    train_stride: int = Field(1, gt=0, description="step between training window starts")
    eval_stride: int = Field(1, gt=0, description="step between test window starts (1 = every window)")
    eval_batch_size: int = Field(64, gt=0)
    seed: int = 0
    device: str = Field("auto", description="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")

    # --- outputs ---
    predictions_max_windows: int = Field(256, ge=1, description="test windows stored in the predictions file")
    plot_nodes: int = Field(3, ge=1, description="nodes drawn in forecast.png")

    @model_validator(mode="after")
    def _check(self) -> AdaptConfig:
        if self.paper_faithful:  # a choice set against the paper's form names both
            for key, paper in PAPER_FORM.items():
                given = getattr(self, key)
                if given is not None and given != paper:
                    raise ValueError(
                        f"adapt.paper_faithful=true sets {key}={paper!r} (the paper's form) but {key}={given!r} "
                        "is given: drop one of the two"
                    )
            if self.freeze_backbone:
                raise ValueError(
                    "adapt.paper_faithful=true trains the backbone too (Algorithm 1, Theta = {theta, phi}) but "
                    "freeze_backbone=True is given: drop one of the two"
                )
        if self.use_stf and not self.use_stmf:
            raise ValueError("use_stf needs use_stmf: STF filters the STMF identifiers (switch both off)")
        if self.use_stf and not self.stf_affinities:
            raise ValueError("stf_affinities is empty; switch STF off with use_stf=false instead")
        if len(set(self.stf_affinities)) != len(self.stf_affinities):
            raise ValueError(f"stf_affinities has duplicates: {self.stf_affinities}")
        if len(set(self.modes)) != len(self.modes):
            raise ValueError(f"modes has duplicates: {self.modes}")
        if self.horizons is not None and not self.horizons:
            raise ValueError("horizons is empty: leave it unset for the paper's 12->12 and 96->96, or name pairs")
        for pair in self.horizons or ():
            if pair[0] < 1 or pair[1] < 1:
                raise ValueError(f"horizon {pair}: input and output lengths must be >= 1")
        return self

    def choice(self, name: str) -> Any:
        """A :data:`PAPER_FORM` choice as it applies: the value set, else the paper's form under
        ``paper_faithful``, else the project's default form."""
        value = getattr(self, name)
        if value is not None:
            return value
        return (PAPER_FORM if self.paper_faithful else PROJECT_FORM)[name]

    def choices(self) -> dict[str, Any]:
        """Every :data:`PAPER_FORM` choice as it applies (what a run records beside its config)."""
        return {name: self.choice(name) for name in PAPER_FORM}

    def horizon_pairs(self) -> tuple[tuple[int, int], ...]:
        """The configured (input_len, output_len) pairs, or the paper's 12->12 and 96->96."""
        return self.horizons or PAPER_HORIZONS

    def without_modules(self) -> AdaptConfig:
        """The same settings with every adapter module off: the bare backbone (zero-shot)."""
        return self.model_copy(
            update={"use_stmf": False, "use_stf": False, "use_dspa": False, "use_cmr": False}
        )


def ablation_configs(cfg: AdaptConfig) -> dict[str, AdaptConfig]:
    """Named variants with one STA component switched off (paper Fig. 5), the full adapter first."""
    variants: dict[str, AdaptConfig] = {"full": cfg}
    if cfg.use_stmf:
        variants["no_stmf"] = cfg.model_copy(update={"use_stmf": False, "use_stf": False})
    if cfg.use_stf:
        variants["no_stf"] = cfg.model_copy(update={"use_stf": False})
        for affinity in cfg.stf_affinities:
            rest = tuple(a for a in cfg.stf_affinities if a != affinity)
            if rest:
                variants[f"no_stf_{affinity}"] = cfg.model_copy(update={"stf_affinities": rest})
    if cfg.use_dspa:
        variants["no_dspa"] = cfg.model_copy(update={"use_dspa": False})
    if cfg.use_cmr:
        variants["no_cmr"] = cfg.model_copy(update={"use_cmr": False})
    return variants
