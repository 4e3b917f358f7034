"""A small expression language that compiles to SQL: ``F("ground_truth.label") == "cat"``.

Expressions are trees of plain data (they serialise to JSON, so saved views and brain runs can store
them). Values always travel as SQL parameters; field names are validated identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .fields import dumps
from .errors import InvalidInputError, WrongTypeError

_COMPARE = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class ViewExpression:
    """A node of an expression tree. Build them with :class:`F` and Python operators."""

    def __init__(self, op: str, *args: Any) -> None:
        self.op = op
        self.args = args

    # comparisons
    def __eq__(self, other: Any) -> "ViewExpression":  # type: ignore[override]
        return ViewExpression("==", self, other)

    def __ne__(self, other: Any) -> "ViewExpression":  # type: ignore[override]
        return ViewExpression("!=", self, other)

    def __lt__(self, other: Any) -> "ViewExpression":
        return ViewExpression("<", self, other)

    def __le__(self, other: Any) -> "ViewExpression":
        return ViewExpression("<=", self, other)

    def __gt__(self, other: Any) -> "ViewExpression":
        return ViewExpression(">", self, other)

    def __ge__(self, other: Any) -> "ViewExpression":
        return ViewExpression(">=", self, other)

    # logic
    def __and__(self, other: Any) -> "ViewExpression":
        return ViewExpression("&", self, other)

    def __or__(self, other: Any) -> "ViewExpression":
        return ViewExpression("|", self, other)

    def __invert__(self) -> "ViewExpression":
        return ViewExpression("~", self)

    # arithmetic
    def __add__(self, other: Any) -> "ViewExpression":
        return ViewExpression("+", self, other)

    def __sub__(self, other: Any) -> "ViewExpression":
        return ViewExpression("-", self, other)

    def __mul__(self, other: Any) -> "ViewExpression":
        return ViewExpression("*", self, other)

    def __truediv__(self, other: Any) -> "ViewExpression":
        return ViewExpression("/", self, other)

    def __neg__(self) -> "ViewExpression":
        return ViewExpression("*", self, -1)

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        raise WrongTypeError("an expression has no truth value; combine expressions with &, | and ~")

    def is_in(self, values: Sequence[Any]) -> "ViewExpression":
        """True where the value is one of ``values``."""
        return ViewExpression("is_in", self, list(values))

    def contains(self, values: Any, all: bool = False) -> "ViewExpression":
        """True where a list contains ``values`` (one value, or any/all of a list of them)."""
        many = isinstance(values, (list, tuple, set))
        return ViewExpression("contains", self, list(values) if many else [values], bool(all))

    def length(self) -> "ViewExpression":
        """The number of items of a list (or characters of a string)."""
        return ViewExpression("length", self)

    def exists(self, bool: bool = True) -> "ViewExpression":
        """True where the value is set (not None); ``bool=False`` inverts."""
        return ViewExpression("exists", self, bool)

    def abs(self) -> "ViewExpression":
        return ViewExpression("abs", self)

    def to_dict(self) -> dict[str, Any]:
        return {"$op": self.op, "args": [to_dict(a) for a in self.args]}

    def __repr__(self) -> str:
        return f"ViewExpression({self.op}, {', '.join(map(repr, self.args))})"


class F(ViewExpression):
    """A field path, e.g. ``F("uniqueness")``, ``F("ground_truth.label")``, ``F("metadata.width")``."""

    def __init__(self, path: str) -> None:
        if not isinstance(path, str) or not path:
            raise InvalidInputError(f"F() takes a field path, got {path!r}")
        super().__init__("field", path)

    @property
    def path(self) -> str:
        return self.args[0]

    def to_dict(self) -> dict[str, Any]:
        return {"$field": self.path}

    def __repr__(self) -> str:
        return f"F({self.path!r})"


def to_dict(x: Any) -> Any:
    if isinstance(x, ViewExpression):
        return x.to_dict()
    if isinstance(x, np.generic):
        return x.item()
    return {"$lit": x} if isinstance(x, (dict, list)) else x


# Each operator's arguments after the first: what from_dict() checks in JSON from outside (a saved view,
# the app's POST /api/view), so a malformed tree is refused with its reason instead of failing later.
_ARITY = {**{op: 2 for op in (*_COMPARE, "&", "|", "+", "-", "*", "/", "exists", "is_in")},
          "~": 1, "abs": 1, "length": 1, "contains": 3}
_MAX_DEPTH = 64
INT64 = (-(1 << 63), (1 << 63) - 1)


def from_dict(d: Any, _depth: int = 0) -> Any:
    """Rebuild an expression (or literal) from :func:`to_dict` output, checking it as it goes.

    Raises
    ------
    InvalidInputError
        An unknown operator, a wrong number or type of arguments, a field path that is not a string, an
        integer outside SQLite's 64-bit range, or nesting deeper than 64 levels.
    """
    if _depth > _MAX_DEPTH:
        raise InvalidInputError(f"expression nested deeper than {_MAX_DEPTH} levels")
    if isinstance(d, dict):
        if "$field" in d:
            if not isinstance(d["$field"], str) or not d["$field"]:
                raise InvalidInputError(f"a field path must be a non-empty string, got {d['$field']!r:.60}")
            return F(d["$field"])
        if "$op" in d:
            op, args = d["$op"], d.get("args")
            if not isinstance(op, str) or op not in _ARITY:
                raise InvalidInputError(f"unknown expression operator {op!r:.40}; one of {', '.join(_ARITY)}")
            if not isinstance(args, list) or len(args) != _ARITY[op]:
                raise InvalidInputError(f"operator {op!r} takes {_ARITY[op]} arguments, got {args!r:.60}")
            args = [from_dict(a, _depth + 1) for a in args]
            _check_args(op, args)
            return ViewExpression(op, *args)
        if "$lit" in d:
            return _literal(d["$lit"], _depth)
        raise InvalidInputError(f"an expression object needs '$field', '$op' or '$lit', got keys {sorted(d)!r:.80}")
    return _literal(d, _depth)


def _literal(v: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise InvalidInputError(f"expression nested deeper than {_MAX_DEPTH} levels")
    if v is None or isinstance(v, (bool, str, float)):
        return v
    if isinstance(v, int):
        if not INT64[0] <= v <= INT64[1]:
            raise InvalidInputError(f"integer {v:.3g} is outside the 64-bit range SQLite stores")
        return v
    if isinstance(v, list):
        return [_literal(x, depth + 1) for x in v]
    if isinstance(v, dict):  # a JSON object as a value
        return {str(k): _literal(x, depth + 1) for k, x in v.items()}
    raise InvalidInputError(f"unsupported literal {v!r:.60}")


def _check_args(op: str, args: list) -> None:
    if op == "exists" and not isinstance(args[1], bool):
        raise InvalidInputError(f"exists() takes true or false, got {args[1]!r:.40}")
    if op in ("is_in", "contains") and not isinstance(args[1], list):
        raise InvalidInputError(f"{op}() takes a list of values, got {args[1]!r:.40}")
    if op == "contains" and not isinstance(args[2], bool):
        raise InvalidInputError(f"contains() takes all=true or false, got {args[2]!r:.40}")


# --------------------------------------------------------------------------------------------------
# compilation


@dataclass
class Ref:
    """What a field path resolves to in SQL.

    kind: "scalar" (a SQL value), "list" (JSON array text), "json" (JSON object text), or "each"
    (a value inside each element of a JSON array: ``array_sql``/``array_path`` locate the array,
    ``item_path`` the value inside an element, e.g. ``predictions.detections.label``).
    """

    kind: str
    sql: str = ""
    array_sql: str = ""
    array_path: str = ""
    item_path: str = ""


Resolver = Callable[[str], Ref]


def _lit(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int) and not INT64[0] <= v <= INT64[1]:
        raise InvalidInputError(f"integer {v:.3g} is outside the 64-bit range SQLite stores")
    if isinstance(v, (list, dict)):
        return dumps(v)
    return v


class Compiler:
    """Turns an expression into ``(sql, params)`` given a resolver for field paths."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve

    def __call__(self, expr: Any) -> tuple[str, list]:
        params: list = []
        sql = self._c(expr, params)
        return sql, params

    def _ref(self, x: Any) -> Ref | None:
        return self.resolve(x.path) if isinstance(x, F) else None

    def _value(self, x: Any, params: list) -> str:
        """SQL for an operand used as a single value."""
        if isinstance(x, ViewExpression):
            ref = self._ref(x)
            if ref is not None and ref.kind == "each":
                raise InvalidInputError(f"{x.path!r} holds one value per object; use .contains(...) or filter_labels()")
            return self._c(x, params)
        params.append(_lit(x))
        return "?"

    def _c(self, e: Any, params: list) -> str:
        if not isinstance(e, ViewExpression):
            params.append(_lit(e))
            return "?"
        op, args = e.op, e.args
        if op == "field":
            ref = self.resolve(args[0])
            if ref.kind == "each":
                raise InvalidInputError(f"{args[0]!r} holds one value per object; use .contains(...) or filter_labels()")
            return ref.sql
        if op in _COMPARE:
            a, b = args
            if b is None or a is None:
                if op not in ("==", "!="):
                    raise InvalidInputError("None can only be compared with == and !=")
                side = a if b is None else b
                return f"({self._value(side, params)} IS {'NOT ' if op == '!=' else ''}NULL)"
            left = self._value(a, params)
            right = self._value(b, params)
            return f"({left} {_COMPARE[op]} {right})"
        if op in ("&", "|"):
            left = self._c(args[0], params)
            right = self._c(args[1], params)
            return f"({left} {'AND' if op == '&' else 'OR'} {right})"
        if op == "~":
            # SQL's NOT NULL is NULL, which would drop samples whose field is missing; a user means "not true"
            return f"(NOT COALESCE({self._c(args[0], params)}, 0))"
        if op in ("+", "-", "*", "/"):
            left = self._value(args[0], params)
            right = self._value(args[1], params)
            if op == "/":
                return f"(CAST({left} AS REAL) / {right})"
            return f"({left} {op} {right})"
        if op == "abs":
            return f"abs({self._value(args[0], params)})"
        if op == "exists":
            sql = self._any_sql(args[0], params)
            return f"({sql} IS {'NOT ' if args[1] else ''}NULL)"
        if op == "is_in":
            ref = self._ref(args[0])
            if ref is not None and ref.kind == "each":
                params.append(dumps(list(args[1])))
                return (f"EXISTS (SELECT 1 FROM json_each({ref.array_sql}, '{ref.array_path}') AS _e "
                        f"WHERE json_extract(_e.value, '{ref.item_path}') IN (SELECT value FROM json_each(?)))")
            left = self._value(args[0], params)
            params.append(dumps([_lit(v) for v in args[1]]))
            return f"({left} IN (SELECT value FROM json_each(?)))"
        if op == "contains":
            target, values, all_ = args
            ref = self._ref(target)
            if ref is not None and ref.kind == "each":
                src = f"json_each({ref.array_sql}, '{ref.array_path}')"
                item = f"json_extract(_e.value, '{ref.item_path}')"
            else:
                if ref is not None and ref.kind not in ("list",):
                    raise InvalidInputError(f"contains() needs a list field; {target.path!r} is not a list")
                src = f"json_each({self._c(target, params)})"
                item = "_e.value"
            params.append(dumps([_lit(v) for v in values]))
            if all_:
                n = len(values)
                return (f"((SELECT count(DISTINCT {item}) FROM {src} AS _e "
                        f"WHERE {item} IN (SELECT value FROM json_each(?))) = {n})")
            return f"EXISTS (SELECT 1 FROM {src} AS _e WHERE {item} IN (SELECT value FROM json_each(?)))"
        if op == "length":
            ref = self._ref(args[0])
            if ref is not None:
                if ref.kind == "each":
                    raise InvalidInputError(f"length() of {args[0].path!r}: use the list path, e.g. 'field.detections'")
                if ref.kind == "list":
                    return f"json_array_length({ref.sql})"
                if ref.kind == "json":
                    raise InvalidInputError(f"length() needs a list or string; {args[0].path!r} is an object")
            return f"length({self._value(args[0], params)})"
        raise InvalidInputError(f"unknown expression operator {op!r}")

    def _any_sql(self, x: Any, params: list) -> str:
        ref = self._ref(x)
        if ref is not None and ref.kind == "each":
            raise InvalidInputError(f"exists() on {x.path!r}: test the list path instead")
        return self._c(x, params)
