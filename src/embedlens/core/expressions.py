"""A small expression language that compiles to SQL: ``F("ground_truth.label") == "cat"``.

Expressions are trees of plain data (they serialise to JSON, so saved views and brain runs can store
them). Values always travel as SQL parameters; field names are validated identifiers.

The same tree runs in two places, with one meaning: compiled to SQL where it filters or reads a view
(``match``, ``sort_by``, ``filter_labels``, ``values(..., expr=...)``), and evaluated in Python on values
already loaded (:meth:`ViewExpression.evaluate`). As in FiftyOne, a path inside a label context
(``filter_labels``, ``apply``, ``values("ground_truth", expr=...)``) is relative to the label,
``F("$tags")`` reaches a field of the sample from there, ``detections[]`` names a list of labels, and
``None`` counts as false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .fields import check_name, dumps
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

    def if_else(self, true_expr: Any, false_expr: Any) -> "ViewExpression":
        """``true_expr`` where this expression is true, else ``false_expr`` (None counts as false).

        >>> F("$tags").contains("test").if_else(F("label"), "unlabeled")
        """
        return ViewExpression("if_else", self, true_expr, false_expr)

    def __getitem__(self, index: int) -> "ViewExpression":
        """Item ``index`` of a list (negative counts from the end), e.g. ``F("bounding_box")[2]``; None
        where the list is shorter."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise WrongTypeError(f"an expression is indexed by an integer, got {index!r:.40}")
        return ViewExpression("index", self, _index(int(index)))

    def __iter__(self):  # __getitem__ would otherwise make every expression look like an endless sequence
        raise WrongTypeError("an expression is not iterable")

    def apply(self, expr: "ViewExpression") -> "ViewExpression":
        """``expr`` evaluated with this value as its context: its paths are relative to this label, or,
        on a list of labels (``F("ground_truth.detections[]")``), to each label in turn (a list out).

        >>> bbox_area = F("bounding_box")[2] * F("bounding_box")[3]
        >>> ds.values(F("ground_truth.detections[]").apply(bbox_area))    # one list of areas per sample
        """
        if not isinstance(expr, ViewExpression):
            raise WrongTypeError(f"apply() takes an expression such as F('label') == 'cat', got {expr!r:.60}")
        return ViewExpression("apply", self, expr)

    def evaluate(self, value: Any = None, root: Any = None) -> Any:
        """This expression on Python values: ``value`` is the context paths are relative to (a label, a
        sample, a dict), ``root`` the sample that ``F("$field")`` reads (default: ``value``).

        Gives what the SQL compilation gives for the same data (booleans as ``True``/``False``).

        >>> (F("bounding_box")[2] * F("bounding_box")[3]).evaluate(el.Detection("cat", [0, 0, 0.5, 0.2]))
        0.1
        """
        return _evaluate(self, value, value if root is None else root)

    def to_dict(self) -> dict[str, Any]:
        return {"$op": self.op, "args": [to_dict(a) for a in self.args]}

    def __repr__(self) -> str:
        return f"ViewExpression({self.op}, {', '.join(map(repr, self.args))})"


class F(ViewExpression):
    """A field path, e.g. ``F("uniqueness")``, ``F("ground_truth.label")``, ``F("metadata.width")``.

    Inside a label context a path is relative to the label (``F("label")``) and ``F("$tags")`` names the
    sample's own field; ``F("ground_truth.detections[]")`` is the list of objects (``[]`` as in FiftyOne).
    """

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
          "~": 1, "abs": 1, "length": 1, "contains": 3, "if_else": 3, "index": 2, "apply": 2}
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
    if op == "index":
        if isinstance(args[1], bool) or not isinstance(args[1], int):
            raise InvalidInputError(f"an index is an integer, got {args[1]!r:.40}")
        _index(args[1])
    if op == "apply" and not isinstance(args[1], ViewExpression):
        raise InvalidInputError(f"apply() takes an expression, got {args[1]!r:.40}")


_MAX_INDEX = 1 << 31


def _index(i: int) -> int:
    if not -_MAX_INDEX <= i < _MAX_INDEX:
        raise InvalidInputError(f"index {i:.3g} is out of range")
    return i


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

