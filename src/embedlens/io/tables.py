"""CSV and Parquet tables: one row per image, a filepath column, label columns and scalar columns.

Exports (``export(path, "csv")`` and the app's downloads) write the columns of :func:`table_columns`,
which :func:`read_table` reads back.

A CSV has no types, so each column's type is inferred from its cells (bool, int, float, else str; an
empty cell is None), or taken from the dataset's field of the same name when it already exists.
Parquet columns keep their own types.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..core.fields import BUILTIN_FIELDS, SCALAR_TYPES, check_name
from ..core.labels import Classification
from .candidates import Candidate, Parsed, Problem
from ..core.errors import InvalidInputError, WrongTypeError

CSV_EXTENSIONS = (".csv",)
PARQUET_EXTENSIONS = (".parquet", ".pq")
TAGS_COLUMN = "tags"
IGNORED_COLUMNS = ("id", "metadata")  # built-in fields an exporting tool may add; not importable
# A Detections field's labels in an export (table_columns): without their boxes they cannot be imported
LABELS_SUFFIX = ".labels"


@dataclass
class _Table:
    path: Path
    columns: list[str]
    rows: list[tuple[str, list[Any]]]  # (item naming the row, cells)
    problems: list[Problem]
    typed: bool  # Parquet cells are Python values already; CSV cells are strings


# ---------------------------------------------------------------------------------------------- import


def read_table(source: Any, *, label_field: str, schema: dict[str, str], filepath_column: str = "filepath",
               label_columns: Sequence[str] | Mapping[str, str] | None = None, delimiter: str = ",") -> Parsed:
    """Parse a CSV or Parquet file (chosen by extension) into candidates.

    ``label_columns`` (a list, or ``{column: field}``) become ``Classification`` fields; a ``tags``
    column (comma-separated, or a Parquet list) becomes sample tags; ``id``, ``metadata`` and
    ``<field>.labels`` columns (a Detections field's labels in an export, see :func:`table_columns`) are
    skipped; every other column becomes a scalar field of the same name. Relative paths are resolved against the
    table file's folder.
    """
    path = _table_path(source)
    table = _read_parquet(path) if path.suffix.lower() in PARQUET_EXTENSIONS else _read_csv(path, delimiter)
    if filepath_column not in table.columns:
        raise InvalidInputError(f"{path} has no {filepath_column!r} column; its columns are: "
                         f"{', '.join(map(repr, table.columns)) or 'none'}. Pass filepath_column= to name "
                         "the column holding the image paths")
    labels = _label_map(label_columns, table)
    scalars = [c for c in table.columns
               if c not in labels and c not in (filepath_column, TAGS_COLUMN) and not _skipped(c)]
    _check_field_names(table.path, [*labels.values(), *scalars])
    index = {c: i for i, c in enumerate(table.columns)}
    parsers = {c: _parser(c, table, index[c], schema.get(c)) for c in scalars}
    candidates = []
    for item, cells in table.rows:
        candidates.append(_candidate(item, cells, table, index, filepath_column, labels, parsers))
    # No root: a table is a list of files the user chose, like "filepaths" (exports write absolute paths).
    return Parsed(candidates, table.problems)


def _table_path(source: Any) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise WrongTypeError(f"'csv' import takes the path of a .csv or .parquet file, got {type(source).__name__}")
    path = Path(source)
    if path.suffix.lower() not in CSV_EXTENSIONS + PARQUET_EXTENSIONS:
        raise InvalidInputError(f"'csv' import: {path} is not a .csv or .parquet file")
    if not path.is_file():
        raise InvalidInputError(f"'csv' import: table file {path} does not exist")
    return path


def _read_csv(path: Path, delimiter: str) -> _Table:
    rows, problems = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel starts files with a BOM
            reader = csv.reader(f, delimiter=delimiter, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise InvalidInputError(f"{path} is empty; expected a header row naming the columns")
                header = [h.strip() for h in header]
                for cells in reader:
                    if not cells:
                        continue
                    item = f"{path}:{reader.line_num}"
                    if len(cells) != len(header):
                        problems.append(Problem(item, f"row has {len(cells)} cells but the header has "
                                                      f"{len(header)} columns"))
                        continue
                    rows.append((item, cells))
            except csv.Error as e:
                raise InvalidInputError(f"{path}:{reader.line_num}: malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    return _drop_unnamed(_Table(path, _unique_header(path, header), rows, problems, typed=False))


def _read_parquet(path: Path) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInputError(f"{path}: cannot read Parquet file: {e}") from None
    columns = _unique_header(path, list(arrow.column_names))
    for name, col in zip(columns, arrow.columns):
        _check_arrow_type(path, name, col.type)
    data = [col.to_pylist() for col in arrow.columns]
    rows = [(f"{path} row {i}", [d[i] for d in data]) for i in range(arrow.num_rows)]
    return _drop_unnamed(_Table(path, columns, rows, [], typed=True))


def _skipped(column: str) -> bool:
    """Columns an export writes that do not import: ids the dataset gives, Detections labels without boxes."""
    return column in IGNORED_COLUMNS or column.endswith(LABELS_SUFFIX)


def _check_arrow_type(path: Path, name: str, t: Any) -> None:
    import pyarrow as pa

    if _skipped(name):
        return

    if pa.types.is_dictionary(t):  # pandas categoricals: to_pylist() decodes them
        t = t.value_type
    ok = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_string(t)
          or pa.types.is_large_string(t) or pa.types.is_null(t))
    if name == TAGS_COLUMN and (pa.types.is_list(t) or pa.types.is_large_list(t)):
        ok = True
    if not ok:
        raise InvalidInputError(f"{path}: column {name!r} has type {t}; supported: integers, floats, booleans, strings")


def _unique_header(path: Path, header: list[str]) -> list[str]:
    seen = set()
    for h in header:
        if h in seen and h:
            raise InvalidInputError(f"{path}: column {h!r} appears twice in the header")
        seen.add(h)
    return header


def _drop_unnamed(table: _Table) -> _Table:
    """Leave out unnamed columns: pandas ``to_csv()`` writes its index as one."""
    keep = [i for i, c in enumerate(table.columns) if c]
    if len(keep) == len(table.columns):
        return table
    table.columns = [table.columns[i] for i in keep]
    table.rows = [(item, [cells[i] for i in keep]) for item, cells in table.rows]
    return table


def _label_map(label_columns: Sequence[str] | Mapping[str, str] | None, table: _Table) -> dict[str, str]:
    if label_columns is None:
        return {}
    if isinstance(label_columns, str):
        label_columns = [label_columns]
    mapping = dict(label_columns) if isinstance(label_columns, Mapping) else {c: c for c in label_columns}
    missing = [c for c in mapping if c not in table.columns]
    if missing:
        raise InvalidInputError(f"{table.path} has no label column {missing[0]!r}; its columns are: "
                         f"{', '.join(map(repr, table.columns))}")
    return mapping


def _check_field_names(path: Path, names: list[str]) -> None:
    seen = set()
    for name in names:
        try:
            check_name(name)
        except ValueError:
            raise InvalidInputError(f"{path}: column {name!r} cannot be a field name (letters, digits and '_', starting "
                             "with a letter); rename the column, or map it with label_columns={column: field}") \
                from None
        if name in BUILTIN_FIELDS:
            raise InvalidInputError(f"{path}: {name!r} is a built-in field and cannot be imported from a column")
        if name in seen:
            raise InvalidInputError(f"{path}: two columns would both import into field {name!r}")
        seen.add(name)


# ------------------------------------------------------------------ cells -> values

_BOOLS = {"true": True, "false": False}


def _parse_bool(s: str) -> bool:
    try:
        return _BOOLS[s.strip().lower()]
    except KeyError:
        raise InvalidInputError(f"{s!r} is not true/false") from None


_PARSERS: dict[str, Callable[[str], Any]] = {"bool": _parse_bool, "int": int, "float": float, "str": str}


def _parser(column: str, table: _Table, index: int, existing: str | None) -> Callable[[Any], Any]:
    """How to turn the cells of ``column`` into values: by the dataset's type for the field, else inferred."""
    if table.typed:
        return _typed_value
    ftype = existing if existing in SCALAR_TYPES else _infer_type([cells[index] for _, cells in table.rows])
    parse = _PARSERS[ftype]

    def convert(cell: str) -> Any:
        if cell == "":
            return None
        try:
            return parse(cell)
        except ValueError:
            raise InvalidInputError(f"column {column!r}: {cell!r} is not a {ftype}, the type of field {column!r}") from None

    return convert


def _infer_type(cells: list[str]) -> str:
    values = [c for c in cells if c != ""]
    for ftype in ("bool", "int", "float"):
        if all(_parses(_PARSERS[ftype], v) for v in values):
            return ftype
    return "str"


def _parses(parse: Callable[[str], Any], s: str) -> bool:
    try:
        parse(s)
        return True
    except ValueError:
        return False


def _typed_value(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _candidate(item: str, cells: list[Any], table: _Table, index: dict[str, int], filepath_column: str,
               labels: dict[str, str], parsers: dict[str, Callable[[Any], Any]]) -> Candidate:
    raw = cells[index[filepath_column]]
    if raw is None or raw == "" or not isinstance(raw, str):
        filepath = f"<row {item}>"
        problem = Problem(item, f"column {filepath_column!r} must hold an image path, got {raw!r}")
        return Candidate(item, filepath, problems=[problem])
    filepath = os.path.abspath(os.path.join(table.path.parent, os.path.expanduser(raw)))
    cand = Candidate(item, filepath)
    for column, field in labels.items():
        v = cells[index[column]]
        cand.fields[field] = None if v is None or v == "" else Classification(str(v))
    for column, parse in parsers.items():
        try:
            cand.fields[column] = parse(cells[index[column]])
        except ValueError as e:
            cand.problems.append(Problem(item, str(e)))
    if TAGS_COLUMN in index:
        cand.tags = _tags(cells[index[TAGS_COLUMN]])
    return cand


def _tags(v: Any) -> list[str]:
    if v is None:
        return []
    parts = v if isinstance(v, list) else str(v).split(",")
    return [t.strip() for t in parts if t is not None and t.strip()]


# ---------------------------------------------------------------------------------------------- export


def table_columns(collection: Any, label_field: str | None = None) -> tuple[dict[str, list], dict[str, str]]:
    """The columns of a table of ``collection``, one row per sample (per object on a patches view), and
    each column's type (``"str"``, ``"int"``, ``"float"``, ``"bool"``, or ``"list"``: a list of strings).

    The one column policy of every table export (``export(path, "csv")``, the app's CSV and Parquet
    downloads), chosen so that :func:`read_table` reads the table back with its labels:

    - ``id``; on a patches view also ``sample_id``, the object's sample (an import skips both);
    - ``filepath``;
    - ``tags``, a list (a CSV cell joins them with ``,``);
    - each ``Classification`` or ``Detection`` field's label, in a column named after the field, so that
      ``label_columns=[field]`` imports it back as a Classification;
    - each ``Detections`` field's labels, a list, in column ``<field>.labels`` (a CSV cell joins them with
      ``,``): boxes do not fit in a table cell (export ``"coco"`` for them), so an import skips it;
    - each bool, int, float and str field as it is.

    Other fields (metadata, lists, dicts, arrays) stay out. ``label_field``, if given, keeps only that
    label field's column.
    """
    columns: dict[str, list] = {"id": collection.values("id")}
    types = {"id": "str"}
    if collection._is_patches:
        columns["sample_id"], types["sample_id"] = collection.values("sample_id"), "str"
    columns["filepath"], types["filepath"] = collection.values("filepath"), "str"
    columns[TAGS_COLUMN], types[TAGS_COLUMN] = [list(t or []) for t in collection.values("tags")], "list"
    for name, ftype in collection.get_field_schema().items():
        if name in BUILTIN_FIELDS or name in columns:
            continue
        if ftype in ("Classification", "Detection", "Detections") and label_field not in (None, name):
            continue
        if ftype in ("Classification", "Detection"):
            columns[name], types[name] = collection.values(f"{name}.label"), "str"
        elif ftype == "Detections":
            labels = collection.values(f"{name}.detections.label")
            columns[name + LABELS_SUFFIX], types[name + LABELS_SUFFIX] = [list(v or []) for v in labels], "list"
        elif ftype in SCALAR_TYPES:
            columns[name], types[name] = collection.values(name), ftype
    return columns, types


def table_bytes(collection: Any, fmt: str, *, label_field: str | None = None) -> bytes:
    """The file of :func:`table_columns` of ``collection``: ``fmt`` ``"csv"`` (UTF-8) or ``"parquet"``.

    A CSV cell joins a list with ``,``, so a tag or label holding a ``,`` cannot go in a CSV (an
    ``InvalidInputError`` names the sample; Parquet keeps lists as lists)."""
    return _table_file(*table_columns(collection, label_field), fmt)


def _table_file(columns: dict[str, list], types: dict[str, str], fmt: str) -> bytes:
    import io

    if fmt == "parquet":
        out = io.BytesIO()
        _write_parquet(out, columns, types)
        return out.getvalue()
    if fmt != "csv":
        raise InvalidInputError(f"a table is 'csv' or 'parquet', got {fmt!r}")
    text = io.StringIO()
    _write_csv(text, _joined(columns, types))
    return text.getvalue().encode("utf-8")


def write_table(collection: Any, path: Path, *, label_field: str | None, media: str | None, overwrite: bool,
                progress: bool) -> dict[str, Any]:
    """Write the table of :func:`table_columns` to ``path`` (``.csv``, or ``.parquet``/``.pq``).
    ``label_field``, if given, keeps only that label field's column."""
    ext = path.suffix.lower()
    if ext not in CSV_EXTENSIONS + PARQUET_EXTENSIONS:
        raise InvalidInputError(f"'csv' export writes a .csv or .parquet file; got {path}")
    if path.is_dir():
        raise InvalidInputError(f"cannot export to {path}: it is a folder; 'csv' export writes a file")
    if path.exists() and not overwrite:
        raise InvalidInputError(f"{path} exists; pass overwrite=True to replace it")
    columns, types = table_columns(collection, label_field)
    data = _table_file(columns, types, "parquet" if ext in PARQUET_EXTENSIONS else "csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # readers never see half a table
    return {"exported": len(columns["id"]), "skipped": 0, "export_dir": str(path), "paths": [str(path)],
            "columns": list(columns)}


def _joined(columns: dict[str, list], types: dict[str, str]) -> dict[str, list]:
    """List columns as CSV cells: the items joined with ','; an item holding ',' is an error naming its sample."""
    out = dict(columns)
    for name, ftype in types.items():
        if ftype != "list":
            continue
        for sid, items in zip(columns["id"], columns[name]):
            bad = next((x for x in items if "," in x), None)
            if bad is not None:
                what = "tag" if name == TAGS_COLUMN else f"{name[:-len(LABELS_SUFFIX)]} label"
                raise InvalidInputError(f"cannot export {sid!r} to CSV: its {what} {bad!r} contains ',', which "
                                        "joins a cell's items; export Parquet instead")
        out[name] = [",".join(items) for items in columns[name]]
    return out


def _write_csv(f: Any, columns: dict[str, list]) -> None:
    writer = csv.writer(f)
    writer.writerow(list(columns))
    # None becomes an empty cell; floats are written with repr(), so they read back exactly
    writer.writerows(zip(*columns.values()))


def _write_parquet(f: Any, columns: dict[str, list], types: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "str": pa.string(),
                   "list": pa.list_(pa.string())}
    table = pa.table({name: pa.array(values, type=arrow_types[types[name]]) for name, values in columns.items()})
    pq.write_table(table, f)
