"""Lay embeddings out in 2-D or 3-D: UMAP, t-SNE, PCA, supervised LDA, or points you bring.

:func:`compute_visualization` mirrors ``fiftyone.brain.compute_visualization``. UMAP and t-SNE read the
shared kNN graph of the embeddings (:meth:`EmbeddingSource.graph`) instead of searching neighbours again,
so a later uniqueness or duplicates run on the same embeddings reuses the same graph. The points come back
as :class:`VisualizationResults`, stored as a float32 ``.npy`` array under the run's ``brain_key``.

>>> import embedlens as el
>>> from embedlens.brain.visualization import compute_visualization
>>> ds = el.load_sample_dataset("digits")
>>> ds.compute_embeddings("pixels", embeddings_field="pixels")
>>> results = compute_visualization(ds, embeddings="pixels", brain_key="img_viz", seed=51)
>>> plot = results.visualize(labels="ground_truth.label")   # a ScatterPlot: plot.figure is plotly's
>>> plot.show(height=512)

PCA and LDA runs keep their fitted projection, so :meth:`VisualizationResults.project` places new points
(and, with ``directions=True``, directions such as class prototypes) in the same plane;
``components=(3, 4)`` picks other principal components.

Numba. umap-learn compiles its numba kernels on the first call in every new process (~7 s here), because
only one of them is declared ``cache=True``. Before the first UMAP run embedlens switches on numba's
on-disk cache for the module-level kernels of ``umap.umap_``, ``umap.layouts``, ``umap.utils``,
``umap.spectral`` and ``umap.distances``, so later processes load the machine code instead of compiling
it again (the results are bit-for-bit the same). The cache lives where numba would put it for a ``cache=True`` function:
``$NUMBA_CACHE_DIR`` if set, else umap's ``__pycache__`` folder if writable, else
``$EMBEDLENS_HOME/.cache/numba``. Set ``EMBEDLENS_NUMBA_CACHE=0`` to turn this off.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import threading
import time
import warnings
from numbers import Number
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.expressions import ViewExpression
from ..core.query import UnknownFieldError
from .contract import brain_method
from .plots import (THUMBNAIL_PIXELS, ScatterPlot, _load_thumbnail, check_dims, matplotlib_figure, plotly_figure,
                    spread_sample)
from ..core.runs import BrainResults, check_new_key, register_type
from .source import resolve_embeddings, row_keys
from ..core.errors import InvalidInputError, NotFoundError, WrongTypeError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection

METHODS = ("umap", "tsne", "pca", "lda", "manual")
#: Other spellings users bring (FiftyOne documents ``"t-sne"``); the run records the canonical name.
METHOD_ALIASES = {"t-sne": "tsne", "t_sne": "tsne", "tsne": "tsne", "umap": "umap", "pca": "pca", "lda": "lda",
                  "manual": "manual"}
#: Linear methods: their fitted projection is kept with the run, so :meth:`VisualizationResults.project` works.
LINEAR_METHODS = ("pca", "lda")
DEFAULT_METRIC = "cosine"
# Keys a caller may not pass through **method_kwargs because embedlens sets them from its own arguments.
_RESERVED = {
    "umap": ("n_components", "random_state", "precomputed_knn"),
    "tsne": ("n_components", "random_state", "neighbors"),
    "pca": ("n_components", "random_state"),
    "lda": ("n_components",),
    "manual": (),
}
_LABEL_TYPES = ("Classification", "Detection")
_BOOL_OPS = {"==", "!=", "<", "<=", ">", ">=", "&", "|", "~", "is_in", "contains", "exists"}


# ---------------------------------------------------------------------------------------------- compute


@brain_method(key_param="brain_key")
def compute_visualization(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                          patches_field: str | None = None, method: str = "umap", num_dims: int = 2,
                          brain_key: str | None = None, seed: int | None = None, overwrite: bool = False,
                          embeddings_field: str | None = None, labels_field: str | None = None,
                          points: Any = None, progress: bool = True, components: Sequence[int] | None = None,
                          **method_kwargs: Any) -> "VisualizationResults":
    """Low-dimensional points for the samples (or, with ``patches_field``, the objects) of a collection.

    Parameters
    ----------
    samples:
        A dataset or a sample view. Its order is the order of the points.
    embeddings:
        An ``[N, D]`` array in view order (``N`` objects with ``patches_field``), or the name of a stored
        embeddings set. Otherwise they are computed with ``model`` (see :func:`resolve_embeddings`).
    model, embeddings_field, progress:
        As in :func:`embedlens.brain.resolve_embeddings`: the model to embed with (default
        EfficientNet-Lite0), where to store/reuse its embeddings, and whether to show progress bars.
    patches_field:
        A ``Detections`` field: one point per object; results are keyed by the objects' label ids.
    method:
        ``"umap"`` (default, umap-learn), ``"tsne"`` (openTSNE; ``"t-sne"`` is the same), ``"pca"``
        (scikit-learn), ``"lda"`` (supervised linear discriminant analysis, needs ``labels_field``) or
        ``"manual"`` (``points``). The run records the canonical name.
    num_dims:
        2 or 3 for UMAP and t-SNE; any number from 2 for PCA, LDA and manual points (plots show the first
        two or three columns, or ``visualize(dims=...)``).
    brain_key:
        Store the results under this key (``dataset.load_brain_results(brain_key)`` loads them).
    seed:
        Makes the points reproducible bit for bit. For UMAP a seed also means a single-threaded layout
        (umap-learn's parallel layout is not deterministic); ``seed=None`` is faster on many cores.
    overwrite:
        Replace an existing run of the same ``brain_key``; without it an existing key is an error,
        raised before any work is done.
    labels_field:
        For ``method="lda"``: the class of each row, e.g. ``"ground_truth"`` (a ``Classification``
        field: its ``label``), or a str/int field. With ``patches_field``: the object labels
        (``labels_field=patches_field``). Rows without a class are laid out but not used for fitting.
    points:
        For ``method="manual"``: your own ``[N, num_dims]`` points in view order. Passing ``points``
        selects ``"manual"``.
    components:
        PCA or LDA only: which components to keep, 1-based, e.g. ``(3, 4)`` for the 3rd and 4th principal
        components (``num_dims`` becomes ``len(components)``). Default: the first ``num_dims``.
    method_kwargs:
        ``verbose=True`` prints progress (UMAP and t-SNE print their own; UMAP's settings line leaves out
        the shared kNN arrays). Passed to the method. UMAP: ``n_neighbors=15``, ``metric="cosine"`` (``"cosine"`` or
        ``"euclidean"``; cosine is the default because embedding directions matter more than their
        lengths; ``"dotproduct"`` is refused: no distance), ``knn_method="auto"|"exact"|"ivf"`` (how the shared graph is built), and any other
        ``umap.UMAP`` argument (``min_dist``, ``init``, ``n_epochs`` ...). t-SNE: ``perplexity=30``
        (the graph has ``3 * perplexity`` neighbours), ``metric``, ``knn_method`` and any
        ``openTSNE.TSNE`` argument. PCA: ``sklearn.decomposition.PCA`` arguments (e.g. ``whiten``).
        LDA: ``LinearDiscriminantAnalysis`` arguments.

    Returns
    -------
    VisualizationResults
    """
    method = _check_method(method, points)
    components, num_dims = _check_components(components, num_dims, method)
    num_dims = _check_num_dims(num_dims, method)
    verbose = bool(method_kwargs.pop("verbose", False))
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
            raise InvalidInputError(f"seed must be None or an int in [0, 2**32), got {seed!r}")
        seed = int(seed)
    if points is not None and method != "manual":
        raise InvalidInputError(f"points= is only used with method='manual', not method={method!r}")
    for key in _RESERVED[method]:
        if key in method_kwargs:
            raise InvalidInputError(f"{key}= is set by compute_visualization() (use num_dims= / seed=), "
                             f"do not pass it to method {method!r}")
    _check_method_kwargs(method, method_kwargs)
    if method == "lda" and not labels_field:
        raise InvalidInputError("method='lda' is supervised: pass labels_field= (e.g. 'ground_truth') naming each "
                         "row's class")
    if getattr(samples, "_is_patches", False):
        raise InvalidInputError("compute_visualization() takes a dataset or sample view; for one point per object "
                         "pass the sample collection with patches_field=<Detections field>")
    check_new_key(samples, brain_key, overwrite)
    labels_by_key = None
    if method == "lda":  # read the classes first, so a wrong labels_field fails before any embedding work
        all_keys, all_sample_ids = row_keys(samples, patches_field)
        labels_by_key = dict(zip(all_keys, _row_values(samples, patches_field, all_keys, all_sample_ids,
                                                       labels_field)))

    started = time.perf_counter()
    config: dict[str, Any] = {"method": method, "num_dims": num_dims, "seed": seed,
                              "patches_field": patches_field, "embeddings_field": None, "model": None}
    if verbose:
        print(f"Computing {method} visualization ({num_dims}-D)...")
    fitted: dict[str, np.ndarray] = {}
    if method == "manual":
        if embeddings is not None or model is not None:
            raise InvalidInputError("method='manual' takes points=, not embeddings= or model=")
        keys, sample_ids = row_keys(samples, patches_field)
        out = _check_points(points, len(keys), num_dims)
    else:
        source = resolve_embeddings(samples, embeddings, model, patches_field, embeddings_field, progress)
        keys, sample_ids, x = source.keys, source.sample_ids, source.matrix
        config.update(source.record)
        if method in ("umap", "tsne") and verbose:
            method_kwargs["verbose"] = True
        if method == "umap":
            out = _umap(source, num_dims, seed, config, method_kwargs)
        elif method == "tsne":
            out = _tsne(source, num_dims, seed, config, method_kwargs)
        elif method == "pca":
            out, fitted = _pca(x, components, seed, config, method_kwargs)
        else:
            y = [labels_by_key.get(k) for k in keys]
            out, fitted = _lda(x, y, components, config, labels_field, method_kwargs)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if out.shape != (len(keys), num_dims) or not np.isfinite(out).all():
        raise RuntimeError(f"{method} produced points of shape {out.shape} with non-finite values; "
                           "this is a bug, please report it")
    info = {"elapsed_s": round(time.perf_counter() - started, 3)}
    results = VisualizationResults(samples, config, keys, sample_ids, {"points": out, **fitted}, None, info)
    if brain_key:
        results.save(brain_key, overwrite=overwrite)
    return results


def _check_method(method: Any, points: Any) -> str:
    if method is None:  # FiftyOne's default
        method = "umap"
    if not isinstance(method, str) or method.strip().lower() not in METHOD_ALIASES:
        raise InvalidInputError(f"unknown visualization method {method!r}: one of {', '.join(METHODS)} "
                                f"('t-sne' is 'tsne')")
    method = METHOD_ALIASES[method.strip().lower()]
    if points is not None and method == "umap":  # the default: FiftyOne selects "manual" when points are given
        method = "manual"
    if method == "manual" and points is None:
        raise InvalidInputError("method='manual' needs points=: an [N, num_dims] array in view order")
    return method


def _check_num_dims(num_dims: Any, method: str) -> int:
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)):
        raise InvalidInputError(f"num_dims must be 2 or 3, got {num_dims!r}")
    if method in ("umap", "tsne") and int(num_dims) not in (2, 3):
        raise InvalidInputError(f"num_dims must be 2 or 3 for {method}, got {num_dims!r} (PCA and LDA take more)")
    if int(num_dims) < 2:
        raise InvalidInputError(f"num_dims must be at least 2, got {num_dims!r}")
    return int(num_dims)


def _check_components(components: Any, num_dims: Any, method: str) -> tuple[list[int] | None, Any]:
    """1-based component numbers (PCA/LDA), and the num_dims they imply; default the first ``num_dims``."""
    if components is None:
        if method in LINEAR_METHODS and isinstance(num_dims, (int, np.integer)) and not isinstance(num_dims, bool):
            return list(range(1, int(num_dims) + 1)), num_dims
        return None, num_dims
    if method not in LINEAR_METHODS:
        raise InvalidInputError(f"components= picks PCA or LDA components; method {method!r} has none")
    if (isinstance(components, (str, bytes)) or not isinstance(components, Sequence) or len(components) < 2
            or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1 for c in components)
            or len(set(components)) != len(components)):
        raise InvalidInputError(f"components must be 2 or more distinct component numbers counted from 1, e.g. "
                                f"(3, 4); got {components!r}")
    if num_dims not in (2, len(components)):  # 2 is the default: components decide
        raise InvalidInputError(f"num_dims={num_dims!r} disagrees with components={tuple(components)!r}; pass one")
    return [int(c) for c in components], len(components)


def _check_points(points: Any, n_rows: int, num_dims: int) -> np.ndarray:
    a = np.asarray(points)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise WrongTypeError(f"points must be a real numeric array, got dtype {a.dtype}")
    if a.shape != (n_rows, num_dims):
        raise InvalidInputError(f"points must have shape [{n_rows}, {num_dims}] (rows in view order, num_dims "
                         f"columns), got {a.shape}")
    a = a.astype(np.float32)  # checked after the cast: float64 values beyond float32's range become inf
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"points has NaN or inf (or values too large for float32) in {int(bad.sum())} rows "
                         f"(first: row {int(np.flatnonzero(bad)[0])})")
    return a


def _reducer_class(method: str) -> Any:
    if method == "umap":
        from umap import UMAP

        return UMAP
    if method == "tsne":
        from openTSNE import TSNE

        return TSNE
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    return LinearDiscriminantAnalysis


def _check_method_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    """Refuse arguments the method's reducer does not take before any embedding work (they would
    otherwise fail only once the embeddings are computed, minutes later)."""
    if method == "manual" or not kwargs:
        return
    accepted = set(inspect.signature(_reducer_class(method).__init__).parameters) - {"self", "kwargs", "args"}
    if method in ("umap", "tsne"):
        accepted |= {"metric", "knn_method", "n_neighbors", "perplexity", "n_jobs"}
        if "metric" in kwargs:
            from .neighbors import DISTANCE_METRICS, DOTPRODUCT_NOT_A_DISTANCE, check_metric

            check_metric(kwargs["metric"], DISTANCE_METRICS,
                         f"{method.upper() if method == 'umap' else 't-SNE'} lays out neighbour distances "
                         f"(0 for a point and itself), and {DOTPRODUCT_NOT_A_DISTANCE}")
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InvalidInputError(f"compute_visualization(method={method!r}) does not take {', '.join(unknown)}; "
                                f"the reducer takes {', '.join(sorted(accepted - set(_RESERVED[method])))}")


def _pop_graph_args(kwargs: dict[str, Any]) -> tuple[str, str]:
    metric = kwargs.pop("metric", DEFAULT_METRIC)
    knn_method = kwargs.pop("knn_method", "auto")
    return metric, knn_method


def _graph_config(config: dict[str, Any], graph) -> None:
    config.update(metric=graph.metric, knn_method=graph.method, knn_k=graph.k,
                  knn_recall=None if graph.recall is None else round(float(graph.recall), 4))


def _jsonable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if v is None or isinstance(v, (bool, str)) or (isinstance(v, Number) and math.isfinite(float(v))):
            out[k] = v.item() if isinstance(v, np.generic) else v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (bool, str, int, float)) for x in v):
            out[k] = list(v)
        else:
            out[k] = f"<{type(v).__name__}>"
    return out


def _umap(source, num_dims: int, seed: int | None, config: dict[str, Any], kwargs: dict[str, Any]) -> np.ndarray:
    kwargs = dict(kwargs)
    metric, knn_method = _pop_graph_args(kwargs)
    n_neighbors = int(kwargs.pop("n_neighbors", 15))
    if n_neighbors < 2:
        raise InvalidInputError(f"n_neighbors must be at least 2, got {n_neighbors}")
    n = len(source)
    if n < num_dims + 2:  # umap-learn's spectral initialisation needs more points than dimensions + 1
        raise InvalidInputError(f"UMAP to {num_dims} dimensions needs at least {num_dims + 2} points, the collection "
                         f"has {n}")
    # umap-learn caps n_neighbors (which counts the point itself) at n - 1 on small sets; so does the graph.
    graph = source.graph(k=min(n_neighbors, n - 1) - 1, metric=metric, method=knn_method)
    n_jobs = kwargs.pop("n_jobs", -1)
    if seed is not None:
        n_jobs = 1  # umap-learn's parallel layout is not reproducible; a seed means one thread
    _enable_numba_cache()
    import umap

    reducer = _quiet_umap()(n_neighbors=graph.k + 1, n_components=num_dims, metric=metric,
                        precomputed_knn=(graph.indices, graph.distances, None), random_state=seed,
                        n_jobs=n_jobs, **kwargs)
    with warnings.catch_warnings():
        # There is no pynndescent index to keep (transforming new points is not offered), so this is moot.
        warnings.filterwarnings("ignore", message=r".*knn_search_index.*")
        out = reducer.fit_transform(source.matrix)
    config.update(n_neighbors=graph.k + 1, n_jobs=n_jobs, method_kwargs=_jsonable(kwargs))
    _graph_config(config, graph)
    return out


_QUIET_UMAP: Any = None


def _quiet_umap() -> type:
    """``umap.UMAP`` whose printed settings (``verbose=True`` prints them) leave out the precomputed kNN
    arrays: umap-learn's repr would print the whole shared graph."""
    global _QUIET_UMAP
    if _QUIET_UMAP is None:
        import umap

        class UMAP(umap.UMAP):
            def __repr__(self) -> str:
                knn = self.precomputed_knn
                self.precomputed_knn = (None, None, None)  # the default: a changed-only repr leaves it out
                try:
                    text = super().__repr__()
                finally:
                    self.precomputed_knn = knn
                if knn[0] is not None:
                    shape = np.shape(knn[0])
                    text = text[:-1] + f", precomputed_knn=<shared kNN graph {shape[0]} x {shape[1]}>)"
                return text

        _QUIET_UMAP = UMAP
    return _QUIET_UMAP


