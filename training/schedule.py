"""Warmup-Stable-Decay learning rate (paper Sec. IV, refs [101], [102]) as a pure function of the step.

A pure function rather than a torch scheduler object: the loop sets the lr of every update from the step number
alone, so a resumed run lands on exactly the schedule position of its checkpoint with no scheduler state to save,
and tests can check the numbers directly.

Step ``t`` is the 0-based index of an optimizer update in ``[0, total_steps)``:

- warmup ``t < W``: linear from ``lr * start_ratio`` (lr/100) towards ``lr``: ``lr * (s + (1 - s) * t / W)``;
- stable: ``lr``;
- decay, the last ``D`` updates: linear to ``lr * min_ratio``, reached exactly at the last update ``t = T - 1``:
  ``lr * (1 - (1 - m) * (t - (T - D) + 1) / D)``.
Past the end the rate stays where the last update left it.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import PretrainConfig


@dataclass(frozen=True)
class WSDSchedule:
    """Parameters of one Warmup-Stable-Decay schedule."""

    base_lr: float
    total_steps: int
    warmup_steps: int
    decay_steps: int
    start_ratio: float = 0.01
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if self.warmup_steps < 0 or self.decay_steps < 0:
            raise ValueError(f"warmup_steps and decay_steps must be >= 0, got {self.warmup_steps}, {self.decay_steps}")
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps + decay_steps = {self.warmup_steps + self.decay_steps} exceed "
                f"total_steps={self.total_steps}"
            )

    @classmethod
    def from_config(cls, cfg: PretrainConfig) -> WSDSchedule:
        return cls(
            base_lr=cfg.lr,
            total_steps=cfg.steps,
            warmup_steps=cfg.warmup_total,
            decay_steps=cfg.decay_total,
            start_ratio=cfg.warmup_start_ratio,
            min_ratio=cfg.min_lr_ratio,
        )

    def __call__(self, step: int) -> float:
        return wsd_lr(
            step,
            base_lr=self.base_lr,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            decay_steps=self.decay_steps,
            start_ratio=self.start_ratio,
            min_ratio=self.min_ratio,
        )


def wsd_lr(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    decay_steps: int,
    start_ratio: float = 0.01,
    min_ratio: float = 0.0,
) -> float:
    """Learning rate of update ``step`` (0-based) under Warmup-Stable-Decay; see the module docstring."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (start_ratio + (1.0 - start_ratio) * step / warmup_steps)
    decay_start = total_steps - decay_steps
    if decay_steps > 0 and step >= decay_start:
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return base_lr * (1.0 - (1.0 - min_ratio) * progress)
    return base_lr
