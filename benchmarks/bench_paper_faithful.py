"""What each deviation from the paper's STA form costs: default vs ``paper_faithful`` vs one switch at a time.

Few-shot on a built-in synthetic benchmark (default: ``synthetic-traffic``, 5-minute data, where the
time-of-day granularity matters) at 12->12, fixed seeds, the same backbone and budget for every row:

- ``default``: the project's defaults (gated DSPA, STF scores / sqrt(d), backbone learning rate 1e-4 beside
  the adapter's 1e-3, the fixed CMR buffer of Eq. 11, time_of_day in steps);
- ``paper_faithful``: all of them in the paper's form at once (``adapt.paper_faithful: true``);
- one row per deviation with only that choice in the paper's form.

The backbone is pretrained here on synthetic series (the ETTh2 benchmark's plain loop, a few hundred steps)
or loaded with ``--checkpoint``. Each row prints its test metrics and its MAE as a ratio of the default row's
of the same seed, from the same process; ``--seeds K`` repeats every row with K adaptation seeds, so the
spread of the ratios shows how much of a difference is noise. The table goes into ``docs/protocol.md``
between markers. About 5 minutes on 2 cores with one seed; add 2.5 minutes per further seed.

    .venv/bin/python benchmarks/bench_paper_faithful.py --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adaptation.config import AdaptConfig  # noqa: E402
from adaptation.datasets import SYNTHETIC_PRESETS, make_synthetic_benchmark, steps_per_day  # noqa: E402
from adaptation.harness import run_adaptation  # noqa: E402
from benchmarks.bench_etth2_fewshot import BATCH, pretrain  # noqa: E402
from benchmarks.doc_sections import doc_command, write_doc_section  # noqa: E402
from training.io import from_pretrained, save_pretrained  # noqa: E402

DOC = ROOT / "docs" / "protocol.md"
MARKER = "paper-faithful"
PATH_OPTIONS = {"--checkpoint": "BACKBONE", "--out": "OUT"}
# One row per deviation: its label and the single field that puts it in the paper's form.
SWITCHES: dict[str, dict[str, Any]] = {
    "ungated DSPA prompts (Eq. 10)": {"dspa_gated": False},
    "plain STF scores (no / sqrt(d))": {"stf_scaled": False},
    "one learning rate (Algorithm 1)": {"backbone_lr": "lr"},
    "CMR buffer updates (Algorithm 1)": {"cmr_memory_update": True},
    "time_of_day in hours (24)": {"time_of_day": "hour"},
}


def variants(base: dict[str, Any]) -> dict[str, AdaptConfig]:
    """default, paper_faithful, then one config per switch (each built through the validator)."""
    out = {"default": AdaptConfig(**base), "paper_faithful": AdaptConfig(**base, paper_faithful=True)}
    out.update({label: AdaptConfig(**base, **update) for label, update in SWITCHES.items()})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """One line per variant: means over the seeds, and the MAE ratio to the default row of the same seed."""
    ref = {r["seed"]: r["mae"] for r in rows if r["variant"] == "default"}
    lines = [
        "| variant | val loss step 0 -> best | best step | adapted | norm MAE | MAE | RMSE | MAPE (%) | "
        "MAE / default (min - max over seeds) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == name]
        ratios = [r["mae"] / ref[r["seed"]] for r in group]

        def mean(key: str, group: list[dict[str, Any]] = group) -> float:
            return statistics.fmean(float(r[key]) for r in group)

        lines.append(
            f"| {name} | {mean('initial_val'):.4f} -> {mean('val_loss'):.4f} | {mean('best_step'):.0f} | "
            f"{sum(bool(r['adapted']) for r in group)}/{len(group)} | {mean('norm_mae'):.4f} | {mean('mae'):.3f} | "
            f"{mean('rmse'):.3f} | {mean('mape'):.2f} | {statistics.fmean(ratios):.3f} "
            f"({min(ratios):.3f} - {max(ratios):.3f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a save_pretrained folder; default: pretrain one here")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="synthetic pretraining updates")
    parser.add_argument("--benchmark", default="synthetic-traffic", help="a synthetic preset")
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--horizon", default="12:12", help="IN:OUT")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--eval-stride", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="pretraining seed, and the first adaptation seed")
    parser.add_argument("--seeds", type=int, default=1, help="adaptation seeds per variant (adapter init, batches)")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/protocol.md")
    args = parser.parse_args(argv)
    pair = tuple(int(v) for v in args.horizon.split(":"))
    out = Path(args.out or tempfile.mkdtemp(prefix="paper-faithful-"))
    tic = time.perf_counter()
    if args.checkpoint:
        backbone, note = from_pretrained(args.checkpoint), "checkpoint BACKBONE"
    else:
        backbone = pretrain("minuscule", args.pretrain_steps, args.seed, print, [], 0.0)
        save_pretrained(backbone, str(out / "backbone"))  # --checkpoint OUT/backbone reruns without pretraining
        note = (f"minuscule backbone pretrained here for {args.pretrain_steps} steps of {BATCH} synthetic windows "
                f"({time.perf_counter() - tic:.0f} s)")
    freq = SYNTHETIC_PRESETS[args.benchmark].freq
    dataset = make_synthetic_benchmark(args.benchmark, num_nodes=args.nodes,
                                       num_steps=(steps_per_day(freq) or 1) * args.days)
    rows = []
    started = time.perf_counter()
    for seed in range(args.seed, args.seed + args.seeds):
        base = {"modes": ("few",), "baselines": (), "horizons": (pair,), "batch_size": 16,
                "max_steps": args.max_steps, "eval_every_steps": args.eval_every, "patience": 3,
                "max_val_windows": 64, "eval_stride": args.eval_stride, "predictions_max_windows": 8, "seed": seed}
        for name, cfg in variants(base).items():
            folder = out / f"seed{seed}" / name.split(" ")[0]
            result = run_adaptation("backbone", dataset, cfg, str(folder), backbone=backbone)
            row, run = result["rows"][0], result["runs"][0]
            rows.append({**row, "variant": name, "seed": seed, "initial_val": run["training"]["initial_val_loss"],
                         "best_step": run["training"]["best_step"]})
            print(f"seed {seed} {name}: val {rows[-1]['initial_val']:.4f} -> {row['val_loss']:.4f}, "
                  f"MAE {row['mae']:.4f}", flush=True)
    text = table(rows)
    print(text)
    command = doc_command("benchmarks/bench_paper_faithful.py", argv if argv is not None else sys.argv[1:],
                          PATH_OPTIONS)
    body = (
        f"{args.benchmark} ({args.nodes} nodes, {args.days} days of {freq} steps, split 6:2:2), few-shot "
        f"{pair[0]}->{pair[1]} on the last 10% of the train split, {args.seeds} adaptation seed(s) from {args.seed} "
        f"(adapter initialisation and batch order; means shown); every row: the same {note}, "
        f"at most {args.max_steps} steps of 16 windows, validation every {args.eval_every} steps (patience 3, "
        f"the best weights kept, step 0 included), every {args.eval_stride}-th test window. Adaptation and "
        f"evaluation of the {len(rows)} runs: {time.perf_counter() - started:.0f} s on the shared 2-core CPU.\n\n"
        f"Command: `.venv/bin/python {command}`\n\n" + text
    )
    if not args.no_doc:
        write_doc_section(DOC, MARKER, body, title="# STA protocol\n")


if __name__ == "__main__":
    main()