def _tsne(source, num_dims: int, seed: int | None, config: dict[str, Any], kwargs: dict[str, Any]) -> np.ndarray:
    kwargs = dict(kwargs)
    metric, knn_method = _pop_graph_args(kwargs)
    perplexity = float(kwargs.pop("perplexity", 30.0))
    if perplexity <= 0:
        raise InvalidInputError(f"perplexity must be positive, got {perplexity}")
    n = len(source)
    if n < 4:
        raise InvalidInputError(f"t-SNE needs at least 4 points, the collection has {n}")
    k = min(n - 1, int(3 * perplexity))
    effective = min(perplexity, k / 3.0)
    graph = source.graph(k=k, metric=metric, method=knn_method)
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    # openTSNE's gradients are deterministic for any thread count. Below 10k points (its Barnes-Hut regime)
    # an iteration is so short that threads mostly wait for each other: on a busy 2-core machine 2 threads
    # took 25 s where 1 took 7 s (digits), so they are used for larger sets only.
    n_jobs = kwargs.pop("n_jobs", 1 if n < 10_000 else -1)
    if num_dims == 3:
        kwargs.setdefault("negative_gradient_method", "bh")  # the FFT method lays out 1-D or 2-D only
    # openTSNE's own neighbour indexes leave each point out of its row; the shared graph has it in column 0.
    knn = PrecomputedNeighbors(np.ascontiguousarray(graph.indices[:, 1:]),
                               np.ascontiguousarray(graph.distances[:, 1:], dtype=np.float64))
    affinities = PerplexityBasedNN(knn_index=knn, perplexity=effective, n_jobs=n_jobs)
    tsne = TSNE(n_components=num_dims, random_state=seed, n_jobs=n_jobs, **kwargs)
    out = np.asarray(tsne.fit(source.matrix, affinities=affinities))
    config.update(perplexity=perplexity, effective_perplexity=round(effective, 4), n_jobs=n_jobs,
                  method_kwargs=_jsonable(kwargs))
    _graph_config(config, graph)
    return out


