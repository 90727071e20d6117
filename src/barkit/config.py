"""Typed stage configs: one dataclass per stage, loaded from YAML, overridden from the CLI, validated on load.

CLI flags are derived from the dataclass fields (see `add_config_args`), so flags and config cannot drift.
Precedence, lowest first: dataclass defaults < YAML file < explicit `--flag` < `--set dotted.key=value`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from barkit.errors import BarkitError


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for `X | None`."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field type, or raise a BarkitError naming the key."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise BarkitError(f"config key '{key}': a value is required")
    origin = get_origin(inner)
    if origin is Literal:
        choices = get_args(inner)
        if value not in choices:
            raise BarkitError(f"config key '{key}': {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise BarkitError(f"config key '{key}': expected a mapping, got {value!r}")
        return _build(inner, value, prefix=f"{key}.")
    if origin in (list, tuple):
        (item_tp, *_) = get_args(inner) or (str,)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            value = [p.strip() for v in value for p in v.split(",") if p.strip()]
        if not isinstance(value, (list, tuple)):
            raise BarkitError(f"config key '{key}': expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise BarkitError(f"config key '{key}': expected a mapping, got {value!r}")
        return dict(value)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise BarkitError(f"config key '{key}': expected true/false, got {value!r}")
    if inner in (int, float):
        if isinstance(value, bool):
            raise BarkitError(f"config key '{key}': expected a number, got {value!r}")
        try:
            number = inner(value) if inner is float else int(str(value), 0) if isinstance(value, str) else value
        except (TypeError, ValueError):
            raise BarkitError(f"config key '{key}': expected {inner.__name__}, got {value!r}") from None
        if inner is int and (not isinstance(number, int) or isinstance(number, float)):
            raise BarkitError(f"config key '{key}': expected an integer, got {value!r}")
        return number
    if inner is str:
        if isinstance(value, (dict, list)):
            raise BarkitError(f"config key '{key}': expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BarkitError(f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise BarkitError(f"config key '{prefix}{missing[0]}': a value is required")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


def build_section(cls: type, data: Any, prefix: str = "") -> Any:
    """Build and validate a config dataclass from a mapping; errors name keys under `prefix`."""
    if not isinstance(data, dict):
        raise BarkitError(f"config key '{prefix.rstrip('.')}': expected a mapping, got {data!r}")
    return _build(cls, data, prefix)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BarkitError(f"--set {dotted}: '{part}' is not a section")
    node[parts[-1]] = value


def parse_set(item: str) -> tuple[str, Any]:
    """Parse `dotted.key=value`; the value is read as YAML so numbers, lists and booleans work."""
    if "=" not in item:
        raise BarkitError(f"--set {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BarkitError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BarkitError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BarkitError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _merged(base: dict, top: dict) -> dict:
    """`top` over `base`, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _recipe_stage(cls: type, data: dict, values: dict, sets: list[tuple[str, Any]], where: str) -> dict:
    """A recipe file holds settings shared by every stage and a `stages:` section per stage; the stage being
    run (from --stage, --set, the file, or the config's default) picks its section, which wins over the
    shared settings (explicit flags win over both)."""
    stages = data.pop("stages")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(stages, dict) or "stage" not in fields:
        raise BarkitError(f"{where}: 'stages' must map stage names to settings, for a command that runs a stage")
    default = fields["stage"].default if fields["stage"].default is not dataclasses.MISSING else None
    stage = dict(sets).get("stage", values.get("stage", data.get("stage", default)))
    unknown = sorted(set(stages) - set(typing.get_args(typing.get_type_hints(cls)["stage"])))
    if unknown:
        raise BarkitError(f"{where}: unknown stage '{unknown[0]}' under 'stages'")
    return _merged(data, stages.get(stage) or {})


