"""YAML -> typed dataclasses. Unknown keys and wrong types are errors naming the file and key.

Usage: `cfg = load_config(path, MyConfig, ["a.b=3"])`. Nested dataclasses map to nested YAML mappings;
`key=value` overrides use dotted keys and YAML syntax for values.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from data.errors import ConfigError


def load_config(path, cls, overrides: list[str] | tuple[str, ...] = ()):
    """Read YAML `path` (or start from defaults when None), apply overrides, build `cls`."""
    raw = {} if path is None else read_yaml(path)
    apply_overrides(raw, overrides)
    return build(cls, raw, "<defaults>" if path is None else str(path))


def read_yaml(path) -> dict:
    """The top-level mapping of a YAML file, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config file not found", path=p, fix="pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {_yaml_problem(e)}", path=p, fix="correct the YAML syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError("top level must be a mapping of keys to values", path=p)
    return raw


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message folded to one line, with the positions it names."""
    def at(mark):
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    text = f"{problem}{at(getattr(err, 'problem_mark', None))}"
    context = getattr(err, "context", None)
    if context:
        text = f"{context}{at(getattr(err, 'context_mark', None))}: {text}"
    return text


def apply_overrides(raw: dict, overrides) -> dict:
    """Apply dotted `key=value` overrides (YAML values) to `raw` in place."""
    for item in overrides:
        _apply_override(raw, item)
    return raw


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value", fix="write overrides as section.key=value")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value != "" else ""


def build(cls, raw: dict, source: str = "<dict>", prefix: str = ""):
    """Construct dataclass `cls` from mapping `raw`, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {type(raw).__name__}",
                          path=source, field=prefix.rstrip(".") or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; known: {sorted(fields)}", path=source,
                          field=prefix + unknown[0], fix="remove or correct the key")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, source, prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if e.path is None:  # raised by a __post_init__ check that does not know the file
            raise ConfigError(str(e), path=source) from None
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e), path=source, field=prefix.rstrip(".") or None) from None


def _coerce(tp, value, source: str, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"value {value!r} matches none of {tp}", path=source, field=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}", path=source, field=key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"expected {len(args)} items, got {len(value)}", path=source, field=key)
            return tuple(_coerce(a, v, source, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else typing.Any
        items = [_coerce(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", path=source, field=key)
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"must be one of {list(args)}, got {value!r}", path=source, field=key)
        return value
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"expected true/false, got {value!r}", path=source, field=key)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"expected a number, got {value!r}", path=source, field=key)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}", path=source, field=key)
    return value


def to_dict(cfg) -> dict:
    """The config as plain YAML-able data (for saving beside results)."""
    return dataclasses.asdict(cfg)
