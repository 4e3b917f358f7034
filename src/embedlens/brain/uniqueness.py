"""Uniqueness: how far each sample is from its nearest neighbours, as a score in [0, 1]."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.fields import check_name
from ..core.embeddings import release
from .neighbors import DISTANCE_METRICS, DOTPRODUCT_NOT_A_DISTANCE, check_metric
from .contract import brain_method
from ..core.runs import BrainResults, check_new_key, register_type
from .similarity import GRAPH_K, _check_stored
from .source import resolve_embeddings
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection

#: Weights of the distances to the 1st, 2nd and 3rd nearest neighbours (FiftyOne's).
UNIQUENESS_WEIGHTS = (0.6, 0.3, 0.1)


@register_type
class UniquenessResults(BrainResults):
    """The scores of a uniqueness run, in the order of :attr:`keys` (sample ids); also in the field."""

    run_type = "uniqueness"
    _array_names = ("scores",)

    @property
    def scores(self) -> np.ndarray:
        return self._arrays["scores"]

    @property
    def field(self) -> str:
        return self.config["uniqueness_field"]


def uniqueness_scores(distances: np.ndarray) -> np.ndarray:
    """Scores from a kNN graph's distances (column 0 is the row itself).

    ``u_i = sum_j w_j * d(i, j-th neighbour)`` with weights ``UNIQUENESS_WEIGHTS`` over the first
    three neighbours (fewer when there are fewer rows, weights renormalised), divided by the largest
    ``u`` so the most unique sample scores exactly 1 (all zero when every row has an identical twin).
    """
    k = min(len(UNIQUENESS_WEIGHTS), distances.shape[1] - 1)
    w = np.asarray(UNIQUENESS_WEIGHTS[:k], dtype=np.float64)
    w /= w.sum()
    u = np.asarray(distances[:, 1:k + 1], dtype=np.float64) @ w
    top = float(u.max()) if len(u) else 0.0
    return u / top if top > 0 else np.zeros_like(u)


@brain_method(key_param="uniqueness_field")
def compute_uniqueness(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                       uniqueness_field: str = "uniqueness", roi_field: str | None = None,
                       embeddings_field: str | None = None, overwrite: bool = False, progress: bool = True,
                       metric: str = "cosine") -> UniquenessResults:
    """Score every sample's uniqueness in [0, 1] and store it in ``uniqueness_field`` (FiftyOne's method).

    The score is read off the shared kNN graph of the embeddings (the one UMAP and ``find_duplicates``
    use, computed once): ``u = 0.6 d1 + 0.3 d2 + 0.1 d3`` where ``dk`` is the distance to the k-th
    nearest neighbour, divided by the largest ``u`` of the collection. The most unique sample scores
    exactly 1; a sample with near-copies scores near 0.

    Parameters
    ----------
    samples : SampleCollection
        A dataset or a sample view; only its samples are compared and scored.
    embeddings : array or str, optional
        ``[N, D]`` in view order, or a stored embeddings set's name (with ``roi_field``: one row per
        object). Otherwise computed with ``model`` (default EfficientNet-Lite0).
    model : str or Model, optional
        The model to embed with.
    uniqueness_field : str
        The float field written, with one ``set_values``. It is also the brain key of the run, so
        ``dataset.delete_brain_run(uniqueness_field)`` deletes the field too.
    roi_field : str, optional
        A ``Detections`` field: only the regions inside its boxes are embedded (one patch embedding per
        object, averaged per sample). Samples without objects get no score (None).
    embeddings_field : str, optional
        Store (or reuse) the computed embeddings under this name.
    overwrite : bool
        Replace an existing run/field ``uniqueness_field``; otherwise an existing one is an error raised
        before any work.
    progress : bool
        Show progress bars.
    metric : {"cosine", "euclidean"}
        Distance of the neighbour graph (FiftyOne uses euclidean; cosine is the default here because the
        graph is then the one UMAP shares). ``"dotproduct"`` is refused: the score is a weighted
        distance to the nearest neighbours, and a dot product is no distance.

    Returns
    -------
    UniquenessResults
    """
    check_name(uniqueness_field)
    check_metric(metric, DISTANCE_METRICS, f"uniqueness is a distance to the nearest neighbours, and "
                                           f"{DOTPRODUCT_NOT_A_DISTANCE}")
    if samples._is_patches:
        raise InvalidInputError("compute_uniqueness() scores samples: pass a dataset or sample view "
                         "(use roi_field= to look only inside boxes)")
    dataset = samples._dataset
    check_new_key(samples, uniqueness_field, overwrite)
    schema = dataset.get_field_schema()
    if uniqueness_field in schema:
        if not overwrite:
            raise InvalidInputError(f"field {uniqueness_field!r} exists on dataset {dataset.name!r}; pass overwrite=True "
                             "to replace it, or choose another uniqueness_field")
        if schema[uniqueness_field] not in ("float", "int"):
            raise InvalidInputError(f"field {uniqueness_field!r} has type {schema[uniqueness_field]}; choose another "
                             "uniqueness_field")
    _check_stored(dataset, embeddings)
    started = time.perf_counter()
    source = resolve_embeddings(samples, embeddings, model, roi_field, embeddings_field, progress)
    ids = samples.values("id")
    if roi_field:
        # one row per sample: the mean of its objects' embeddings
        by_sample: dict[str, list[int]] = {}
        for r, sid in enumerate(source.sample_ids):
            by_sample.setdefault(sid, []).append(r)
        row_ids = [i for i in ids if i in by_sample]
        matrix = np.stack([source.matrix[by_sample[i]].mean(axis=0) for i in row_ids]) if row_ids else \
            np.empty((0, source.matrix.shape[1]), np.float32)
        missing = len(ids) - len(row_ids)
        if missing:
            warnings.warn(f"{missing} of {len(ids)} samples have no objects in {roi_field!r} and get no score",
                          stacklevel=2)
        from .source import EmbeddingSource, _digest

        source = EmbeddingSource(row_ids, row_ids, np.ascontiguousarray(matrix, dtype=np.float32),
                                 f"roi-{roi_field}-{source.fingerprint}-{_digest(row_ids)}", None,
                                 source.embeddings_field, source.model, dataset.arrays_dir / "knn")
    if len(source) < 2:
        raise InvalidInputError(f"uniqueness needs at least 2 samples with embeddings, got {len(source)}")
    release(source.matrix)  # a stored set's pages, read by the checks: the OS keeps them cached, not this process
    graph = source.graph(min(GRAPH_K, len(source) - 1), metric)
    release(source.matrix)
    scores = uniqueness_scores(graph.distances)
    if source.keys == ids:  # every sample has a row, in view order: no id lookup
        values = scores.tolist()
    else:
        by_id = dict(zip(source.keys, scores.tolist()))
        values = [by_id.get(i) for i in ids]
    config = {"method": "neighbors", "uniqueness_field": uniqueness_field, "roi_field": roi_field,
              "metric": metric, "weights": list(UNIQUENESS_WEIGHTS), **source.record,
              "knn_method": graph.method, "knn_k": graph.k,
              "knn_recall": None if graph.recall is None else round(float(graph.recall), 4)}
    results = UniquenessResults(samples, config, source.keys, source.sample_ids,
                                {"scores": scores.astype(np.float32)}, None,
                                {"elapsed_s": round(time.perf_counter() - started, 3)})
    results.stage_field(uniqueness_field, ids, values)
    results.save(uniqueness_field, overwrite=True, fields=[uniqueness_field])
    return results


__all__ = ["UNIQUENESS_WEIGHTS", "UniquenessResults", "compute_uniqueness", "uniqueness_scores"]
