"""Cost of the benchmark layer against the plain baseline it wraps, side by side in one process.

1. loading: ``resolve_benchmark`` (parse + validation + calendar + split bookkeeping) vs ``pd.read_csv`` of
   the same LTSF csv (ETTh2 from ``$FACTOST_TEST_DATA`` when present, else a synthetic csv of the same shape);
2. evaluation: ``evaluate`` (MAE/RMSE/MAPE, CRPS, wQL, two coverages, per-horizon) vs one masked MAE of the
   median, on forecasts shaped like a PEMS08 test set ``[S, 12, 170, 11]``.

Prints ratios (layer / baseline); absolute times depend on the machine and are not the point.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's tests.real_data
from adaptation.datasets import resolve_benchmark  # noqa: E402
from adaptation.metrics import evaluate, masked_mae  # noqa: E402
from tests.real_data import real_data_root  # noqa: E402

LEVELS = [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99]


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=500, help="forecast windows S in the evaluation case")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        csv = real_data_root() / "ett" / "ETTh2.csv"
        if not csv.exists():
            index = pd.date_range("2016-07-01", periods=17420, freq="h")
            frame = pd.DataFrame(np.random.default_rng(0).normal(size=(17420, 7)), columns=list("ABCDEFG"))
            frame.insert(0, "date", index.strftime("%Y-%m-%d %H:%M:%S"))
            csv = Path(tmp) / "series.csv"
            frame.to_csv(csv, index=False)
        ours = best_of(lambda: resolve_benchmark(str(csv)), args.repeats)
        base = best_of(lambda: pd.read_csv(csv, parse_dates=["date"]), args.repeats)
        print(f"load {csv.name}: resolve_benchmark / pd.read_csv = {ours / base:.2f}x")

    rng = np.random.default_rng(0)
    target = rng.uniform(50, 400, size=(args.samples, 12, 170))
    target[rng.uniform(size=target.shape) < 0.02] = 0.0
    spread = np.sort(rng.normal(size=len(LEVELS)))
    quantiles = target[..., None] + 10 * spread
    ours = best_of(lambda: evaluate(quantiles, target, LEVELS, "zero"), args.repeats)
    base = best_of(lambda: masked_mae(quantiles[..., 5], target, "zero"), args.repeats)
    print(f"evaluate [S={args.samples}, 12, 170, 11]: evaluate / one masked MAE = {ours / base:.2f}x")


if __name__ == "__main__":
    main()
