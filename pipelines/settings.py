"""``--set section.key=value`` overrides: the one way every command changes a profile setting.

Why one mechanism: the profile is one typed model (``pipelines.profile.Profile``); an override is a dotted path
into it and a YAML-typed value, validated by the same pydantic models as the YAML file, so ``--set
pretrain.steps=20`` and ``pretrain: {steps: 20}`` in a profile are the same thing. A command's convenience
flags (``--steps``, ``--out``) are only shorthands for dotted paths and go through here too.

Errors say which pair is wrong and why, in one line: a malformed pair, an unknown key (with the keys that
section has), or a value of the wrong type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

# A setting's path: "pretrain.steps", or a tuple when a part holds dots itself (a benchmark file's name).
Key = str | tuple[str, ...]


class OverrideError(ValueError):
    """An override that is malformed, names no setting, or has a value its setting rejects."""


def parse_value(text: str) -> Any:
    """YAML typing (``3`` -> int, ``[a, b]`` -> list, ``null`` -> None); an empty value is the empty string."""
    import yaml

    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["pretrain.steps=3"]`` -> ``{"pretrain.steps": 3}`` (dotted keys kept flat, later pairs win)."""
    flat: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise OverrideError(f"{pair!r}: expected section.key=value, e.g. pretrain.steps=20")
        flat[key] = parse_value(value.strip())
    return flat


def parts(key: Key) -> tuple[str, ...]:
    return tuple(key.split(".")) if isinstance(key, str) else key


def label(key: Key) -> str:
    return ".".join(parts(key))


def check_keys(model: type[BaseModel], flat: Mapping[Key, Any]) -> None:
    """Every dotted key must name a field of ``model``, descending into nested models; a dict field takes any
    key (``storage.options.x``) and, when its values are models (``benchmarks.options.my_city``), checks what
    follows against the value model."""
    for key in flat:
        current: Any = model
        walked: list[str] = []
        free = False  # the next part is a dict key: any name
        for part in parts(key):
            if free:
                free, walked = False, [*walked, part]
                continue
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                break  # a plain value or a dict of plain values: pydantic checks the rest
            fields = current.model_fields
            if part not in fields:
                where = ".".join(walked) or "the profile"
                raise OverrideError(f"{label(key)}: unknown key {part!r} ({where} has: {', '.join(sorted(fields))})")
            walked.append(part)
            current, free = _model_of(fields[part].annotation)


def _model_of(annotation: Any) -> tuple[Any, bool]:
    """(the pydantic model an annotation holds, whether a dict key comes first): ``X``, ``X | None``,
    ``dict[str, X]``; anything else is returned as is."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (dict, Mapping):
        value = typing.get_args(annotation)[-1] if typing.get_args(annotation) else Any
        model, _ = _model_of(value)
        return model, True
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg, False
    return annotation, False


def apply_overrides(base: BaseModel, flat: Mapping[Key, Any]) -> Any:
    """``base`` with the dotted overrides applied and validated; raises :class:`OverrideError` naming the key."""
    from infra.config import deep_merge, nest

    if not flat:
        return base
    model = type(base)
    check_keys(model, flat)
    try:
        nested = nest(flat)
    except ValueError as exc:
        raise OverrideError(str(exc)) from None
    data = deep_merge(base.model_dump(mode="json"), nested)
    try:
        return carry_excluded(base, model.model_validate(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            given = next((k for k in flat if loc[: len(parts(k))] == parts(k)), None)
            shown = f"{label(given)}={flat[given]!r}" if given is not None else ".".join(loc)
            problems.append(f"{shown}: {err['msg']}")
        raise OverrideError("; ".join(problems)) from None


def carry_excluded(base: BaseModel, new: BaseModel) -> BaseModel:
    """Put back into ``new`` the fields a dump leaves out (``exclude=True``: credentials), merged with any that the
    overrides brought; without this a re-validated profile would silently lose its storage credentials."""
    for name, info in type(base).model_fields.items():
        old, cur = getattr(base, name), getattr(new, name, None)
        if info.exclude:
            value = {**old, **cur} if isinstance(old, dict) and isinstance(cur, dict) else (cur or old)
            object.__setattr__(new, name, value)  # already validated values; no re-validation on assignment
        elif isinstance(old, BaseModel) and isinstance(cur, BaseModel):
            carry_excluded(old, cur)
    return new
