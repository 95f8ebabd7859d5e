"""UTP ablation grid (paper Table X) at a small budget: the full backbone and one ``pretrain.ablation`` switch off
at a time, each pretrained the same way and evaluated zero-shot side by side in one process.

Per variant (full; no gated attention; no QK-norm; full RoPE instead of partial; no random masking; L1 of the
median instead of the quantile loss):

1. pretrain a small backbone (``--d-model`` 64, 2 layers) for ``--steps`` updates on a KernelSynth corpus the
   script generates (``corpus.kernelsynth``, ``--series`` x 1,024 points), with the product's windows
   (``training.windows.build_batch`` under ``PretrainConfig.window_config``: crop, z-clip, random masking as the
   switch says, 1..max_patches output patches), its loss (``FactoSTBackbone.training_loss``) and its
   Warmup-Stable-Decay schedule, in a plain single-process loop (the distributed loop adds nothing here);
2. zero-shot 96->96 on held-out KernelSynth series (another seed): MAE of the median on each series' context
   z-scale, through ``training.forecast``;
3. zero-shot 96->96 on the built-in synthetic-grid benchmark through the STA harness (``mode: zero``): MAE on
   the original scale and on the train z-score scale.

Every variant shares the seed, corpus, batches' random draws and evaluation windows; ``--seeds`` repeats the
grid and averages. The table (variant, metric, ratio vs the full model, and the paper's Table X ratio on PEMS08
beside it) goes into ``docs/benchmarks/ablation.md`` between markers.

    .venv/bin/python benchmarks/bench_utp_ablation.py --seeds 3   # about 6 minutes per seed on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaptation.config import AdaptConfig  # noqa: E402
from adaptation.datasets import resolve_benchmark  # noqa: E402
from adaptation.harness import run_adaptation  # noqa: E402
from benchmarks.doc_sections import doc_command, write_doc_section  # noqa: E402
from corpus.kernelsynth import KernelSynthConfig, generate_series, sampler_for  # noqa: E402
from pipelines.paper_report import paper_numbers  # noqa: E402
from training.config import PretrainConfig  # noqa: E402
from training.forecast import forecast_median  # noqa: E402
from training.io import save_pretrained  # noqa: E402
from training.model import FactoSTBackbone  # noqa: E402
from training.schedule import WSDSchedule  # noqa: E402
from training.windows import build_batch  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "ablation.md"
VARIANTS: dict[str, dict[str, bool]] = {
    "full": {},
    "no gated attention": {"gated_attention": False},
    "no QK-norm": {"qk_norm": False},
    "full RoPE": {"partial_rope": False},
    "no random masking": {"random_masking": False},
    "point loss (L1)": {"quantile_loss": False},
}
CONTEXT, HORIZON = 96, 96
METRICS = ("ks_mae", "grid_mae", "grid_norm_mae")


def kernelsynth(n: int, seed: int) -> list[np.ndarray]:
    cfg = KernelSynthConfig(n_series=n, length=1024, seed=seed)
    sampler = sampler_for(cfg)
    return [generate_series(cfg, i, sampler).values.astype(np.float32) for i in range(n)]


def pretrain_config(args: argparse.Namespace, switches: dict[str, bool], seed: int) -> PretrainConfig:
    return PretrainConfig(
        size="minuscule", dropout=0.0, seed=seed, steps=args.steps, batch_size=args.batch, lr=args.lr,
        warmup_steps=args.steps // 10, decay_share=0.3, context_length=args.context, max_horizon=args.max_horizon,
        model_overrides={"d_model": args.d_model, "d_ff": 4 * args.d_model, "num_heads": 2, "num_layers": 2},
        ablation=switches,
    )


def pretrain(cfg: PretrainConfig, corpus: list[np.ndarray]) -> tuple[FactoSTBackbone, float]:
    """The plain loop; the batches' draws depend on the seed only, so every variant sees the same windows."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = FactoSTBackbone(cfg.backbone_config())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = WSDSchedule.from_config(cfg)
    windows = cfg.window_config()
    model.train()
    losses = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = schedule(step)
        pick = rng.choice(len(corpus), size=cfg.batch_size, replace=False)
        batch = build_batch([corpus[i] for i in pick], rng, windows)
        assert batch is not None
        loss = model.training_loss(torch.from_numpy(batch[0]), torch.from_numpy(batch[1]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), float(np.mean(losses[-50:]))


def kernelsynth_mae(model: FactoSTBackbone, held_out: list[np.ndarray]) -> float:
    """MAE of the median over the last HORIZON points of each held-out series, on its context's z-scale."""
    contexts = np.stack([s[-CONTEXT - HORIZON : -HORIZON] for s in held_out])
    targets = np.stack([s[-HORIZON:] for s in held_out])
    std = np.maximum(contexts.std(axis=1, keepdims=True), 1e-5)
    pred = forecast_median(model, contexts, HORIZON)
    return float(np.abs((pred - targets) / std).mean())


def grid_mae(model: FactoSTBackbone, folder: Path, name: str) -> tuple[float, float]:
    """Zero-shot 96->96 on synthetic-grid through the STA harness: (MAE, z-scale MAE)."""
    checkpoint = folder / name / "backbone"
    save_pretrained(model, str(checkpoint))
    cfg = AdaptConfig(modes=("zero",), horizons=((CONTEXT, HORIZON),), baselines=(), eval_stride=8,
                      predictions_max_windows=2, plot_nodes=1)
    result = run_adaptation(str(checkpoint), resolve_benchmark("synthetic-grid"), cfg, str(folder / name / "sta"))
    row = next(r for r in result["rows"] if r["method"] == "factost")
    return float(row["mae"]), float(row["norm_mae"])


def run_grid(args: argparse.Namespace, folder: Path) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Every variant for every seed; returns the per-seed metrics and the seconds per variant."""
    corpus, held_out = kernelsynth(args.series, 0), kernelsynth(args.held_out, 1)
    sums: dict[str, dict[str, list[float]]] = {v: {m: [] for m in (*METRICS, "loss")} for v in VARIANTS}
    seconds: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    for seed in range(args.seeds):
        for name, switches in VARIANTS.items():
            t0 = time.perf_counter()
            model, loss = pretrain(pretrain_config(args, switches, seed), corpus)
            mae, norm = grid_mae(model, folder, f"{seed}-{name.replace(' ', '_')}")
            for key, value in zip((*METRICS, "loss"), (kernelsynth_mae(model, held_out), mae, norm, loss),
                                  strict=True):
                sums[name][key].append(value)
            seconds[name] += time.perf_counter() - t0
            print(f"seed {seed} {name:20s} " + " ".join(f"{k} {v[-1]:.4f}" for k, v in sums[name].items()),
                  flush=True)
    return sums, seconds


def paper_ratios() -> dict[str, float]:
    """Table X's MAE of each variant over the full model's (PEMS08 zero-shot 96->96)."""
    rows = {n.ablation: n.mae for n in paper_numbers() if n.table == "X"}
    full = rows[""]
    assert full is not None
    return {switch: value / full for switch, value in rows.items() if switch and value is not None}


def table(per_seed: dict[str, dict[str, list[float]]], seconds: dict[str, float]) -> list[dict[str, Any]]:
    """Seed means, their ratio to the full model's, and (several seeds) the ratio's spread over seeds."""
    paper = paper_ratios()
    means = {v: {k: float(np.mean(x)) for k, x in ms.items()} for v, ms in per_seed.items()}
    full = means["full"]
    rows = []
    for name, switches in VARIANTS.items():
        m = means[name]
        switch = next(iter(switches), "")
        ratios = np.asarray(per_seed[name]["ks_mae"]) / np.asarray(per_seed["full"]["ks_mae"])
        rows.append({"variant": name, "switch off": switch or "-",
                     **{k: m[k] for k in METRICS},
                     **{f"{k} / full": m[k] / full[k] for k in METRICS},
                     "ks_mae / full per seed": [round(float(r), 3) for r in ratios] if ratios.size > 1 else None,
                     "paper MAE / full (Table X)": paper.get(switch, 1.0 if not switch else None),
                     "last-50 train loss": m["loss"], "seconds": seconds[name]})
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    from pipelines.reporting import markdown_table

    head = (f"Command: `{command}`. Pretraining: {args.steps} steps, batch {args.batch}, d_model {args.d_model}, "
            f"2 layers, context {args.context}, max horizon {args.max_horizon}, {args.series} KernelSynth series of "
            f"1,024 points; {args.seeds} seed(s), means shown. `ks_mae`: zero-shot {CONTEXT}->{HORIZON} on "
            f"{args.held_out} held-out KernelSynth series (context z-scale); `grid_mae` / `grid_norm_mae`: zero-shot "
            f"{CONTEXT}->{HORIZON} on synthetic-grid through the STA harness (original / train z-scale). The "
            "train loss is pinball for every variant but the point-loss one (L1 of the median): not comparable "
            "across that line.\n\n")
    return head + markdown_table(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--max-horizon", type=int, default=96)
    parser.add_argument("--series", type=int, default=256)
    parser.add_argument("--held-out", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        per_seed, seconds = run_grid(args, Path(tmp))
    rows = table(per_seed, seconds)
    command = doc_command(".venv/bin/python benchmarks/bench_utp_ablation.py", sys.argv[1:] if argv is None else argv,
                          {})
    text = markdown(rows, args, command)
    print(text)
    if not args.no_doc:
        write_doc_section(DOC, "utp-ablation", text, title="# UTP ablation (Table X)\n")


if __name__ == "__main__":
    main()