def _pca(x: np.ndarray, components: list[int], seed: int | None, config: dict[str, Any],
         kwargs: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's PCA with ``max(components)`` components, keeping the asked ones.

    The projection kept with the run is ``P = components_[c].T`` (divided by ``sqrt(explained_variance_[c])``
    with ``whiten=True``) and the centre ``mean_``: ``transform(x) = (x - mean_) @ P``.
    """
    from sklearn.decomposition import PCA

    fit = max(components)
    if min(x.shape) < fit:
        raise InvalidInputError(f"PCA to {fit} components needs at least {fit} rows and columns; "
                                f"the embeddings are {x.shape[0]} x {x.shape[1]}")
    pca = PCA(n_components=fit, random_state=seed, **kwargs)
    full = pca.fit_transform(x)
    idx = [c - 1 for c in components]
    proj = pca.components_[idx].T.astype(np.float64)
    if pca.whiten:
        proj = proj / np.sqrt(pca.explained_variance_[idx])
    ratio = pca.explained_variance_ratio_
    config.update(components=list(components),
                  explained_variance_ratio=[round(float(ratio[i]), 6) for i in idx],
                  explained_variance_ratio_fitted=[round(float(v), 6) for v in ratio],
                  method_kwargs=_jsonable(kwargs))
    return full[:, idx], {"projection": proj, "center": np.asarray(pca.mean_, dtype=np.float64)}


def _lda(x: np.ndarray, y: list[Any], components: list[int], config: dict[str, Any], labels_field: str,
         kwargs: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """scikit-learn's LDA; the projection kept is ``scalings_[:, c]`` and the centre ``xbar_`` (solver
    "svd"; the "eigen" solver does not centre): ``transform(x) = (x - xbar_) @ P``."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    for v in y:
        if v is not None and not isinstance(v, (str, int, bool, np.integer, np.str_)):
            raise InvalidInputError(f"labels_field {labels_field!r} must give one class per row (str or int), "
                             f"got a {type(v).__name__}")
    known = np.array([v is not None for v in y])
    classes = sorted({str(v) for v in y if v is not None})
    fit = max(components)
    if len(classes) < fit + 1:
        raise InvalidInputError(f"LDA to {fit} dimensions needs at least {fit + 1} classes in "
                                f"{labels_field!r}; found {len(classes)}: {classes}")
    if x.shape[1] < fit:
        raise InvalidInputError(f"LDA to {fit} dimensions needs embeddings of at least {fit} dimensions")
    lda = LinearDiscriminantAnalysis(n_components=fit, **kwargs)
    lda.fit(x[known], np.array([str(v) for v, k in zip(y, known) if k]))
    idx = [c - 1 for c in components]
    out = lda.transform(x)[:, idx]
    proj = np.asarray(lda.scalings_, dtype=np.float64)[:, idx]
    center = np.asarray(lda.xbar_ if lda.solver == "svd" else np.zeros(x.shape[1]), dtype=np.float64)
    ratio = getattr(lda, "explained_variance_ratio_", None)
    config.update(labels_field=labels_field, classes=classes, num_labelled=int(known.sum()),
                  components=list(components), method_kwargs=_jsonable(kwargs))
    if ratio is not None:
        config["explained_variance_ratio"] = [round(float(ratio[i]), 6) for i in idx]
    return out, {"projection": proj, "center": center}


