"""Warmup-Stable-Decay: exact numbers at the phase boundaries, from the config, and bad parameters."""

from __future__ import annotations

import pytest

from training.config import PretrainConfig
from training.schedule import WSDSchedule, wsd_lr


def test_wsd_numbers_at_phase_boundaries() -> None:
    s = WSDSchedule(base_lr=1e-3, total_steps=100, warmup_steps=10, decay_steps=40)
    assert s(0) == pytest.approx(1e-5)  # warmup starts at lr / 100
    assert s(5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert s(9) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.9))
    assert s(10) == pytest.approx(1e-3)  # stable
    assert s(59) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(1e-3 * (1 - 1 / 40))  # first decay step
    assert s(79) == pytest.approx(5e-4)
    assert s(99) == pytest.approx(0.0, abs=1e-15)  # last update reaches the floor
    assert s(150) == pytest.approx(0.0, abs=1e-15)  # and stays there


def test_wsd_min_ratio_and_start_ratio() -> None:
    s = WSDSchedule(base_lr=2e-3, total_steps=50, warmup_steps=5, decay_steps=20, start_ratio=0.1, min_ratio=0.1)
    assert s(0) == pytest.approx(2e-4)
    assert s(59) == pytest.approx(2e-3 * 0.1)  # past the end: the floor
    assert s(39) == pytest.approx(2e-3 * (1 - 0.9 * 10 / 20))
    assert s(49) == pytest.approx(2e-4)


def test_wsd_shape_is_monotone_per_phase() -> None:
    s = WSDSchedule(base_lr=1.0, total_steps=1000, warmup_steps=50, decay_steps=400)
    lrs = [s(t) for t in range(1000)]
    assert all(a < b for a, b in zip(lrs[:50], lrs[1:51], strict=True))
    assert set(lrs[50:600]) == {1.0}
    assert all(a > b for a, b in zip(lrs[599:-1], lrs[600:], strict=True))


def test_no_warmup_no_decay_is_constant() -> None:
    assert {wsd_lr(t, base_lr=0.5, total_steps=10, warmup_steps=0, decay_steps=0) for t in range(12)} == {0.5}


def test_schedule_from_config_uses_shares() -> None:
    cfg = PretrainConfig(steps=200, lr=5e-4, warmup_share=0.1, decay_share=0.4, min_lr_ratio=0.05)
    s = WSDSchedule.from_config(cfg)
    assert (s.warmup_steps, s.decay_steps) == (20, 80)
    assert s(0) == pytest.approx(5e-6)
    assert s(119) == pytest.approx(5e-4)
    assert s(199) == pytest.approx(5e-4 * 0.05)
    explicit = PretrainConfig(steps=200, warmup_steps=7, warmup_share=0.5)
    assert WSDSchedule.from_config(explicit).warmup_steps == 7  # an explicit count wins over the share


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"total_steps": 0, "warmup_steps": 0, "decay_steps": 0}, "total_steps"),
        ({"total_steps": 10, "warmup_steps": 6, "decay_steps": 5}, "exceed total_steps=10"),
        ({"total_steps": 10, "warmup_steps": -1, "decay_steps": 0}, "warmup_steps"),
    ],
)
def test_bad_schedule_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WSDSchedule(base_lr=1e-3, **kwargs)
    with pytest.raises(ValueError, match="step must be >= 0"):
        wsd_lr(-1, base_lr=1e-3, total_steps=10, warmup_steps=0, decay_steps=0)
