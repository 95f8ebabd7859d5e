"""Per-step training metrics as JSON lines, and the loss-curve PNG drawn from them.

``metrics.jsonl`` is the run's record: one line per logged step (``step`` 1-based, ``loss``, ``lr``, ...,
``attempt`` and ``restarts``) and event lines (``{"event": "start", ...}`` each time a worker group starts,
``{"event": "resume", "step": ...}`` when it starts from a checkpoint). A resumed or restarted run first drops lines
past its checkpoint's step (they were computed by updates the checkpoint does not hold and are about to be
recomputed), so the file reads as one continuous run with one line per step. Local files are appended and flushed
line by line; object stores cannot append, so there the whole file is rewritten (one atomic PUT) at every flush.
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from infra.storage import filesystem, is_local, write_bytes_atomic

EMA_ALPHA = 0.1


def read_metrics(url: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All records of a metrics file (empty when it does not exist); a torn last line is ignored."""
    fs, path = filesystem(url, storage_options)
    if not fs.exists(path):
        return []
    with fs.open(path, "rb") as fh:
        lines = fh.read().decode().splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:  # killed mid-write: the line was never complete
                break
            raise ValueError(f"{url}: line {i + 1} is not JSON ({exc})") from exc
    return records


def step_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the per-step lines (not events)."""
    return [r for r in records if "event" not in r and "step" in r]


def count_restarts(records: list[dict[str, Any]]) -> int:
    """Worker-group restarts the run went through (by Ray Train after a worker failure, not by a rerun)."""
    return sum(1 for r in records if r.get("event") == "start" and int(r.get("attempt", 1)) > 1)


class MetricsWriter:
    """Writes ``metrics.jsonl``; ``resume_step`` keeps the lines up to that step and records a resume event.

    ``launch`` (an id the driver draws once per ``pretrain`` call) records a start event first: ``attempt`` counts
    the worker-group starts of that launch, read back from the file, so a group that Ray Train starts again after
    a worker died knows it is a restart even when the dead worker was the one writing this file. Every step line
    then carries ``attempt`` and ``restarts`` (the run's restarts so far, over all launches).
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, resume_step: int | None = None,
        launch: str | None = None,
    ):
        self.url = url
        self.fs, self.path = filesystem(url, storage_options)
        self.local = is_local(self.fs)
        parent = self.path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        kept: list[dict[str, Any]] = []
        if resume_step is not None or launch is not None:
            upto = resume_step or 0  # a start without a checkpoint keeps only earlier start events (step 0)
            kept = [r for r in read_metrics(url, storage_options) if int(r.get("step", 0)) <= upto]
        self._stamp: dict[str, Any] = {}
        if launch is not None:
            attempt = 1 + sum(1 for r in kept if r.get("event") == "start" and r.get("launch") == launch)
            restarts = count_restarts(kept) + (attempt > 1)
            kept.append({"event": "start", "step": resume_step or 0, "launch": launch, "attempt": attempt,
                         "restarts": restarts, "host": socket.gethostname(), "pid": os.getpid()})
            self._stamp = {"attempt": attempt, "restarts": restarts}
        if resume_step is not None:
            kept.append({"event": "resume", "step": resume_step})
        self._records = kept
        self._write_all()
        self._fh = open(self.path, "a", encoding="utf-8") if self.local else None  # noqa: SIM115

    def _write_all(self) -> None:
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records).encode()
        write_bytes_atomic(self.fs, self.path, data)

    def append(self, record: dict[str, Any]) -> None:
        record = {**record, **self._stamp}
        self._records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps(record, sort_keys=True) + "\n")

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
        else:
            self._write_all()

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records)


