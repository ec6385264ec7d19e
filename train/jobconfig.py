"""Frozen dataclass configs from YAML plus dotted ``key=value`` overrides (torchtune / minGPT style).

A preset is a YAML mapping whose keys mirror the dataclass fields; nested dataclasses are nested
mappings. Command-line overrides address any field by its dotted path, and their values are parsed
with ``yaml.safe_load`` (``lr=3e-4``, ``model.family=cnn``, ``scaling.resources_per_worker={CPU: 2}``).
Overrides merge into the file's mappings; a mapping-valued field that is given (in the file or an
override) replaces that field's default as a whole. YAML 1.1 traps are handled where they bite: a
float field accepts ``1e-3`` (which YAML reads as a string). Don't name a key ``on``/``off``/``yes``.
Every problem (unknown key, wrong type, missing value, invalid value) is collected and raised as ONE
``ConfigError``, so a user fixes a bad config in one go instead of one error per run.

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Optim:
...     lr: float = 1e-3  # peak learning rate
...     warmup: int = 100  # steps
>>> @dataclass(frozen=True)
... class Job:
...     name: str = "tiny"
...     optim: Optim = field(default_factory=Optim)
>>> cfg = from_dict(Job, {"optim": {"warmup": 10}}, overrides=["optim.lr=3e-4"])
>>> cfg.optim
Optim(lr=0.0003, warmup=10)
>>> from_dict(Job, {"nmae": "x", "optim": {"lr": "fast"}})
Traceback (most recent call last):
    ...
train.jobconfig.ConfigError: 2 problems in config:
  - nmae: unknown key (did you mean 'name'?)
  - optim.lr: expected float, got str 'fast'
"""

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "from_dict", "load_config", "parse_overrides", "to_dict", "dump_yaml"]

_MISSING = object()


class ConfigError(ValueError):
    """One or more problems in a config; ``problems`` lists each as ``"dotted.key: what is wrong"``."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" {source}" if source else ""
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} {noun} in config{where}:\n{lines}")


def parse_overrides(overrides: Iterable[str]) -> tuple[dict, list[str]]:
    """``["a.b=1", "c=x"]`` -> (``{"a": {"b": 1}, "c": "x"}``, problems)."""
    import yaml

    tree: dict = {}
    problems: list[str] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{item!r}: an override is dotted.key=value")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            problems.append(f"{key}: value {text!r} is not valid YAML ({str(e).splitlines()[0]})")
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return tree, problems


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _coerce(tp, value, path: str, problems: list[str]):
    """``value`` checked (and mildly converted) against annotation ``tp``; problems appended."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            trial: list[str] = []
            out = _coerce(option, value, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {_type_name(tp)}, got {_describe(value)}")
        return value
    if origin is typing.Literal:
        if value not in args:
            problems.append(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a mapping of {tp.__name__} fields, got {_describe(value)}")
            return value
        return _build(tp, value, path, problems)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {_describe(value)}")
            return value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                problems.append(f"{path}: expected {len(args)} items, got {len(value)}")
                return value
            items = [_coerce(a, v, f"{path}[{i}]", problems) for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(item_tp, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a mapping, got {_describe(value)}")
            return value
        key_tp, val_tp = args if args else (Any, Any)
        return {_coerce(key_tp, k, f"{path}.{k}", problems): _coerce(val_tp, v, f"{path}.{k}", problems)
                for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{path}: expected bool (true/false), got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{path}: expected int, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool):
            problems.append(f"{path}: expected float, got {_describe(value)}")
            return value
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                out = float(value)
            except ValueError:
                problems.append(f"{path}: expected float, got {_describe(value)}")
                return value
            if math.isfinite(out):
                return out
            problems.append(f"{path}: expected a finite float, got {value!r}")
            return value
        if not isinstance(value, float):
            problems.append(f"{path}: expected float, got {_describe(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{path}: expected str, got {_describe(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        problems.append(f"{path}: expected {tp.__name__}, got {_describe(value)}")
    return value


def _build(cls, data: Mapping, prefix: str, problems: list[str]):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix_dot = f"{prefix}." if prefix else ""
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            problems.append(f"{prefix_dot}{key}: unknown key{hint}")
    kwargs = {}
    before = len(problems)
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], prefix_dot + name, problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix_dot}{name}: required, no default")
    if len(problems) > before:
        return _MISSING
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # the dataclass's own __post_init__ checks
        problems.append(f"{prefix or cls.__name__}: {e}")
        return _MISSING


def from_dict(cls, data: Mapping | None, overrides: Iterable[str] = (), *, source: str | None = None):
    """An instance of dataclass ``cls`` from a (YAML-like) mapping plus dotted overrides."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"top level: expected a mapping, got {_describe(data)}"], source)
    tree, override_problems = parse_overrides(overrides)
    problems.extend(override_problems)
    cfg = _build(cls, _merge(dict(data), tree), "", problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(cls, path: str | Path | None = None, overrides: Iterable[str] = ()):
    """Load ``cls`` from the YAML file at ``path`` (or only defaults if None) plus dotted overrides."""
    import yaml

    data: Any = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError([f"cannot read the config file: {e.strerror or e}"], source) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError([f"not valid YAML: {e}"], source) from None
    return from_dict(cls, data, overrides, source=source)


def to_dict(cfg) -> dict:
    """Plain (JSON/YAML-safe) dict of a config; tuples become lists."""

    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_yaml(cfg) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
