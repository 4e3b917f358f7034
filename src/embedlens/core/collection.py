"""What datasets and views share: reading, bulk writes, tags, and the stages that make views."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from tqdm.auto import tqdm

from . import query as Q
from .expressions import Compiler, F, ViewExpression
from .fields import BUILTIN_FIELDS, decoder, dumps
from .sample import Sample
from .errors import InvalidInputError, NotFoundError, WrongTypeError

if TYPE_CHECKING:
    from .dataset import Dataset
    from .view import DatasetView


class SampleCollection:
    """Base of :class:`Dataset` and :class:`DatasetView`. Every method works on the collection's samples only."""

    _dataset: "Dataset"
    _stages: list[Q.Stage]

    # ------------------------------------------------------------------ plumbing

    @property
    def _db(self):
        return self._dataset._database()

    def _query(self) -> Q.Query:
        q = Q.Query.samples(self._db.schema(), self._db.has_label_attribute)
        for stage in self._stages:
            q = stage.apply(q)
        return q

    @property
    def _is_patches(self) -> bool:
        return self._query().patches_field is not None

    def _ids_sql(self) -> tuple[str, list]:
        """SQL selecting the sample ids of this collection (the parents' ids for a patches view)."""
        q = self._query()
        col = "t.sample_id" if q.patches_field else "t.id"
        return q.sql(col, ordered=False)

    def _view(self, stage: Q.Stage) -> "DatasetView":
        from .view import DatasetView

        return DatasetView(self._dataset, [*self._stages, stage])

    # ------------------------------------------------------------------ reading

    @property
    def dataset_name(self) -> str:
        return self._dataset.name

    @property
    def media_type(self) -> str:
        return "image"

    def get_field_schema(self) -> dict[str, str]:
        """Field name -> type name, for the fields this collection shows."""
        return dict(self._query().schema)

    def has_field(self, path: str) -> bool:
        try:
            self._query().resolve(path)
            return True
        except Q.UnknownFieldError:
            return False
        except ValueError:
            return path in self._query().schema

    def __len__(self) -> int:
        q = self._query()
        if q.limit is None and not q.offset:
            sql, params = q.sql("count(*)", ordered=False)
        else:
            inner, params = q.sql("1", ordered=False)
            sql = f"SELECT count(*) FROM ({inner})"
        return int(self._db.scalar(sql, params))

    def count(self, path: str | None = None) -> int:
        """Number of samples, or with ``path`` the number of non-None values (objects for a list path)."""
        if path is None:
            return len(self)
        return sum(n for v, n in self.count_values(path).items() if v is not None)

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_samples()

    def iter_samples(self, progress: bool = False, batch_size: int = 1000) -> Iterator[Sample]:
        """Yield the samples in view order, reading ``batch_size`` rows at a time."""
        q = self._query()
        names = list(q.schema)
        decoders = [decoder(q.schema[n]) for n in names]
        sql, params = q.sql(", ".join(f't."{n}"' for n in names))
        owner = None if q.patches_field else self._dataset
        cursor = self._db._conn.cursor()
        cursor.execute(sql, params)
        bar = tqdm(total=len(self), disable=not progress, desc="samples", unit="sample")
        try:
            while rows := cursor.fetchmany(batch_size):
                for row in rows:
                    yield Sample._from_stored({n: d(v) for n, d, v in zip(names, decoders, row)}, owner)
                bar.update(len(rows))
        finally:
            bar.close()
            cursor.close()

    def first(self) -> Sample:
        for s in self._view(Q.Limit(1)):
            return s
        raise InvalidInputError("the collection is empty")

    def head(self, n: int = 3) -> list[Sample]:
        return list(self._view(Q.Limit(n)))

    def __getitem__(self, sample_id: str) -> Sample:
        if not isinstance(sample_id, str):
            raise WrongTypeError(f"index a collection by sample id (str), got {type(sample_id).__name__}")
        view = self._view(Q.Match(Q.F("id") == sample_id))
        for s in view:
            return s
        raise NotFoundError(f"no sample with id {sample_id!r} in {self._describe()}")

    def _describe(self) -> str:
        return f"dataset {self._dataset.name!r}" + (" (view)" if self._stages else "")

    @property
    def ids(self) -> list[str]:
        return self.values("id")

    def values(self, path: "str | ViewExpression", expr: ViewExpression | None = None) -> list[Any]:
        """The values of ``path`` for every sample, in view order, with None where missing.

        ``path`` is a field (``"uniqueness"``), a label attribute (``"ground_truth.label"``), an
        attribute of each object (``"predictions.detections.label"``: one list per sample; FiftyOne's
        ``"predictions.detections[].label"`` means the same), or an expression
        (``F("uniqueness") * 2``). ``expr`` is applied to the value of ``path`` with paths relative to it,
        as in FiftyOne: ``values("ground_truth", expr=F("$tags").contains("test").if_else(F("label"),
        "unlabeled"))``. Expressions compile to SQL; the samples are never loaded into Python.
        """
        if expr is not None:
            if not isinstance(expr, ViewExpression):
                raise WrongTypeError(f"values(expr=...) takes an expression, got {type(expr).__name__}")
            if not isinstance(path, str):
                raise WrongTypeError(f"values(path, expr=...) takes a field path, got {type(path).__name__}")
            return self._expr_values(F(path).apply(expr))
        if isinstance(path, ViewExpression):
            return self._expr_values(path)
        if not isinstance(path, str):
            raise WrongTypeError(f"values() takes a field path or an expression, got {type(path).__name__}")
        q = self._query()
        head = path.split(".")[0]
        ftype = q.schema.get(head)
        if ftype == "array" and head == path:
            sel, conv = f't."{head}"', decoder("array")
        else:
            ref = q.resolve(path)
            if ref.kind == "each":
                item = ref.item_path
                sel = (f"CASE WHEN {ref.array_sql} IS NULL THEN NULL ELSE "
                       f"(SELECT json_group_array(_e.value -> '{item}') "
                       f"FROM json_each({ref.array_sql}, '{ref.array_path}') AS _e) END")
                conv = _json_or_none
            elif head == path:
                sel, conv = ref.sql, (None if ftype in ("int", "float", "str") else decoder(ftype))
            elif ref.kind in ("list", "json"):
                sel, conv = ref.sql, _json_or_none
            else:
                sel, conv = ref.sql, None
        sql, params = q.sql(sel)
        rows = self._db.fetchall(sql, params)
        if conv is None:
            return [r[0] for r in rows]
        return [conv(r[0]) for r in rows]

    def _expr_values(self, expr: ViewExpression) -> list[Any]:
        q = self._query()
        compiler = Compiler(q.resolve)
        sel, sel_params = compiler(expr)
        kind = compiler.kind(expr)
        sql, params = q.sql(sel, sel_params)
        raw = [r[0] for r in self._db.fetchall(sql, params)]
        if kind == "bool":
            return [None if v is None else bool(v) for v in raw]
        if kind in ("list", "json"):
            return [_json_or_none(v) for v in raw]
        return raw

    def count_values(self, path: str) -> dict[Any, int]:
        """Value -> number of samples (of objects, for per-object paths; of list items, for lists)."""
        q = self._query()
        ref = q.resolve(path)
        if ref.kind == "scalar":
            inner, params = q.sql(f"{ref.sql} AS v", ordered=False)
            sql = f"SELECT v, count(*) FROM ({inner}) GROUP BY v"
        elif ref.kind == "list":
            inner, params = q.sql(f"{ref.sql} AS v", ordered=False)
            sql = f"SELECT _e.value, count(*) FROM ({inner}) AS x, json_each(x.v) AS _e GROUP BY 1"
        elif ref.kind == "each":
            inner, params = q.sql(f"{ref.array_sql} AS v", ordered=False)
            sql = (f"SELECT json_extract(_e.value, '{ref.item_path}'), count(*) FROM ({inner}) AS x, "
                   f"json_each(x.v, '{ref.array_path}') AS _e GROUP BY 1")
        else:
            raise InvalidInputError(f"count_values() needs a value path; {path!r} is a whole label, try '{path}.label'")
        return dict(self._db.fetchall(sql, params))

    def distinct(self, path: str) -> list[Any]:
        """The sorted distinct non-None values of ``path``."""
        return sorted(v for v in self.count_values(path) if v is not None)

    def count_sample_tags(self) -> dict[str, int]:
        return self.count_values("tags")

    def bounds(self, path: str) -> tuple[Any, Any]:
        """(min, max) of a numeric path."""
        q = self._query()
        ref = q.resolve(path)
        inner, params = q.sql(f"{ref.sql} AS v", ordered=False)
        row = self._db.fetchall(f"SELECT min(v), max(v) FROM ({inner})", params)[0]
        return row[0], row[1]

    # ------------------------------------------------------------------ writing

    def set_values(self, path: str, values: Sequence[Any] | dict[str, Any]) -> None:
        """Set ``path`` on every sample of the collection in one transaction.

        ``values`` is a sequence in view order (``len(values) == len(collection)``), or a dict
        ``{sample_id: value}`` (label id, in a patches view). A new field takes its type from the values.
        """
        q = self._query()
        if isinstance(values, dict):
            ids = list(values)
            values = list(values.values())
            known = set(self.values("id"))
            missing = [i for i in ids if i not in known]
            if missing:
                raise NotFoundError(f"id {missing[0]!r} is not in {self._describe()} ({len(missing)} unknown ids)")
            rowids = None
        else:
            values = list(values)
            rows = self._db.fetchall(*q.sql("t.id, t._rowid"))
            ids = [r[0] for r in rows]
            rowids = [r[1] for r in rows]
            if len(values) != len(ids):
                raise InvalidInputError(f"set_values({path!r}) got {len(values)} values for {len(ids)} samples")
        if q.patches_field:
            field, _, attr = path.partition(".")
            if field != q.patches_field or not attr:
                raise InvalidInputError(f"in a patches view, set attributes of the objects: '{q.patches_field}.<attr>'")
            self._dataset._set_label_attr(field, dict(zip(ids, values)), attr)
            return
        self._dataset._set_values_by_id(path, ids, values, rowids)

    def tag_samples(self, tags: str | Sequence[str]) -> None:
        """Add tags to every sample of the collection (to every object, in a patches view)."""
        tags = [tags] if isinstance(tags, str) else list(tags)
        q = self._query()
        if q.patches_field:
            self._edit_patch_tags(q, lambda t: t + [x for x in tags if x not in t])
            return
        ids_sql, params = self._ids_sql()
        with self._db.transaction():
            for tag in tags:
                self._db.execute(
                    f"UPDATE samples SET tags = json_insert(tags, '$[#]', ?) WHERE id IN ({ids_sql}) "
                    "AND NOT EXISTS (SELECT 1 FROM json_each(samples.tags) WHERE value = ?)",
                    [tag, *params, tag])

    def untag_samples(self, tags: str | Sequence[str]) -> None:
        """Remove tags from every sample of the collection (from every object, in a patches view)."""
        tags = [tags] if isinstance(tags, str) else list(tags)
        q = self._query()
        if q.patches_field:
            self._edit_patch_tags(q, lambda t: [x for x in t if x not in tags])
            return
        ids_sql, params = self._ids_sql()
        drop = dumps(tags)
        with self._db.transaction():
            self._db.execute(
                "UPDATE samples SET tags = (SELECT json_group_array(value) FROM json_each(samples.tags) "
                "WHERE value NOT IN (SELECT value FROM json_each(?))) "
                f"WHERE id IN ({ids_sql}) AND EXISTS (SELECT 1 FROM json_each(samples.tags) "
                "WHERE value IN (SELECT value FROM json_each(?)))",
                [drop, *params, drop])

    def _edit_patch_tags(self, q: Q.Query, edit) -> None:
        ids = self.values("id")
        current = self.values("tags")
        self._dataset._set_label_attr(q.patches_field, {i: edit(t) for i, t in zip(ids, current)}, "tags")

    # ------------------------------------------------------------------ view stages

    def match(self, filter: ViewExpression) -> "DatasetView":
        """Samples where the expression is true: ``match(F("ground_truth.label") == "cat")``."""
        return self._view(Q.Match(filter))

    def match_tags(self, tags: str | Sequence[str], bool: bool = True, all: bool = False) -> "DatasetView":
        """Samples that have any (``all=True``: every) tag of ``tags``; ``bool=False`` inverts."""
        return self._view(Q.MatchTags(tags, bool=bool, all=all))

    def exists(self, field: str, bool: bool = True) -> "DatasetView":
        """Samples whose ``field`` is set (``bool=False``: is None)."""
        return self._view(Q.Exists(field, bool))

    def filter_labels(self, field: str, filter: ViewExpression, only_matches: bool = True) -> "DatasetView":
        """Keep only the labels of ``field`` for which ``filter`` holds, e.g. ``F("confidence") > 0.5``."""
        return self._view(Q.FilterLabels(field, filter, only_matches))

    def select(self, sample_ids: str | Sequence[str], ordered: bool = False) -> "DatasetView":
        """Only these samples; ``ordered=True`` keeps the order of ``sample_ids``."""
        return self._view(Q.Select(_as_ids(sample_ids), ordered))

    def exclude(self, sample_ids: str | Sequence[str]) -> "DatasetView":
        return self._view(Q.Exclude(_as_ids(sample_ids)))

    def sort_by(self, field_or_expr: str | ViewExpression, reverse: bool = False) -> "DatasetView":
        return self._view(Q.SortBy(field_or_expr, reverse))

    def sort_by_prototype(self, brain_key: str, label: str, reverse: bool = True) -> "DatasetView":
        """The samples by their score for class ``label`` of the prototype run ``brain_key``, highest first.

        Exactly ``sort_by(f"{scores_field}.{label}", reverse=reverse)``: the score field and the classes
        are read from the run's record, so ``ds.sort_by_prototype("prototypes", "roses")`` needs neither
        the field's name nor the run's results (the score is ``x . W[c] + b[c]``, see
        ``compute_prototypes``). The view is a plain ``sort_by``: saved or reloaded, it needs no run.
        ``reverse=True`` (default): the most prototypical first. A class whose name is not a plain
        key (letters, digits, '_') cannot be a field path: rank by it with the run's results,
        ``load_brain_results(brain_key).sort_by(label)``.
        """
        from .fields import check_key
        from .runs import get_brain_info

        info = get_brain_info(self._dataset, brain_key)
        if info["type"] != "prototypes":
            raise InvalidInputError(f"brain run {brain_key!r} is a {info['type']} run, not a compute_prototypes run")
        config = info["config"]
        classes = [str(c) for c in config.get("classes", [])]
        if str(label) not in classes:
            raise NotFoundError(f"no class {label!r} in prototype run {brain_key!r}; classes: {classes}")
        try:
            check_key(str(label))
        except InvalidInputError:
            raise InvalidInputError(f"class {label!r} is not a plain key (letters, digits, '_') and cannot be a field "
                                    f"path; rank by it with load_brain_results({brain_key!r}).sort_by({label!r})"
                                    ) from None
        return self.sort_by(f"{config['scores_field']}.{label}", reverse=reverse)

    def shuffle(self, seed: int | None = None) -> "DatasetView":
        return self._view(Q.Shuffle(seed))

    def take(self, size: int, seed: int | None = None) -> "DatasetView":
        """``size`` random samples; the same ``seed`` gives the same samples."""
        return self._view(Q.Take(size, seed))

    def limit(self, limit: int) -> "DatasetView":
        return self._view(Q.Limit(limit))

    def skip(self, skip: int) -> "DatasetView":
        return self._view(Q.Skip(skip))

    def to_patches(self, field: str) -> "DatasetView":
        """One row per object of the Detections ``field``, with ``sample_id`` of its image."""
        return self._view(Q.ToPatches(field))

    def select_fields(self, field_names: str | Sequence[str]) -> "DatasetView":
        return self._view(Q.SelectFields(field_names))

    # ------------------------------------------------------------------ copies, metadata, thumbnails

    def clone(self, name: str | None = None, persistent: bool = True) -> "Dataset":
        """A new dataset holding this collection's samples (same ids, fields, filtered labels)."""
        from .dataset import Dataset

        q = self._query()
        if q.patches_field:
            raise InvalidInputError("clone() works on sample views; this is a patches view")
        new = Dataset(name, persistent=persistent)
        fields = [k for k in q.schema if k not in BUILTIN_FIELDS]
        ndb = new._database()
        with ndb.transaction():
            for f in fields:
                ndb.add_field(f, q.schema[f])
        new.info = dict(self._dataset.info)
        new.save()
        cols = ["id", "filepath", "tags", "metadata", *fields]
        sql, params = q.sql(", ".join(f't."{c}"' for c in cols))
        db = self._db
        db.execute("ATTACH DATABASE ? AS clone_target", [str(ndb.path)])
        try:
            with db.transaction():
                db.execute(f"INSERT INTO clone_target.samples ({', '.join(chr(34) + c + chr(34) for c in cols)}) "
                           f"{sql}", params)
        finally:
            db.execute("DETACH DATABASE clone_target")
        self._copy_embeddings_to(new)
        return new

    def _copy_embeddings_to(self, new: "Dataset") -> None:
        """A clone keeps the embeddings of its samples (objects), so nothing is computed twice."""
        import shutil

        from .embeddings import EmbeddingSet

        src_root = self._dataset.arrays_dir / "embeddings"
        if not src_root.exists():
            return
        sample_ids = set(new.values("id"))
        label_ids: dict[str, set[str]] = {}
        for name in self._dataset.list_embeddings():
            dst = new.arrays_dir / "embeddings" / name
            shutil.copytree(src_root / name, dst)
            meta = EmbeddingSet(dst).meta
            keep = sample_ids
            if meta.get("kind") == "patches":
                field = meta.get("patches_field")
                if field not in label_ids:
                    label_ids[field] = set(new.to_patches(field).values("id")) if field in new.get_field_schema() \
                        else set()
                keep = label_ids[field]
            EmbeddingSet(dst).consolidate(keep_ids=keep)

    # ------------------------------------------------------------------ stored embeddings
    # (computing them, importing, exporting, thumbnails and similarity: embedlens/facade.py)

    def get_embeddings(self, embeddings_field: str):
        """Stored embeddings in view order (NaN rows where a sample has none).

        When the view holds every stored row in the stored order (a dataset whose set was written or
        computed for all its samples), the result is the read-only memory map of the stored file: no
        copy is made and nothing is read until used. Use ``np.array(...)`` for a writable copy. Other
        views get a new array.
        """
        from .embeddings import read_embeddings

        return read_embeddings(self, embeddings_field)

    def set_embeddings(self, embeddings_field: str, embeddings: Any, model_name: str = "user") -> None:
        """Store your own ``[N, D]`` array (view order) as an embeddings set; validated before writing.

        The array is streamed once to the set's file (in view order), checked block by block; a bad
        row, or a process killed half way, leaves the stored set as it was. On a view, the view's rows
        are replaced or added and the set's other rows are kept.
        """
        from .embeddings import write_embeddings

        write_embeddings(self, embeddings_field, embeddings, model_name)

    @property
    def view_stages(self) -> list[Q.Stage]:
        return list(self._stages)


def _as_ids(x: Any) -> Any:
    if isinstance(x, SampleCollection):
        return x.values("id")
    if isinstance(x, Sample):
        return x.id
    return x


def _json_or_none(v: Any) -> Any:
    return None if v is None else json.loads(v)
