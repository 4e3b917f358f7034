"""View stages and the SQL they compile to.

A view is a list of stages; :class:`Query` accumulates them into one ``SELECT`` over the ``samples``
table and wraps itself in a sub-query only where SQL needs it (filtering after a ``LIMIT``, replacing a
column, or unrolling objects into patches). Stages are plain data and serialise to JSON.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from .expressions import INT64, Compiler, F, Ref, ViewExpression, clean_path, from_dict, relative_resolver, to_dict
from .fields import SCALAR_TYPES, check_key, check_name, dumps
from .errors import InvalidInputError, UnknownFieldError, WrongTypeError

_LIST_ATTRS = ("logits", "bounding_box", "tags")
_PATCH_ROWS = 1_000_000  # objects per sample, for the patches' row order key


def _q(name: str) -> str:
    return f'"{name}"'


# Attributes every label of a type has (or may leave unset); others are free-form and must exist in the data.
_LABEL_ATTRS = {"Classification": ("id", "tags", "label", "confidence", "logits"),
                "Detection": ("id", "tags", "label", "bounding_box", "confidence", "index")}
HasAttribute = Callable[[str, str], bool]


def json_path(keys: list[str]) -> str:
    """An SQLite JSON path of checked keys, each quoted so that keys like "7" work: ``$."a"."7"``."""
    return "$" + "".join(f'."{k}"' for k in keys)


def resolve_path(path: str, schema: dict[str, str], col: str = "t", has_attr: HasAttribute | None = None) -> Ref:
    """Where the value of ``path`` lives in SQL for rows of a collection with ``schema``.

    ``has_attr(field, attr)``: whether any label of ``field`` has the free-form attribute ``attr``; with
    it, a label attribute that no label has is an :class:`UnknownFieldError`, as an unknown field is.
    A leading ``$`` (FiftyOne's "field of the sample") and ``[]`` list markers are accepted.
    """
    path = clean_path(path.removeprefix("$"))
    head, *rest = path.split(".")
    if head not in schema:
        known = ", ".join(schema)
        raise UnknownFieldError(f"unknown field {head!r} in {path!r}; fields: {known}")
    ftype = schema[head]
    ref = f"{col}.{_q(head)}"
    for part in rest:
        check_key(part)
    label_type = "Detection" if ftype == "Detections" and len(rest) > 1 else ftype
    attr = rest[1] if ftype == "Detections" and len(rest) > 1 else (rest[0] if rest else None)
    if (has_attr is not None and label_type in _LABEL_ATTRS and attr is not None
            and attr not in _LABEL_ATTRS[label_type] and not has_attr(head, attr)):
        raise UnknownFieldError(f"unknown attribute {attr!r} in {path!r}: no {label_type} label of {head!r} has it "
                                f"(every one has {', '.join(_LABEL_ATTRS[label_type])})")
    if not rest:
        if ftype in SCALAR_TYPES:
            return Ref("scalar", ref)
        if ftype == "list":
            return Ref("list", ref)
        if ftype == "array":
            raise InvalidInputError(f"array field {head!r} cannot be used in an expression")
        return Ref("json", ref)
    if ftype == "Detections":
        if rest[0] != "detections":
            raise UnknownFieldError(f"{path!r}: a Detections field has '{head}.detections'")
        if len(rest) == 1:
            return Ref("list", f"json_extract({ref}, '$.detections')")
        return Ref("each", array_sql=ref, array_path="$.detections", item_path=json_path(rest[1:]))
    if ftype in ("dict", "Classification", "Detection"):
        kind = "list" if ftype != "dict" and rest[-1] in _LIST_ATTRS and len(rest) == 1 else "scalar"
        return Ref(kind, f"json_extract({ref}, '{json_path(rest)}')")
    raise UnknownFieldError(f"{path!r}: field {head!r} of type {ftype} has no sub-fields")


def label_resolver(base_sql: str, root=None):
    """Resolver for expressions about one label, as in ``filter_labels("gt", F("label") == "cat")``;
    ``root`` resolves ``F("$field")``, the sample's own fields."""
    return relative_resolver(base_sql, root)


class Query:
    """A ``SELECT`` under construction. Column references use the alias ``t``."""

    def __init__(self, source: str, params: Sequence[Any], columns: list[str], schema: dict[str, str],
                 order_col: str = "_rowid", patches_field: str | None = None,
                 has_attr: HasAttribute | None = None) -> None:
        self.source = source
        self.has_attr = has_attr
        self.params = list(params)
        self.columns = columns
        self.schema = schema
        self.where: list[tuple[str, list]] = []
        self.order: list[tuple[str, list]] = []
        self.order_col = order_col
        self.limit: int | None = None
        self.offset = 0
        self.patches_field = patches_field
        self._n = 0  # names for joined and positional helpers

    @classmethod
    def samples(cls, schema: dict[str, str], has_attr: HasAttribute | None = None) -> "Query":
        return cls("samples AS t", [], ["_rowid", *schema], dict(schema), has_attr=has_attr)

    def compile(self, expr: Any) -> tuple[str, list]:
        if isinstance(expr, str):
            expr = F(expr)
        return Compiler(self.resolve)(expr)

    def resolve(self, path: str) -> Ref:
        if self.patches_field and isinstance(path, str):
            # In a patches view each row is one object: "gt.detections[].label" means that object's label.
            pf = clean_path(path.removeprefix("$"))
            head, _, rest = pf.partition(".")
            if head == self.patches_field and (rest == "detections" or rest.startswith("detections.")):
                path = head + rest.removeprefix("detections")
        return resolve_path(path, self.schema, has_attr=self.has_attr)

    def sql(self, select: str | None = None, select_params: Sequence[Any] = (),
            ordered: bool = True) -> tuple[str, list]:
        """The full statement; ``select`` replaces the column list (default: every column)."""
        sel = select or ", ".join(f"t.{_q(c)}" for c in self.columns)
        sql = f"SELECT {sel} FROM {self.source}"
        params = [*select_params, *self.params]
        if self.where:
            sql += " WHERE " + " AND ".join(w for w, _ in self.where)
            for _, p in self.where:
                params += p
        if ordered or self.limit is not None or self.offset:
            sql += " ORDER BY " + ", ".join([o for o, _ in self.order] + [f"t.{_q(self.order_col)}"])
            for _, p in self.order:
                params += p
        if self.limit is not None or self.offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if self.limit is None else self.limit, self.offset]
        return sql, params

    def _wrap(self, replace: dict[str, tuple[str, list]] | None = None,
              extra: dict[str, tuple[str, list]] | None = None) -> "Query":
        """This query as the source of a new one, keeping its rows' order in a column.

        ``replace`` computes existing columns anew; ``extra`` adds columns.
        """
        replace = replace or {}
        parts, params = [], []
        for c in self.columns:
            if c in replace:
                parts.append(f"{replace[c][0]} AS {_q(c)}")
                params += replace[c][1]
            else:
                parts.append(f"t.{_q(c)}")
        for name, (sql, p) in (extra or {}).items():
            parts.append(f"{sql} AS {_q(name)}")
            params += p
        columns = [*self.columns, *(extra or {})]
        order_col = self.order_col
        if self.order:
            self._n += 1
            order_col = f"_pos{self._n}"
            keys = ", ".join([o for o, _ in self.order] + [f"t.{_q(self.order_col)}"])
            parts.append(f"row_number() OVER (ORDER BY {keys}) AS {order_col}")
            for _, p in self.order:
                params += p
            columns.append(order_col)
        inner, inner_params = self.sql(", ".join(parts), params, ordered=False)
        q = Query(f"({inner}) AS t", inner_params, columns, self.schema, order_col, self.patches_field, self.has_attr)
        q._n = self._n
        return q

    def _filterable(self) -> "Query":
        return self._wrap() if self.limit is not None or self.offset else self

    # ------------------------------------------------------------------ operations used by stages

    def add_where(self, sql: str, params: list) -> "Query":
        q = self._filterable()
        q.where.append((sql, params))
        return q

    def add_order(self, sql: str, params: list) -> "Query":
        q = self._filterable()
        q.order.insert(0, (sql, params))
        return q

    def join_ids(self, ids: list[str], values: list[Any] | None = None, field: str | None = None) -> "Query":
        """Keep only ``ids``, in the order given; with ``field``, ``values[i]`` becomes that column of ``ids[i]``."""
        q = self._filterable()
        q._n += 1
        alias = f"_sel{q._n}"
        q.source += f" JOIN json_each(?) AS {alias} ON {alias}.value = t.id"
        q.params.append(dumps(ids))
        q.order = [(f"{alias}.key", [])]
        if field is not None:
            check_name(field)
            if field in q.schema:
                raise InvalidInputError(f"field {field!r} exists; choose another name for the new column")
            q = q._wrap(extra={field: (f"json_extract(?, '$[' || {alias}.key || ']')", [dumps(values)])})
            q.schema = {**q.schema, field: "float"}
        return q

    def replace_column(self, name: str, sql: str, params: list) -> "Query":
        return self._wrap({name: (sql, params)})

    def set_limit(self, n: int) -> "Query":
        self.limit = n if self.limit is None else min(self.limit, n)
        return self

    def set_skip(self, n: int) -> "Query":
        self.offset = min(self.offset + n, INT64[1])  # skips add up; SQLite's OFFSET is a 64-bit integer
        if self.limit is not None:
            self.limit = max(self.limit - n, 0)
        return self

    def to_patches(self, field: str) -> "Query":
        q = self._wrap() if (self.order or self.limit is not None or self.offset) else self
        inner, params = q.sql(ordered=False)
        src = (
            f"(SELECT p.{_q(q.order_col)} * {_PATCH_ROWS} + d.key AS _rowid, "
            f"json_extract(d.value, '$.id') AS id, p.id AS sample_id, p.filepath AS filepath, "
            f"p.metadata AS metadata, COALESCE(json_extract(d.value, '$.tags'), '[]') AS tags, "
            f"d.value AS {_q(field)} "
            f"FROM ({inner}) AS p, json_each(p.{_q(field)}, '$.detections') AS d) AS t"
        )
        schema = {"id": "str", "sample_id": "str", "filepath": "str", "tags": "list", "metadata": "dict",
                  field: "Detection"}
        return Query(src, params, ["_rowid", *schema], schema, patches_field=field, has_attr=self.has_attr)


