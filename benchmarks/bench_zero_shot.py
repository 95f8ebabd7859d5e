"""What pretraining compute buys zero-shot: backbones of the zero-shot recipe at three budgets, side by side.

The recipe (``configs/zero-shot.yaml``) builds a KernelSynth corpus with BLAST and pretrains the backbone on it;
no real series is in its corpus, so every dataset below is unseen. ``--profile configs/zero-shot-history.yaml``
measures the in-domain recipe instead: its corpus adds the four datasets' history, each without the last H
points it is scored on (the script refuses a profile whose source of a suite dataset holds out fewer than H
points), and its tables go to their own sections. For each budget (a share of the recipe's
pretraining steps; the last is the recipe itself) the script runs, through the CLI as a user does,
``factost run refresh`` once and ``factost pretrain --set pretrain.steps=...``, counting the CPU seconds of
each command's whole process tree (Ray workers included). Each backbone is then scored on every dataset's last
H points (``training.evaluate``, the protocol of ``factost evaluate``) beside seasonal naive, AutoETS and
AutoTheta, and the table gives each method's MASE and WQL relative to seasonal naive, per dataset and as the
geometric mean over the datasets.

Datasets (from ``FACTOST_TEST_DATA``; a missing file stops the script naming it), horizon H and season S:

- M4 hourly (Monash ``.tsf``): H = 48, the archive's horizon; S = 24;
- Ausgrid weekly (Monash ``.tsf``): H = 8, the archive's weekly horizon; S = 1;
- exchange rate (LTSF csv, 8 series): H = 30, S = 5, as Chronos Benchmark II evaluates it;
- ETTh2 (LTSF csv, its 7 variables as univariate series): H = 48, the hourly short-term horizon GIFT-Eval uses
  (the Monash archive has no ETT); S = 24.

    .venv/bin/python benchmarks/bench_zero_shot.py --doc
    .venv/bin/python benchmarks/bench_zero_shot.py --budgets 0.25 0.5 1 --out OUT --doc
    .venv/bin/python benchmarks/bench_zero_shot.py --profile configs/zero-shot-history.yaml --out OUT --doc
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_paper_scale import FACTOST, run_measured  # noqa: E402
from doc_sections import doc_command, write_doc_section  # noqa: E402

from corpus.config import SourceConfig  # noqa: E402
from pipelines.profile import load_profile  # noqa: E402
from tests.real_data import real_data_root  # noqa: E402
from training.evaluate import EvalDataset, Score, evaluate, geometric_mean, read_source  # noqa: E402
from training.io import from_pretrained  # noqa: E402

DOC = ROOT / "docs" / "benchmarks" / "zero_shot.md"
SUMMARY_DOC = ROOT / "docs" / "benchmarks.md"
PROFILE = ROOT / "configs" / "zero-shot.yaml"
BASELINES = ("seasonal_naive", "auto_ets", "auto_theta")


@dataclass(frozen=True)
class Suite:
    """One evaluation dataset: its connector, file (under the data folder), horizon and season length."""

    name: str
    kind: str
    file: str
    horizon: int
    season: int


SUITE = (
    Suite("m4_hourly", "tsf", "monash/m4_hourly_dataset.tsf", 48, 24),
    Suite("ausgrid_weekly", "tsf", "monash/ausgrid_weekly_sample.tsf", 8, 1),
    Suite("exchange_rate", "ltsf", "exchange_rate/exchange_rate.csv", 30, 5),
    Suite("etth2", "ltsf", "ett/ETTh2.csv", 48, 24),
)


def read_suite(data_dir: Path) -> list[tuple[Suite, EvalDataset]]:
    out = []
    for item in SUITE:
        path = data_dir / item.file
        if not path.exists():
            raise SystemExit(f"{path}: missing (set FACTOST_TEST_DATA or --data-dir to the folder holding it)")
        out.append((item, read_source(SourceConfig(name=item.name, kind=item.kind, paths=[str(path)]))))
    return out


def score_all(model: Any, suite: list[tuple[Suite, EvalDataset]], methods: tuple[str, ...]) -> dict[str, Score]:
    """Every method's score on every dataset, each at its own horizon and season: ``{"dataset/method": Score}``."""
    scores: dict[str, Score] = {}
    for item, data in suite:
        for s in evaluate(model, [data], item.horizon, item.season, methods=methods).scores:
            scores[f"{item.name}/{s.method}"] = s
    return scores


def relative(scores: dict[str, Score], method: str, metric: str) -> dict[str, float]:
    """``metric`` of ``method`` / seasonal naive's, per dataset, and their geometric mean under ``"gmean"``."""
    per = {item.name: getattr(scores[f"{item.name}/{method}"], metric)
           / getattr(scores[f"{item.name}/seasonal_naive"], metric) for item in SUITE}
    return {**per, "gmean": geometric_mean(list(per.values()))}


def history_sources(profile: Path) -> set[str]:
    """Suite datasets whose history is in the profile's corpus; exits when one holds out fewer than H points."""
    held = {source.name: source.holdout for source in load_profile(str(profile)).ingest.sources}
    for item in SUITE:
        if item.name in held and held[item.name] < item.horizon:
            raise SystemExit(f"{profile}: source {item.name!r} holds out {held[item.name]} points, fewer than the "
                             f"horizon {item.horizon} it is scored at, so its evaluation window would be trained on")
    return {item.name for item in SUITE if item.name in held}


