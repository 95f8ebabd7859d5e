"""How every stage runs its parallel work: units submitted as Ray tasks, retried, BLAS-pinned, tallied by node.

Why one module: ingest, KernelSynth, BLAST and the STA fan-out all cut their work into independent units
(a file, a chunk, a row group, a benchmark mode) whose results the driver combines in unit order. Running them
the same way everywhere gives one place for the things that must not differ between stages:

- **where**: on the Ray the process is connected to (``infra.ray_runtime.ensure_ray``: an in-process local Ray
  on the embedded default, a cluster by ``ray.address`` / ``RAY_ADDRESS``); units are spread over nodes;
- **determinism**: results come back in unit order whatever finished first, and every task runs its BLAS
  with a fixed thread count, so combined outputs are byte-identical on one process, one node or many;
- **faults**: a unit whose worker or node dies is re-run elsewhere by Ray (``max_retries``); a unit that
  raises a transient I/O error is retried in place with backoff; any other error fails the stage naming
  the unit, and the queued units are cancelled;
- **bounded memory**: at most ``max_in_flight`` units are submitted or waiting to be consumed at once;
- **visibility**: a progress bar on the terminal, periodic log lines, a Prefect progress artifact inside a
  flow run, and ``ray_nodes``: how many units each Ray node completed (recorded in version manifests).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from infra.transient import is_transient

log = logging.getLogger(__name__)

U = TypeVar("U")
R = TypeVar("R")

DEFAULT_NODE_RETRIES = 3  # re-runs of a unit whose worker process or node died
DEFAULT_TRANSIENT_RETRIES = 2  # in-task retries of a unit that raised a transient I/O error
_BACKOFF_S = 1.0
_LOG_EVERY_S = 10.0
_ARTIFACT_EVERY_S = 2.0


class StageWorkError(RuntimeError):
    """A unit of stage work failed for good; the message names the stage and the unit."""


@dataclass(frozen=True)
class WorkResources:
    """What one unit asks of Ray; GPUs only when the stage's config asks for a GPU device."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


@dataclass
class StageRun(Generic[R]):
    """The tally of one ``run_units`` call: units done per Ray node, retries and wall time."""

    stage: str
    total: int
    ray_nodes: Counter[str] = field(default_factory=Counter)
    transient_retries: int = 0
    seconds: float = 0.0

    def node_counts(self) -> dict[str, int]:
        """``{node id: units completed}``, sorted by node id (stable in manifests)."""
        return dict(sorted(self.ray_nodes.items()))


def merge_node_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Sum several stages' ``ray_nodes`` (e.g. BLAST's scoring, spill and shard passes)."""
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def _pinned_blas(threads: int | None) -> AbstractContextManager[Any]:
    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def execute_unit(
    fn: Callable[[U], R], unit: U, blas_threads: int | None, transient_retries: int
) -> tuple[str, int, R]:
    """Run one unit where it landed: ``(node id, transient retries used, result)``."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "driver"
    attempt = 0
    while True:
        try:
            with _pinned_blas(blas_threads):
                return node, attempt, fn(unit)
        except Exception as exc:
            if attempt >= transient_retries or not is_transient(exc):
                raise
            attempt += 1
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1))


_REMOTE: Any = None


def _remote_execute() -> Any:
    """The Ray remote wrapper, built once per process (importing ray lazily keeps CLI start-up fast)."""
    global _REMOTE
    if _REMOTE is None:
        import ray

        _REMOTE = ray.remote(execute_unit)
    return _REMOTE