# ---------------------------------------------------------------------------------------------- values


def _row_collection(samples: "SampleCollection", patches_field: str | None) -> "SampleCollection":
    return samples.to_patches(patches_field) if patches_field else samples


def _ids_and_values(coll: "SampleCollection", what: Any) -> tuple[list[str], list[Any]]:
    """The row ids of ``coll`` and the value of a field path or expression for each."""
    if isinstance(what, ViewExpression):
        q = coll._query()
        sel, params = q.compile(what)
        sql, all_params = q.sql(f"t.id, {sel}", params)
        rows = coll._db.fetchall(sql, all_params)
        ids = [i for i, _ in rows]
        if what.op in _BOOL_OPS:  # SQLite answers 0/1; a predicate colours as True/False classes
            return ids, [None if v is None else bool(v) for _, v in rows]
        return ids, [v for _, v in rows]
    if not isinstance(what, str):
        raise WrongTypeError(f"expected a field path or expression, got {type(what).__name__}")
    path = what
    ftype = coll.get_field_schema().get(path)
    if ftype in _LABEL_TYPES:
        path += ".label"
    elif ftype == "Detections":
        raise InvalidInputError(f"{what!r} holds many objects per sample; for one point per object compute the "
                         f"visualization with patches_field={what!r}")
    return coll.values("id"), coll.values(path)


