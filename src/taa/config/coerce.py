"""Coercion and validation: dataclasses from mappings and back, YAML/JSON files, ``--set`` overrides.

Every config is a dataclass whose annotations say what each field accepts. :func:`from_dict`
checks a mapping against them and builds the dataclass; a wrong type, an unknown field or a
value its validator refuses raises :class:`ConfigError` naming the dotted field, e.g.
``model.d_model=500 is not divisible by model.n_heads=8``. :func:`to_dict` is the inverse.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def _qualify(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation; build nested dataclasses from dicts."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r} has the wrong type")
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{where}={value!r} is not one of {allowed}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} should be a list")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        items = [_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} should be a mapping")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} should be a mapping of fields, got {value!r}")
        return from_dict(annotation, value, prefix=where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} should be true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} should be an integer")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}={value!r} should be a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} should be a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} should be a string")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values name the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} should be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        names = ", ".join(_qualify(prefix, k) for k in unknown)
        raise ConfigError(f"unknown field {names} (known: {', '.join(sorted(known))})")
    values = {name: _coerce(value, hints[name], _qualify(prefix, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except ConfigError as error:  # a validator names a bare field: put the section in front
        raise ConfigError(_prefix_fields(str(error), prefix)) from None


def _prefix_fields(message: str, prefix: str) -> str:
    """Validators name bare fields (``d_model=500 ...``); put the section in front."""
    if not prefix or message.startswith(prefix + "."):
        return message
    return f"{prefix}: {message}"


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (lists, not tuples) that ``from_dict`` turns back into ``config``."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def _check_types(config: Any) -> None:
    """Run the annotation checks on a dataclass made directly in Python."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if f.init:
            object.__setattr__(config, f.name, _coerce(getattr(config, f.name), hints[f.name], f.name))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def dumps(config: Any, format: Literal["yaml", "json"] = "yaml") -> str:
    """A config as YAML or JSON text.

    A config with a ``to_mapping()`` method writes what it returns: a recipe names its
    model section's ``type`` (gpt, bert, t5) that way, so the file reads back.
    """
    data = config.to_mapping() if hasattr(config, "to_mapping") else to_dict(config)
    return yaml.safe_dump(data, sort_keys=False) if format == "yaml" else json.dumps(data, indent=2) + "\n"


def save(config: Any, path: str | Path) -> None:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    path.write_text(dumps(config, "yaml" if path.suffix in (".yaml", ".yml") else "json"))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict; a parse error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}, line {error.lineno}: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level")
    return data


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """``["model.d_model=256", "train.steps=10"]`` -> nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {part} is not a section")
        node[leaf] = value
    return nested


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged
