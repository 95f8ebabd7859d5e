"""Source connectors, registered by name (``tsf``, ``m4``, ``ltsf``, ``wiki``, ``lotsa``, ``long``).

A connector is a generator of :class:`~corpus.schema.RawSeries` from a list of input URLs and its own typed
options. It must stream (bounded memory on large inputs) and raise
:class:`~corpus.errors.MalformedInputError` naming the file, line or item and the reason for input it cannot
parse. Validation (empty, NaN-only, too short, inf), deduplication and writing are the ingest engine's job,
not the connector's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from corpus.schema import RawSeries


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


ReadFn = Callable[[list[str], Any, dict[str, Any]], Iterator[RawSeries]]


@dataclass(frozen=True)
class Connector:
    """``read(paths, options, storage_options)`` yields series; ``options_model`` validates the options."""

    name: str
    read: ReadFn
    options_model: type[BaseModel]
    description: str

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
        if name in CONNECTORS:
            raise ValueError(f"connector {name!r} registered twice")
        CONNECTORS[name] = Connector(name, fn, options_model, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorate


def get_connector(name: str) -> Connector:
    load_builtin_connectors()
    try:
        return CONNECTORS[name]
    except KeyError:
        raise ValueError(f"unknown source kind {name!r}; known: {', '.join(sorted(CONNECTORS))}") from None


def load_builtin_connectors() -> None:
    """Import the built-in connector modules so that they register themselves."""
    from corpus.sources import long, lotsa, ltsf, m4, tsf, wiki  # noqa: F401