# ---------------------------------------------------------------------------------------------- stages


class Stage:
    """One step of a view. Subclasses set ``kwargs`` (JSON-able) and implement ``apply``."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    @property
    def name(self) -> str:
        return type(self).__name__

    def apply(self, q: Query) -> Query:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"_stage": self.name, "kwargs": {k: to_dict(v) for k, v in self.kwargs.items()}}

    @staticmethod
    def from_dict(d: Any) -> "Stage":
        """A stage from its :meth:`to_dict` form, checked completely (JSON from outside lands here)."""
        if not isinstance(d, dict) or not isinstance(d.get("_stage"), str) or not isinstance(d.get("kwargs", {}), dict):
            raise InvalidInputError(f"a view stage is {{'_stage': name, 'kwargs': {{...}}}}, got {d!r:.80}")
        cls = STAGES.get(d["_stage"])
        if cls is None:
            raise InvalidInputError(f"unknown view stage {d['_stage']!r:.40}; one of {', '.join(STAGES)}")
        kwargs = {k: from_dict(v) for k, v in d.get("kwargs", {}).items()}
        params = inspect.signature(cls).parameters
        unknown = [k for k in kwargs if k not in params]
        missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
        if unknown or missing:
            problem = f"unknown argument {unknown[0]!r:.40}" if unknown else f"missing argument {missing[0]!r}"
            raise InvalidInputError(f"stage {cls.__name__}: {problem}; it takes {', '.join(params)}")
        return cls(**kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


def _short(v: Any) -> str:
    if isinstance(v, list) and len(v) > 4:
        return f"[{', '.join(map(repr, v[:3]))}, ... {len(v)} items]"
    return repr(v)


class Match(Stage):
    def __init__(self, filter: ViewExpression) -> None:
        if not isinstance(filter, ViewExpression):
            raise WrongTypeError(f"match() takes an expression such as F('field') > 0, got {filter!r:.60}")
        super().__init__(filter=filter)

    def apply(self, q: Query) -> Query:
        return q.add_where(*q.compile(self.kwargs["filter"]))


class Exists(Stage):
    def __init__(self, field: str, bool: bool = True) -> None:
        super().__init__(field=_path(field, "field"), bool=_flag(bool, "bool"))

    def apply(self, q: Query) -> Query:
        return q.add_where(*q.compile(F(self.kwargs["field"]).exists(self.kwargs["bool"])))


class MatchTags(Stage):
    def __init__(self, tags: str | Sequence[str], bool: bool = True, all: bool = False) -> None:
        super().__init__(tags=_strings(tags, "tags"), bool=_flag(bool, "bool"), all=_flag(all, "all"))

    def apply(self, q: Query) -> Query:
        expr = F("tags").contains(self.kwargs["tags"], all=self.kwargs["all"])
        return q.add_where(*q.compile(expr if self.kwargs["bool"] else ~expr))


class Select(Stage):
    def __init__(self, sample_ids: str | Sequence[str], ordered: bool = False) -> None:
        ids = list(dict.fromkeys(_strings(sample_ids, "sample_ids")))
        super().__init__(sample_ids=ids, ordered=_flag(ordered, "ordered"))
        self._ids_json: str | None = None

    def apply(self, q: Query) -> Query:
        ids = self.kwargs["sample_ids"]
        if self.kwargs["ordered"]:
            return q.join_ids(ids)
        if self._ids_json is None:  # a view compiles once per read: encode a long id list once
            self._ids_json = dumps(ids)
        return q.add_where("t.id IN (SELECT value FROM json_each(?))", [self._ids_json])


class SortBySimilarity(Stage):
    """The result of a similarity query, kept as data: the matched ids in order and their distances.

    The search itself runs once, when the stage is made (see ``sort_by_similarity``); a saved view
    replays the same ids without the index.
    """

    def __init__(self, query: Any, ids: Sequence[str], distances: Sequence[float], k: int | None = None,
                 reverse: bool = False, dist_field: str | None = None, brain_key: str | None = None) -> None:
        ids = _strings(ids, "ids")
        if not isinstance(distances, (list, tuple, np.ndarray)) or len(distances) != len(ids) or not all(
                isinstance(d, (int, float, np.number)) and not isinstance(d, bool) for d in distances):
            raise InvalidInputError("SortBySimilarity: distances must be one number per id")
        if dist_field is not None:
            check_name(dist_field)
        super().__init__(query=query, ids=ids, distances=[float(d) for d in distances],
                         k=None if k is None else _count(k, "k"), reverse=_flag(reverse, "reverse"),
                         dist_field=dist_field, brain_key=brain_key)

    def apply(self, q: Query) -> Query:
        kw = self.kwargs
        return q.join_ids(kw["ids"], kw["distances"], kw["dist_field"])

    def __repr__(self) -> str:
        kw = self.kwargs
        return (f"SortBySimilarity(query={_short(kw['query'])}, k={kw['k']}, reverse={kw['reverse']}, "
                f"brain_key={kw['brain_key']!r}, {len(kw['ids'])} matches)")


class Exclude(Stage):
    def __init__(self, sample_ids: str | Sequence[str]) -> None:
        super().__init__(sample_ids=_strings(sample_ids, "sample_ids"))

    def apply(self, q: Query) -> Query:
        return q.add_where("t.id NOT IN (SELECT value FROM json_each(?))", [dumps(self.kwargs["sample_ids"])])


class SortBy(Stage):
    def __init__(self, field_or_expr: str | ViewExpression, reverse: bool = False) -> None:
        if not isinstance(field_or_expr, ViewExpression):
            _path(field_or_expr, "sort_by()")
        super().__init__(field_or_expr=field_or_expr, reverse=_flag(reverse, "reverse"))

    def apply(self, q: Query) -> Query:
        sql, params = q.compile(self.kwargs["field_or_expr"])
        return q.add_order(f"{sql}{' DESC' if self.kwargs['reverse'] else ''}", params)


class Shuffle(Stage):
    def __init__(self, seed: int | None = None) -> None:
        super().__init__(seed=_seed(seed))

    def apply(self, q: Query) -> Query:
        return q.add_order("seeded_rank(?, t.id)", [str(self.kwargs["seed"])])


class Limit(Stage):
    def __init__(self, limit: int) -> None:
        super().__init__(limit=_count(limit, "limit"))

    def apply(self, q: Query) -> Query:
        return q.set_limit(self.kwargs["limit"])


class Skip(Stage):
    def __init__(self, skip: int) -> None:
        super().__init__(skip=_count(skip, "skip"))

    def apply(self, q: Query) -> Query:
        return q.set_skip(self.kwargs["skip"])


class Take(Stage):
    def __init__(self, size: int, seed: int | None = None) -> None:
        super().__init__(size=_count(size, "size"), seed=_seed(seed))

    def apply(self, q: Query) -> Query:
        return Shuffle(self.kwargs["seed"]).apply(q).set_limit(self.kwargs["size"])


class FilterLabels(Stage):
    def __init__(self, field: str, filter: ViewExpression, only_matches: bool = True) -> None:
        if not isinstance(filter, ViewExpression):
            raise WrongTypeError(f"filter_labels() takes an expression such as F('label') == 'cat', got {filter!r:.60}")
        super().__init__(field=check_name(field), filter=filter, only_matches=_flag(only_matches, "only_matches"))

    def apply(self, q: Query) -> Query:
        field = self.kwargs["field"]
        ftype = q.schema.get(field)
        col = f"t.{_q(field)}"
        if ftype == "Detections":
            cond, params = Compiler(label_resolver("_e.value", q.resolve), q.resolve)(self.kwargs["filter"])
            sql = (f"CASE WHEN {col} IS NULL THEN NULL ELSE json_set({col}, '$.detections', "
                   f"json((SELECT json_group_array(json(_e.value)) FROM json_each({col}, '$.detections') AS _e "
                   f"WHERE {cond}))) END")
            q = q.replace_column(field, sql, params)
            if self.kwargs["only_matches"]:
                q = q.add_where(f"json_array_length({col}, '$.detections') > 0", [])
            return q
        if ftype in ("Classification", "Detection"):
            cond, params = Compiler(label_resolver(col, q.resolve), q.resolve)(self.kwargs["filter"])
            q = q.replace_column(field, f"CASE WHEN COALESCE({cond}, 0) THEN {col} END", params)
            if self.kwargs["only_matches"]:
                q = q.add_where(f"{col} IS NOT NULL", [])
            return q
        if ftype is None:
            raise UnknownFieldError(f"unknown field {field!r}; fields: {', '.join(q.schema)}")
        raise InvalidInputError(f"filter_labels() needs a label field; {field!r} has type {ftype}")


class ToPatches(Stage):
    def __init__(self, field: str) -> None:
        super().__init__(field=check_name(field))

    def apply(self, q: Query) -> Query:
        field = self.kwargs["field"]
        if q.patches_field is not None:
            raise InvalidInputError("to_patches() on a patches view: make patches from the sample view")
        ftype = q.schema.get(field)
        if ftype != "Detections":
            raise InvalidInputError(f"to_patches() needs a Detections field; {field!r} has type {ftype}")
        return q.to_patches(field)


class SelectFields(Stage):
    def __init__(self, field_names: str | Sequence[str]) -> None:
        super().__init__(field_names=[check_name(n) for n in _strings(field_names, "field_names")])

    def apply(self, q: Query) -> Query:
        keep = set(self.kwargs["field_names"])
        missing = keep - set(q.schema)
        if missing:
            raise UnknownFieldError(f"unknown field(s) {sorted(missing)}; fields: {', '.join(q.schema)}")
        default = {"id", "filepath", "tags", "metadata", "sample_id"}
        q.schema = {k: v for k, v in q.schema.items() if k in keep or k in default}
        return q


# Checks of stage arguments: a stage made from JSON gets the same clear error as one made in Python.

def _count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= INT64[1]:
        raise InvalidInputError(f"{what} must be a non-negative integer below 2^63, got {n!r:.40}")
    return int(n)


def _flag(v: Any, what: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise InvalidInputError(f"{what} must be true or false, got {v!r:.40}")
    return bool(v)


def _path(v: Any, what: str) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidInputError(f"{what} must be a field path, got {v!r:.40}")
    return v


def _strings(v: Any, what: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if not isinstance(v, (dict, bytes)) and hasattr(v, "__iter__"):
        items = list(v)
        if all(isinstance(x, str) for x in items):
            return items
    raise InvalidInputError(f"{what} must be a string or a list of strings, got {v!r:.60}")


def _seed(v: Any) -> int | str | None:
    if v is None or isinstance(v, str) or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)):
        return v if not isinstance(v, np.integer) else int(v)
    raise InvalidInputError(f"seed must be an integer, a string or None, got {v!r:.40}")


STAGES: dict[str, type[Stage]] = {c.__name__: c for c in (
    Match, Exists, MatchTags, Select, SortBySimilarity, Exclude, SortBy, Shuffle, Limit, Skip, Take, FilterLabels, ToPatches,
    SelectFields)}
