"""A whole experiment in one file: which task, which model, how to train.

The model section is a preset plus field overrides, or every field under a ``type``
(``transformer``, ``gpt``, ``bert``, ``t5``: a family's name in :mod:`taa.registry`).
The data section is the config class the task's registry entry names.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from taa import registry
from taa.config.coerce import ConfigError, _coerce, _qualify, from_dict, merge, parse_overrides, read_mapping, to_dict
from taa.config.presets import PRESETS, preset
from taa.config.tasks import CopyTaskConfig
from taa.config.training import TrainConfig


def model_type(config: Any) -> str:
    """The ``type`` name of a model config (``gpt`` for a :class:`GPTConfig`)."""
    return registry.family_of_config(config).name


def model_config_to_dict(config: Any) -> dict[str, Any]:
    """A model config as a section ``model_config_from_dict`` reads back: its ``type`` and every field."""
    return {"type": model_type(config), **to_dict(config)}


def model_config_from_dict(data: dict[str, Any], prefix: str = "model") -> Any:
    """A model section: ``preset: NAME`` plus field overrides, or every field spelled out.

    ``type: gpt|bert|...`` (a family's name) picks the config class of a section without
    a preset (default ``transformer``); beside a preset it must agree.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'the model section'} should be a mapping of fields, got {data!r}")
    data = dict(data)
    name = data.pop("preset", None)
    kind = data.pop("type", None)
    known_types = [family.name for family in registry.families()]
    if kind is not None and kind not in known_types:
        raise ConfigError(f"{_qualify(prefix, 'type')}={kind!r} is not one of {', '.join(map(repr, known_types))}")
    if name is None:
        return from_dict(registry.family(kind or "transformer").config, data, prefix=prefix)
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"{_qualify(prefix, 'preset')}={name!r} is unknown (known: {', '.join(sorted(PRESETS))})")
    cls, fields = PRESETS[name]
    if kind is not None and registry.family(kind).config is not cls:
        raise ConfigError(f"{_qualify(prefix, 'type')}={kind!r} does not match preset {name!r} ({cls.__name__})")
    return from_dict(cls, {**fields, **data}, prefix=prefix)


@dataclass
class RecipeConfig:
    """A whole experiment: which task, which model, how to train (one YAML file)."""

    task: str = "copy"
    model: Any = field(default_factory=lambda: preset("copy-task"))
    train: TrainConfig = field(default_factory=TrainConfig)
    data: Any = field(default_factory=CopyTaskConfig)
    name: str = ""  # a label for the run

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecipeConfig:
        data = dict(data)
        unknown = sorted(set(data) - {"task", "model", "train", "data", "name"})
        if unknown:
            raise ConfigError(f"unknown field {', '.join(unknown)} (known: data, model, name, task, train)")
        task = data.get("task", "copy")
        known_tasks = [spec.name for spec in registry.tasks()]
        if task not in known_tasks:
            raise ConfigError(f"task={task!r} is not one of {', '.join(repr(t) for t in known_tasks)}")
        return cls(
            task=task,
            model=model_config_from_dict(data.get("model", {"preset": "copy-task"})),
            train=from_dict(TrainConfig, data.get("train", {}), prefix="train"),
            data=from_dict(registry.task(task).data_config, data.get("data", {}), prefix="data"),
            name=_coerce(data.get("name", ""), str, "name"),
        )

    @classmethod
    def load(cls, path: str | Path, overrides: typing.Iterable[str] = ()) -> RecipeConfig:
        """Read a recipe file and apply ``--set key=value`` overrides; an error names the file,
        or the ``--set`` that brought the bad value (see :meth:`from_mapping`)."""
        return cls.from_mapping(read_mapping(path), overrides, source=path)  # (its errors name the file)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], overrides: typing.Iterable[str] = (),
                     source: str | Path = "the recipe") -> RecipeConfig:
        """The recipe ``data`` read from ``source`` (a file) with ``--set key=value`` overrides.

        An error names ``source``, or the ``--set`` that brought the bad value
        (``--set train.steps=abc: train.steps='abc' should be an integer``): a person who
        typed a bad value on the command line looks for it there, not in the file.
        """
        overrides = tuple(overrides)
        changes = parse_overrides(overrides)  # (its errors name the --set)
        for section in ("model", "train", "data"):
            if section in changes and not isinstance(changes[section], dict):
                raise ConfigError(f"--set {section}={changes[section]!r}: a section takes a mapping of fields "
                                  f"({section}.FIELD=VALUE, or {section}={{FIELD: VALUE}})")
        try:
            return cls.from_dict(merge(data, changes))
        except ConfigError as error:
            raise ConfigError(f"{cls._blame(source, data, overrides, str(error))}: {error}") from None

    @classmethod
    def _blame(cls, source: str | Path, data: dict[str, Any], overrides: tuple[str, ...], message: str) -> str:
        """Where the error ``message`` of recipe ``data`` with ``overrides`` comes from:
        ``source`` when it has that error without them; else the first ``--set`` after which
        it appears; else ``source`` with its overrides together. (Traced only for an error,
        by building the recipe again with fewer overrides.)
        """

        def error_with(pairs: tuple[str, ...]) -> Optional[str]:
            try:
                cls.from_dict(merge(data, parse_overrides(pairs)))
            except ConfigError as error:
                return str(error)
            return None

        if error_with(()) == message:
            return str(source)
        for count in range(1, len(overrides) + 1):
            if error_with(overrides[:count]) == message:
                return f"--set {overrides[count - 1]}"
        return f"{source} with its --set overrides"

    def to_mapping(self) -> dict[str, Any]:
        """What :func:`~taa.config.dumps` writes: every field, the model section with its ``type``."""
        return {**to_dict(self), "model": model_config_to_dict(self.model)}