def _per_object(what: Any, patches_field: str) -> Any:
    """FiftyOne's spellings of a per-object value, as a value of the patches view (one object a row).

    In FiftyOne an object-level plot takes ``"gt.detections.label"`` or ``F("gt.detections.label")``
    and ``F("gt.detections[]").apply(expr)`` (``expr`` relative to each object); in the patches view
    field ``gt`` holds the row's one object, so these are ``"gt.label"`` and ``expr`` with its fields
    under ``gt.``.
    """
    prefix = f"{patches_field}.detections"
    if isinstance(what, str):
        return f"{patches_field}.{what[len(prefix) + 1:]}" if what.startswith(prefix + ".") else what
    if not isinstance(what, ViewExpression):
        return what
    from ..core.expressions import from_dict

    def under(node: Any) -> Any:  # fields of an expression about one object -> fields of the patches view
        if isinstance(node, dict) and isinstance(node.get("$field"), str):
            f = node["$field"]
            return {"$field": f[1:] if f.startswith("$") else f"{patches_field}.{f}"}
        if isinstance(node, dict):
            return {k: under(v) for k, v in node.items()}
        return [under(v) for v in node] if isinstance(node, list) else node

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            args = node.get("args")
            if node.get("$op") == "apply" and args and args[0] == {"$field": prefix + "[]"}:
                return under(args[1])
            f = node.get("$field")
            if isinstance(f, str) and f.startswith(prefix + "."):
                return {"$field": f"{patches_field}.{f[len(prefix) + 1:]}"}
            return {k: walk(v) for k, v in node.items()}
        return [walk(v) for v in node] if isinstance(node, list) else node

    original = what.to_dict()
    rewritten = walk(original)
    return what if rewritten == original else from_dict(rewritten)


def _row_values(samples: "SampleCollection", patches_field: str | None, keys: Sequence[str],
                sample_ids: Sequence[str], what: Any) -> list[Any]:
    """The value of ``what`` (field path or expression) for each row ``keys[i]``; None where missing.

    For an object-level run, a path of the objects' field (``"ground_truth.label"``, or just
    ``"ground_truth"``) gives each object's value; a sample-level path (``"uniqueness"``) gives the value
    of each object's image.
    """
    coll = _row_collection(samples, patches_field)
    if patches_field:
        what = _per_object(what, patches_field)
    try:
        found, values = _ids_and_values(coll, what)
        want = keys
    except UnknownFieldError:
        if not patches_field:
            raise
        found, values = _ids_and_values(samples, what)
        want = sample_ids
    want = list(want)
    if found == want:  # a run over the whole collection, in its order: no lookup needed (1M rows: -1 s)
        return values
    by_id = dict(zip(found, values))
    return [by_id.get(k) for k in want]


# ---------------------------------------------------------------------------------------------- results