def pretrain_budgets(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Refresh once, then one pretraining per budget; CPU seconds of each command's process tree.

    Each finished command's figures go to ``measured.json`` in the work folder; a rerun on the same ``--out``
    takes them from there (the CLI then returns the published corpus and finished checkpoints at once, so
    measuring it again would count nothing) and runs only what is missing.
    """
    record_path = work / "measured.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}

    def measured(key: str, cmd: list[str]) -> dict[str, Any]:
        if key not in record:
            url, _, cpu = run_measured(cmd)
            record[key] = {"url": url, "cpu_s": cpu.cpu_seconds}
            record_path.write_text(json.dumps(record, indent=1))
        return record[key]

    root = ["--set", f"storage.root={work / 'store'}"]
    work.mkdir(parents=True, exist_ok=True)
    corpus = measured("corpus", [FACTOST, "run", "refresh", "--profile", str(args.profile), *root])
    recipe_steps = load_profile(str(args.profile)).pretrain.steps
    runs = []
    for share in args.budgets:
        steps = max(1, round(recipe_steps * share))
        run = measured(f"steps-{steps}", [
            FACTOST, "pretrain", "--profile", str(args.profile), *root, "--corpus", corpus["url"], "--no-flow",
            "--set", f"pretrain.steps={steps}", "--run-name", f"zero-shot-{steps}",
        ])
        runs.append({"share": share, "steps": steps, "checkpoint": run["url"], "cpu_s": run["cpu_s"] + corpus["cpu_s"],
                     "corpus_cpu_s": corpus["cpu_s"]})
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "checkpoint"}), flush=True)
    return runs


def table(runs: list[dict[str, Any]], base: dict[str, Score]) -> str:
    names = [item.name for item in SUITE]
    head = ("| method | pretraining CPU-min (corpus incl.) | steps | "
            + " | ".join(f"{n} (H={i.horizon})" for n, i in zip(names, SUITE, strict=True))
            + " | gmean rel. MASE | gmean rel. WQL |\n")
    text = head + "|" + "---|" * (len(names) + 5) + "\n"
    for run in runs:
        mase, wql = relative(run["scores"], "factost", "mase"), relative(run["scores"], "factost", "wql")
        label = "FactoST zero-shot (the recipe)" if run["share"] == 1 else f"FactoST zero-shot ({run['share']:g}x)"
        text += (f"| {label} | {run['cpu_s'] / 60:.1f} | {run['steps']:,} | "
                 + " | ".join(f"{mase[n]:.3f}" for n in names) + f" | **{mase['gmean']:.3f}** | {wql['gmean']:.3f} |\n")
    for method in BASELINES:
        mase, wql = relative(base, method, "mase"), relative(base, method, "wql")
        text += (f"| {method} | | | " + " | ".join(f"{mase[n]:.3f}" for n in names)
                 + f" | {mase['gmean']:.3f} | {wql['gmean']:.3f} |\n")
    sn = " / ".join(f"{n} {base[f'{n}/seasonal_naive'].mase:.3f}" for n in names)
    text += f"\nCells: MASE relative to seasonal naive (below 1 is better). Seasonal-naive MASE: {sn}.\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=Path, default=PROFILE)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="shares of the recipe's pretraining steps (1: the recipe)")
    parser.add_argument("--data-dir", type=Path, default=real_data_root())
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--doc", action="store_true", help=f"write the table into {DOC.name} and benchmarks.md")
    args = parser.parse_args()
    suite = read_suite(args.data_dir)
    in_domain = history_sources(args.profile)
    os.environ.setdefault("FACTOST_DATA", str(args.data_dir))  # the folder a history profile's sources name
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-zero-shot-", dir=os.environ.get("BENCH_TMP")))
    try:
        runs = pretrain_budgets(args, work)
        base = score_all(None, suite, BASELINES)
        for run in runs:
            run["scores"] = score_all(from_pretrained(run["checkpoint"]), suite, ("factost",)) | base
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    text = table(runs, base)
    print(text)
    recipe = next((r for r in runs if r["share"] == 1), runs[-1])
    verdict = relative(recipe["scores"], "factost", "mase")["gmean"]
    if args.doc:
        command = doc_command("python benchmarks/bench_zero_shot.py", sys.argv[1:],
                              {"--out": "OUT", "--data-dir": "DATA_DIR"})
        marker = "zero-shot-history" if in_domain else "zero-shot"
        write_doc_section(DOC, f"{marker}-budgets", f"Command: `{command}`\n\n{text}",
                          title="# Zero-shot: what pretraining compute buys\n")
        label = "recipe" if recipe["share"] == 1 else f"{recipe['share']:g}x the recipe's steps"
        seen = (f"{len(SUITE)} datasets scored on the last H points that the corpus sources of "
                f"{len(in_domain)} of them hold out" if in_domain else f"{len(SUITE)} unseen datasets")
        summary = (f"{args.profile.stem} {label} ({recipe['cpu_s'] / 60:.1f} CPU-min): geometric-mean relative "
                   f"MASE **{verdict:.3f}** over {seen}; see [zero_shot.md](benchmarks/zero_shot.md)\n")
        write_doc_section(SUMMARY_DOC, f"{marker}-summary", f"Command: `{command}`: {summary}")
    if not math.isfinite(verdict):
        raise SystemExit("the recipe's geometric mean is not finite")


if __name__ == "__main__":
    main()