def loss_curve_png(records: list[dict[str, Any]], title: str = "UTP pretraining") -> bytes:
    """PNG of the loss per step (raw and EMA-smoothed) with the learning rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps_ = step_records(records)
    xs = [r["step"] for r in steps_]
    loss = [r["loss"] for r in steps_]
    ema, acc = [], None
    for v in loss:
        acc = v if acc is None else (1 - EMA_ALPHA) * acc + EMA_ALPHA * v
        ema.append(acc)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(xs, loss, color="tab:blue", alpha=0.35, lw=1, label="loss")
    ax.plot(xs, ema, color="tab:blue", lw=2, label=f"loss (EMA {EMA_ALPHA})")
    for r in records:
        if r.get("event") == "resume":
            ax.axvline(r["step"], color="grey", ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("pinball loss")
    ax.set_title(title)
    if steps_ and "lr" in steps_[0]:
        ax2 = ax.twinx()
        ax2.plot(xs, [r["lr"] for r in steps_], color="tab:orange", lw=1, label="lr")
        ax2.set_ylabel("learning rate", color="tab:orange")
    ax.legend(loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_loss_curve(
    metrics_url: str, png_url: str, storage_options: dict[str, Any] | None = None, title: str = "UTP pretraining"
) -> None:
    """Draw ``png_url`` from the metrics file at ``metrics_url``."""
    png = loss_curve_png(read_metrics(metrics_url, storage_options), title)
    fs, path = filesystem(png_url, storage_options)
    write_bytes_atomic(fs, path, png)


class ProgressFollower:
    """Shows a run's progress on the driver by following ``metrics.jsonl`` as rank 0 writes it.

    Why the driver and not the worker: Ray forwards worker output with prefixes and duplicates (a progress bar
    cannot live there), and the driver keeps Ray's own chatter out of the terminal (``log_to_driver=False``).
    A terminal gets a rich progress bar; anything else (CI, Prefect logs) gets a line every ``log_every`` steps
    (step, loss, tokens/s, ETA; also an INFO record and, inside a Prefect run, a progress artifact). Every step
    record, with ``eta_s``, goes to each of ``listeners`` (TensorBoard, MLflow). The follower also warns when
    the data loader stalls the step (waiting share above ``stall_ratio``).
    """

    def __init__(
        self,
        metrics_url: str,
        storage_options: dict[str, Any] | None,
        total_steps: int,
        start_step: int = 0,
        log_every: int = 10,
        stall_ratio: float = 0.25,
        poll_s: float = 1.0,
        show: bool = True,
        listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
    ) -> None:
        import threading

        self.url, self.storage_options = metrics_url, storage_options
        self.total, self.last_step, self.log_every = total_steps, start_step, log_every
        self._first_step = start_step + 1
        self.stall_ratio, self.poll_s, self.show = stall_ratio, poll_s, show
        self.listeners = list(listeners)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window: list[dict[str, Any]] = []
        self._bar: Any = None
        self._task: Any = None
        self._artifact: Any = None
        self._started = (time.monotonic(), start_step)
        self.stall_warnings = 0

    def __enter__(self) -> ProgressFollower:
        import sys

        if self.show and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("pretrain"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("pretrain", total=self.total, completed=self.last_step, info="")
        from infra.stage_runtime import start_progress_artifact

        self._artifact = start_progress_artifact("pretrain")
        # The thread runs in a copy of the caller's context: inside a Prefect task its log records and artifact
        # updates belong to that task's flow run (Prefect finds the run through context variables).
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run,), name="pretrain-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._poll()
        if self._bar is not None:
            self._bar.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._poll()
            except (OSError, ValueError):  # a file being replaced mid-read: try again next poll
                continue

    def _poll(self) -> None:
        for rec in step_records(read_metrics(self.url, self.storage_options)):
            step = int(rec["step"])
            if step <= self.last_step:
                continue
            self.last_step = step
            if step != self._first_step:  # the first step waits for the pipeline to start: not a stall
                self._window.append(rec)
            self._on_record(rec)

    def eta_s(self, step: int) -> float | None:
        """Seconds left at the pace of this follower's run so far (None before the second step)."""
        t0, step0 = self._started
        done = step - step0
        return (time.monotonic() - t0) / done * (self.total - step) if done > 0 else None

    def _on_record(self, rec: dict[str, Any]) -> None:
        import logging
        import sys

        eta = self.eta_s(int(rec["step"]))
        rec = {**rec, "eta_s": eta}
        for listener in self.listeners:
            listener(rec)
        info = f"loss {rec['loss']:.4f} lr {rec['lr']:.3g} {rec.get('tokens_per_s', 0):.0f} tok/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=rec["step"], info=info)
        if rec["step"] % self.log_every and rec["step"] != self.total:
            return
        if self._artifact is not None:
            from infra.stage_runtime import update_stage_progress

            update_stage_progress(self._artifact, 100.0 * rec["step"] / max(self.total, 1))
        logging.getLogger(__name__).info("pretrain step %d/%d %s, ETA %s", rec["step"], self.total, info,
                                         "-" if eta is None else f"{eta:.0f} s")
        wait = sum(r.get("data_wait_s", 0.0) for r in self._window)
        busy = sum(r.get("step_time_s", 0.0) for r in self._window)
        self._window = []
        share = wait / busy if busy > 0 else 0.0
        if self._bar is None and self.show:
            print(f"[pretrain] step {rec['step']}/{self.total} {info} "
                  f"{rec.get('samples_per_s', 0):.1f} samples/s data wait {100 * share:.0f}% "
                  f"ETA {'-' if eta is None else f'{eta:.0f} s'}", file=sys.stderr, flush=True)
        if share > self.stall_ratio:
            self.stall_warnings += 1
            logging.getLogger(__name__).warning(
                "data loader stalls training: %.0f%% of step time spent waiting for batches up to step %d "
                "(raise data.prefetch_batches / read_concurrency or give Ray more CPUs)", 100 * share, rec["step"])
