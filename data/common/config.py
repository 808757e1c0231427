"""Config files -> typed dataclasses, checked when they are built. One vocabulary for every stage:

- A config is a dataclass named `<Thing>Config` that subclasses `Config`. Its defaults live in the dataclass and
  nowhere else: the YAML files under configs/ set only what their job changes (`--print-config` shows the rest).
- Numeric ranges are declared on the field, `lr: float = setting(2e-3, gt=0)`; rules that tie several fields
  together go in `check(self)`, which raises ConfigError(field=...). Both run whenever a config is built (from
  YAML, from overrides, from code, or by `dataclasses.replace`), so a bad value is refused before any work.
- A class may have named presets (`Config.preset`): a mapping's missing keys then come from the preset it
  names instead of the dataclass defaults (`model: {name: lgi_tiny, depth: 3}` is lgi_tiny with depth 3).
- `load_config(path, cls, overrides)` reads YAML, applies `key=value` overrides (dotted keys, YAML values) and
  builds `cls`. Unknown keys and wrong types are errors naming the file and the dotted key, or the override when
  the bad value was typed on the command line. A section given in part keeps its default for the rest (the
  parent's default for that section, which may set other values than the section class does).
- Stages compose configs with typed values (`replace(cfg, {"data.root": path})` or `dataclasses.replace`),
  never by writing `key=value` strings for another parser.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path

import yaml

from data.common.errors import ConfigError

_BOUNDS = ("ge", "gt", "le", "lt")
_BOUND_TEXT = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def setting(default=dataclasses.MISSING, *, factory=dataclasses.MISSING, ge=None, gt=None, le=None, lt=None):
    """A config field with a default (or a default `factory` for lists) and an optional numeric range; a list or
    tuple value has the range checked on every element. None values are allowed when the type allows them."""
    bounds = {k: v for k, v in zip(_BOUNDS, (ge, gt, le, lt)) if v is not None}
    return dataclasses.field(default=default, default_factory=factory, metadata={"bounds": bounds})


def _out_of_range(value, bounds: dict) -> str | None:
    """The first violated bound as text ('must be > 0'), or None."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and math.isnan(v):
            return "must be a number, got nan"
        for name, limit in bounds.items():
            ok = {"ge": v >= limit, "gt": v > limit, "le": v <= limit, "lt": v < limit}[name]
            if not ok:
                return f"must be {_BOUND_TEXT[name]} {limit}, got {value!r}"
    return None


class Config:
    """Base of every config dataclass: checks declared ranges, then the class's own `check` rules."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            problem = _out_of_range(getattr(self, f.name), f.metadata.get("bounds", {}))
            if problem:
                raise ConfigError(problem, field=f.name, fix="see the field's comment in the config class")
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ConfigError(message, field=name). Override in subclasses."""

    @classmethod
    def preset(cls, raw: dict) -> "Config | None":
        """The config whose values the keys missing from mapping `raw` take when it is built (None: the
        dataclass defaults). A class with named presets picks one by a key of `raw`, e.g. ModelConfig by name."""
        return None


def load_config(path, cls, overrides: list[str] | tuple[str, ...] = ()):
    """Read YAML `path` (or start from defaults when None), apply overrides, build and check `cls`."""
    raw = {} if path is None else read_yaml(path)
    given = apply_overrides(raw, overrides)
    try:
        return build(cls, raw, "<defaults>" if path is None else str(path))
    except ConfigError as e:
        item = _override_of(e.field, given)
        if item is None:
            raise
        raise e.relocated(path=f"override {item!r}") from None


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


def apply_overrides(raw: dict, overrides) -> dict[str, str]:
    """Apply dotted `key=value` overrides (YAML values) to `raw` in place; returns {dotted key: override}."""
    given = {}
    for item in overrides:
        given[_apply_override(raw, item)] = item
    return given


def _apply_override(raw: dict, item: str) -> str:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value", fix="write overrides as section.key=value")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(e)})",
                          field=key.strip(), fix="quote strings, write lists as [a, b]") from None
    return key.strip()


def _override_of(field: str | None, given: dict[str, str]) -> str | None:
    """The override that set `field` (or a section above it), if any."""
    if not field:
        return None
    for key, item in given.items():
        if field == key or field.startswith((key + ".", key + "[")):
            return item
    return None


def build(cls, raw: dict, source: str = "<dict>", prefix: str = ""):
    """Construct dataclass `cls` from mapping `raw`, checking keys, types and ranges."""
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {type(raw).__name__}",
                          path=source, field=prefix.rstrip(".") or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {sorted(fields)}"
        raise ConfigError(f"unknown key(s) {unknown}", path=source, field=prefix + unknown[0],
                          fix=f"remove or correct the key; {hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], _over_default(fields[name], value), source, prefix + name)
              for name, value in raw.items()}
    try:
        base = cls.preset(raw) if issubclass(cls, Config) else None
        if base is not None:
            kwargs = {**{f: getattr(base, f) for f in fields}, **kwargs}
        return cls(**kwargs)
    except ConfigError as e:
        field = prefix + e.field if e.field else (prefix.rstrip(".") or None)
        raise e.relocated(path=e.path or source, field=field) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e), path=source, field=prefix.rstrip(".") or None) from None


def _over_default(f: dataclasses.Field, value):
    """A mapping given for a nested section, laid over that section's default in the parent (which may differ from
    the section class's own defaults, e.g. BaselineConfig.micro): a file that sets one key keeps the rest."""
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default) or _names_preset(type(default), value):
        return value
    return _overlay(default, value)


def _names_preset(cls, raw: dict) -> bool:
    """True when `raw` names a preset of `cls` (Config.preset): it then starts from that, not the parent's default.
    An unknown name counts as one, so building the section reports it where it stands."""
    if not issubclass(cls, Config):
        return False
    try:
        return cls.preset(raw) is not None
    except ConfigError:
        return True


def _overlay(default, raw: dict) -> dict:
    out = {f.name: getattr(default, f.name) for f in dataclasses.fields(default)}
    for key, value in raw.items():
        current = out.get(key)
        out[key] = _overlay(current, value) if isinstance(value, dict) and dataclasses.is_dataclass(current) else value
    return out


def _coerce(tp, value, source: str, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return build(tp, value, source, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError:
                continue
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


def replace(cfg, changes: dict):
    """A copy of config `cfg` with dotted-key changes, e.g. replace(loso, {"finetune.data.root": path}).

    Values are Python values (type-checked like YAML values, never parsed from text); the changed config and every
    section on the way are rebuilt, so their ranges and `check` rules run again.
    """
    nested: dict[str, dict] = {}
    direct = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if head not in {f.name for f in dataclasses.fields(cfg)}:
            raise ConfigError(f"unknown key {head!r} in {type(cfg).__name__}", field=key)
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    hints = typing.get_type_hints(type(cfg))
    for name, value in direct.items():
        direct[name] = _coerce(hints[name], value, f"<{type(cfg).__name__}>", name)
    for head, sub in nested.items():
        direct[head] = replace(direct.get(head, getattr(cfg, head)), sub)
    return dataclasses.replace(cfg, **direct)


def to_dict(cfg) -> dict:
    """The config as plain YAML-able data (for saving beside results)."""
    return dataclasses.asdict(cfg)
