"""Parsed JSON checked against TypedDicts, key by key: what benchmark.record uses to refuse
a record that does not have its declared shape, with the path of what is wrong."""

import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict


class RecordError(ValueError):
    """A record that cannot be read as the current shape; the message says where."""


def check(value: Any, hint: Any, path: str = "record") -> None:
    """Raise RecordError, naming the key, where `value` (parsed JSON) does not have the
    type `hint`: TypedDicts exactly (no key missing, none unknown), lists, dicts with
    string keys, unions, literals and JSON's scalars (an integer stands for a float)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return
    if is_typeddict(hint):
        _check_typeddict(value, hint, path)
    elif origin in (Union, types.UnionType):
        errors = []
        for alternative in args:
            try:
                check(value, alternative, path)
                return
            except RecordError as exc:
                errors.append(exc)
        # The alternative that got furthest says best what is wrong.
        raise max(errors, key=lambda e: str(e).split(":")[0].count("."))
    elif origin is Literal:
        if value not in args:
            raise RecordError(f"{path}: {value!r} is not one of {list(args)}")
    elif origin is list:
        _expect(isinstance(value, list), value, "a list", path)
        for i, item in enumerate(value):
            check(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        _expect(isinstance(value, dict), value, "an object", path)
        for key, item in value.items():
            _expect(isinstance(key, str), key, "a string key", path)
            check(item, args[1], f"{path}.{key}")
    elif hint is float:
        _expect(
            isinstance(value, int | float) and not isinstance(value, bool), value, "a number", path
        )
    elif hint is int:
        _expect(isinstance(value, int) and not isinstance(value, bool), value, "an integer", path)
    elif hint in (str, bool):
        _expect(isinstance(value, hint), value, f"a {hint.__name__}", path)
    elif hint is type(None):
        _expect(value is None, value, "null", path)
    else:
        raise TypeError(f"{path}: record.check cannot check {hint!r}")


def _check_typeddict(value: Any, hint: Any, path: str) -> None:
    _expect(isinstance(value, dict), value, f"an object ({hint.__name__})", path)
    fields = get_type_hints(hint)
    missing = sorted(hint.__required_keys__ - value.keys())
    if missing:
        raise RecordError(f"{path}: missing {missing} ({hint.__name__})")
    unknown = sorted(value.keys() - fields.keys())
    if unknown:
        raise RecordError(
            f"{path}: unknown {unknown} ({hint.__name__} in benchmark/benchmark/record.py "
            "declares every key)"
        )
    for key, item in value.items():
        check(item, fields[key], f"{path}.{key}")


def _expect(ok: bool, value: Any, what: str, path: str) -> None:
    if not ok:
        raise RecordError(f"{path}: {value!r:.60} is not {what}")
