"""Embeddings of a collection's samples or objects, stored per set and reused, and model predictions."""

from __future__ import annotations

import re
from pathlib import Path

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.labels import Classification
from .pipeline import Batch, Failures, Unit, batches
from ..core.embeddings import EmbeddingSet, check_matrix, embedding_set
from ..core.errors import InvalidInputError, WrongTypeError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection
    from ..models import Model

ERROR_FIELD = "embedding_error"


def resolve_model(model: "Model | str | None", **kwargs: Any) -> "Model":
    from ..models import DEFAULT_MODEL, Model, load_model

    if model is None:
        return load_model(DEFAULT_MODEL, **kwargs)
    if isinstance(model, str):
        return load_model(model, **kwargs)
    if isinstance(model, Model):
        return model
    raise WrongTypeError(f"model must be a name, an embedlens Model, or None; got {type(model).__name__}")


def set_name_for(model_name: str) -> str:
    """The stored set a model's embeddings go to when no name is given: the model's name as an identifier
    (``"efficientnet-lite0"`` -> ``"efficientnet_lite0"``, ``"path/net.onnx"`` -> ``"net"``)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(model_name).stem if model_name.lower().endswith(".onnx") else model_name)
    return name if name[:1].isalpha() else f"emb_{name}"


def _default_batch_size(model: "Model") -> int:
    # onnxruntime is flat across batch sizes; eager torch is fastest at small batches (cache-resident)
    return 32 if getattr(model, "backend", "onnx") == "onnx" else 8


def _run_model(model: "Model", units: Sequence[Unit], batch_size: int | None, num_workers: int | None,
               skip_failures: bool, progress: bool, on_batch, desc: str) -> Failures:
    failures = Failures()
    for batch in batches(model, units, batch_size or _default_batch_size(model), num_workers, skip_failures, failures,
                         desc=desc, progress=progress):
        on_batch(batch)
    return failures


def _sample_units(ids: list[str], paths: list[str]) -> list[Unit]:
    return [Unit([i], p) for i, p in zip(ids, paths)]


def compute_embeddings(samples: "SampleCollection", model: "Model | str | None" = None,
                       embeddings_field: str | None = None, batch_size: int | None = None,
                       num_workers: int | None = None, skip_failures: bool = True, progress: bool = True,
                       overwrite: bool = False, engine: str = "local", **engine_kwargs: Any) -> np.ndarray:
    """Embed every sample of ``samples`` with ``model`` (default: EfficientNet-Lite0).

    Returns float32 ``[N, D]`` in view order. With ``embeddings_field``, rows are stored under that
    name and reused: a later call computes only samples that are missing or whose file changed
    (``overwrite=True`` recomputes all), and an interrupted run keeps the batches it finished.
    Unreadable images: with ``skip_failures`` their rows are NaN in the result, absent from the store,
    and the sample's ``embedding_error`` field says why; otherwise the error names the file. An image the
    model cannot take (:func:`~embedlens.embed.pipeline.skippable`: another size or channel count for the
    ``pixels`` model) always stops the job, naming the file: skipping it would drop every such image.
    """
    if samples._is_patches:
        raise InvalidInputError("this is a patches view: use compute_patch_embeddings(model, patches_field)")
    spec, model = model, resolve_model(model)
    if not model.has_embeddings:
        raise InvalidInputError(f"model {model.name!r} has no embeddings")
    ids, paths = samples.values("id"), samples.values("filepath")
    return _compute(samples, model, spec, ids, _sample_units, paths, embeddings_field, batch_size, num_workers,
                    skip_failures, progress, overwrite, engine, engine_kwargs, kind="samples", patches_field=None)


def _compute(samples, model, spec, keys, make_units, unit_args, embeddings_field, batch_size, num_workers,
             skip_failures, progress, overwrite, engine, engine_kwargs, kind, patches_field) -> np.ndarray:
    dataset = samples._dataset
    store = None
    todo_mask = np.ones(len(keys), bool)
    if embeddings_field:
        store = embedding_set(dataset, embeddings_field)
        if store.exists:
            store.check_compatible(model.fingerprint, model.embedding_dim)
            if not overwrite:
                todo_mask = _stale(store, keys, unit_args, kind)
        else:
            store.create({"model": model.name, "fingerprint": model.fingerprint, "config": model.config,
                          "dim": model.embedding_dim, "kind": kind, "patches_field": patches_field, "count": 0})
    units = make_units(*_subset(keys, unit_args, todo_mask, kind))
    out: dict[str, np.ndarray] = {}

    def keep(keys: list[str], rows: np.ndarray, stamps: np.ndarray) -> None:
        rows = check_matrix(rows, len(keys), what=f"{model.name} output")
        if store is not None:
            store.append(keys, rows, stamps)
        else:
            out.update(zip(keys, rows))

    if engine == "local":
        # the bar names the model: compare_datasets and find_duplicates also compute perceptual descriptors
        failures = _run_model(model, units, batch_size, num_workers, skip_failures, progress,
                              lambda b: keep(b.keys, model.embed_batch(b.arrays), b.stamps),
                              f"embedding ({model.name})")
    elif engine == "ray":
        from .ray_engine import run_ray

        failures = run_ray(spec, units, batch_size or _default_batch_size(model), skip_failures, keep,
                           progress=progress, **engine_kwargs)
    else:
        raise InvalidInputError(f"unknown engine {engine!r}: 'local' or 'ray'")

    if store is not None:
        store.consolidate()
        matrix, found = store.get(keys)
        meta = store.meta
        if meta.get("dim") is None and found.any():
            meta["dim"] = int(matrix.shape[1])
            store.write_meta(meta)
    else:
        dim = next((len(v) for v in out.values()), model.embedding_dim or 0)
        matrix = np.zeros((len(keys), dim), np.float32)
        found = np.zeros(len(keys), bool)
        for i, k in enumerate(keys):
            row = out.get(k)
            if row is not None:
                matrix[i] = row
                found[i] = True
    matrix[~found] = np.nan
    if kind == "samples":
        _record_errors(samples, keys, failures)
    return matrix


def _stale(store: EmbeddingSet, keys: list[str], unit_args: Any, kind: str) -> np.ndarray:
    """Which keys need computing: no stored row, or the file changed since its row was computed."""
    from .pipeline import file_stamp

    stamps = store.stamps()
    paths = unit_args if kind == "samples" else unit_args["paths_by_key"]
    todo = np.ones(len(keys), bool)
    for i, k in enumerate(keys):
        old = stamps.get(k)
        if old is None:
            continue
        p = paths[i] if kind == "samples" else paths[k]
        try:
            todo[i] = file_stamp(p) != old
        except OSError:
            todo[i] = True  # gone: recompute, which reports it
    return todo


def _subset(keys, unit_args, mask, kind):
    if kind == "samples":
        return [k for k, m in zip(keys, mask) if m], [p for p, m in zip(unit_args, mask) if m]
    wanted = {k for k, m in zip(keys, mask) if m}
    return unit_args["by_sample"], wanted


def _record_errors(samples: "SampleCollection", ids: list[str], failures: Failures) -> None:
    dataset = samples._dataset
    has_field = ERROR_FIELD in dataset.get_field_schema()
    if not failures.by_key and not has_field:
        return
    if not has_field:
        dataset.add_sample_field(ERROR_FIELD, "str")
    dataset._set_values_by_id(ERROR_FIELD, ids, [failures.by_key.get(i) for i in ids])


# ---------------------------------------------------------------------------------------------- patches


def compute_patch_embeddings(samples: "SampleCollection", model: "Model | str | None", patches_field: str,
                             embeddings_field: str | None = None, alpha: float = 0.1, force_square: bool = True,
                             batch_size: int | None = None, num_workers: int | None = None,
                             skip_failures: bool = True, progress: bool = True, overwrite: bool = False,
                             engine: str = "local", **engine_kwargs: Any) -> np.ndarray:
    """Embed every object of the Detections field ``patches_field`` (crop, pad by ``alpha``, resize).

    Returns float32 ``[num_objects, D]`` in the order of ``samples.to_patches(patches_field)``; stored rows
    (with ``embeddings_field``) are keyed by label id. Each image is decoded once for all its objects.
    """
    spec, model = model, resolve_model(model)
    patches = samples.to_patches(patches_field)
    label_ids = patches.values("id")
    sample_ids = patches.values("sample_id")
    boxes = patches.values(f"{patches_field}.bounding_box")
    paths = patches.values("filepath")
    by_sample: dict[str, tuple[str, list[tuple[str, list[float]]]]] = {}
    for lid, sid, box, path in zip(label_ids, sample_ids, boxes, paths):
        if box is None:
            raise InvalidInputError(f"object {lid!r} of sample {sid!r} has no bounding_box")
        by_sample.setdefault(sid, (path, []))[1].append((lid, box))
    unit_args = {"by_sample": by_sample, "paths_by_key": dict(zip(label_ids, paths))}

    def make_units(by_sample, wanted):
        units = []
        for path, objs in by_sample.values():
            objs = [(lid, box) for lid, box in objs if lid in wanted]
            if objs:
                units.append(Unit([lid for lid, _ in objs], path, [box for _, box in objs], alpha, force_square))
        return units

    return _compute(samples, model, spec, label_ids, make_units, unit_args, embeddings_field, batch_size, num_workers,
                    skip_failures, progress, overwrite, engine, engine_kwargs, kind="patches",
                    patches_field=patches_field)


# ---------------------------------------------------------------------------------------------- predictions


def apply_model(samples: "SampleCollection", model: "Model | str | None" = None, label_field: str = "predictions",
                store_logits: bool = True, batch_size: int | None = None, num_workers: int | None = None,
                skip_failures: bool = True, progress: bool = True) -> int:
    """Write ``Classification`` predictions (label, softmax confidence, and logits) into ``label_field``.

    Returns the number of samples predicted; unreadable images get no prediction.
    """
    model = resolve_model(model)
    if not model.has_logits:
        raise InvalidInputError(f"model {model.name!r} is not a classifier")
    ids, paths = samples.values("id"), samples.values("filepath")
    classes = model.classes
    preds: dict[str, Classification] = {}

    def keep(batch: Batch) -> None:
        logits = np.asarray(model.predict_batch(batch.arrays), dtype=np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        top = p.argmax(axis=1)
        for k, lg, t, conf in zip(batch.keys, logits, top, p[np.arange(len(top)), top]):
            label = classes[t] if classes else str(int(t))
            preds[k] = Classification(label, confidence=float(conf), logits=lg if store_logits else None)

    _run_model(model, _sample_units(ids, paths), batch_size, num_workers, skip_failures, progress, keep,
               "predicting")
    if preds:
        dataset = samples._dataset
        dataset._set_values_by_id(label_field, ids, [preds.get(i) for i in ids])
        if classes:  # the logits' columns, for mistakenness and hardness later
            dataset.info.setdefault("classes", {})[label_field] = list(classes)
            dataset.save()
    return len(preds)


# ---------------------------------------------------------------------------------------------- user arrays


def get_embeddings(samples: "SampleCollection", embeddings_field: str) -> np.ndarray:
    """Stored embeddings of ``samples`` in view order (objects, for a patches set); missing rows are NaN."""
    store = embedding_set(samples._dataset, embeddings_field)
    meta = store.meta
    keys = samples.to_patches(meta["patches_field"]).values("id") if meta.get("kind") == "patches" \
        and not samples._is_patches else samples.values("id")
    matrix, found = store.get(keys)
    matrix[~found] = np.nan
    return matrix


def set_embeddings(samples: "SampleCollection", embeddings_field: str, embeddings: Any,
                   model_name: str = "user") -> None:
    """Store a user-supplied ``[N, D]`` array (view order) as embeddings; checked before anything is written."""
    ids = samples.values("id")
    store = embedding_set(samples._dataset, embeddings_field)
    dim = store.meta.get("dim") if store.exists else None
    matrix = check_matrix(embeddings, len(ids), dim)
    fingerprint = f"user:{model_name}"
    if store.exists:
        store.check_compatible(fingerprint, matrix.shape[1])
    else:
        store.create({"model": model_name, "fingerprint": fingerprint, "config": {}, "dim": int(matrix.shape[1]),
                      "kind": "patches" if samples._is_patches else "samples",
                      "patches_field": samples._query().patches_field, "count": 0})
    store.append(ids, matrix, np.zeros((len(ids), 2), np.int64))
    store.consolidate()
