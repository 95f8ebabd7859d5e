"""Where a pretraining run's files are, under the stage's ``out_root`` (see :mod:`training.trainer`).

Kept apart from the trainer (no torch, no Ray) so that listings and reports can find runs cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.storage import join

RUNS_FOLDER = ("runs", "pretrain")
CHECKPOINTS_FOLDER = "checkpoints"
FINAL_FOLDER = "final"


@dataclass(frozen=True)
class RunPaths:
    """Where a pretraining run's files are (see the module docstring); the one place that knows the layout."""

    run_url: str
    config_url: str
    metrics_url: str
    loss_curve_url: str
    checkpoints_root: str
    ray_run_url: str
    final_url: str
    run_name: str = ""
    out_root: str = ""

    @classmethod
    def make(cls, out_root: str, run_name: str) -> RunPaths:
        run_url = join(runs_root(out_root), run_name)
        checkpoints_root = join(out_root, CHECKPOINTS_FOLDER)
        return cls(
            run_url=run_url,
            config_url=join(run_url, "config.json"),
            metrics_url=join(run_url, "metrics.jsonl"),
            loss_curve_url=join(run_url, "loss_curve.png"),
            checkpoints_root=checkpoints_root,
            ray_run_url=join(checkpoints_root, run_name),
            final_url=join(checkpoints_root, run_name, FINAL_FOLDER),
            run_name=run_name,
            out_root=out_root,
        )

    @classmethod
    def from_checkpoint(cls, final_url: str) -> RunPaths:
        """The run whose final backbone is ``final_url`` (``{out_root}/checkpoints/{run_name}/final``)."""
        head, run_name, final = final_url.rstrip("/").rsplit("/", 2) if final_url.count("/") >= 2 else ("", "", "")
        out_root, _, folder = head.rpartition("/")
        if final != FINAL_FOLDER or folder != CHECKPOINTS_FOLDER or not run_name or not out_root:
            raise ValueError(f"{final_url}: not a pretraining run's final checkpoint "
                             f"(expected {{out_root}}/{CHECKPOINTS_FOLDER}/{{run_name}}/{FINAL_FOLDER})")
        return cls.make(out_root, run_name)


def runs_root(out_root: str) -> str:
    """The folder holding every pretraining run's ``runs/pretrain/{run_name}`` folder."""
    return join(out_root, *RUNS_FOLDER)