#: Label attributes that hold lists (their SQL value is JSON array text).
LIST_ATTRS = ("logits", "bounding_box", "tags", "detections")
#: Operators whose value is true/false (SQLite answers 1/0).
BOOL_OPS = frozenset({*_COMPARE, "&", "|", "~", "exists", "is_in", "contains"})


def clean_path(path: str) -> str:
    """``path`` without FiftyOne's list markers: ``"gt.detections[].label"`` -> ``"gt.detections.label"``."""
    return path.replace("[]", "")


def relative_resolver(base_sql: str, root: Resolver | None = None) -> Resolver:
    """Resolver for paths relative to one label (JSON object text ``base_sql``), as in
    ``filter_labels("gt", F("label") == "cat")``; ``$``-paths go to ``root``, the sample's resolver."""

    def resolve(path: str) -> Ref:
        if path.startswith("$"):
            if root is None:
                raise InvalidInputError(f"{path!r}: no sample fields are reachable here")
            return root(path[1:])
        path = clean_path(path)
        for part in path.split("."):
            check_name(part)
        kind = "list" if path.split(".")[-1] in LIST_ATTRS else "scalar"
        return Ref(kind, f"json_extract({base_sql}, '$.{path}')")

    return resolve


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
    """Turns an expression into ``(sql, params)`` given a resolver for field paths.

    ``root`` resolves ``F("$field")`` inside label contexts (default: ``resolve``, the sample level).
    """

    def __init__(self, resolve: Resolver, root: Resolver | None = None, _aliases: list[int] | None = None) -> None:
        self.resolve = resolve
        self.root = root or resolve
        self._aliases = _aliases if _aliases is not None else [0]  # shared by nested contexts

    def __call__(self, expr: Any) -> tuple[str, list]:
        params: list = []
        sql = self._c(expr, params)
        return sql, params

    def kind(self, expr: Any) -> str:
        """What the SQL value of ``expr`` is: "bool" (0/1), "list" or "json" (JSON text), or "scalar"."""
        if not isinstance(expr, ViewExpression):
            return "list" if isinstance(expr, list) else "json" if isinstance(expr, dict) else "scalar"
        if expr.op in BOOL_OPS:
            return "bool"
        if expr.op == "field":
            ref = self.resolve(expr.args[0])
            return "list" if ref.kind == "each" else ref.kind
        if expr.op == "apply":
            ref = self._ref(expr.args[0])
            if ref is not None and ref.kind == "list":
                return "list"
            return self._nested(ref.sql if ref is not None else "NULL").kind(expr.args[1])
        if expr.op == "if_else":
            kinds = {self.kind(expr.args[1]), self.kind(expr.args[2])} - {"scalar"}
            return kinds.pop() if len(kinds) == 1 else "scalar"
        return "scalar"

    def _ref(self, x: Any) -> Ref | None:
        return self.resolve(x.path) if isinstance(x, F) else None

    def _nested(self, base_sql: str) -> "Compiler":
        return Compiler(relative_resolver(base_sql, self.root), self.root, self._aliases)

    def _alias(self) -> str:
        self._aliases[0] += 1
        return f"_a{self._aliases[0]}"

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
            _check_numeric(op, args)
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
                src = f"json_each({self._json_sql(target, params, 'contains()')})"
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
            elif self.kind(args[0]) == "list":
                return f"json_array_length({self._c(args[0], params)})"
            return f"length({self._value(args[0], params)})"
        if op == "if_else":
            cond = self._c(args[0], params)
            yes = self._value(args[1], params)
            no = self._value(args[2], params)
            return f"(CASE WHEN COALESCE({cond}, 0) THEN {yes} ELSE {no} END)"
        if op == "index":
            target, i = args
            inner: list = []
            sql = self._json_sql(target, inner, "indexing")
            # json_valid: a value that is not a list (a string, a number) indexes to NULL, never an SQL error
            params += [*inner, *inner, f"$[{i}]" if i >= 0 else f"$[#{i}]"]
            return f"(CASE WHEN json_valid({sql}) THEN json_extract({sql}, ?) END)"
        if op == "apply":
            target, body = args
            ref = self._ref(target)
            if ref is None or ref.kind not in ("list", "json"):
                what = repr(target.path) if isinstance(target, F) else "this value"
                raise InvalidInputError(f"apply() needs a label or a list of labels; {what} is neither")
            if ref.kind == "json":  # one label: the body's paths are relative to it
                return self._nested(ref.sql)._c(body, params)
            alias = self._alias()  # a list: the body runs on each element, giving a list
            nested = self._nested(f"{alias}.value")
            item = nested._c(body, params)
            if nested.kind(body) in ("list", "json"):
                item = f"json({item})"
            return (f"(CASE WHEN {ref.sql} IS NULL THEN NULL ELSE (SELECT json_group_array({item}) "
                    f"FROM json_each({ref.sql}) AS {alias}) END)")
        raise InvalidInputError(f"unknown expression operator {op!r}")

    def _json_sql(self, x: Any, params: list, what: str) -> str:
        ref = self._ref(x)
        if ref is not None and ref.kind == "each":
            raise InvalidInputError(f"{what} on {x.path!r}: it holds one value per object; use apply() on the list")
        if ref is not None and ref.kind == "json":
            raise InvalidInputError(f"{what} needs a list; {x.path!r} is an object")
        return self._c(x, params)

    def _any_sql(self, x: Any, params: list) -> str:
        ref = self._ref(x)
        if ref is not None and ref.kind == "each":
            raise InvalidInputError(f"exists() on {x.path!r}: test the list path instead")
        return self._c(x, params)