def load_config(cls: type, yaml_path: str | Path | None = None, values: dict | None = None,
                overrides: list[str] | None = None) -> Any:
    """Build and validate `cls` from a YAML file (or a recipe file: shared settings plus `stages:`), then
    explicit values, then `dotted.key=value` overrides."""
    data: dict = load_yaml(yaml_path) if yaml_path else {}
    sets = [parse_set(item) for item in overrides or []]
    if "stages" in data:
        data = _recipe_stage(cls, data, values or {}, sets, str(yaml_path))
    for key, value in (values or {}).items():
        _set_dotted(data, key, value)
    for key, value in sets:
        _set_dotted(data, key, value)
    return _build(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


_FLAG_SUFFIX = "__flag"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field_args(parser, cls: type, prefix: str, positional: tuple[str, ...]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):  # a section: its fields as --section.field, grouped in --help
            title = (inner.__doc__ or "").strip().splitlines()[0] if inner.__doc__ else ""
            group = parser.add_argument_group(f"{prefix}{f.name}", title.replace("%", "%%"))
            _add_field_args(group, inner, f"{prefix}{f.name}.", ())
            continue
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse %-formats help strings
        if get_origin(inner) is Literal:
            help_text += f" (one of {', '.join(map(str, get_args(inner)))})"
        if get_origin(inner) is dict or inner is dict:
            parser.add_argument(_flag(prefix + f.name), dest=f"{prefix}{f.name}", default=None, type=yaml_value,
                                metavar="YAML", help=help_text)
            continue
        nargs = "+" if get_origin(inner) in (list, tuple) else None
        if inner is bool and f.name not in positional:  # `--flag` alone means true; `--flag true|false` as well
            parser.add_argument(_flag(prefix + f.name), dest=f"{prefix}{f.name}", default=None, nargs="?",
                                const="true", metavar="true|false", help=help_text)
            continue
        if f.name in positional:  # positional, and also accepted as --flag
            parser.add_argument(f.name, nargs="?", default=None, help=help_text)
            parser.add_argument(_flag(f.name), dest=f"{f.name}{_FLAG_SUFFIX}", default=None, help=argparse.SUPPRESS)
        else:
            parser.add_argument(_flag(prefix + f.name), dest=f"{prefix}{f.name}", default=None, nargs=nargs,
                                metavar=f.name.upper(), help=help_text)


def bool_value(text: str) -> bool:
    """A boolean command-line value, written as config booleans are: true/false (or 1/0, yes/no).

    >>> bool_value("True"), bool_value("no")
    (True, False)
    """
    if text.lower() not in ("true", "1", "yes", "false", "0", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


def add_bool_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    """A boolean option of a command that is not a config run, in the config options' form: `--flag` alone
    or `--flag true|false`."""
    parser.add_argument(flag, nargs="?", const=True, default=False, type=bool_value, metavar="true|false",
                        help=help_text)


def yaml_value(text: str) -> Any:
    return parse_set(f"value={text}")[1]


def add_config_args(parser: argparse.ArgumentParser, cls: type, positional: tuple[str, ...] = ()) -> None:
    """Add one CLI option per config field (sections as `--section.field`, grouped in `--help`), plus
    `config`, `--set` and `--dry-run`.

    Defaults are left as None so that only flags the user actually gave override the YAML file.
    """
    _add_field_args(parser, cls, "", positional)
    parser.add_argument("--config", dest="config_file", default=None, help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _field_names(cls: type, prefix: str = "") -> set[str]:
    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            names |= _field_names(inner, f"{prefix}{f.name}.")
        else:
            names.add(f"{prefix}{f.name}")
    return names


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Resolve a config from parsed CLI args built by `add_config_args`."""
    names = _field_names(cls)
    given = vars(args)
    values = {k: v for k, v in given.items() if k in names and v is not None}
    for name in names:
        flagged = given.get(f"{name}{_FLAG_SUFFIX}")
        if flagged is not None:
            if name in values and values[name] != flagged:
                raise BarkitError(f"config key '{name}': given twice ({values[name]!r} and {flagged!r})")
            values[name] = flagged
    return load_config(cls, args.config_file, values, args.overrides)
