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


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file; a file that is missing, a folder, unreadable or not UTF-8
    text is one line naming it."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_data(path: str | Path, format: Literal["json", "yaml", None] = None) -> Any:
    """The value a JSON or YAML file holds (``format`` None: JSON for a ``.json`` file, else
    YAML); a parse error names the file and line."""
    path = Path(path)
    text = read_text(path)
    if format is None:
        format = "json" if path.suffix == ".json" else "yaml"
    try:
        return json.loads(text) if format == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        if not text.strip():
            raise ConfigError(f"{path}: an empty file (expected JSON)") from None
        raise ConfigError(f"{path}, line {error.lineno}: {error.msg}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        raise ConfigError(f"{path}{where}: {problem}") from None


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict; a parse error names the file and line.

    An empty file (or one of comments only) is an error too: a recipe or a model
    description that says nothing would otherwise run as every default."""
    data = read_data(path)
    if data is None:
        raise ConfigError(f"{path}: an empty file (expected a mapping of fields)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields at the top level, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    """``a list``, ``a string``, ...: what a value read from a file is, for a message."""
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true or false"}
    return names.get(type(value), type(value).__name__)


def parse_overrides(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """``["model.d_model=256", "train.steps=10"]`` -> nested dict; values parsed as YAML.

    Later overrides win, field by field: a mapping (``train={steps: 5}``) merges into what
    earlier ones set in its section, so nothing set before is silently dropped, and a
    value that is not a mapping cannot replace a section that earlier ones filled
    (``--set train.steps=5 --set train=5``): that is one line naming both.
    """
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        names = key.split(".")
        if not all(name.strip() for name in names):
            raise ConfigError(f"--set {pair!r}: {key!r} has an empty field name")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        *parents, leaf = names
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {pair!r}: {'.'.join(names[:depth + 1])} was set to {node!r}, not a section")
        earlier = node.get(leaf)
        if isinstance(earlier, dict) and earlier and not isinstance(value, dict):
            fields = ", ".join(f"{key}.{name}" for name in earlier)
            raise ConfigError(f"--set {pair!r}: would replace what earlier --set gave {key} ({fields}); "
                              f"a section takes a mapping of fields")
        node[leaf] = merge(earlier, value) if isinstance(earlier, dict) and isinstance(value, dict) else value
    return nested


def merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``.

    Fields set inside a section (``train.steps``) need a section to go into: a ``base``
    value that is not a mapping there (``train: 5``) is an error naming it, never
    silently replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value, _qualify(prefix, key))
        elif isinstance(value, dict) and value and key in merged:
            raise ConfigError(f"{_qualify(prefix, key)}={merged[key]!r} is not a section, so "
                              f"{', '.join(_qualify(_qualify(prefix, key), k) for k in value)} cannot go into it")
        else:
            merged[key] = value
    return merged
