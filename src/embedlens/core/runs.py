"""Brain runs, as stored: each method's configuration, the view it ran on, the fields it wrote, its results.

Storage only: the methods that make runs live in ``embedlens.brain`` and register their results classes
here (:func:`register_type`) so that :func:`load_brain_results` can rebuild them.

A run is a row of the dataset's ``runs`` table plus ``.npy`` arrays under ``arrays/runs/<key>/``.
Results are stored as arrays and JSON, never pickled, so a fresh process (or another machine that
copies the folder) loads the same points and indexes.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidInputError, NotFoundError
from .fields import check_name, dumps

if TYPE_CHECKING:
    from .collection import SampleCollection
    from .dataset import Dataset
    from .view import DatasetView

RUN_TYPES: dict[str, type["BrainResults"]] = {}
#: The arguments of the brain method running in this context (set by ``embedlens.brain.contract``), which
#: save_run() stores as the run's ``config["call"]``.
CURRENT_CALL: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("brain_call", default=None)


class BrainResults:
    """What a brain method returns: its ``config``, the row ``keys`` (sample or label ids) and arrays.

    Subclasses set ``run_type`` and are registered with :func:`register_type`, so
    ``dataset.load_brain_results(key)`` rebuilds the right class from what :meth:`save` stored.
    """

    run_type = "base"
    _array_names: tuple[str, ...] = ()

    def __init__(self, samples: "SampleCollection", config: dict[str, Any], keys: list[str],
                 sample_ids: list[str], arrays: dict[str, np.ndarray], brain_key: str | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self._samples = samples
        self.config = dict(config)
        self.keys = list(keys)
        self.sample_ids = list(sample_ids)
        self._arrays = dict(arrays)
        self.key = brain_key
        self.info = dict(info or {})
        self._staged: list[tuple[str, list[str], list[Any]]] = []

    @property
    def samples(self) -> "SampleCollection":
        """The collection the method ran on."""
        return self._samples

    @property
    def ids(self) -> list[str]:
        """Sample ids of the rows (for object-level runs: the objects' label ids)."""
        return self.keys

    @property
    def patches_field(self) -> str | None:
        return self.config.get("patches_field")

    @property
    def scores(self) -> np.ndarray | None:
        """One score per row (in ``ids`` order), for the methods that score: higher = more of what the
        method looks for (unique, mistaken, hard...); NaN where a row has none. None otherwise."""
        return self._arrays.get("scores")

    def stage_field(self, field: str, ids: list[str], values: list[Any]) -> None:
        """Values to write to ``field`` of samples ``ids`` when the results are saved, in the same
        transaction as the run's record."""
        self._staged.append((field, list(ids), list(values)))

    def summary(self) -> dict[str, Any]:
        """The run at a glance: key, type, method, rows, and the spread of the scores where there are some."""
        out: dict[str, Any] = {"key": self.key, "type": self.run_type, "method": self.config.get("method"),
                               "rows": len(self.keys)}
        scores = self.scores
        if scores is not None and len(scores):
            finite = np.asarray(scores, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            if len(finite):
                out["scores"] = {"count": int(len(finite)), "min": float(finite.min()),
                                 "mean": float(finite.mean()), "max": float(finite.max())}
        if self.config.get("skipped"):
            out["skipped"] = list(self.config["skipped"])
        return out

    def top(self, n: int = 10) -> "SampleCollection":
        """The ``n`` rows with the highest scores, highest first, as a view (of objects for object runs)."""
        scores = self.scores
        if scores is None:
            raise InvalidInputError(f"{type(self).__name__} has no scores to rank by")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError(f"n must be a positive integer, got {n!r}")
        s = np.asarray(scores, dtype=np.float64)
        order = np.argsort(np.where(np.isnan(s), -np.inf, -s), kind="stable")[:int(n)]
        ids = [self.keys[i] for i in order if not np.isnan(s[i])]
        base = self._samples.to_patches(self.patches_field) if self.patches_field else self._samples
        return base.select(ids, ordered=True)

    @classmethod
    def _from_stored(cls, samples: "SampleCollection", config: dict[str, Any], keys: list[str],
                     sample_ids: list[str], arrays: dict[str, np.ndarray], key: str,
                     stored: dict[str, Any]) -> "BrainResults":
        return cls(samples, config, keys, sample_ids, arrays, key, stored.get("info"))

    def _results_json(self) -> dict[str, Any]:
        """Small JSON-able results a subclass wants stored beside its arrays."""
        return {}

    def save(self, brain_key: str | None = None, overwrite: bool = False, fields: list[str] | None = None) -> None:
        """Store these results under ``brain_key`` (default: the key they were computed with)."""
        key = brain_key or self.key
        if not key:
            raise InvalidInputError("pass a brain_key to save these results under")
        save_run(self._samples, key, self, fields or [], overwrite=overwrite)
        self.key = key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key={self.key!r} method={self.config.get('method')!r} rows={len(self.keys)}>"


def register_type(cls: type[BrainResults]) -> type[BrainResults]:
    RUN_TYPES[cls.run_type] = cls
    return cls


def _runs_dir(dataset: "Dataset", key: str) -> Path:
    return dataset.arrays_dir / "runs" / key


def _row(dataset: "Dataset", key: str) -> dict[str, Any]:
    rows = dataset._database().fetchall(
        "SELECT key, type, method, config, view, fields, arrays, results, created_at, updated_at "
        "FROM runs WHERE key = ?", (key,))
    if not rows:
        raise NotFoundError(f"no brain run {key!r} on dataset {dataset.name!r}; runs: {list_brain_runs(dataset)}")
    r = rows[0]
    return {"key": r[0], "type": r[1], "method": r[2], "config": json.loads(r[3]), "view": json.loads(r[4]),
            "fields": json.loads(r[5]), "arrays": json.loads(r[6]), "results": json.loads(r[7] or "{}"),
            "created_at": r[8], "updated_at": r[9]}


def check_new_key(samples: "SampleCollection", key: str | None, overwrite: bool) -> None:
    """Fail before any work when ``key`` exists (unless ``overwrite``) or is not a valid name."""
    if key is None:
        return
    check_name(key)
    if has_brain_run(samples._dataset, key) and not overwrite:
        raise InvalidInputError(f"brain run {key!r} exists on dataset {samples._dataset.name!r}; "
                         "pass overwrite=True to replace it, or choose another brain_key")


def save_run(samples: "SampleCollection", key: str, results: BrainResults, fields: list[str],
             overwrite: bool = False) -> None:
    """Write ``results`` as run ``key``: arrays first (to a temporary folder), then one row."""
    dataset = samples._dataset
    check_new_key(samples, key, overwrite)
    root = _runs_dir(dataset, key)
    tmp = root.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = []
    for name, arr in results._arrays.items():
        np.save(tmp / f"{name}.npy", np.asarray(arr), allow_pickle=False)
        names.append(name)
    np.save(tmp / "_keys.npy", np.asarray(results.keys, dtype="<U24"), allow_pickle=False)
    np.save(tmp / "_sample_ids.npy", np.asarray(results.sample_ids, dtype="<U24"), allow_pickle=False)
    stages = [s.to_dict() for s in samples._stages]
    call = CURRENT_CALL.get()
    if call is not None and "call" not in results.config:
        results.config["call"] = call
    now = time.time()
    db = dataset._database()
    with db.transaction():
        for field, ids, values in results._staged:  # the fields and the record: together or not at all
            dataset._set_values_by_id(field, ids, values)
        old = db.fetchall("SELECT created_at FROM runs WHERE key = ?", (key,))
        db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (key, results.run_type, results.config.get("method"), dumps(results.config), dumps(stages),
                    dumps(fields), dumps(names), dumps({**results._results_json(), "info": results.info}),
                    old[0][0] if old else now, now))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    results._staged.clear()


def list_brain_runs(dataset: "Dataset", type: str | None = None, method: str | None = None) -> list[str]:
    """Keys of the dataset's brain runs, optionally of one ``type`` ("visualization", "similarity", ...)."""
    sql, params = "SELECT key FROM runs WHERE 1", []
    if type is not None:
        sql += " AND type = ?"
        params.append(type)
    if method is not None:
        sql += " AND method = ?"
        params.append(method)
    return [r[0] for r in dataset._database().fetchall(sql + " ORDER BY created_at, key", params)]


def has_brain_run(dataset: "Dataset", key: str) -> bool:
    return bool(dataset._database().scalar("SELECT count(*) FROM runs WHERE key = ?", (key,)))


def get_brain_info(dataset: "Dataset", key: str) -> dict[str, Any]:
    """Type, method, config, timestamps, the view's stages and the fields a run wrote."""
    row = _row(dataset, key)
    return {k: row[k] for k in ("key", "type", "method", "config", "view", "fields", "created_at", "updated_at")}


def load_brain_view(dataset: "Dataset", key: str) -> "DatasetView":
    """The view the run was computed on."""
    return dataset.view_from_dicts(_row(dataset, key)["view"])


def load_brain_results(dataset: "Dataset", key: str) -> BrainResults:
    row = _row(dataset, key)
    try:
        cls = RUN_TYPES[row["type"]]
    except KeyError:
        raise InvalidInputError(f"brain run {key!r} has type {row['type']!r}, which this version cannot load") from None
    root = _runs_dir(dataset, key)
    arrays = {n: np.load(root / f"{n}.npy", allow_pickle=False) for n in row["arrays"]}
    keys = np.load(root / "_keys.npy", allow_pickle=False).tolist()
    sample_ids = np.load(root / "_sample_ids.npy", allow_pickle=False).tolist()
    samples = dataset.view_from_dicts(row["view"]) if row["view"] else dataset
    return cls._from_stored(samples, row["config"], keys, sample_ids, arrays, key, row["results"])


def rename_brain_run(dataset: "Dataset", old: str, new: str) -> None:
    check_name(new)
    _row(dataset, old)
    if has_brain_run(dataset, new):
        raise InvalidInputError(f"brain run {new!r} exists; delete it first or choose another name")
    db = dataset._database()
    with db.transaction():
        db.execute("UPDATE runs SET key = ?, updated_at = ? WHERE key = ?", (new, time.time(), old))
        if _runs_dir(dataset, old).exists():
            os.replace(_runs_dir(dataset, old), _runs_dir(dataset, new))


def delete_brain_run(dataset: "Dataset", key: str) -> None:
    """Delete the run, the fields it wrote and its arrays."""
    row = _row(dataset, key)
    db = dataset._database()
    schema = dataset.get_field_schema()
    with db.transaction():
        for field in row["fields"]:
            if field in schema:
                dataset.delete_sample_field(field)
        db.execute("DELETE FROM runs WHERE key = ?", (key,))
    shutil.rmtree(_runs_dir(dataset, key), ignore_errors=True)


def delete_brain_runs(dataset: "Dataset") -> None:
    for key in list_brain_runs(dataset):
        delete_brain_run(dataset, key)


def update_run_state(results: BrainResults, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
    """Store what a saved run learned after it was made (``find_duplicates``, ``find_unique``): small JSON
    ``state`` and ``arrays``, so ``load_brain_results`` in a fresh process has them too. Arrays are written
    to temporary names and renamed once the record that lists them commits."""
    key = results.key
    if key is None:
        return  # not saved: the state lives in this object only
    dataset = results.samples._dataset
    row = _row(dataset, key)
    root = _runs_dir(dataset, key)
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        check_name(name)
        np.save(root / f".{name}.tmp.npy", np.asarray(arr), allow_pickle=False)
    names = sorted(set(row["arrays"]) | set(arrays))
    stored = {**row["results"], "state": {**row["results"].get("state", {}), **state}}
    db = dataset._database()
    with db.transaction():
        db.execute("UPDATE runs SET arrays = ?, results = ?, updated_at = ? WHERE key = ?",
                   (dumps(names), dumps(stored), time.time(), key))
        for name in arrays:
            os.replace(root / f".{name}.tmp.npy", root / f"{name}.npy")
    results._arrays.update(arrays)
