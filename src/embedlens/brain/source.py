"""Where a brain method's embeddings come from: an array, a stored set, or a model run now."""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.embeddings import check_matrix, read_rows
from .neighbors import KnnGraph, knn_graph
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection


@dataclass
class EmbeddingSource:
    """Embeddings of a collection's samples (or objects), with the keys of their rows.

    ``keys`` are sample ids, or label ids when ``patches_field`` is set (then ``sample_ids`` holds each
    object's image). ``fingerprint`` identifies the content, so derived data (the kNN graph) is cached.
    """

    keys: list[str]
    sample_ids: list[str]
    matrix: np.ndarray
    fingerprint: str
    patches_field: str | None = None
    embeddings_field: str | None = None
    model: str | None = None
    cache_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def record(self) -> dict[str, Any]:
        """What a run stores about its embeddings: the set's name (None for an array), the content's
        fingerprint (how a later method finds the same array and kNN graph) and the model."""
        return {"embeddings_field": self.embeddings_field, "embeddings_fingerprint": self.fingerprint,
                "model": self.model}

    def graph(self, k: int = 15, metric: str = "cosine", method: str = "auto") -> KnnGraph:
        """The shared kNN graph of these embeddings (computed once, then reused by every method)."""
        return knn_graph(self.matrix, self.fingerprint, k, metric, method, self.cache_dir)


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        # hash the array's buffer in place: tobytes() would copy the whole matrix (1x its size at peak)
        h.update(memoryview(np.ascontiguousarray(p)).cast("B") if isinstance(p, np.ndarray) else repr(p).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def row_keys(samples: "SampleCollection", patches_field: str | None) -> tuple[list[str], list[str]]:
    """The rows a brain method works on, in view order: ``(keys, sample_ids)`` — sample ids, or the label
    ids of the objects of ``patches_field`` with their images' ids."""
    if patches_field:
        patches = samples.to_patches(patches_field)
        keys, sample_ids = patches.values("id"), patches.values("sample_id")
    else:
        keys = samples.values("id")
        sample_ids = keys
    if not keys:
        raise InvalidInputError("the collection is empty: nothing to compute")
    return keys, sample_ids


def resolve_embeddings(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                       patches_field: str | None = None, embeddings_field: str | None = None,
                       progress: bool = True, **compute_kwargs: Any) -> EmbeddingSource:
    """The embeddings a brain method runs on: the one policy of Python, the CLI and the app.

    1. ``embeddings``: an ``[N, D]`` array in view order (fingerprinted, and remembered for this process
       so a later method that names this run finds the very same array and kNN graph), or the name of
       a stored set.
    2. ``model`` (a name or a Model): its stored set (``embeddings_field``, else the set whose model
       fingerprint matches, else a new set named after the model), computing only the missing rows.
    3. Neither: the same with the default model (EfficientNet-Lite0): its stored set is reused, or
       computed and stored once.

    Samples whose image could not be read have no embedding; they are left out with a warning.
    """
    keys, sample_ids = row_keys(samples, patches_field)
    dataset = samples._dataset
    if isinstance(embeddings, str) and embeddings not in dataset.list_embeddings():
        # a name is a stored set; an unknown one must not silently embed everything with the default model
        raise InvalidInputError(f"no embeddings {embeddings!r} in dataset {dataset.name!r}; stored: "
                                f"{', '.join(dataset.list_embeddings()) or 'none'}")
    if isinstance(embeddings, str):
        if embeddings_field and embeddings_field != embeddings:
            raise InvalidInputError("pass the stored set either as embeddings= or embeddings_field=, not both")
        if model is not None:
            raise InvalidInputError("pass embeddings= or model=, not both")
        embeddings_field, embeddings = embeddings, None
    if embeddings is not None:
        if model is not None:
            raise InvalidInputError("pass embeddings= or model=, not both")
        matrix = check_matrix(embeddings, len(keys))
        fingerprint = "array-" + _digest(matrix, keys)
        _remember(fingerprint, embeddings if isinstance(embeddings, np.ndarray) else matrix)
        return EmbeddingSource(keys, sample_ids, matrix, fingerprint, patches_field,
                               cache_dir=dataset.arrays_dir / "knn")
    kind = "patches" if patches_field else "samples"
    if embeddings_field and embeddings_field in dataset.list_embeddings() and model is None:
        meta = dataset.get_embeddings_info(embeddings_field)
        # stored rows were checked finite when written: the mask says which exist without reading the file
        matrix, found = read_rows(samples.to_patches(patches_field) if patches_field else samples, embeddings_field)
        model_name, fingerprint = meta.get("model"), meta["fingerprint"]
    else:
        from ..embed.compute import resolve_model, set_name_for

        m = resolve_model(model)
        model_name, fingerprint = m.name, m.fingerprint
        embeddings_field = embeddings_field or stored_set_of(dataset, fingerprint, kind) or set_name_for(m.name)
        if patches_field:
            matrix = samples.compute_patch_embeddings(m, patches_field, embeddings_field, progress=progress,
                                                      **compute_kwargs)
        else:
            matrix = samples.compute_embeddings(m, embeddings_field, progress=progress, **compute_kwargs)
        found = None
    ok = np.isfinite(matrix).all(axis=1) if found is None else found
    if not ok.all():
        if not ok.any():
            raise InvalidInputError(f"no embeddings for any of the {len(keys)} samples"
                                    + (f" in {embeddings_field!r}: compute them first" if embeddings_field else ""))
        warnings.warn(f"{int((~ok).sum())} of {len(keys)} samples have no embedding and are left out",
                      stacklevel=3)
        idx = np.flatnonzero(ok)
        keys = [keys[i] for i in idx]
        sample_ids = [sample_ids[i] for i in idx]
        matrix = matrix[ok]
    return EmbeddingSource(keys, sample_ids, np.ascontiguousarray(matrix, dtype=np.float32),
                           f"{fingerprint}-{_digest(keys)}", patches_field, embeddings_field, model_name,
                           dataset.arrays_dir / "knn")


def stored_set_of(dataset: Any, model_fingerprint: str, kind: str = "samples") -> str | None:
    """The stored set made by the model with this fingerprint (its default name first), or None."""
    names = dataset.list_embeddings()
    for name in names:
        meta = dataset.get_embeddings_info(name)
        if meta.get("fingerprint") == model_fingerprint and meta.get("kind", "samples") == kind:
            return name
    return None


# Arrays handed to brain methods in this process, by fingerprint, so that a later method following a run
# (mistakenness after predictions) finds the very same array. Users often pass a temporary
# (``embeddings=x.astype(...)``), so the most recent arrays are kept, up to KEEP_ARRAY_BYTES in all
# (least recently used dropped first); any other is found only while something else holds it.
KEEP_ARRAY_BYTES = 1 << 30
_KEPT: "OrderedDict[str, np.ndarray]" = OrderedDict()
_HELD: "weakref.WeakValueDictionary[str, np.ndarray]" = weakref.WeakValueDictionary()


def _remember(fingerprint: str, array: np.ndarray) -> None:
    try:
        _HELD[fingerprint] = array
    except TypeError:  # an ndarray subclass without weak references
        pass
    _KEPT.pop(fingerprint, None)
    if array.nbytes <= KEEP_ARRAY_BYTES:
        _KEPT[fingerprint] = array
        while sum(a.nbytes for a in _KEPT.values()) > KEEP_ARRAY_BYTES:
            _KEPT.popitem(last=False)


def _recall(fingerprint: str) -> np.ndarray | None:
    array = _KEPT.get(fingerprint)
    if array is not None:
        _KEPT.move_to_end(fingerprint)
        return array
    return _HELD.get(fingerprint)


def embeddings_of_run(dataset: Any, key: str) -> tuple[Any, str | None]:
    """What to pass as ``embeddings=`` to use the embeddings brain run ``key`` used: the stored set's name,
    or the array itself while this process still holds it. ``(None, reason)`` when they cannot be found."""
    from ..core.runs import get_brain_info, has_brain_run

    if not has_brain_run(dataset, key):
        return None, f"there is no brain run {key!r} to take embeddings from"
    cfg = get_brain_info(dataset, key)["config"]
    name, fingerprint = cfg.get("embeddings_field"), cfg.get("embeddings_fingerprint")
    if name and name in dataset.list_embeddings():
        return name, None
    if fingerprint and fingerprint.startswith("array-"):
        array = _recall(fingerprint)
        if array is not None:
            return array, None
        return None, (f"run {key!r} used an array of embeddings that is not stored and no longer in memory: "
                      f"pass the same embeddings= again, or store them with set_embeddings()")
    if name:
        return None, f"run {key!r} used the embeddings {name!r}, which are no longer stored"
    return None, f"run {key!r} recorded no embeddings"
