"""Field types: inferred on first write, enforced after, and how each is stored in SQLite.

Scalars live in native columns (so views filter and sort them in SQL); lists, dicts and labels are JSON
text (queried with SQLite's JSON functions); arrays are ``.npy`` bytes, read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any, Iterable

import numpy as np

from .labels import LABEL_TYPES, Label, label_from_dict
from .errors import InvalidInputError, WrongTypeError

SCALAR_TYPES = ("bool", "int", "float", "str")
JSON_TYPES = ("list", "dict")
LABEL_TYPE_NAMES = tuple(LABEL_TYPES)
FIELD_TYPES = SCALAR_TYPES + JSON_TYPES + ("array",) + LABEL_TYPE_NAMES

# Fields every sample has; users cannot create, delete or retype them.
BUILTIN_FIELDS = {"id": "str", "filepath": "str", "tags": "list", "metadata": "dict"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# keys inside a dict field may also start with a digit: class names such as "7" ("prototype_scores.7")
_KEY = re.compile(r"[A-Za-z0-9_]+")


def check_name(name: str) -> str:
    """Field names become SQL identifiers and JSON paths, so only plain identifiers are allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"invalid field name {name!r}: use letters, digits and '_', starting with a letter")
    return name


def check_key(key: str) -> str:
    """A key inside a dict or label field: letters, digits and '_' (it goes into a quoted JSON path)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise InvalidInputError(f"invalid key {key!r}: use letters, digits and '_'")
    return key


def sql_type(ftype: str) -> str:
    return {"bool": "INTEGER", "int": "INTEGER", "float": "REAL", "str": "TEXT", "array": "BLOB"}.get(ftype, "TEXT")


def infer_type(value: Any) -> str | None:
    """The field type a value implies, or None for None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Label):
        return value._cls
    if isinstance(value, np.ndarray):
        return "array"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    raise WrongTypeError(f"unsupported field value of type {type(value).__name__}: {value!r:.60}")


def infer_field_type(values: Iterable[Any], name: str) -> str | None:
    """The type of a new field from its values: the first non-None decides, except that ints widen to
    float when floats follow. Other conflicts are caught by the field's encoder, naming the sample."""
    values = list(values)
    ftype = next((infer_type(v) for v in values if v is not None), None)
    if ftype == "int" and any(isinstance(v, (float, np.floating)) for v in values):
        return "float"
    return ftype


def encoder(ftype: str, name: str):
    """A function mapping a Python value to its stored form, raising a clear error on a type conflict."""

    def fail(v: Any) -> None:
        raise WrongTypeError(f"field {name!r} has type {ftype}; cannot store {type(v).__name__} value {v!r:.60}")

    if ftype == "bool":
        def enc(v):
            if v is None:
                return None
            if isinstance(v, (bool, np.bool_)):
                return int(v)
            fail(v)
    elif ftype == "int":
        def enc(v):
            if v is None:
                return None
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                return int(v)
            fail(v)
    elif ftype == "float":
        def enc(v):
            if v is None:
                return None
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                f = float(v)
                return None if math.isnan(f) else f
            fail(v)
    elif ftype == "str":
        def enc(v):
            if v is None or isinstance(v, str):
                return v
            fail(v)
    elif ftype in JSON_TYPES:
        want = (list, tuple) if ftype == "list" else dict

        def enc(v):
            if v is None:
                return None
            if isinstance(v, np.ndarray) and ftype == "list":
                v = v.tolist()
            if isinstance(v, want):
                return dumps(v) if v else ("[]" if ftype == "list" else "{}")
            fail(v)
    elif ftype == "array":
        def enc(v):
            if v is None:
                return None
            if isinstance(v, np.ndarray) and v.dtype != object:
                buf = io.BytesIO()
                np.save(buf, v, allow_pickle=False)
                return buf.getvalue()
            fail(v)
    elif ftype in LABEL_TYPES:
        cls = LABEL_TYPES[ftype]

        def enc(v):
            if v is None:
                return None
            if type(v) is cls:
                return dumps(v.to_dict())
            fail(v)
    else:
        raise InvalidInputError(f"unknown field type {ftype!r}")
    return enc


def decoder(ftype: str):
    """The inverse of :func:`encoder`."""
    if ftype == "bool":
        return lambda v: None if v is None else bool(v)
    if ftype in JSON_TYPES:
        return lambda v: None if v is None else json.loads(v)
    if ftype == "array":
        return lambda v: None if v is None else np.load(io.BytesIO(v), allow_pickle=False)
    if ftype in LABEL_TYPES:
        return lambda v: None if v is None else label_from_dict(json.loads(v))
    return lambda v: v


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Label):
        return o.to_dict()
    raise WrongTypeError(f"cannot store {type(o).__name__} as JSON")


# One encoder object: building one per call costs more than the encoding of a small label.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact JSON that refuses NaN (SQLite's JSON functions would reject it later)."""
    return _ENCODER.encode(obj)
