"""Where a brain method's embeddings come from: an array, a stored set, or a model run now."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embed.store import check_matrix
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
    """The embeddings a brain method runs on, as FiftyOne resolves them.

    ``embeddings`` may be an ``[N, D]`` array in view order, or the name of a stored embeddings set.
    Otherwise they are computed with ``model`` (default EfficientNet-Lite0) and stored under
    ``embeddings_field`` when given, so the next method reuses them. Samples whose image could not be
    read have no embedding; they are left out with a warning.
    """
    keys, sample_ids = row_keys(samples, patches_field)
    model_name = None
    if isinstance(embeddings, str) and embeddings not in samples._dataset.list_embeddings():
        # a name is a stored set; an unknown one must not silently embed everything with the default model
        raise InvalidInputError(f"no embeddings {embeddings!r} in dataset {samples._dataset.name!r}; stored: "
                         f"{', '.join(samples._dataset.list_embeddings()) or 'none'}")
    if isinstance(embeddings, str):
        if embeddings_field and embeddings_field != embeddings:
            raise InvalidInputError("pass the stored set either as embeddings= or embeddings_field=, not both")
        embeddings_field = embeddings
        embeddings = None
    if embeddings is not None:
        if model is not None:
            raise InvalidInputError("pass embeddings= or model=, not both")
        matrix = check_matrix(embeddings, len(keys))
        return EmbeddingSource(keys, sample_ids, matrix, "array-" + _digest(matrix, keys), patches_field,
                               cache_dir=samples._dataset.arrays_dir / "knn")
    dataset = samples._dataset
    if embeddings_field and embeddings_field in dataset.list_embeddings() and model is None:
        meta = dataset.get_embeddings_info(embeddings_field)
        matrix = (samples.to_patches(patches_field) if patches_field else samples).get_embeddings(embeddings_field)
        model_name = meta.get("model")
        fingerprint = meta["fingerprint"]
    else:
        from ..embed.compute import resolve_model

        m = resolve_model(model)
        model_name, fingerprint = m.name, m.fingerprint
        if patches_field:
            matrix = samples.compute_patch_embeddings(m, patches_field, embeddings_field, progress=progress,
                                                      **compute_kwargs)
        else:
            matrix = samples.compute_embeddings(m, embeddings_field, progress=progress, **compute_kwargs)
    ok = np.isfinite(matrix).all(axis=1)
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
