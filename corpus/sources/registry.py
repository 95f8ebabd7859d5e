"""Source connectors, registered by name (``tsf``, ``m4``, ``ltsf``, ``wiki``, ``lotsa``, ``long``).

A connector is a generator of :class:`~corpus.schema.RawSeries` from a list of input URLs and its own typed
options. It must stream (bounded memory on large inputs) and raise
:class:`~corpus.errors.MalformedInputError` naming the file, line or item and the reason for input it cannot
parse. Validation (empty, NaN-only, too short, inf), deduplication and writing are the ingest engine's job,
not the connector's.

A connector may also cut its input into independent work units (:class:`IngestUnit`: a file, a train/test
pair, a byte range of a large text file, a run of record batches) with ``plan`` and read one unit with
``read_unit``; the engine runs the units in parallel and combines them in unit order. Its ``read`` is then
those units read one after the other (:func:`register_units`), so the whole-source stream and the combined
units are the same series in the same order by construction. A connector without ``plan`` is one unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from corpus.schema import RawSeries
from infra.config import StrictModel


class NoOptions(StrictModel):
    """A connector without options: any key is an error."""


@dataclass(frozen=True)
class IngestUnit:
    """One independent piece of a source's input, small enough to pickle into a Ray task.

    ``files`` are the URLs it reads (one file; an M4 train file and its test file). ``start``/``stop`` bound a
    chunk of the first file in ``span`` units (``bytes`` of a text file, ``batches`` of an Arrow/Parquet file);
    ``stop=None`` reads to the end. ``line_base`` is how many lines of the file precede ``start``, so line
    numbers in errors and quarantine rows are the file's own. ``context`` is what ``plan`` parsed once for
    every chunk of the file (a .tsf header).
    """

    files: tuple[str, ...]
    prefix: str = ""
    start: int = 0
    stop: int | None = None
    span: str = "bytes"
    line_base: int = 0
    chunk: int = 0
    chunks: int = 1
    context: Any = field(default=None, compare=False)

    def split(self, ranges: list[tuple[int, int | None, int]] | None, context: Any) -> list[IngestUnit]:
        """This file's unit cut into byte ranges ``(start, stop, lines before start)``; itself when not cut."""
        if ranges is None or len(ranges) == 1:
            return [self]
        return [
            replace(self, start=start, stop=stop, line_base=base, chunk=k, chunks=len(ranges), context=context)
            for k, (start, stop, base) in enumerate(ranges)
        ]

    def label(self) -> str:
        """How errors name the unit: the file, plus which chunk of it when the file was split."""
        name = " + ".join(self.files)
        if self.chunks == 1:
            return name
        end = "end" if self.stop is None else str(self.stop)
        return f"{name} chunk {self.chunk + 1} of {self.chunks} ({self.span} {self.start}-{end})"


ReadFn = Callable[[list[str], Any, dict[str, Any]], Iterator[RawSeries]]
# plan(paths, options, storage_options, chunk_bytes): chunk_bytes None means one unit per file, never split.
PlanFn = Callable[[list[str], Any, dict[str, Any], int | None], list[IngestUnit]]
ReadUnitFn = Callable[[IngestUnit, Any, dict[str, Any]], Iterator[RawSeries]]


@dataclass(frozen=True)
class Connector:
    """``read(paths, options, storage_options)`` yields series; ``options_model`` validates the options.

    ``plan_units``/``read_one`` are the optional unit hooks; without them the whole source is one unit.
    """

    name: str
    read: ReadFn
    options_model: type[BaseModel]
    description: str
    plan_units: PlanFn | None = None
    read_one: ReadUnitFn | None = None

    def plan(
        self, paths: list[str], options: Any, storage_options: dict[str, Any], chunk_bytes: int | None = None
    ) -> list[IngestUnit]:
        """The source's work units in output order (one unit holding every path for a connector without hooks)."""
        if self.plan_units is None:
            return [IngestUnit(files=tuple(paths))]
        return self.plan_units(paths, options, storage_options, chunk_bytes)

    def read_unit(self, unit: IngestUnit, options: Any, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
        """The series of one unit, in the order the whole-source ``read`` yields them."""
        if self.read_one is None:
            return self.read(list(unit.files), options, storage_options)
        return self.read_one(unit, options, storage_options)

    def parse_options(self, options: dict[str, Any] | None) -> BaseModel:
        try:
            return self.options_model.model_validate(options or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"connector {self.name!r} options: {problems}") from None


CONNECTORS: dict[str, Connector] = {}


def register(
    name: str, options_model: type[BaseModel] = NoOptions, description: str = ""
) -> Callable[[ReadFn], ReadFn]:
    def decorate(fn: ReadFn) -> ReadFn:
        _add(Connector(name, fn, options_model, description or (fn.__doc__ or "").strip().split("\n")[0]))
        return fn

    return decorate


def register_units(
    name: str, options_model: type[BaseModel], plan: PlanFn, read_unit: ReadUnitFn, description: str
) -> ReadFn:
    """Register a connector by its unit hooks; returns its ``read``: every unit of the plan, in order."""

    def read(paths: list[str], options: Any, storage_options: dict[str, Any]) -> Iterator[RawSeries]:
        for unit in plan(paths, options, storage_options, None):
            yield from read_unit(unit, options, storage_options)

    read.__doc__ = description
    _add(Connector(name, read, options_model, description, plan, read_unit))
    return read


def _add(connector: Connector) -> None:
    if connector.name in CONNECTORS:
        raise ValueError(f"connector {connector.name!r} registered twice")
    CONNECTORS[connector.name] = connector


def get_connector(name: str) -> Connector:
    load_builtin_connectors()
    try:
        return CONNECTORS[name]
    except KeyError:
        raise ValueError(f"unknown source kind {name!r}; known: {', '.join(sorted(CONNECTORS))}") from None


def load_builtin_connectors() -> None:
    """Import the built-in connector modules so that they register themselves."""
    from corpus.sources import long, lotsa, ltsf, m4, tsf, wiki  # noqa: F401
