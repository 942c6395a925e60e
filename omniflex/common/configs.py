"""Frozen dataclass configs <-> dicts and YAML: the unknown-key check and value coercion.

Every config of omniflex is a frozen dataclass that round-trips through a plain dict and YAML.
``check_fields`` refuses a mapping with keys the dataclass does not have (naming them and the
valid ones), so a typo in a recipe fails instead of being ignored. ``coerce_fields`` turns the
strings and numbers that YAML and ``key=value`` command lines give into each field's declared
type, or raises ``ValueError`` naming the field and the type it wants.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from omniflex.common.files import write_atomic

__all__ = [
    "check_fields",
    "coerce",
    "coerce_fields",
    "config_from_dict",
    "dump_yaml",
    "field_names",
    "load_yaml",
]

T = TypeVar("T")


def field_names(cls: type) -> list[str]:
    """The dataclass's field names, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def check_fields(
    cls: type, data: Any, *, source: str, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """``data`` if it is a mapping whose keys are all fields of ``cls``; else ``error`` naming
    ``source`` (the file or the kind of config) and, for unknown keys, the valid ones."""
    if not isinstance(data, dict):
        raise error(
            f"{source} must be a mapping of {cls.__name__} fields, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(field_names(cls)))
    if unknown:
        raise error(
            f"{source}: unknown {cls.__name__} fields {unknown}; valid keys are {field_names(cls)}"
        )
    return data


def config_from_dict(
    cls: type[T], data: Any, *, source: str, error: type[Exception] = ValueError
) -> T:
    """``cls(**data)`` after ``check_fields``."""
    return cls(**check_fields(cls, data, source=source, error=error))


def dump_yaml(data: dict[str, Any], path: str | os.PathLike[str] | None = None) -> str:
    """``data`` as YAML text in field order; also written (atomically) to ``path`` when given."""
    text = yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        write_atomic(path, text.encode())
    return text


def load_yaml(source: str | os.PathLike[str]) -> Any:
    """The YAML value of a file (a ``Path``, or a string ending in ``.yaml``/``.yml``) or of
    YAML text (any other string)."""
    is_path = isinstance(source, os.PathLike) or Path(str(source)).suffix in {".yaml", ".yml"}
    return yaml.safe_load(Path(source).read_text() if is_path else str(source))


# ------------------------------------------------------------------------------ coercion
_DESCRIPTIONS = {
    int: "an integer",
    float: "a finite number",
    bool: "true or false",
    str: "a string",
    dict: "a mapping",
}


def coerce_fields(config: Any) -> None:
    """Replace each field of the (frozen) dataclass instance ``config`` by ``coerce`` of its
    value to the field's annotation; errors name ``ClassName.field``."""
    cls = type(config)
    for name, annotation in _hints(cls).items():
        value = coerce(getattr(config, name), annotation, name=f"{cls.__name__}.{name}")
        object.__setattr__(config, name, value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = set(field_names(cls))
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def coerce(value: Any, annotation: Any, *, name: str) -> Any:
    """``value`` as ``annotation`` (int, float, bool, str, ``tuple[X, ...]``, ``dict[K, V]``,
    ``Literal[...]``, ``X | None``); strings are parsed (``"1e-3"``, ``"yes"``, ``"0.9,0.95"``).

    Raises ``ValueError("<name> must be <what it takes>, got <value>")``; ``TypeError`` for an
    annotation it cannot coerce to (a new field type needs a rule here).
    """
    try:
        return _coerce(value, annotation, name)
    except (TypeError, ValueError) as err:
        if str(err).startswith(f"{name} "):
            raise
        raise ValueError(f"{name} must be {_describe(annotation)}, got {value!r}") from None


def _coerce(value: Any, kind: Any, name: str) -> Any:
    origin, args = get_origin(kind), get_args(kind)
    if origin in (Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _coerce(value, kind, name)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise ValueError
        out = float(value)
        if not math.isfinite(out):
            raise ValueError
        return out
    if kind is bool:
        return _to_bool(value)
    if kind is str:
        if value is None:  # `key=` or `key:` in YAML: empty
            return ""
        if not isinstance(value, str):
            raise ValueError
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{name} must be one of {args}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        items = list(value)
        if args and args[-1] is not Ellipsis and len(items) != len(args):
            raise ValueError
        item_kinds = [args[0]] * len(items) if args[-1:] == (Ellipsis,) else args
        return tuple(_plain(v, k) for v, k in zip(items, item_kinds, strict=True))
    if origin is dict or kind is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError
        if not args or args[1] is Any:
            return dict(value)
        return {str(k): _plain(v, args[1]) for k, v in value.items()}
    raise TypeError(f"{name} has no coercion for field type {kind!r}")


def _plain(value: Any, kind: Any) -> Any:
    """An item of a tuple or dict: converted the way Python converts it (``float("0.9")``)."""
    return kind(value) if kind in (int, float, str) else value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0"):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError


def _describe(kind: Any) -> str:
    origin, args = get_origin(kind), get_args(kind)
    if origin is tuple and args == (float, float):
        return "two numbers, e.g. 0.9,0.95"
    if origin is tuple:
        return f"{len(args)} values separated by commas"
    if origin is dict:
        return "a mapping"
    return _DESCRIPTIONS.get(kind, str(kind))