def _check_numeric(op: str, args: Sequence[Any]) -> None:
    # SQLite would turn "3" + " -> " into 3 without a word; arithmetic is for numbers only
    if any(isinstance(a, (str, bytes, list, dict)) for a in args):
        raise InvalidInputError(f"{op!r} takes numbers; got {next(a for a in args if isinstance(a, (str, bytes, list, dict)))!r:.40}")


# --------------------------------------------------------------------------------------------------
# evaluation on Python values (the same meaning as the SQL above)


def _get(obj: Any, path: str) -> Any:
    for part in clean_path(path).split("."):
        if obj is None:
            return None
        obj = _attr(obj, part)
    return obj


def _attr(obj: Any, name: str) -> Any:
    if isinstance(obj, (list, tuple)):  # a list of labels: the attribute of each
        return [_attr(x, name) for x in obj]
    if hasattr(obj, "get") and callable(obj.get):  # dicts, labels, samples
        return obj.get(name)
    return getattr(obj, name, None)


def _evaluate(e: Any, value: Any, root: Any) -> Any:
    if not isinstance(e, ViewExpression):
        return e
    op, args = e.op, e.args
    if op == "field":
        path = args[0]
        return _get(root, path[1:]) if path.startswith("$") else _get(value, path)
    if op == "apply":
        target = _evaluate(args[0], value, root)
        if target is None:
            return None
        if isinstance(target, (list, tuple)):
            return [_evaluate(args[1], x, root) for x in target]
        return _evaluate(args[1], target, root)
    ev = [_evaluate(a, value, root) if isinstance(a, ViewExpression) else a for a in args]
    if op in _COMPARE:
        a, b = ev
        if op == "==":
            return a is None and b is None if (a is None or b is None) else a == b
        if op == "!=":
            return not (a is None and b is None) if (a is None or b is None) else a != b
        if a is None or b is None:
            return None
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    if op == "&":
        return bool(ev[0]) and bool(ev[1])
    if op == "|":
        return bool(ev[0]) or bool(ev[1])
    if op == "~":
        return not ev[0]
    if op in ("+", "-", "*", "/"):
        _check_numeric(op, args)
        a, b = ev
        if a is None or b is None:
            return None
        if op == "/":
            return None if b == 0 else float(a) / b
        return a + b if op == "+" else a - b if op == "-" else a * b
    if op == "abs":
        return None if ev[0] is None else abs(ev[0])
    if op == "exists":
        return (ev[0] is not None) == ev[1]
    if op == "is_in":
        return ev[0] is not None and ev[0] in ev[1]
    if op == "contains":
        items, values, all_ = ev
        if items is None:
            return False
        found = [v in items for v in values]
        return all(found) if all_ else any(found)
    if op == "length":
        return None if ev[0] is None else len(ev[0])
    if op == "if_else":
        return ev[1] if ev[0] else ev[2]
    if op == "index":
        items, i = ev
        if not isinstance(items, (list, tuple)) or not -len(items) <= i < len(items):
            return None
        return items[i]
    raise InvalidInputError(f"unknown expression operator {op!r}")
