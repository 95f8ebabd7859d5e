"""KernelSynth throughput: ours against the reference's scikit-learn sampler, side by side, same cores.

Baseline (faithful to the Chronos script): the same 33-kernel bank and left-fold composition, the composed
scikit-learn kernel, ``GaussianProcessRegressor(kernel).sample_y(X, 1, random_state)`` on ``linspace(0, 1, L)``
(an SVD-based multivariate normal), redrawing on a linear-algebra failure. It draws exactly the kernels our
series 0..n-1 draw, so both sides see the same mix. Both sides run with BLAS pinned to one thread per process.

Reported: series/s of each and the speed-up, (1) single process, baseline vs ``synthesize(workers=1)`` end to
end (sampling, Parquet chunks, the published version), (2) sampling only on the very same series, and, with
``--parallel``, (3) ``workers=2`` against two baseline processes. Rates are given per wall-second and per
CPU-second (this process plus its finished children), the latter being robust on a shared machine.

    .venv/bin/python benchmarks/bench_kernelsynth.py --baseline-series 24 --series 2000 --parallel
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from corpus.kernels import kernel_bank
from corpus.kernelsynth import (
    _SAMPLERS,
    KernelSynthConfig,
    blas_single_thread,
    draw_kernel,
    generate_range,
    series_rng,
    synthesize,
)


def baseline_series(cfg: KernelSynthConfig, index: int) -> np.ndarray:
    """One series the reference way: scikit-learn GP prior sample of the composed kernel (redraw on failure)."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    bank = kernel_bank(cfg.length)
    X = np.linspace(0.0, 1.0, cfg.length)[:, None]
    for attempt in range(cfg.max_redraws + 1):
        expr = draw_kernel(series_rng(cfg.seed, index, attempt), len(bank), cfg.max_kernels, cfg.product_probability)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the reference warns on covariances that are not PSD
                gpr = GaussianProcessRegressor(kernel=expr.to_sklearn(bank))
                return gpr.sample_y(X, 1, random_state=np.random.RandomState(index + attempt))[:, 0]
        except np.linalg.LinAlgError:
            continue
    raise RuntimeError(f"baseline series {index}: every draw failed")


def baseline_range(cfg_data: dict, start: int, stop: int) -> None:
    """Run the baseline on series start..stop-1 in this process."""
    cfg = KernelSynthConfig.model_validate(cfg_data)
    with blas_single_thread():
        for i in range(start, stop):
            baseline_series(cfg, i)


@dataclass
class Cost:
    """Wall seconds, and CPU seconds of this process plus its finished children (robust on a busy machine)."""

    wall: float = 0.0
    cpu: float = 0.0

    def rates(self, n: int) -> tuple[float, float]:
        return n / self.wall, n / self.cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measure() -> Iterator[Cost]:
    cost = Cost()
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    yield cost
    cost.wall = time.perf_counter() - wall
    cost.cpu = time.process_time() - cpu + _children_cpu() - children


def ours_end_to_end(cfg: KernelSynthConfig) -> tuple[Cost, dict[str, int]]:
    """A fresh synthesize() (sampler caches cleared so the base factorizations are counted)."""
    _SAMPLERS.clear()
    with tempfile.TemporaryDirectory() as root, blas_single_thread(), measure() as cost:
        version = synthesize(cfg, root, progress=False)
    return cost, version.manifest["stats"]["routes"]


def report(name: str, n: int, ours: Cost, base: Cost, n_base: int) -> None:
    (wall, cpu), (bwall, bcpu) = ours.rates(n), base.rates(n_base)
    print(
        f"{name}: ours {wall:.1f} series/s ({cpu:.1f} per CPU-s) vs baseline {bwall:.2f} series/s "
        f"({bcpu:.2f} per CPU-s) -> speed-up {wall / bwall:.0f}x wall, {cpu / bcpu:.0f}x CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=KernelSynthConfig().length)
    parser.add_argument("--baseline-series", type=int, default=24, help="series for the (slow) baseline")
    parser.add_argument("--series", type=int, default=2000, help="series for ours, end to end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", action="store_true", help="also compare 2 workers with 2 baseline processes")
    args = parser.parse_args()
    cfg = KernelSynthConfig(n_series=args.series, length=args.length, seed=args.seed, workers=1)
    cfg_data = cfg.model_dump(mode="json")
    nb = args.baseline_series
    print(f"grid L={args.length}, seed {args.seed}, BLAS 1 thread per process; baseline: {nb} series")

    with measure() as base:
        baseline_range(cfg_data, 0, nb)
    ours, routes = ours_end_to_end(cfg)
    report(f"1 process, synthesize(workers=1) end to end, {args.series} series", args.series, ours, base, nb)
    print(f"  sampling routes of the parts of those series: {routes}")

    _SAMPLERS.clear()
    with blas_single_thread(), measure() as same:
        generate_range(cfg.model_copy(update={"n_series": nb}), 0, nb)
    report(f"1 process, sampling only, the same {nb} series (incl. base factors)", nb, same, base, nb)

    if args.parallel:
        half = nb // 2
        with measure() as base2, multiprocessing.get_context("spawn").Pool(2) as pool:
            pool.starmap(baseline_range, [(cfg_data, 0, half), (cfg_data, half, 2 * half)])
        ours2, _ = ours_end_to_end(cfg.model_copy(update={"workers": 2, "chunk_size": max(1, args.series // 8)}))
        report(f"2 processes, synthesize(workers=2), {args.series} series", args.series, ours2, base2, 2 * half)


if __name__ == "__main__":
    main()
