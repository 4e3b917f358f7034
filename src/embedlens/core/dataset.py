"""Persistent datasets: one folder under ``$EMBEDLENS_HOME`` holding a SQLite file, arrays and thumbnails."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..config import home
from .collection import SampleCollection
from .database import Database, media_realpath
from .fields import BUILTIN_FIELDS, FIELD_TYPES, check_name, dumps, encoder, infer_field_type
from .ids import new_id, new_ids
from .labels import check_label_attr
from . import runs
from .embeddings import embedding_set
from .query import Stage, UnknownFieldError
from .sample import Sample
from .view import DatasetView
from .errors import InvalidInputError, NotFoundError, WrongTypeError, with_context

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_RESERVED = {"sample-data", "exports", "models"}  # folders of EMBEDLENS_HOME that are not datasets
_DB_FILE = "dataset.db"
_temporary: set[Path] = set()  # non-persistent datasets this process created; deleted at exit


def _check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"invalid dataset name {name!r}: letters, digits, '_', '-', '.'; at most 128 characters")
    if name in _RESERVED:
        raise InvalidInputError(f"{name!r} is reserved for embedlens's own files; choose another dataset name")
    return name


def _path(name: str) -> Path:
    return home() / _check_dataset_name(name)


class Dataset(SampleCollection):
    """A persistent collection of image samples.

    ``Dataset(name)`` creates a new dataset in ``$EMBEDLENS_HOME/<name>/``; use :func:`load_dataset` to open
    an existing one. ``persistent=False`` datasets are deleted when the creating process exits.

    Examples
    --------
    >>> ds = el.Dataset("pets")
    >>> ds.add_samples([el.Sample("cat.jpg", ground_truth=el.Classification("cat"))])
    >>> ds.match(el.F("ground_truth.label") == "cat").count()
    """

    def __init__(self, name: str | None = None, persistent: bool = True, overwrite: bool = False) -> None:
        name = name or time.strftime("dataset-%Y.%m.%d-%H.%M.%S-") + new_id()[-6:]
        path = _path(name)
        if dataset_exists(name):
            if not overwrite:
                raise InvalidInputError(f"dataset {name!r} already exists: open it with el.load_dataset({name!r}), "
                                 "or pass overwrite=True to replace it")
            delete_dataset(name)
        elif path.exists():  # a folder that is not a dataset: never overwrite what we did not write
            raise InvalidInputError(f"cannot create dataset {name!r}: {path} exists and is not an embedlens dataset; "
                             "choose another name or move that folder")
        path.mkdir(parents=True)
        for sub in ("arrays", "thumbnails"):
            (path / sub).mkdir()
        db = Database(path / _DB_FILE, create=True)
        with db.transaction():
            for k, v in (("name", name), ("media_type", "image"), ("created_at", str(time.time())),
                         ("persistent", "1" if persistent else "0"), ("owner_pid", str(os.getpid())),
                         ("user_info", "{}")):
                db.set_info(k, v)
        self._attach(path, db)
        if not persistent:
            _temporary.add(path)

    @classmethod
    def _open(cls, name: str) -> "Dataset":
        path = _path(name)
        if not (path / _DB_FILE).exists():
            known = ", ".join(list_datasets()) or "none"
            raise InvalidInputError(f"dataset {name!r} not found in {home()}; datasets: {known}")
        obj = cls.__new__(cls)
        obj._attach(path, Database(path / _DB_FILE))
        return obj

    def _attach(self, path: Path, db: Database) -> None:
        self._path = path
        self._db_handle: Database | None = db
        self._dataset = self
        self._stages: list[Stage] = []
        self._info: dict = json.loads(db.get_info("user_info", "{}") or "{}")

    def _database(self) -> Database:
        if self._db_handle is None:
            raise InvalidInputError(f"dataset at {self._path} was deleted")
        return self._db_handle

    # ------------------------------------------------------------------ identity and lifecycle

    @property
    def name(self) -> str:
        return self._path.name

    @name.setter
    def name(self, new: str) -> None:
        """Renaming moves the dataset's folder."""
        new_path = _path(new)
        if new_path.exists():
            raise InvalidInputError(f"cannot rename {self.name!r} to {new!r}: a dataset of that name exists")
        self._database().close()
        os.rename(self._path, new_path)
        if self._path in _temporary:
            _temporary.discard(self._path)
            _temporary.add(new_path)
        self._path = new_path
        self._db_handle = Database(new_path / _DB_FILE)
        self._db_handle.set_info("name", new)

    @property
    def path(self) -> Path:
        """The dataset's folder."""
        return self._path

    @property
    def arrays_dir(self) -> Path:
        return self._path / "arrays"

    @property
    def thumbnails_dir(self) -> Path:
        return self._path / "thumbnails"

    @property
    def persistent(self) -> bool:
        return self._database().get_info("persistent") == "1"

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._database().set_info("persistent", "1" if value else "0")
        self._database().set_info("owner_pid", str(os.getpid()))
        (_temporary.discard if value else _temporary.add)(self._path)

    @property
    def created_at(self) -> float:
        return float(self._database().get_info("created_at") or 0)

    @property
    def deleted(self) -> bool:
        return self._db_handle is None

    @property
    def info(self) -> dict:
        """Free-form dataset information (e.g. ``classes``); call :meth:`save` after editing it."""
        return self._info

    @info.setter
    def info(self, value: dict) -> None:
        self._info = dict(value)

    def save(self) -> None:
        self._database().set_info("user_info", dumps(self._info))

    def reload(self) -> None:
        self._info = json.loads(self._database().get_info("user_info", "{}") or "{}")

    def delete(self) -> None:
        """Delete the dataset and its folder, for good."""
        if self._db_handle is not None:
            self._db_handle.close()
            self._db_handle = None
        shutil.rmtree(self._path, ignore_errors=True)
        _temporary.discard(self._path)

    # ------------------------------------------------------------------ adding and editing samples

    def add_sample(self, sample: Sample) -> str:
        return self.add_samples([sample])[0]

    def add_samples(self, samples: Iterable[Sample], progress: bool = False) -> list[str]:
        """Add samples in one transaction and return their new ids.

        New fields take their type from the values; a value of the wrong type for an existing field
        raises an error naming the sample and field, and nothing is written.
        """
        samples = list(samples)
        for i, s in enumerate(samples):
            if not isinstance(s, Sample):
                raise WrongTypeError(f"add_samples() takes Sample objects; item {i} is {type(s).__name__}")
        if not samples:
            return []
        db = self._database()
        schema = db.schema()
        names: dict[str, None] = {}
        for s in samples:
            names.update(dict.fromkeys(k for k in s._data if k not in BUILTIN_FIELDS))
        new_fields = {}
        for name in names:
            if name not in schema:
                ftype = infer_field_type((s._data.get(name) for s in samples), name)
                if ftype is not None:
                    new_fields[name] = ftype
        fields = [n for n in names if n in schema or n in new_fields]
        types = {**schema, **new_fields}
        encoders = [encoder(types[n], n) for n in fields]
        enc_tags, enc_meta = encoder("list", "tags"), encoder("dict", "metadata")
        ids = new_ids(len(samples))
        rows = []
        for sid, s in zip(ids, samples):
            d = s._data
            try:
                rows.append((sid, d["filepath"], media_realpath(d["filepath"]), enc_tags(d["tags"]),
                             enc_meta(d["metadata"]), *[enc(d.get(n)) for n, enc in zip(fields, encoders)]))
            except (TypeError, ValueError) as e:
                raise with_context(e, f"sample {d['filepath']!r}") from None
        cols = ", ".join(["id", "filepath", "media_realpath", "tags", "metadata", *(f'"{n}"' for n in fields)])
        marks = ", ".join("?" * (5 + len(fields)))
        with db.transaction():
            for name, ftype in new_fields.items():
                db.add_field(name, ftype)
            db.executemany(f"INSERT INTO samples ({cols}) VALUES ({marks})", rows)
        for sid, s in zip(ids, samples):
            s._data["id"] = sid
            object.__setattr__(s, "_dataset", self)
        return ids

    def verified_media(self, ids: Sequence[str]) -> list[str | None]:
        """The image file of each sample, resolved now, where it is still the file recorded when the
        sample's filepath was written; None where the path now resolves elsewhere (a re-pointed link), no
        file is there, or the id is unknown. What the app serves: it never follows a link that changed."""
        rows = dict(((i, (fp, rec)) for i, fp, rec in self._database().fetchall(
            "SELECT id, filepath, media_realpath FROM samples WHERE id IN (SELECT value FROM json_each(?))",
            (dumps(list(ids)),))))
        out: list[str | None] = []
        for i in ids:
            fp, recorded = rows.get(i, (None, None))
            now = media_realpath(fp) if fp is not None else None
            out.append(now if now is not None and now == recorded and os.path.isfile(now) else None)
        return out

    def _save_sample(self, sample: Sample) -> None:
        db = self._database()
        schema = db.schema()
        data = sample._data
        names = [n for n in data if n != "id"]
        new = {n: infer_field_type([data[n]], n) for n in names if n not in schema}
        new = {n: t for n, t in new.items() if t is not None}
        names = [n for n in names if n in schema or n in new]
        types = {**schema, **new}
        try:
            vals = [encoder(types[n], n)(data[n]) for n in names]
        except (TypeError, ValueError) as e:
            raise with_context(e, f"sample {data['id']!r}") from None
        with db.transaction():
            for n, t in new.items():
                db.add_field(n, t)
            cur = db.execute(f"UPDATE samples SET {', '.join(f'{chr(34)}{n}{chr(34)} = ?' for n in names)} "
                             "WHERE id = ?", [*vals, data["id"]])
            if cur.rowcount != 1:
                raise NotFoundError(f"sample {data['id']!r} is no longer in dataset {self.name!r}")

    def _set_values_by_id(self, path: str, ids: list[str], values: list[Any],
                          rowids: list[int] | None = None) -> None:
        """Write ``values[i]`` to sample ``ids[i]``; ``rowids`` (same order), when known, skip the id lookups."""
        db = self._database()
        key, keys = ("_rowid", rowids) if rowids is not None else ("id", ids)
        schema = db.schema()
        head, _, rest = path.partition(".")
        if head in ("id", "_rowid"):
            raise InvalidInputError("sample ids cannot be set")
        if not rest:
            ftype = schema.get(head)
            new = ftype is None
            if new:
                check_name(head)
                ftype = infer_field_type(values, head)
                if ftype is None:
                    raise InvalidInputError(f"cannot infer the type of new field {head!r} from None values; "
                                     f"create it first with add_sample_field({head!r}, type)")
            enc = encoder(ftype, head)
            try:
                encoded = [enc(v) for v in values]
            except (TypeError, ValueError) as e:
                bad = next(i for i, v in enumerate(values) if _fails(enc, v))
                raise with_context(e, f"sample {ids[bad]!r}") from None
            with db.transaction():
                if new:
                    db.add_field(head, ftype)
                db.executemany(f'UPDATE samples SET "{head}" = ? WHERE {key} = ?', zip(encoded, keys))
            return
        ftype = schema.get(head)
        if ftype is None:
            raise UnknownFieldError(f"unknown field {head!r} in {path!r}; fields: {', '.join(schema)}")
        if ftype == "Detections":
            if not rest.startswith("detections."):
                raise InvalidInputError(f"{path!r}: set object attributes as '{head}.detections.<attr>'")
            attr = check_name(rest[len("detections."):])
            self._set_detections_attr(head, ids, values, attr)
            return
        if ftype not in ("Classification", "Detection", "dict"):
            raise InvalidInputError(f"{path!r}: field {head!r} of type {ftype} has no sub-fields")
        for part in rest.split("."):
            check_name(part)
        is_label = ftype != "dict"
        rows = []
        for sid, k, v in zip(ids, keys, values):
            try:
                v = check_label_attr(rest, v) if is_label else v
                default = dumps({"_cls": ftype, "id": new_id()}) if is_label else "{}"
                rows.append((default, dumps(v), k))
            except (TypeError, ValueError) as e:
                raise with_context(e, f"sample {sid!r}, {path!r}") from None
        with db.transaction():
            db.executemany(f'UPDATE samples SET "{head}" = json_set(COALESCE("{head}", json(?)), '
                           f"'$.{rest}', json(?)) WHERE {key} = ?", rows)

    def _set_detections_attr(self, field: str, ids: list[str], values: list[Any], attr: str) -> None:
        """``field.detections.attr = values[i]`` (a list, one value per object) for sample ``ids[i]``."""
        db = self._database()
        current = dict(db.fetchall(f'SELECT id, "{field}" FROM samples WHERE id IN (SELECT value FROM json_each(?))',
                                   [dumps(ids)]))
        rows = []
        for sid, vals in zip(ids, values):
            raw = current.get(sid)
            if raw is None:
                if vals:
                    raise InvalidInputError(f"sample {sid!r} has no {field!r} objects to set {attr!r} on")
                continue
            d = json.loads(raw)
            dets = d.get("detections", [])
            if vals is None or len(vals) != len(dets):
                raise InvalidInputError(f"sample {sid!r}: {len(dets)} objects in {field!r} but "
                                 f"{'no' if vals is None else len(vals)} values for {attr!r}")
            for det, v in zip(dets, vals):
                det[attr] = check_label_attr(attr, v)
            rows.append((dumps(d), sid))
        with db.transaction():
            db.executemany(f'UPDATE samples SET "{field}" = ? WHERE id = ?', rows)

    def _set_label_attr(self, field: str, by_label_id: dict[str, Any], attr: str) -> None:
        """Set ``attr`` on the labels of ``field`` with the given ids (objects in a patches view)."""
        db = self._database()
        check_name(attr)
        ftype = db.schema().get(field)
        if ftype == "Detections":
            sql = (f'SELECT DISTINCT s.id, s."{field}" FROM samples AS s, json_each(s."{field}", \'$.detections\') '
                   "AS _e WHERE json_extract(_e.value, '$.id') IN (SELECT value FROM json_each(?))")
        elif ftype in ("Classification", "Detection"):
            sql = f'SELECT id, "{field}" FROM samples WHERE json_extract("{field}", \'$.id\') IN (SELECT value FROM json_each(?))'
        else:
            raise InvalidInputError(f"{field!r} is not a label field")
        values = {k: check_label_attr(attr, v) for k, v in by_label_id.items()}
        seen, rows = set(), []
        for sid, raw in db.fetchall(sql, [dumps(list(values))]):
            d = json.loads(raw)
            for label in d["detections"] if ftype == "Detections" else [d]:
                if label.get("id") in values:
                    label[attr] = values[label["id"]]
                    seen.add(label["id"])
            rows.append((dumps(d), sid))
        missing = [k for k in values if k not in seen]
        if missing:
            raise NotFoundError(f"label id {missing[0]!r} is not in field {field!r} ({len(missing)} unknown)")
        with db.transaction():
            db.executemany(f'UPDATE samples SET "{field}" = ? WHERE id = ?', rows)

    def delete_samples(self, samples_or_ids: Any) -> int:
        """Delete samples given as ids, Sample objects or a view; returns how many were deleted."""
        if isinstance(samples_or_ids, SampleCollection):
            ids = samples_or_ids.values("sample_id" if samples_or_ids._is_patches else "id")
        elif isinstance(samples_or_ids, (str, Sample)):
            ids = [samples_or_ids.id if isinstance(samples_or_ids, Sample) else samples_or_ids]
        else:
            ids = [s.id if isinstance(s, Sample) else s for s in samples_or_ids]
        ids = list(dict.fromkeys(ids))
        db = self._database()
        with db.transaction():
            found = {r[0] for r in db.fetchall("SELECT id FROM samples WHERE id IN (SELECT value FROM json_each(?))",
                                               [dumps(ids)])}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFoundError(f"sample {missing[0]!r} is not in dataset {self.name!r} ({len(missing)} unknown ids)")
            db.execute("DELETE FROM samples WHERE id IN (SELECT value FROM json_each(?))", [dumps(ids)])
        return len(ids)

    def clear(self) -> None:
        """Delete every sample (fields stay)."""
        with self._database().transaction():
            self._database().execute("DELETE FROM samples")

    # ------------------------------------------------------------------ importing (formats live in embedlens.io)

    @classmethod
    def from_dir(cls, dataset_dir: str | os.PathLike, dataset_type: str, name: str | None = None,
                 persistent: bool = True, overwrite: bool = False, **kwargs: Any) -> "Dataset":
        """A new dataset imported from ``dataset_dir``; see :meth:`add_dir` for ``dataset_type`` and options.

        If the import fails, no dataset is left behind, and with ``overwrite=True`` the old dataset
        stays as it was.
        """
        if name is None:
            ds = cls(None, persistent=persistent)
            try:
                ds.add_dir(dataset_dir, dataset_type, **kwargs)
            except BaseException:
                ds.delete()
                raise
            return ds
        with staged_dataset(name, overwrite=overwrite) as ds:
            ds.add_dir(dataset_dir, dataset_type, **kwargs)
        ds.persistent = persistent
        return ds

    # ------------------------------------------------------------------ fields

    def add_sample_field(self, name: str, ftype: str) -> None:
        """Add an empty field of type ``ftype`` (one of ``el.FIELD_TYPES``)."""
        if name in BUILTIN_FIELDS:
            raise InvalidInputError(f"{name!r} is a built-in field")
        if ftype not in FIELD_TYPES:
            raise InvalidInputError(f"unknown field type {ftype!r}; one of {', '.join(FIELD_TYPES)}")
        self._database().add_field(name, ftype)

    def _check_user_field(self, name: str) -> None:
        if name in BUILTIN_FIELDS:
            raise InvalidInputError(f"{name!r} is a built-in field and cannot be changed")
        schema = self._database().schema()
        if name not in schema:
            raise UnknownFieldError(f"unknown field {name!r}; fields: {', '.join(schema)}")

    def delete_sample_field(self, name: str) -> None:
        self._check_user_field(name)
        self._database().delete_field(name)

    def delete_sample_fields(self, names: Sequence[str]) -> None:
        with self._database().transaction():
            for n in names:
                self.delete_sample_field(n)

    def rename_sample_field(self, old: str, new: str) -> None:
        self._check_user_field(old)
        if new in self._database().schema():
            raise InvalidInputError(f"cannot rename {old!r} to {new!r}: field {new!r} exists")
        self._database().rename_field(old, new)

    def create_index(self, paths: str | Sequence[str]) -> str:
        """Index one field path, or several (a compound index), so views that filter or sort on them
        skip the full scan: ``create_index(["ground_truth.label", "uniqueness"])`` serves
        ``match(F("ground_truth.label") == "3").sort_by("uniqueness")``. Returns the index name."""
        paths = [paths] if isinstance(paths, str) else list(paths)
        exprs = []
        for path in paths:
            ref = self._query().resolve(path)
            if ref.kind != "scalar":
                raise InvalidInputError(f"only single-valued paths can be indexed; {path!r} is not")
            exprs.append(ref.sql.replace('t."', '"'))
        name = "idx_" + "__".join(re.sub(r"\W", "_", p) for p in paths)
        with self._database().transaction():
            self._database().execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON samples({", ".join(exprs)})')
            self._database().execute("ANALYZE samples")
        return name

    def list_indexes(self) -> list[str]:
        return [r[0] for r in self._database().fetchall(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='samples' AND name LIKE 'idx_%'")]

    def drop_index(self, name: str) -> None:
        if name not in self.list_indexes():
            raise InvalidInputError(f"no index {name!r}; indexes: {self.list_indexes()}")
        self._database().execute(f'DROP INDEX "{name}"')

    # ------------------------------------------------------------------ embedding sets

    def list_embeddings(self) -> list[str]:
        """Names of the stored embedding sets."""
        root = self.arrays_dir / "embeddings"
        return sorted(p.name for p in root.iterdir() if (p / "meta.json").exists()) if root.exists() else []

    def get_embeddings_info(self, embeddings_field: str) -> dict[str, Any]:
        """Model, fingerprint, preprocessing, dimension and row count of a stored set."""
        return embedding_set(self, embeddings_field).meta

    def delete_embeddings(self, embeddings_field: str) -> None:
        store = embedding_set(self, embeddings_field)
        if not store.exists:
            raise NotFoundError(f"no embeddings {embeddings_field!r}; stored: {self.list_embeddings()}")
        store.delete()

    # ------------------------------------------------------------------ brain runs (made by embedlens.brain)

    def list_brain_runs(self, type: str | None = None, method: str | None = None) -> list[str]:
        """Keys of the brain runs, optionally of one ``type`` ("visualization", "similarity", ...)."""
        return runs.list_brain_runs(self, type, method)

    def has_brain_run(self, brain_key: str) -> bool:
        return runs.has_brain_run(self, brain_key)

    def get_brain_info(self, brain_key: str) -> dict[str, Any]:
        """Type, method, config, timestamps, the view's stages and the fields the run wrote."""
        return runs.get_brain_info(self, brain_key)

    def load_brain_results(self, brain_key: str):
        """The results object of a run, rebuilt from its stored arrays (no re-computation)."""
        return runs.load_brain_results(self, brain_key)

    def load_brain_view(self, brain_key: str) -> DatasetView:
        """The view a run was computed on."""
        return runs.load_brain_view(self, brain_key)

    def rename_brain_run(self, brain_key: str, new_brain_key: str) -> None:
        runs.rename_brain_run(self, brain_key, new_brain_key)

    def delete_brain_run(self, brain_key: str) -> None:
        """Delete a run, the fields it wrote, and its arrays."""
        runs.delete_brain_run(self, brain_key)

    def delete_brain_runs(self) -> None:
        runs.delete_brain_runs(self)

    # ------------------------------------------------------------------ saved views

    def save_view(self, name: str, view: DatasetView, overwrite: bool = False) -> None:
        """Store ``view``'s stages under ``name`` (reload with :meth:`load_saved_view`)."""
        if not isinstance(view, DatasetView) or view._dataset.name != self.name:
            raise InvalidInputError("save_view() takes a view of this dataset")
        db = self._database()
        with db.transaction():
            if not overwrite and self.has_saved_view(name):
                raise InvalidInputError(f"saved view {name!r} exists; pass overwrite=True to replace it")
            db.execute("INSERT OR REPLACE INTO saved_views VALUES (?, ?, ?)",
                       (name, dumps(view.to_dicts()), time.time()))

    def has_saved_view(self, name: str) -> bool:
        return self._database().scalar("SELECT count(*) FROM saved_views WHERE name = ?", (name,)) > 0

    def list_saved_views(self) -> list[str]:
        return [r[0] for r in self._database().fetchall("SELECT name FROM saved_views ORDER BY name")]

    def load_saved_view(self, name: str) -> DatasetView:
        raw = self._database().scalar("SELECT stages FROM saved_views WHERE name = ?", (name,))
        if raw is None:
            raise NotFoundError(f"no saved view {name!r}; saved views: {self.list_saved_views()}")
        return self.view_from_dicts(json.loads(raw))

    def delete_saved_view(self, name: str) -> None:
        if not self.has_saved_view(name):
            raise NotFoundError(f"no saved view {name!r}; saved views: {self.list_saved_views()}")
        with self._database().transaction():
            self._database().execute("DELETE FROM saved_views WHERE name = ?", (name,))

    def view(self) -> DatasetView:
        """A view of the whole dataset, to chain stages on."""
        return DatasetView(self, [])

    def view_from_dicts(self, stages: list[dict]) -> DatasetView:
        return DatasetView(self, [Stage.from_dict(d) for d in stages])

    # ------------------------------------------------------------------ printing

    def _summary(self, collection: SampleCollection) -> str:
        schema = collection.get_field_schema()
        width = max(len(k) for k in schema) + 1
        lines = [
            f"Name:        {self.name}",
            f"Media type:  {collection.media_type}",
            f"Num {'patches' if collection._is_patches else 'samples'}: {len(collection)}",
            f"Persistent:  {self.persistent}",
            f"Tags:        {sorted(collection.count_sample_tags())}",
            "Sample fields:",
            *(f"    {k + ':':<{width}} {v}" for k, v in schema.items()),
        ]
        if collection._stages:
            lines.append("View stages:")
            lines += [f"    {i}. {s!r}" for i, s in enumerate(collection._stages, 1)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self._summary(self)


# ---------------------------------------------------------------------------------------------- registry


def _fails(enc, value: Any) -> bool:
    try:
        enc(value)
        return False
    except (TypeError, ValueError):
        return True


def _owner_alive(path: Path) -> bool:
    try:
        con = sqlite3.connect(f"file:{path / _DB_FILE}?mode=ro", uri=True)
        try:
            rows = dict(con.execute("SELECT key, value FROM info WHERE key IN ('persistent', 'owner_pid')"))
        finally:
            con.close()
    except sqlite3.Error:
        return True  # unreadable right now (being created?): leave it alone
    if rows.get("persistent", "1") == "1":
        return True
    try:
        os.kill(int(rows.get("owner_pid", "0")), 0)
        return True
    except (OSError, ValueError):
        return False


def list_datasets() -> list[str]:
    """Names of the datasets in ``$EMBEDLENS_HOME``; throw-away datasets of dead processes are removed."""
    root = home()
    if not root.exists():
        return []
    names = []
    for p in sorted(root.iterdir()):
        if (p / _DB_FILE).exists() and _NAME.fullmatch(p.name):
            if _owner_alive(p):
                names.append(p.name)
            else:
                shutil.rmtree(p, ignore_errors=True)
    return names


def dataset_exists(name: str) -> bool:
    return (_path(name) / _DB_FILE).exists()


def load_dataset(name: str) -> Dataset:
    """Open the dataset ``name`` from ``$EMBEDLENS_HOME``."""
    return Dataset._open(name)


def delete_dataset(name: str) -> None:
    if not dataset_exists(name):
        raise InvalidInputError(f"dataset {name!r} not found in {home()}")
    shutil.rmtree(_path(name))


@contextlib.contextmanager
def staged_dataset(name: str, overwrite: bool = False) -> Iterator[Dataset]:
    """A scratch dataset that becomes ``name`` only when the ``with`` block succeeds.

    On any error the scratch dataset is deleted and an existing ``name`` is left exactly as it was, so a
    failed build or import never leaves a half-filled dataset behind. With ``overwrite=False`` an existing
    ``name`` is an error (checked before and after the block).
    """
    if dataset_exists(name) and not overwrite:
        raise InvalidInputError(f"dataset {name!r} already exists; pass overwrite to replace it")
    suffix = new_id()[-8:]
    # Not persistent: if this process dies mid-build, list_datasets() removes the scratch dataset later.
    scratch = Dataset(f"{name[:100]}.partial-{suffix}", persistent=False)
    try:
        yield scratch
        _swap_into(scratch, name, overwrite, suffix)
    except BaseException:
        scratch.delete()
        raise


def _swap_into(scratch: Dataset, name: str, overwrite: bool, suffix: str) -> None:
    """Rename ``scratch`` to ``name``; an old ``name`` is moved aside first and deleted only afterwards."""
    old = None
    if dataset_exists(name):
        if not overwrite:
            raise InvalidInputError(f"dataset {name!r} was created by someone else meanwhile; nothing was changed")
        old = load_dataset(name)
        old.name = f"{name[:100]}.replaced-{suffix}"
    scratch.name = name
    scratch.persistent = True
    if old is not None:
        old.delete()



@atexit.register
def _delete_temporary() -> None:
    for p in list(_temporary):
        shutil.rmtree(p, ignore_errors=True)
