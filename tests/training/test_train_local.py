"""A short single-process pretraining (the loop's own step, schedule and window code) must learn noisy sines:
on held-out series it has to beat seasonal naive with the true period, a strong baseline on sines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import PretrainConfig
from training.data import WindowSpec, crop_windows, sine_series
from training.forecast import forecast_median
from training.loop import train_local, windows_to_batches
from training.model import FactoSTBackbone

N_TRAIN, N_TEST, LENGTH, HORIZON = 200, 56, 1024, 32


@pytest.fixture
def one_thread():
    """One torch thread: on a 2-core machine shared with other jobs, 2 spinning threads run ~4x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_short_pretraining_beats_seasonal_naive(one_thread) -> None:
    torch.manual_seed(0)
    cfg = PretrainConfig(
        size="minuscule", model_overrides={"d_model": 64, "d_ff": 256, "num_heads": 2, "num_layers": 2},
        steps=150, batch_size=32, lr=3e-3, warmup_steps=15, decay_share=0.3, dropout=0.0,
        context_length=256, max_horizon=64, ablation={"random_masking": False}, seed=0,
    )
    values, periods = sine_series(N_TRAIN + N_TEST, LENGTH, seed=1, noise=0.3)
    spec = WindowSpec.from_config(cfg)
    rows = {"sample_id": np.arange(N_TRAIN), "values": np.array(list(values[:N_TRAIN]), dtype=object)}
    epochs = [crop_windows(rows, e, spec) for e in range(cfg.steps * cfg.batch_size // N_TRAIN + 1)]
    windows = {k: np.concatenate([w[k] for w in epochs]) for k in epochs[0]}

    model = FactoSTBackbone(cfg.backbone_config())
    results = train_local(model, cfg, windows_to_batches(windows, cfg.batch_size))
    assert [r.step for r in results] == list(range(1, 151))
    first, last = np.mean([r.loss for r in results[:10]]), np.mean([r.loss for r in results[-10:]])
    assert last < 0.5 * first, (first, last)

    test, p = values[N_TRAIN:], periods[N_TRAIN:]
    context, truth = test[:, LENGTH - HORIZON - cfg.context_length : LENGTH - HORIZON], test[:, LENGTH - HORIZON :]
    pred = forecast_median(model, context, HORIZON)
    naive = np.stack([np.tile(c[-k:], HORIZON // k + 2)[:HORIZON] for c, k in zip(context, p, strict=True)])
    mae_model, mae_naive = float(np.abs(pred - truth).mean()), float(np.abs(naive - truth).mean())
    assert mae_model < 0.9 * mae_naive, (mae_model, mae_naive)
