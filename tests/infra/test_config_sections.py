"""Every config section, from the profile down and every connector's options, is a StrictModel."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from infra.config import StrictModel


def _sections(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """``model`` and every model class its fields hold (inside lists, dicts and unions too)."""
    if model in seen:
        return seen
    seen.add(model)
    stack = [f.annotation for f in model.model_fields.values()]
    while stack:
        annotation = stack.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _sections(annotation, seen)
        else:
            stack.extend(typing.get_args(annotation))
    return seen


def test_every_profile_section_and_connector_options_are_strict_models() -> None:
    from corpus.sources.registry import get_connector
    from pipelines.profile import Profile

    sections = _sections(Profile, set())
    for kind in ("tsf", "m4", "ltsf", "wiki", "lotsa", "long"):
        sections |= _sections(get_connector(kind).options_model, set())
    names = {s.__name__ for s in sections}
    assert {"KernelSynthConfig", "BlastConfig", "PretrainConfig", "PretrainDataConfig", "AdaptConfig",
            "TsfOptions", "LongOptions"} <= names
    loose = sorted(s.__name__ for s in sections if not issubclass(s, StrictModel))
    assert loose == [], f"config sections not on infra.config.StrictModel: {loose}"
    assert all(s.model_config.get("extra") == "forbid" for s in sections)


def test_stage_sections_stay_frozen_and_connector_options_do_not() -> None:
    from corpus.blast.config import BlastConfig
    from corpus.kernelsynth import KernelSynthConfig
    from training.config import PretrainConfig

    assert KernelSynthConfig.model_config.get("frozen") and PretrainConfig.model_config.get("frozen")
    assert not BlastConfig.model_config.get("frozen") and BlastConfig.model_config.get("validate_assignment")