@register_type
class VisualizationResults(BrainResults):
    """Points of a visualization run: ``points[i]`` is the position of row ``keys[i]``.

    ``keys`` are sample ids, or label ids for an object-level run (``patches_field``), whose images are
    ``sample_ids``. ``config`` records how the points were made (method, dimensions, seed, metric,
    neighbours, the kNN graph's method and recall, embeddings field and model). PCA and LDA runs keep
    their fitted projection (arrays ``projection`` ``[D, num_dims]`` and ``center`` ``[D]``), so
    :meth:`project` places new points and directions in the same plane.
    """

    run_type = "visualization"
    _array_names = ("points",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._full: tuple[Any, list[str], list[str], np.ndarray] | None = None  # before use_view()

    @property
    def points(self) -> np.ndarray:
        """float32 ``[N, num_dims]``, in the order of :attr:`keys`."""
        return self._arrays["points"]

    @property
    def label_ids(self) -> list[str] | None:
        """For an object-level run, the objects' label ids (the keys); None otherwise."""
        return self.keys if self.patches_field else None

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def num_dims(self) -> int:
        return int(self.config["num_dims"])

    @property
    def components(self) -> list[int] | None:
        """PCA/LDA: the 1-based components the columns of :attr:`points` are."""
        return self.config.get("components")

    @property
    def explained_variance_ratio(self) -> np.ndarray | None:
        """PCA (and LDA): the fraction of the variance each kept component explains; None otherwise."""
        ratio = self.config.get("explained_variance_ratio")
        return None if ratio is None else np.asarray(ratio)

    @property
    def projection(self) -> np.ndarray | None:
        """PCA/LDA: the fitted ``[D, num_dims]`` projection matrix (None for other methods)."""
        return self._arrays.get("projection")

    @property
    def center(self) -> np.ndarray | None:
        """PCA/LDA: the ``[D]`` vector subtracted from points before :attr:`projection` (None otherwise)."""
        return self._arrays.get("center")

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def _from_stored(cls, samples, config, keys, sample_ids, arrays, key, stored):
        points = arrays.get("points")
        if points is None or points.shape != (len(keys), int(config["num_dims"])):
            raise InvalidInputError(f"brain run {key!r}: stored points have shape "
                             f"{None if points is None else points.shape}, expected ({len(keys)}, "
                             f"{config['num_dims']}); the run's arrays were damaged, compute it again")
        return cls(samples, config, keys, sample_ids, arrays, key, stored.get("info"))

    # ------------------------------------------------------------------ projection

    def project(self, vectors: Any, directions: bool = False) -> np.ndarray:
        """Place new embeddings in this run's plane: ``(v - center) @ projection``, ``[M, num_dims]``.

        With ``directions=True`` the vectors are directions (e.g. a classifier's class prototypes, the
        rows of its weight matrix), not points: they are rotated but not centred, ``v @ projection``,
        because subtracting the data's mean is right for a point and meaningless for a direction.
        PCA and LDA only (UMAP and t-SNE have no linear map to apply).
        """
        proj = self.projection
        if proj is None:
            raise InvalidInputError(f"project() needs a linear layout (method 'pca' or 'lda'); this run is "
                                    f"{self.method!r}")
        v = np.asarray(vectors)
        if v.dtype == object or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            raise WrongTypeError(f"vectors must be a real numeric array, got dtype {v.dtype}")
        one = v.ndim == 1
        v = np.atleast_2d(v).astype(np.float64)
        if v.ndim != 2 or v.shape[1] != proj.shape[0]:
            raise InvalidInputError(f"vectors must have {proj.shape[0]} columns (the embeddings' dimension), got "
                                    f"shape {np.shape(vectors)}")
        if not np.isfinite(v).all():
            raise InvalidInputError("vectors have NaN or inf values")
        out = (v if directions else v - self.center) @ proj
        return out[0] if one else out

    # ------------------------------------------------------------------ views

    def use_view(self, view: "SampleCollection", allow_missing: bool = True) -> "VisualizationResults":
        """Restrict these results to the rows of ``view``, in ``view``'s order, **in place**; returns them.

        As in FiftyOne, the results object itself changes (so ``results.use_view(view)`` followed by
        ``results.visualize()`` plots the view), and it is returned for chaining. The stored run is not
        changed, and a later ``use_view`` picks from all the run's rows again (``use_view(dataset)``
        restores them). ``view`` is a sample view (for an object-level run: its samples' objects, after
        any ``filter_labels``) or, for an object-level run, a patches view of the same field. Rows of
        ``view`` without a point (e.g. samples added after the run) are left out, or are an error when
        ``allow_missing=False``.
        """
        samples, keys, sample_ids, points = self._full or (self._samples, self.keys, self.sample_ids, self.points)
        if view._dataset.name != samples._dataset.name:
            raise InvalidInputError(f"the view is of dataset {view._dataset.name!r}; these results are of "
                             f"{samples._dataset.name!r}")
        pf = self.patches_field
        view_pf = view._query().patches_field
        if view_pf is not None:
            if pf is None:
                raise InvalidInputError("these are sample-level points; pass a sample view, not a patches view")
            if view_pf != pf:
                raise InvalidInputError(f"these points are objects of {pf!r}; the view has patches of {view_pf!r}")
            ids = view.values("id")
        else:
            ids = view.to_patches(pf).values("id") if pf else view.values("id")
        pos = {k: i for i, k in enumerate(keys)}
        rows = np.array([pos[i] for i in ids if i in pos], dtype=np.int64)
        missing = len(ids) - len(rows)
        if missing and not allow_missing:
            first = next(i for i in ids if i not in pos)
            raise NotFoundError(f"{missing} rows of the view have no point in these results (first: {first!r})")
        if missing:
            warnings.warn(f"{missing} of {len(ids)} rows of the view have no point and are left out",
                          stacklevel=2)
        if self._full is None:
            self._full = (samples, keys, sample_ids, points)
        self._samples = view
        self.keys = [keys[r] for r in rows]
        self.sample_ids = [sample_ids[r] for r in rows]
        self._arrays["points"] = points[rows]
        return self

    @property
    def view(self) -> "SampleCollection":
        """The collection the points are currently restricted to (FiftyOne's name; see :meth:`use_view`)."""
        return self._samples

    def save(self, brain_key: str | None = None, overwrite: bool = False, fields: list[str] | None = None) -> None:
        """Store the run (all its rows, also after :meth:`use_view`)."""
        if self._full is None:
            return super().save(brain_key, overwrite, fields)
        current = (self._samples, self.keys, self.sample_ids, self._arrays["points"])
        self._samples, self.keys, self.sample_ids, self._arrays["points"] = self._full
        try:
            super().save(brain_key, overwrite, fields)
        finally:
            self._samples, self.keys, self.sample_ids, self._arrays["points"] = current

    # ------------------------------------------------------------------ plots

    def values(self, what: Any) -> list[Any]:
        """The value of a field path, expression, or list of values, for each point (None where missing)."""
        if isinstance(what, (str, ViewExpression)):
            return _row_values(self._samples, self.patches_field, self.keys, self.sample_ids, what)
        vals = list(np.asarray(what).tolist()) if isinstance(what, np.ndarray) else list(what)
        if len(vals) != len(self.keys):
            raise InvalidInputError(f"got {len(vals)} values for {len(self.keys)} points")
        return vals

    def visualize(self, labels: Any = None, sizes: Any = None, classes: Sequence[Any] | None = None,
                  backend: str = "plotly", thumbnails: int | None = None, dims: Sequence[int] | None = None,
                  **kwargs: Any) -> ScatterPlot:
        """A scatter plot of the points, as FiftyOne's ``results.visualize()``.

        Parameters
        ----------
        labels:
            Colour by a field path (``"ground_truth.label"``, ``"uniqueness"``; a label field such as
            ``"ground_truth"`` means its ``label``), an expression (``F("uniqueness") > 0.5``), or a list
            of one value per point. A list field (``"tags"``) colours each point by its values joined
            with ", " (one tag: the tag; none: "(none)"). Categorical values get one trace per class, so
            clicking the legend hides a class and double-clicking isolates it; numbers get a continuous
            colour scale with a colour bar.
        sizes:
            A numeric field path, expression or list: marker sizes, scaled linearly from the smallest to
            the largest value onto ``size_range`` (default ``(3, 15)``).
        classes:
            Only these categories, in this order (makes ``labels`` categorical even when numeric).
        backend:
            ``"plotly"`` (default) or ``"matplotlib"``.
        thumbnails:
            Draw up to this many images at their points (2-D plots): a plotly layout image or a
            matplotlib ``OffsetImage`` each, from the dataset's thumbnail cache (for an object-level run,
            each object's box cut from its image). Which points get one
            is decided by :func:`embedlens.brain.plots.spread_sample`: a seeded random order, keeping a
            point only when its box (side ``1/(1.5 sqrt(n))`` of the plot's extent) overlaps no kept
            box, so images never pile up; dense layouts get fewer than ``n``.
        dims:
            The columns of :attr:`points` to plot (0-based), for runs of more than two dimensions.
        kwargs:
            FiftyOne's plot arguments: ``labels_title`` (legend, hover and colour-bar title; default: the
            last part of the field path), ``sizes_title``, ``show_colorbar_title``, ``axis_equal``
            (same scale on both axes), ``marker_size``, ``colorscale`` (plotly) / ``cmap`` (matplotlib),
            ``layout`` (a dict for plotly's ``update_layout``), ``ax`` and ``figsize`` (matplotlib),
            and ``title``, ``xlabel``, ``ylabel``, ``width``, ``height``, ``opacity``, ``size_range``.

        Returns
        -------
        ScatterPlot
            ``plot.figure`` is the plotly or matplotlib figure, ``plot.ids`` the point ids in plot order
            (``plot.trace_ids`` per trace), ``plot.show(height=...)`` displays it.
        """
        return self._plot(labels, sizes, classes, backend, thumbnails, dims, [], kwargs)

    def _plot(self, labels: Any, sizes: Any, classes: Sequence[Any] | None, backend: str, thumbnails: Any,
              dims: Any, overlays: list[dict[str, Any]], kwargs: dict[str, Any]) -> ScatterPlot:
        """The plot, with ``overlays``: ``{"type": "arrows"|"markers", "names": [...], "xy": [[x, y], ...]}``
        in the plotted plane (arrows start at the origin)."""
        if backend not in ("plotly", "matplotlib"):
            raise InvalidInputError(f"unknown backend {backend!r}: 'plotly' or 'matplotlib'")
        cols = check_dims(dims, self.points.shape[1])
        if (overlays or thumbnails) and len(cols) != 2:
            raise InvalidInputError("thumbnails, arrows and centroids are drawn on 2-D plots; pass dims=(i, j)")
        spec = self._plot_spec(labels, sizes, classes, cols, kwargs)
        spec["overlays"] = overlays
        if thumbnails is not None:
            spec["thumbnails"] = self._thumbnails(thumbnails, spec["points"])
        return plotly_figure(spec, kwargs) if backend == "plotly" else matplotlib_figure(spec, kwargs)

    def _thumbnails(self, n: Any, pts: np.ndarray) -> tuple[float, np.ndarray, list[Any]]:
        from ..images import cached_thumbnails

        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError(f"thumbnails must be a positive number of images, got {n!r}")
        rows, side = spread_sample(pts, int(n))
        ids = [self.sample_ids[r] for r in rows]  # the images (of the objects, for an object-level run)
        paths = dict(zip(self._samples.values("id"), self._samples.values("filepath")))
        thumbs = cached_thumbnails(self._samples._dataset.thumbnails_dir, [(i, paths[i]) for i in ids])
        if not self.patches_field:
            return side, rows, [_load_thumbnail(t, THUMBNAIL_PIXELS) for t in thumbs]
        # An object's thumbnail is its box cut from its image's thumbnail (boxes are relative, [x, y, w, h]).
        patches = self._samples.to_patches(self.patches_field)
        box_of = dict(zip(patches.values("id"), patches.values(f"{self.patches_field}.bounding_box")))
        images = []
        for r, t in zip(rows, thumbs):
            img, box = _load_thumbnail(t, 10_000), box_of.get(self.keys[r])
            if img is not None and box:
                w, h = img.size
                x0, y0 = int(box[0] * w), int(box[1] * h)
                x1, y1 = max(x0 + 1, int(round((box[0] + box[2]) * w))), max(y0 + 1, int(round((box[1] + box[3]) * h)))
                img = img.crop((x0, y0, x1, y1))
                img.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
            images.append(img)
        return side, rows, images

    def _plot_spec(self, labels: Any, sizes: Any, classes: Sequence[Any] | None, cols: list[int],
                   kwargs: dict) -> dict[str, Any]:
        n = len(self.keys)
        labels_title = kwargs.pop("labels_title", None)  # default: the field path, as given
        show_bar = kwargs.pop("show_colorbar_title", None)
        spec: dict[str, Any] = {"points": self.points[:, cols], "keys": np.asarray(self.keys, dtype=object),
                                "sample_ids": np.asarray(self.sample_ids, dtype=object) if self.patches_field
                                else None, "kind": "none", "title": kwargs.pop("title", self._title()),
                                "labels_title": labels_title or _name_of(labels),
                                "show_colorbar_title": labels_title is not None or isinstance(labels, str)
                                if show_bar is None else bool(show_bar),
                                "link_type": "labels" if self.patches_field else "samples",
                                "samples": self._samples, "patches_field": self.patches_field}
        if labels is not None:
            vals = [_one_value(v) for v in self.values(labels)]
            for v in vals:
                if isinstance(v, dict):
                    raise InvalidInputError(f"labels must give one value per point; {_name_of(labels)!r} gives a "
                                            f"{type(v).__name__}")
            numeric = all(isinstance(v, Number) and not isinstance(v, bool) for v in vals if v is not None) \
                and any(v is not None for v in vals)
            if classes is not None or not numeric:
                spec.update(kind="categorical", groups=_groups(vals, classes))
            else:
                spec.update(kind="numeric", values=np.array([np.nan if v is None else float(v) for v in vals]))
            spec["text"] = np.array(["" if v is None else str(v) for v in vals], dtype=object)
        elif classes is not None:
            raise InvalidInputError("classes= needs labels= to say which class each point is")
        sizes_title = kwargs.pop("sizes_title", None)
        if sizes is not None:
            svals = self.values(sizes)
            if not all(v is None or (isinstance(v, Number) and not isinstance(v, bool)) for v in svals):
                raise InvalidInputError(f"sizes must be numeric; {_name_of(sizes)!r} is not")
            s = np.array([np.nan if v is None else float(v) for v in svals])
            lo, hi = kwargs.pop("size_range", (3.0, 15.0))
            finite = np.isfinite(s)
            smin, smax = (s[finite].min(), s[finite].max()) if finite.any() else (0.0, 0.0)
            scaled = np.full(n, float(lo))
            if smax > smin:
                scaled[finite] = lo + (s[finite] - smin) / (smax - smin) * (hi - lo)
            else:
                scaled[finite] = (lo + hi) / 2
            spec["sizes"] = scaled
            spec["size_values"] = np.array(["" if not np.isfinite(v) else f"{v:.4g}" for v in s], dtype=object)
            spec["sizes_title"] = sizes_title or (sizes.rsplit(".", 1)[-1] if isinstance(sizes, str) else "size")
        else:
            kwargs.pop("size_range", None)
        return spec

    def _title(self) -> str:
        what = "objects" if self.patches_field else "samples"
        name = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA", "lda": "LDA", "manual": "points"}[self.method]
        if self.components and self.components != list(range(1, self.num_dims + 1)):
            name += " components " + ", ".join(map(str, self.components))
        key = f" ({self.key})" if self.key else ""
        return f"{name} of {len(self.keys):,} {what}{key}"


def _one_value(v: Any) -> Any:
    """A list value (``tags``) as one category: its items joined with ", "; an empty list is missing."""
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if v else None
    return v


def _name_of(x: Any) -> str | None:
    if x is None:
        return None
    if isinstance(x, str):
        return x
    if isinstance(x, ViewExpression):
        return repr(x)
    return "value"


def _groups(vals: list[Any], classes: Sequence[Any] | None) -> list[tuple[str, np.ndarray]]:
    """``[(class name, row indices)]``: ``classes`` in their order, else sorted, then missing values."""
    names = np.array(["" if v is None else str(v) for v in vals], dtype=object)
    missing = np.array([v is None for v in vals])
    if classes is not None:
        order = [str(c) for c in classes]
        return [(c, np.flatnonzero((names == c) & ~missing)) for c in order]
    present = set(names[~missing].tolist())
    numeric = all(isinstance(v, Number) and not isinstance(v, bool) for v in vals if v is not None)
    order = sorted(present, key=(lambda s: float(s)) if numeric else (lambda s: s))
    groups = [(c, np.flatnonzero((names == c) & ~missing)) for c in order]
    if missing.any():
        groups.append(("(none)", np.flatnonzero(missing)))
    return groups



# ---------------------------------------------------------------------------------------------- numba cache

_numba_lock = threading.Lock()
_numba_done = False


def _enable_numba_cache() -> int:
    """Switch on numba's on-disk cache for umap-learn's module-level kernels; returns how many.

    Each dispatcher gets a cache file named after its function *and* its compile options, because
    umap-learn jits one function twice (``parallel=False`` and ``parallel=True``) and numba's index would
    otherwise hand one variant's machine code to the other. Failures (e.g. a numba version whose internals
    differ) leave umap-learn as it was: slower to start, never wrong.
    """
    global _numba_done
    with _numba_lock:
        if _numba_done:
            return 0
        _numba_done = True
        if os.environ.get("EMBEDLENS_NUMBA_CACHE", "1").lower() in ("0", "false", "no", "off"):
            return 0
        try:
            return _patch_umap_dispatchers()
        except Exception as e:  # pragma: no cover - depends on numba internals
            warnings.warn(f"could not enable numba's cache for umap-learn ({e!r}); the first UMAP run of each "
                          "process will compile its kernels", stacklevel=3)
            return 0


def _patch_umap_dispatchers() -> int:
    from numba.core import caching
    from numba.core.registry import CPUDispatcher

    import umap.distances
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils

    from ..config import home

    class HomeLocator(caching.UserProvidedCacheLocator):
        """``$EMBEDLENS_HOME/.cache/numba``: used when neither NUMBA_CACHE_DIR nor __pycache__ can be."""

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            root = home() / ".cache" / "numba"
            self._cache_path = str(root / self.get_suitable_cache_subpath(py_file))

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.exists(py_file):
                return None
            self = cls(py_func, py_file)
            try:
                self.ensure_cache_path()
            except OSError:
                return None
            return self

    def cache_for(dispatcher) -> Any:
        options = repr(sorted((k, repr(v)) for k, v in dispatcher.targetoptions.items()))
        tag = hashlib.sha1(options.encode()).hexdigest()[:8]

        class Impl(caching.CompileResultCacheImpl):
            _locator_classes = [caching.UserProvidedCacheLocator, caching.InTreeCacheLocator, HomeLocator]

            def get_filename_base(self, fullname, abiflags):
                return super().get_filename_base(f"{fullname}-{tag}", abiflags)

        class Cache(caching.FunctionCache):
            _impl_class = Impl

        return Cache(dispatcher.py_func)

    count = 0
    for module in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.distances):
        for obj in list(vars(module).values()):
            if (isinstance(obj, CPUDispatcher) and isinstance(obj._cache, caching.NullCache)
                    and obj.py_func.__closure__ is None and obj.py_func.__module__ == module.__name__):
                obj._cache = cache_for(obj)
                count += 1
    return count


def warm_up(num_dims: int = 2) -> float:
    """Compile (or load from the cache) umap-learn's kernels on a tiny problem; returns the seconds taken.

    Not needed for correctness: call it once after installing (or while building a container image) so
    that even the first visualization on this machine starts without the ~7 s numba compilation.
    """
    from .neighbors import exact_graph

    t0 = time.perf_counter()
    _enable_numba_cache()
    import umap

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    g = exact_graph(x, 5, DEFAULT_METRIC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed, n_jobs in ((0, 1), (None, -1)):  # the sequential (seeded) and the parallel layout
            umap.UMAP(n_neighbors=6, n_components=num_dims, metric=DEFAULT_METRIC, n_epochs=2,
                      precomputed_knn=(g.indices, g.distances, None), random_state=seed,
                      n_jobs=n_jobs).fit_transform(x)
    return time.perf_counter() - t0


__all__ = ["METHODS", "METHOD_ALIASES", "ScatterPlot", "VisualizationResults", "compute_visualization", "warm_up"]
