"""Typed configs: dataclass defaults, then YAML, then CLI flags; unknown or mistyped keys fail.

Every method has one dataclass whose fields are declared with `option(default, "help")`;
the help text lives only there and feeds both `--help` listings and the saved config.

    cfg = load_config(TrainConfig, "train.yaml", ["--learning-rate", "1e-4", "--kl-coef=0"])

Nested dataclasses are addressed with dots: `--score.k 5` or `score: {k: 5}` in YAML.
Flag names accept dashes or underscores.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from ehrjudge.errors import ConfigError


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None):
    """A config field with its one-line documentation."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help})
    if dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: dataclasses.replace(value), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


class BareFlag(str):
    """The value of a flag given without one (`--flag`, `--no-flag`): only a true/false setting may take it."""


def _takes_bool(tp) -> bool:
    return tp is bool or tp is Any or any(_takes_bool(arg) for arg in get_args(tp))


def _coerce(tp, value, key: str):
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(value, BareFlag) and not _takes_bool(tp):
        raise ConfigError(f"--{key.replace('_', '-')} was given without a value")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if origin is Literal:
        for choice in args:
            if value == choice or str(value) == str(choice):
                return choice
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return config_from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    raise ConfigError(f"{key}: unsupported config type {tp}")


def config_from_dict(cls, data: dict, prefix: str = ""):
    """Build `cls` from a (possibly partial) mapping; unknown keys raise ConfigError."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for raw_key, value in (data or {}).items():
        key = str(raw_key).replace("-", "_")
        if key not in names:
            close = [n for n in names if n.startswith(key[:4])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"unknown config key {prefix + str(raw_key)!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            # A partial nested mapping overrides the field's own default instance, not the class defaults.
            value = merge(to_dict(_field_default(cls, key)), value)
        kwargs[key] = _coerce(tp, value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def _field_default(cls, name: str):
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    if f.default is not dataclasses.MISSING:
        return f.default
    return {}


def to_dict(cfg) -> dict:
    """Plain, YAML-safe dict of a config (Paths and tuples become strings and lists)."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(cfg)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in update.items():
        key = str(key).replace("-", "_")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_flags(args: list[str]) -> dict:
    """Turn ['--a.b', '1', '--c=x', '--flag', '--no-other'] into a nested override dict."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: settings are given as --key value")
        body = arg[2:]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, value = body, args[i + 1]
            i += 1
        elif body.startswith("no-"):
            key, value = body[3:], BareFlag("false")
        else:
            key, value = body, BareFlag("true")
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        i += 1
    return out


def load_config(cls, path: str | Path | None = None, flags: list[str] | dict | None = None, base: dict | None = None):
    """Defaults, then `base` (e.g. a profile), then the YAML file, then CLI flags."""
    data = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        data = merge(data, loaded)
    from_file = data
    if flags:
        data = merge(data, parse_flags(flags) if isinstance(flags, list) else flags)
    try:
        return config_from_dict(cls, data)
    except ConfigError as exc:
        if path is not None and _fails_the_same(cls, from_file, exc):
            raise ConfigError(f"{path}: {exc}") from exc  # the YAML file holds the bad setting
        raise


def _fails_the_same(cls, data: dict, error: ConfigError) -> bool:
    try:
        config_from_dict(cls, data)
    except ConfigError as exc:
        return str(exc) == str(error)
    return False


def save_config(cfg, path) -> None:
    from ehrjudge.io import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls, prefix: str = "", defaults=None) -> str:
    """One line per field: flag, type, default and help (used for `--help` listings).

    `defaults` is the instance whose values are the defaults shown (a nested field's own default instance)."""
    lines = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else _field_default(cls, f.name)
        if dataclasses.is_dataclass(tp):
            lines.append(f"{prefix}{f.name}: {f.metadata.get('help', '')}")
            lines.append(describe(tp, prefix=f"{prefix}{f.name}.", defaults=default))
            continue
        name = f"--{prefix}{f.name}".replace("_", "-")
        lines.append(f"  {name} ({type_name(tp)}, default {default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)


def type_name(tp) -> str:
    """A setting's type as --help shows it: a Literal lists its choices ({a,b,c}), a list its item type."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "{" + ",".join(str(choice) for choice in args) + "}"
    if origin in (Union, types.UnionType):
        return " | ".join("None" if arg is type(None) else type_name(arg) for arg in args)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))