class _Progress:
    """Terminal bar, periodic log lines and (inside a Prefect run) a progress artifact for one stage."""

    def __init__(self, stage: str, total: int, enabled: bool) -> None:
        self.stage, self.total, self.done = stage, total, 0
        self._t0 = self._last_log = self._last_artifact = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._artifact: Any = None
        if enabled and total > 0:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(  # on stderr: a command's stdout holds its result alone
                TextColumn(f"[bold]{stage}[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                transient=True, console=Console(stderr=True),
            )
            self._bar.start()
            self._task = self._bar.add_task(stage, total=total)
        self._artifact = start_progress_artifact(stage)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
        now = time.monotonic()
        if now - self._last_log >= _LOG_EVERY_S or self.done == self.total:
            self._last_log = now
            log.info("%s: %d/%d units (%.0f s)", self.stage, self.done, self.total, now - self._t0)
        if self._artifact is not None and (now - self._last_artifact >= _ARTIFACT_EVERY_S or self.done == self.total):
            self._last_artifact = now
            update_stage_progress(self._artifact, 100.0 * self.done / max(self.total, 1))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def start_progress_artifact(stage: str) -> Any:
    """A Prefect progress artifact when running inside a flow or task run; None elsewhere (or on any error)."""
    try:
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return None
        return create_progress_artifact(progress=0.0, description=f"{stage}: share of work units done")
    except Exception as exc:  # progress reporting must never fail the stage
        log.debug("no progress artifact for %s: %s", stage, exc)
        return None


def update_stage_progress(artifact_id: Any, progress: float) -> None:
    """Move a progress artifact made by ``start_progress_artifact`` (percent done); never fails the caller."""
    try:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(artifact_id=artifact_id, progress=progress)
    except Exception as exc:
        log.debug("progress artifact update failed: %s", exc)


def default_in_flight() -> int:
    """Twice the cluster's CPUs: every CPU busy while the driver consumes results, memory still bounded."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def run_units(
    fn: Callable[[U], R],
    units: Sequence[U],
    *,
    stage: str,
    describe: Callable[[int, U], str] | None = None,
    resources: WorkResources | None = None,
    max_in_flight: int | None = None,
    blas_threads: int | None = 1,
    node_retries: int = DEFAULT_NODE_RETRIES,
    transient_retries: int = DEFAULT_TRANSIENT_RETRIES,
    progress: bool = True,
    tally: StageRun[R] | None = None,
) -> Iterator[R]:
    """Run ``fn(unit)`` for every unit as a Ray task; yield the results in unit order.

    ``fn`` must be a module-level function (tasks pickle it by reference) and idempotent: a unit whose node
    died is run again. ``describe(i, unit)`` names a unit in errors (default: ``unit i``). ``tally`` receives
    the per-node counts; pass one to read ``ray_nodes`` afterwards.
    """
    import ray

    from infra.ray_runtime import ensure_ray

    ensure_ray()
    run = tally if tally is not None else StageRun(stage, len(units))
    run.total = len(units)
    if not units:
        return
    name = describe or (lambda i, _u: f"unit {i}")
    window = max(1, max_in_flight or default_in_flight())
    remote = _remote_execute().options(
        max_retries=node_retries, scheduling_strategy="SPREAD", **(resources or WorkResources()).options()
    )
    t0 = time.monotonic()
    bar = _Progress(stage, len(units), progress)
    pending: dict[Any, int] = {}  # object ref -> unit index
    ready: dict[int, tuple[str, int, R]] = {}
    next_submit = next_yield = 0
    try:
        while next_yield < len(units):
            while next_submit < len(units) and len(pending) + len(ready) < window:
                ref = remote.remote(fn, units[next_submit], blas_threads, transient_retries)
                pending[ref] = next_submit
                next_submit += 1
            if next_yield not in ready:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                try:
                    ready[i] = ray.get(done[0])
                except Exception as exc:
                    raise StageWorkError(f"{stage}: {name(i, units[i])} failed: {_reason(exc)}") from exc
                bar.advance()
                continue
            node, retries, result = ready.pop(next_yield)
            run.ray_nodes[node] += 1
            run.transient_retries += retries
            next_yield += 1
            yield result
    finally:
        bar.close()
        for ref in pending:  # an error or an abandoned iterator: do not leave queued units running
            ray.cancel(ref)
        run.seconds = time.monotonic() - t0


def _reason(exc: BaseException) -> str:
    """The task's own exception, without Ray's wrapper traceback."""
    cause = getattr(exc, "cause", None)
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1] if text else ''}".strip()


def collect_units(fn: Callable[[U], R], units: Sequence[U], **kwargs: Any) -> tuple[list[R], StageRun[R]]:
    """``run_units`` into a list, with its tally (for stages whose results are small)."""
    tally: StageRun[R] = StageRun(kwargs.get("stage", "stage"), len(units))
    results = list(run_units(fn, units, tally=tally, **kwargs))
    return results, tally
