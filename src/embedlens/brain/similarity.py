"""Similarity indexes: sort by similarity, find maximally unique samples, find near-duplicates.

``compute_similarity`` keeps the embeddings of a collection (or of its objects) ready for queries.
Small indexes are searched exactly with one BLAS matrix-vector product per query; above
``EXACT_MAX_VALUES`` (rows x dimensions) a FAISS inverted-file index (``IndexIVFFlat``) answers
queries, with ``nprobe`` tuned when it is built until its neighbours agree with exact search at
``FAISS_TARGET_RECALL``. The index is stored with its brain run as ``.npy`` arrays (and FAISS's own
file format for the IVF index), never pickled, so a fresh process answers the same queries.

Everything that needs neighbours of every row (``find_duplicates``, ``compute_uniqueness``, UMAP)
reads the one shared kNN graph of the embedding set (:meth:`EmbeddingSource.graph`).
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.fields import check_name, dumps
from ..core.query import SortBySimilarity
from . import duplicates as _dups
from ..core.embeddings import release
from .neighbors import (DISTANCE_METRICS, DOTPRODUCT_NOT_A_DISTANCE, METRICS, build_ivf, check_metric, prepare,
                        to_distance)
from ..core.runs import (
    BrainResults, _runs_dir, check_new_key, get_brain_info, has_brain_run, list_brain_runs, register_type,
    update_run_state,
)
from .contract import brain_method
from .source import EmbeddingSource, resolve_embeddings
from ..core.errors import InvalidInputError, NotFoundError, WrongTypeError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection
    from ..core.dataset import Dataset
    from ..core.view import DatasetView
    from ..models import Model

BACKENDS = ("auto", "exact", "faiss")
#: What ``find_duplicates(channels=...)`` takes (see its docstring).
DUPLICATE_CHANNELS = ("auto", "perceptual", "embedding", "either")
#: ``backend="auto"`` searches exactly while one query scans at most this many values (rows x dims) and
#: builds a FAISS IVF index above it. Measured by ``bench/bench_similarity.py`` (2-core machine shared with
#: other work, 512-d, k=25, median of 40 queries): exact 0.3-0.6 / 0.8-1.6 / 2.2-2.8 / 5.7-6.6 / 13-24 ms at
#: 5k / 10k / 20k / 40k / 100k rows; tuned IVF 0.09-0.11 / 0.11-0.15 / 0.20 / 0.23-0.26 / 0.27-0.37 ms
#: (recall@25 0.997-1.0), built in 0.08-1.9 s. IVF is faster from a few thousand rows on, but up to
#: ~10k x 512 an exact query takes a millisecond or two, needs no build and is never approximate; above it
#: exact time grows linearly while IVF stays under 0.5 ms.
EXACT_MAX_VALUES = 5_120_000  # 10,000 x 512
#: Recall@10 the IVF index must reach (measured on a sample of rows) when ``nprobe`` is tuned.
FAISS_TARGET_RECALL = 0.99
#: Neighbours of the shared graph that find_duplicates and compute_uniqueness ask for: the graph of
#: UMAP's default ``n_neighbors=15`` (self + 14), so one graph serves all of them.
GRAPH_K = 14
#: Rows whose distances ``find_unique`` keeps exact between its batched refreshes (see its docstring).
#: 1,000 picks, clustered 512-d rows, this 2-core machine: 2k / 4k / 8k / 16k rows took 10.7 / 14.3 / 8.1 /
#: 18.1 CPU s at 1M (noisy, shared machine), 1.9 s (4k) vs 3.7 s (16k) at 100k, 0.9 s (4k) vs 7.2 s (all
#: rows, one pass per pick) at 20k.
UNIQUE_FRONTIER = 4_096
_UNIQUE_BLOCK_BYTES = 8 << 20
_FAISS_FILE = "faiss.index"
_ADD_CHUNK = 4_096
_CACHE_SIZE = 4
_cache: "collections.OrderedDict[tuple[str, str], tuple[float, SimilarityIndex]]" = collections.OrderedDict()
_cache_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------- building


@brain_method(key_param="brain_key")
def compute_similarity(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                       patches_field: str | None = None, embeddings_field: str | None = None,
                       brain_key: str | None = None, metric: str = "cosine", backend: str = "auto",
                       overwrite: bool = False, progress: bool = True) -> "SimilarityIndex":
    """Build a similarity index of the samples (or, with ``patches_field``, the objects) of a collection.

    Parameters
    ----------
    samples : SampleCollection
        A dataset or a sample view; the index holds its rows.
    embeddings : array or str, optional
        An ``[N, D]`` array in view order (``N`` objects with ``patches_field``) or the name of a stored
        embeddings set. Otherwise they are computed with ``model``.
    model : str or Model, optional
        The model that embeds the images (default EfficientNet-Lite0). It is remembered, so image files
        can be used as queries later, also in a fresh process.
    patches_field : str, optional
        A ``Detections`` field: index its objects (keys are label ids); query with a patches view.
    embeddings_field : str, optional
        Store the computed embeddings under this name, or reuse them if they are stored. An index over a
        stored set does not copy the matrix: it reads the set's rows again when loaded.
    brain_key : str, optional
        Store the index as a brain run under this key; ``sort_by_similarity`` finds it there.
    metric : {"cosine", "euclidean", "dotproduct"}
        Distance of the index: cosine distance ``1 - cos``, euclidean distance, or ``"dotproduct"``
        (FiftyOne's name in its dot-product backends): similarity ``x . q``, larger is more similar, on the
        raw (not normalised) embeddings, so the length of a vector counts (``sort_by_similarity(prototype)``
        ranks as ``X @ prototype``). Its "distance" (``dist_field``, ``neighbors_map``) is ``-x . q``:
        smallest first like the other metrics, and may be negative. ``find_duplicates`` and
        ``find_unique`` need a true distance and refuse a dotproduct index.
    backend : {"auto", "exact", "faiss"}
        ``"exact"``: BLAS search, never approximate. ``"faiss"``: a FAISS ``IndexIVFFlat`` whose
        ``nprobe`` is tuned to recall@10 >= ``FAISS_TARGET_RECALL`` (its recall is in ``config``).
        ``"auto"``: exact up to ``EXACT_MAX_VALUES`` rows x dimensions, FAISS above.
    overwrite : bool
        Replace an existing run ``brain_key``; otherwise an existing key is an error raised before any work.
    progress : bool
        Show progress bars while embedding.

    Returns
    -------
    SimilarityIndex

    Examples
    --------
    >>> index = el.compute_similarity(ds, embeddings="pixels", brain_key="sim")
    >>> ds.sort_by_similarity(ds.first().id, k=10)
    >>> index.find_duplicates(); index.duplicates_view()
    """
    check_new_key(samples, brain_key, overwrite)
    check_metric(metric, METRICS)
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if samples._is_patches:
        raise InvalidInputError("compute_similarity() takes a dataset or sample view; to index objects pass "
                         "patches_field=<Detections field>")
    started = time.perf_counter()
    dataset = samples._dataset
    _check_stored(dataset, embeddings)
    stored_name = embeddings if isinstance(embeddings, str) else embeddings_field
    model_obj = None
    if embeddings is None and (model is not None or not (stored_name and stored_name in dataset.list_embeddings())):
        from ..embed.compute import resolve_model

        model_obj = resolve_model(model)
    source = resolve_embeddings(samples, embeddings, model_obj if model_obj is not None else model, patches_field,
                                embeddings_field, progress)
    matrix = source.matrix
    n, dim = matrix.shape
    method = backend if backend != "auto" else ("exact" if n * dim <= EXACT_MAX_VALUES else "faiss")
    spec = _model_spec(model_obj, source, dataset)
    by_reference = bool(source.embeddings_field) and spec.get("fingerprint") is not None and \
        source.embeddings_field in dataset.list_embeddings()
    config: dict[str, Any] = {
        "method": method, "backend": backend, "metric": metric, "dim": int(dim),
        "patches_field": patches_field, "embeddings_field": source.embeddings_field, "model": source.model,
        "model_kwargs": spec.get("kwargs"), "model_fingerprint": spec.get("fingerprint"),
        "fingerprint": source.fingerprint, "matrix": "embeddings set" if by_reference else "stored",
        "faiss": None,
    }
    index = SimilarityIndex(samples, config, source.keys, source.sample_ids, {} if by_reference else {"embeddings": matrix},
                            None, {}, matrix=matrix, model=model_obj)
    if method == "faiss":
        index._faiss, index.config["faiss"] = _build_ivf(matrix, metric, index._norms2())
    # a stored set is read in place: its pages, read while building, stay in the OS cache, not in this process
    release(matrix)
    index.info["elapsed_s"] = round(time.perf_counter() - started, 3)
    if brain_key:
        index.save(brain_key, overwrite=overwrite)
    return index


def _check_stored(dataset: "Dataset", embeddings: Any) -> None:
    """``embeddings="name"`` names a stored set: an unknown name is an error, not a reason to embed."""
    if isinstance(embeddings, str) and embeddings not in dataset.list_embeddings():
        raise InvalidInputError(f"no embeddings {embeddings!r} in dataset {dataset.name!r}; stored: "
                         f"{', '.join(dataset.list_embeddings()) or 'none'}. Compute them with "
                         "compute_embeddings(model, embeddings_field=...), or pass model=")


def _model_spec(model_obj: "Model | None", source: EmbeddingSource, dataset: "Dataset") -> dict[str, Any]:
    """How to rebuild the index's model in another process: name, settings and fingerprint."""
    if model_obj is not None:
        return {"kwargs": _model_kwargs(model_obj.name, model_obj.config), "fingerprint": model_obj.fingerprint}
    if source.embeddings_field and source.embeddings_field in dataset.list_embeddings():
        meta = dataset.get_embeddings_info(source.embeddings_field)
        return {"kwargs": _model_kwargs(meta.get("model"), meta.get("config") or {}),
                "fingerprint": meta.get("fingerprint")}
    return {}


def _model_kwargs(name: str | None, config: dict[str, Any]) -> dict[str, Any]:
    if name == "pixels":
        size = config.get("size")
        gray = config.get("grayscale")  # "auto" (the images' own channels) is grayscale=None
        return {"size": None if size in (None, "native") else list(size),
                "grayscale": None if gray == "auto" else bool(gray)}
    return {}


def _build_ivf(matrix: np.ndarray, metric: str, sqnorms: np.ndarray, seed: int = 51):
    """The FAISS index and its ``config["faiss"]``, ``nprobe`` tuned to recall@10 >= ``FAISS_TARGET_RECALL``.

    ``sqrt(N)`` lists, not the graph's ``2 sqrt(N)``: ``EXACT_MAX_VALUES`` was measured with it.
    """
    n = len(matrix)
    index, nprobe, recall = build_ivf(matrix, metric, 10, nlist=int(math.sqrt(n)), seed=seed,
                                      recall_target=FAISS_TARGET_RECALL, recall_sample=128, sqnorms=sqnorms)
    return index, {"index": "IndexIVFFlat", "nlist": int(index.nlist), "nprobe": int(nprobe),
                   "recall_at_10": round(recall, 4), "recall_sample": min(128, n), "seed": seed}


def _distances(matrix: np.ndarray, sqnorms: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """Exact distances ``[len(queries), N]`` from prepared queries to the rows of ``matrix`` (one BLAS product).

    For cosine the rows are not normalised in memory: ``1 - (x . q) / |x|`` with unit ``q``; for
    euclidean ``sqrt(|x|^2 - 2 x . q + |q|^2)``; for dotproduct ``-x . q`` (signed, not clamped).
    ``sqnorms`` holds ``|x|^2``.
    """
    if len(queries) == 1 and matrix.size <= EXACT_MAX_VALUES:
        # one small query: a single-threaded product. Multi-threaded BLAS gains nothing at this size and,
        # on a busy machine, waiting for its second thread cost 8-15 ms per query (measured on 2 cores).
        dots = np.einsum("ij,j->i", np.asarray(matrix), queries[0])[None, :].astype(np.float32, copy=False)
    else:
        dots = np.asarray(queries @ np.asarray(matrix).T, dtype=np.float32)
    if metric == "dotproduct":
        return -dots
    if metric == "cosine":
        d = 1.0 - dots / np.sqrt(np.maximum(sqnorms, 1e-24))[None, :]
    else:
        d = sqnorms[None, :] - 2.0 * dots + (queries * queries).sum(axis=1)[:, None]
        np.sqrt(np.maximum(d, 0.0), out=d)
    np.maximum(d, 0.0, out=d)
    return d


# ---------------------------------------------------------------------------------------------- the index


@register_type
class SimilarityIndex(BrainResults):
    """A similarity index: the rows' embeddings, ready for queries, and what was found with them.

    Attributes
    ----------
    keys : list of str
        Sample ids of the rows (label ids for an object index; their images are ``sample_ids``).
    config : dict
        ``metric``, ``method`` (``"exact"`` or ``"faiss"``), ``backend`` asked for, ``model`` and
        ``embeddings_field``, ``patches_field``, and for FAISS its ``nlist``, ``nprobe`` and measured recall.
    unique_ids : list of str or None
        Set by :meth:`find_unique`.
    duplicate_ids, duplicate_groups, neighbors_map, thresh, duplicates_info :
        Set by :meth:`find_duplicates` (and kept with the run).
    """

    run_type = "similarity"
    _array_names = ("embeddings",)

    def __init__(self, samples: "SampleCollection", config: dict[str, Any], keys: list[str], sample_ids: list[str],
                 arrays: dict[str, np.ndarray], brain_key: str | None = None, info: dict[str, Any] | None = None,
                 matrix: np.ndarray | None = None, faiss_index: Any = None, model: "Model | None" = None) -> None:
        super().__init__(samples, config, keys, sample_ids, arrays, brain_key, info)
        self._matrix = matrix if matrix is not None else arrays["embeddings"]
        self._faiss = faiss_index
        self._faiss_file: Any = None  # the open file a mapped FAISS index reads (kept to copy it when saved)
        self._model = model
        self._pos_map: dict[str, int] | None = None
        self._sq: np.ndarray | None = None
        self._members: tuple[str, tuple, np.ndarray] | None = None
        self._lock = threading.Lock()
        self.unique_ids: list[str] | None = None
        self.duplicate_ids: list[str] | None = None
        self.neighbors_map: dict[str, list[tuple[str, float]]] | None = None
        self.thresh: float | None = None
        self.duplicates_info: dict[str, Any] | None = None
        self.duplicate_groups: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ basics

    @property
    def metric(self) -> str:
        return self.config["metric"]

    @property
    def method(self) -> str:
        """``"exact"`` or ``"faiss"``: how queries over many rows are answered."""
        return self.config["method"]

    @property
    def total_index_size(self) -> int:
        """Number of rows (samples, or objects) in the index."""
        return len(self.keys)

    @property
    def index_size(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def _pos(self) -> dict[str, int]:
        if self._pos_map is None:
            self._pos_map = {k: i for i, k in enumerate(self.keys)}
        return self._pos_map

    def _norms2(self) -> np.ndarray:
        if self._sq is None:
            x = self._matrix
            sq = np.empty(len(x), np.float32)
            for start in range(0, len(x), _ADD_CHUNK):
                block = np.asarray(x[start:start + _ADD_CHUNK], dtype=np.float32)
                sq[start:start + len(block)] = np.einsum("ij,ij->i", block, block)
            self._sq = sq
        return self._sq

    def get_embeddings(self, ids: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
        """The embeddings of ``ids`` (default: every row) as stored, and their keys."""
        if ids is None:
            return np.asarray(self._matrix), list(self.keys)
        rows = self._rows_of(ids)
        return np.asarray(self._matrix[rows]), [self.keys[r] for r in rows]

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        rows = []
        for i in ids:
            r = self._pos.get(i) if isinstance(i, str) else None
            if r is None:
                raise NotFoundError(f"id {i!r} is not in similarity index {self.key!r} ({len(self.keys)} rows); "
                               "samples added after the index was built, or without an embedding, are not in it")
            rows.append(r)
        return np.asarray(rows, dtype=np.int64)

    def _source(self) -> EmbeddingSource:
        dataset = self._samples._dataset
        return EmbeddingSource(self.keys, self.sample_ids, np.asarray(self._matrix, dtype=np.float32),
                               self.config["fingerprint"], self.patches_field, self.config.get("embeddings_field"),
                               self.config.get("model"), dataset.arrays_dir / "knn")

    def graph(self, k: int = GRAPH_K):
        """The shared kNN graph of the index's embeddings (same metric), computed once per embedding set."""
        return self._source().graph(min(k, len(self.keys) - 1), self.metric)

    # ------------------------------------------------------------------ storage

    def save(self, brain_key: str | None = None, overwrite: bool = False, fields: list[str] | None = None) -> None:
        """Store the index under ``brain_key``: the matrix (unless it is a stored embeddings set), the FAISS index."""
        super().save(brain_key, overwrite, fields)
        dataset = self._samples._dataset
        if self._faiss is not None:
            import faiss

            root = _runs_dir(dataset, self.key)
            tmp = root / f".{_FAISS_FILE}.{os.getpid()}.tmp"
            if self._faiss_file is not None:
                # a mapped index would be written as a reference to its file: copy the file it maps instead
                # (open since it was mapped, so it is the same bytes even if that run was renamed or deleted)
                with open(tmp, "wb") as out:
                    self._faiss_file.seek(0)
                    shutil.copyfileobj(self._faiss_file, out, 8 << 20)
            else:
                faiss.write_index(self._faiss, str(tmp))
            os.replace(tmp, root / _FAISS_FILE)
            if self._faiss_file is None:
                # the inverted lists hold a copy of every row: once written, map the file instead of keeping
                # that copy in memory (lists are read from the OS cache as queries probe them)
                nprobe = self._faiss.nprobe
                self._faiss, self._faiss_file = _map_faiss(root / _FAISS_FILE)
                self._faiss.nprobe = nprobe
                _trim_heap()
        _remember(dataset, self.key, self)

    @classmethod
    def _from_stored(cls, samples, config, keys, sample_ids, arrays, key, stored):
        dataset = samples._dataset
        if "embeddings" in arrays:
            matrix = arrays["embeddings"]
        else:
            matrix = _read_set(dataset, config, keys, key)
        if matrix.shape != (len(keys), int(config["dim"])):
            raise InvalidInputError(f"similarity index {key!r}: stored embeddings have shape {matrix.shape}, expected "
                             f"({len(keys)}, {config['dim']}); compute the index again")
        index = cls(samples, config, keys, sample_ids, arrays, key, stored.get("info"), matrix=matrix)
        index._restore_state(arrays, stored.get("state") or {})
        if config.get("method") == "faiss":
            import faiss

            path = _runs_dir(dataset, key) / _FAISS_FILE
            if path.exists():
                index._faiss, index._faiss_file = _map_faiss(path)
                index._faiss.nprobe = int(config["faiss"]["nprobe"])
            else:
                warnings.warn(f"similarity index {key!r} has lost its FAISS file; rebuilding it", stacklevel=2)
                index._faiss, _ = _build_ivf(matrix, config["metric"], index._norms2())
                index._faiss.nprobe = int(config["faiss"]["nprobe"])
        return index

    def _restore_state(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """What find_unique() and find_duplicates() found, as stored with the run."""
        keys = self.keys
        if "unique_rows" in arrays:
            self.unique_ids = [keys[r] for r in arrays["unique_rows"].tolist()]
        if "dup_kept" in arrays:
            m = len(arrays["dup_kept"])
            self._store_groups(arrays["dup_kept"], arrays["dup_rows"],
                               arrays["dup_channels"] if "dup_channels" in arrays else np.full(m, 2, np.int8),
                               arrays["dup_dists"],
                               arrays["dup_pdists"] if "dup_pdists" in arrays else np.full(m, np.nan))
            self.thresh = state.get("thresh")
            self.duplicates_info = state.get("duplicates_info")

    # ------------------------------------------------------------------ queries

    def _query_vector(self, query: Any) -> tuple[np.ndarray, Any]:
        """The prepared query vector (unit for cosine) and what the view stage records of the query."""
        from ..core.sample import Sample

        if isinstance(query, Sample):
            query = query.id
        if isinstance(query, os.PathLike):
            query = os.fspath(query)
        if isinstance(query, str):
            if query in self._pos:
                return self._prepare(np.asarray(self._matrix[self._pos[query]], dtype=np.float32)), query
            if _looks_like_id(query):
                raise NotFoundError(f"query id {query!r} is not in similarity index {self.key!r} ({len(self.keys)} "
                               f"rows of {'objects' if self.patches_field else 'samples'}); ids of samples added "
                               "after the index was built, or without an embedding, are not in it")
            if not os.path.isfile(query):
                raise InvalidInputError(f"query {query!r} is neither an id in similarity index {self.key!r} nor an "
                                 "existing image file")
            return self._prepare(self._embed_image(query)), query
        if isinstance(query, (list, tuple)) and query and all(isinstance(q, (str, Sample)) for q in query):
            ids = [q.id if isinstance(q, Sample) else q for q in query]
            for q in ids:
                if q not in self._pos:
                    raise NotFoundError(f"query id {q!r} is not in similarity index {self.key!r} ({len(self.keys)} rows)")
            rows = self._rows_of(ids)
            vecs = np.asarray(self._matrix[np.sort(rows)], dtype=np.float32)
            if self.metric == "cosine":
                vecs = prepare(vecs, "cosine")
            return self._prepare(vecs.mean(axis=0)), list(ids)
        if isinstance(query, (list, tuple)) and not query:
            raise InvalidInputError("empty query: pass an id, a list of ids, an embedding or an image path")
        try:
            vec = np.asarray(query, dtype=np.float32)
        except (TypeError, ValueError):
            raise WrongTypeError(f"cannot use {type(query).__name__} as a query: pass an id, a list of ids, an "
                            "embedding vector or an image path") from None
        dim = int(self.config["dim"])
        if vec.ndim == 2 and vec.shape[1] == dim and len(vec):
            vecs = prepare(vec, "cosine") if self.metric == "cosine" else vec
            vec = vecs.mean(axis=0)
        if vec.ndim != 1 or vec.shape[0] != dim:
            raise InvalidInputError(f"query embedding has shape {tuple(np.shape(query))}; the index has dimension {dim}")
        if not np.isfinite(vec).all():
            raise InvalidInputError("query embedding has NaN or inf values")
        return self._prepare(vec), [round(float(v), 7) for v in vec]

    def _prepare(self, vec: np.ndarray) -> np.ndarray:
        vec = np.ascontiguousarray(vec, dtype=np.float32)
        if self.metric == "cosine":
            norm = float(np.linalg.norm(vec))
            vec = vec / max(norm, 1e-12)
        return vec

    def _embed_image(self, path: str) -> np.ndarray:
        model = self._get_model()
        vec = model.embed([path])[0]
        if vec.shape[0] != int(self.config["dim"]):
            raise InvalidInputError(f"model {model.name!r} gives {vec.shape[0]}-d embeddings; the index has "
                             f"dimension {self.config['dim']}")
        return vec

    def _get_model(self) -> "Model":
        with self._lock:
            if self._model is None:
                name = self.config.get("model")
                if not name:
                    raise InvalidInputError(f"similarity index {self.key!r} was built from embeddings passed in as an "
                                     "array, so it has no model to embed an image query; query with an id or a "
                                     "vector, or build the index with model=")
                from ..models import load_model

                try:
                    model = load_model(name, **(self.config.get("model_kwargs") or {}))
                except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
                    raise InvalidInputError(f"similarity index {self.key!r}: cannot load its model {name!r} to embed "
                                     f"an image query ({e}); query with an id or a vector") from None
                fp = self.config.get("model_fingerprint")
                if fp and model.fingerprint != fp:
                    raise InvalidInputError(f"similarity index {self.key!r}: model {name!r} loaded here is not the one "
                                     "the index was built with (fingerprints differ); query with an id or a vector")
                self._model = model
            return self._model

    def _search(self, q: np.ndarray, k: int | None, reverse: bool,
                rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Rows (of the index) and distances of the ``k`` best matches of prepared ``q`` among ``rows``."""
        n_all = len(self.keys)
        n = n_all if rows is None else len(rows)
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        kk = n if k is None else min(k, n)
        dim = int(self.config["dim"])
        # FAISS for a large index, unless the view is small enough that gathering its rows for an exact
        # scan is cheaper (a quarter of the exact budget: a gathered row costs a copy as well as a product)
        if self._faiss is not None and not reverse and k is not None and (
                self.config["backend"] == "faiss" or
                (n_all * dim > EXACT_MAX_VALUES and (rows is None or n * dim > EXACT_MAX_VALUES // 4))):
            found = self._faiss_search(q, kk, rows)
            if found is not None:
                return found
        return self._exact_search(q, kk, reverse, rows)

    def _exact_search(self, q, k, reverse, rows):
        sq = self._norms2()
        if rows is None or len(rows) * 2 > len(self.keys):
            d = _distances(self._matrix, sq, q[None, :], self.metric)[0]
            if rows is not None:
                d = d[rows]
        else:
            # the members' rows, gathered a block at a time (never a copy of all of them)
            d = np.empty(len(rows), np.float32)
            step = max(1, _UNIQUE_BLOCK_BYTES // (4 * max(int(self.config["dim"]), 1)))
            for s in range(0, len(rows), step):
                r = rows[s:s + step]
                d[s:s + len(r)] = _distances(np.asarray(self._matrix[r], dtype=np.float32), sq[r], q[None, :],
                                             self.metric)[0]
        key = -d if reverse else d
        if k < len(d):
            part = np.argpartition(key, k - 1)[:k]
            order = part[np.lexsort((part, key[part]))]
        else:
            order = np.argsort(key, kind="stable")
        out = order if rows is None else rows[order]
        return out.astype(np.int64), d[order]

    def _faiss_search(self, q, k, rows):
        import faiss

        index = self._faiss
        nprobe = int(self.config["faiss"]["nprobe"])
        nlist = int(self.config["faiss"]["nlist"])
        if rows is None:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
        else:
            mask = np.zeros(len(self.keys), bool)
            mask[rows] = True
            bits = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            # probe more lists when the view holds a small part of the index, so k members are still found
            more = min(nlist, int(math.ceil(nprobe * len(self.keys) / max(len(rows), 1))))
            params = faiss.SearchParametersIVF(sel=sel, nprobe=more)
        dist, idx = index.search(q[None, :], k, params=params)
        idx, dist = idx[0], dist[0]
        if (idx < 0).any():
            return None  # not enough members in the probed lists: the caller searches exactly
        dist = to_distance(dist, self.metric).astype(np.float32)
        order = np.lexsort((idx, dist))
        return idx[order].astype(np.int64), dist[order]

    def _member_rows(self, samples: "SampleCollection") -> np.ndarray | None:
        """Index rows of the collection's members (None: every row is a member)."""
        pf = self.patches_field
        view_pf = samples._query().patches_field
        if pf and view_pf != pf:
            raise InvalidInputError(f"similarity index {self.key!r} holds objects of {pf!r}: query a patches view, "
                             f"e.g. dataset.to_patches({pf!r}).sort_by_similarity(...)")
        if not pf and view_pf:
            raise InvalidInputError(f"similarity index {self.key!r} holds samples, not objects; query a sample view")
        if not samples._stages or (pf and len(samples._stages) == 1):
            return None
        # The members of the last view asked about are remembered until the dataset is written to.
        db = samples._dataset._database()
        with db._lock:
            stamp = (db._conn.total_changes, db._conn.execute("PRAGMA data_version").fetchone()[0],
                     str(samples._dataset.path))
        sig = dumps([s.to_dict() for s in samples._stages])
        cached = self._members
        if cached is not None and cached[0] == sig and cached[1] == stamp:
            return cached[2]
        ids = samples.values("id")
        pos = self._pos
        rows = np.sort(np.fromiter((pos[i] for i in ids if i in pos), dtype=np.int64))
        self._members = (sig, stamp, rows)
        return rows

    def sort_by_similarity(self, query: Any, k: int | None = None, reverse: bool = False,
                           dist_field: str | None = None, samples: "SampleCollection | None" = None) -> "DatasetView":
        """The members of ``samples`` (default: the collection the index was built on) most similar to ``query``.

        See :func:`sort_by_similarity` for the query kinds and options.
        """
        if samples is None:
            samples = self._samples
            if self.patches_field:
                samples = samples.to_patches(self.patches_field)
        k = _check_k(k)
        if dist_field is not None:
            check_name(dist_field)
            if dist_field in samples.get_field_schema():
                raise InvalidInputError(f"dist_field {dist_field!r} is a field of the collection; choose another name")
        q, recorded = self._query_vector(query)
        rows = self._member_rows(samples)
        found, dist = self._search(q, k, bool(reverse), rows)
        ids = [self.keys[r] for r in found.tolist()]
        return samples._view(SortBySimilarity(recorded, ids, dist.tolist(), k=k, reverse=bool(reverse),
                                              dist_field=dist_field, brain_key=self.key))

    # ------------------------------------------------------------------ unique samples

    def find_unique(self, count: int) -> list[str]:
        """Choose ``count`` maximally unique rows by greedy farthest-point (k-center) selection.

        The first row is the one farthest from the centroid (for cosine: from the mean direction); each
        next row is the one farthest from every row chosen so far (the lowest row on ties). Memory stays
        ``O(N)`` plus a fixed block (never ``N x N``, never a copy of the matrix).

        The choice is exact, but the work is not one pass over the matrix per pick: each row's distance
        to its nearest chosen row is kept as an upper bound that is refreshed in batches (one blocked
        BLAS matrix product against all the rows chosen since, instead of one matrix-vector product per
        pick), and between refreshes the picks are made among the ``UNIQUE_FRONTIER`` rows with the
        largest bounds, whose distances are kept exact. A pick is taken from that frontier only while
        its exact distance exceeds every bound outside it, so the result is the one plain greedy
        selection gives (1,000 picks of 1,000,000 x 512 rows: 32 CPU s in ``bench/bench_scale.py``,
        loading the index and the norm and centroid passes included, against ~165 s for a pass per pick).

        Parameters
        ----------
        count : int
            How many rows to choose, ``1 <= count <= total_index_size``.

        Returns
        -------
        list of str
            The chosen keys in the order they were picked; also stored in :attr:`unique_ids`.
        """
        n = len(self.keys)
        check_metric(self.metric, DISTANCE_METRICS,
                     f"find_unique() picks the rows farthest apart, and {DOTPRODUCT_NOT_A_DISTANCE}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= n:
            raise InvalidInputError(f"count must be an integer from 1 to {n} (the index size), got {count!r}")
        x = self._matrix
        sq = self._norms2()
        cosine = self.metric == "cosine"
        norms = np.sqrt(np.maximum(sq, 1e-24))
        if cosine:
            centre = (np.asarray(x).T @ (1.0 / norms)).astype(np.float32) / n
        else:
            centre = (np.asarray(x).T @ np.ones(n, np.float32)) / n
        first = int(np.argmax(self._point_dist(centre, sq, norms, cosine)))
        chosen = _farthest_points(x, sq, norms, cosine, first, int(count))
        release(x)
        self.unique_ids = [self.keys[r] for r in chosen]
        # kept with the run, so load_brain_results() in a fresh process has them too
        update_run_state(self, {"unique_rows": np.asarray(chosen, np.int64)}, {})
        return list(self.unique_ids)

    def _point_dist(self, c: np.ndarray, sq: np.ndarray, norms: np.ndarray, cosine: bool) -> np.ndarray:
        """Distance of every row to the point ``c``: cosine distance, or squared euclidean (same order)."""
        dots = np.asarray(self._matrix @ c, dtype=np.float32)
        if cosine:
            cn = float(np.linalg.norm(c))
            if cn == 0:
                return np.ones(len(dots), np.float32)
            return 1.0 - dots / (norms * cn)
        return sq - 2.0 * dots + float(c @ c)

    def unique_view(self) -> "DatasetView":
        """The unique samples found by :meth:`find_unique`, in the order they were picked."""
        if self.unique_ids is None:
            raise InvalidInputError("call find_unique(count) first")
        return self._rows_collection().select(self.unique_ids, ordered=True)

    def visualize_unique(self, visualization: Any, backend: str = "plotly", **kwargs: Any):
        """A scatter plot of ``visualization``'s points with the unique rows highlighted.

        ``visualization`` is the :class:`VisualizationResults` of the same samples (or objects).
        """
        if self.unique_ids is None:
            raise InvalidInputError("call find_unique(count) first")
        unique = set(self.unique_ids)
        return _highlight(visualization, lambda key: "unique" if key in unique else "other", ["other", "unique"],
                          f"{len(unique)} unique {'objects' if self.patches_field else 'samples'}", backend, kwargs)

    # ------------------------------------------------------------------ duplicates

    def find_duplicates(self, thresh: float | None = None, fraction: float | None = None,
                        channels: str = "auto", z: float = _dups.DUPLICATE_Z, progress: bool = True) -> list[str]:
        """Find near-duplicates: copies that were re-encoded, resized, cropped a little or brightened.

        Two channels, each compared only on its shared kNN graph (``GRAPH_K`` neighbours a row, never
        ``N x N``):

        * **perceptual** -- a descriptor of the pixels (:mod:`embedlens.models.perceptual`: the
          low-frequency DCT of the grey 32-px image, whole and without 2.5% / 5% borders, unit length),
          computed once per sample (or object, cropped by its box) and stored as the embeddings set
          ``"perceptual"`` (``"perceptual_<patches_field>"``); a pair's distance is the best cosine
          distance of the whole images and of each one's inside against the other whole;
        * **embedding** -- the index's own distance.

        Rows are visited in index order; each is kept unless it is paired with a row kept before it, in
        which case it is a duplicate of its nearest kept partner (FiftyOne's grouping: kept rows are
        pairwise not paired).

        Parameters
        ----------
        thresh : float, optional
            FiftyOne's meaning: pairs within this distance in the index's metric (cosine ``1 - cos`` or
            euclidean) are duplicates; the embedding channel alone.
        fraction : float, optional
            In (0, 1): the embedding threshold is chosen (binary search over the graph's distances) so
            that about this fraction of the rows are flagged; the embedding channel alone.
        channels : {"auto", "perceptual", "embedding", "either"}
            With neither ``thresh`` nor ``fraction``, which rule pairs rows. ``"auto"`` (default): the
            perceptual rule wherever both images have a descriptor, the embedding rule for pairs where one
            has none (unreadable, or blank: no detail to compare). ``"perceptual"``/``"embedding"``: that
            channel alone (``"embedding"`` is the rule of embedlens before the perceptual channel).
            ``"either"``: a pair either rule finds (more copies the pixels cannot see, such as flips, and
            more look-alikes: on the photo benchmark the embedding rule's extra pairs were all tiles of one
            smooth sky, and each such false pair can also hide a true one from the keep-first grouping).
        z : float
            The default rule's outlier cut (below), for both channels (``DUPLICATE_Z`` = 6.5).
        progress : bool
            Show a progress bar while descriptors are computed (once; later calls read them).

        Notes
        -----
        **The default rule** (neither ``thresh`` nor ``fraction``), the same in each channel, relative to
        each row's neighbourhood and calibrated on the dataset's own distances, never an absolute
        distance. For row ``i`` let ``s_i`` be its distance to its 10th nearest neighbour and
        ``r_i = d(i, nearest) / s_i`` (on a squared scale: cosine distance as is, euclidean squared).
        Natural neighbours have ratios of a few tenths to 1; a copy has a tiny ratio.
        ``ratio = min(exp(median(log r) - z * 1.4826 * MAD(log r)), 0.3)`` -- a robust outlier cut on the
        ratios of the whole set -- and ``j`` is a duplicate of ``i`` when ``d(i, j) <= ratio * s_i``, or
        when ``d(i, j)`` is below 2% of the median nearest-neighbour distance (so groups of more than 10
        copies are still found). Which channel's rule decides is ``channels``; the channel that matched
        is kept with each copy (``"perceptual"``, ``"embedding"``, or ``"both"`` with ``"either"``).

        Measured by ``bench/bench_duplicates.py`` (all defaults, EfficientNet-Lite0): on 128-px tiles of
        scikit-image's photos, 20% of them with a planted copy (64 of a kind), and tiles shifted by half a tile as
        negatives, precision / recall 0.98 / 1.00 for JPEG q60, 0.85x resize and 3% border crop, 0.98 /
        0.98 for +8% brightness, 0.98 / 0.95 for noise, 0.98 / 0.97 for all four combined; on MNIST-5000
        with 2% planted copies 1.00 / 0.99-1.00 for JPEG, resize, crop, brightness and noise (0.86 recall
        combined); with nothing planted 1 of 594 tiles and 0 of 5,000 digits flagged. The embedding rule
        alone found 0-9% of the photo copies and none of the JPEG, resized or noisy digits.

        ``duplicates_info`` says what was done: the rule, each channel's ratio, pairs examined and flagged;
        a warning is given when nothing is flagged although many rows have a neighbour much closer than
        usual (a low-distance mode, see ``duplicates.LOW_MODE_FACTOR``). ``thresh`` is the given or chosen
        threshold, or with the default rule the largest embedding distance of a flagged pair (None when
        nothing is flagged).

        Returns
        -------
        list of str
            The duplicate keys (also :attr:`duplicate_ids`). :attr:`duplicate_groups` lists each kept key
            with its copies, the channel that matched and both distances; :attr:`neighbors_map` maps each
            kept key to ``[(duplicate key, embedding distance), ...]`` (FiftyOne's shape).
        """
        check_metric(self.metric, DISTANCE_METRICS,
                     f"find_duplicates() pairs rows within a distance (thresh, or a ratio of neighbour distances), "
                     f"and {DOTPRODUCT_NOT_A_DISTANCE}")
        if thresh is not None and fraction is not None:
            raise InvalidInputError("pass thresh= or fraction=, not both")
        if thresh is not None:
            if isinstance(thresh, bool) or not isinstance(thresh, (int, float, np.floating)) \
                    or not math.isfinite(thresh) or thresh < 0:
                raise InvalidInputError(f"thresh must be a non-negative distance, got {thresh!r}")
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                    or not 0 < fraction < 1:
                raise InvalidInputError(f"fraction must be in (0, 1), got {fraction!r}")
        if isinstance(z, bool) or not isinstance(z, (int, float, np.floating)) or not 0 < z < 100:
            raise InvalidInputError(f"z must be a positive number of robust standard deviations, got {z!r}")
        if channels not in DUPLICATE_CHANNELS:
            raise InvalidInputError(f"channels must be one of {', '.join(DUPLICATE_CHANNELS)}, got {channels!r}")
        n = len(self.keys)
        if n < 2:
            raise InvalidInputError("find_duplicates() needs at least 2 rows in the index")
        graph = self.graph(GRAPH_K)
        info: dict[str, Any] = {"graph_k": graph.k, "graph_method": graph.method, "graph_recall": graph.recall}
        pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        low = {"embedding": _dups.low_mode(graph)}
        if thresh is None and fraction is None:
            rows, cols, _, emb_info = _dups.default_edges(graph, float(z))
            info.update(rule="default", channels=channels, z=float(z), embedding=emb_info)
            descriptors = self._perceptual_channel(info, progress) if channels != "embedding" else None
            if descriptors is not None:
                pgraph = _dups.refine(self._perceptual_graph(descriptors), descriptors)
                prow, pcol, _, p_info = _dups.default_edges(pgraph, float(z))
                info["perceptual"].update(p_info)
                pairs["perceptual"] = (prow, pcol)
                low["perceptual"] = _dups.low_mode(pgraph)
                if channels == "auto":
                    # the embedding decides only where the pixels cannot: a row without a descriptor
                    blind = ~np.any(descriptors != 0, axis=1)
                    keep = blind[rows] | blind[np.maximum(cols, 0)]
                    rows, cols = rows[keep], cols[keep]
                    info["perceptual"]["rows_without_descriptor"] = int(blind.sum())
            if channels != "perceptual" or descriptors is None:
                pairs["embedding"] = (rows, cols)
        else:
            descriptors = None
            if fraction is not None:
                thresh = _dups.fraction_thresh(graph, float(fraction))
                info.update(rule="fraction", fraction=float(fraction))
            else:
                info.update(rule="thresh")
            rows, cols, _ = _dups.threshold_edges(graph, float(thresh))
            pairs["embedding"] = (rows, cols)
        info["pairs_examined"] = {c: int(graph.indices.shape[0] * graph.k) for c in pairs}
        self._set_duplicates(pairs, descriptors, info, thresh, low)
        return list(self.duplicate_ids)

    def _perceptual_channel(self, info: dict[str, Any], progress: bool) -> np.ndarray | None:
        """The rows' perceptual descriptors (computed and stored once), or None with a warning."""
        samples = self._samples
        try:
            descriptors, found = _dups.perceptual_rows(samples, list(self.keys), self.patches_field, progress)
        except (OSError, InvalidInputError) as e:
            msg = f"the perceptual channel could not run ({e}); near-duplicates by embeddings only"
            warnings.warn(msg, stacklevel=3)
            info["perceptual"] = {"skipped": msg}
            return None
        info["perceptual"] = {"set": _dups.perceptual_set_name(self.patches_field), "missing": int((~found).sum())}
        if not found.any():
            msg = "no image could be read for the perceptual channel; near-duplicates by embeddings only"
            warnings.warn(msg, stacklevel=3)
            info["perceptual"]["skipped"] = msg
            return None
        if not found.all():
            warnings.warn(f"{int((~found).sum())} of {len(found)} images could not be read: they are compared by "
                          "embeddings only", stacklevel=3)
            descriptors[~found] = 0.0  # a zero descriptor is near nothing
        return descriptors

    def _perceptual_graph(self, descriptors: np.ndarray):
        from .neighbors import knn_graph
        from .source import _digest

        fingerprint = "perceptual-" + _digest(descriptors, self.keys)
        return knn_graph(descriptors, fingerprint, min(GRAPH_K, len(self.keys) - 1), "cosine",
                         cache_dir=self._samples._dataset.arrays_dir / "knn")

    def _set_duplicates(self, channels: dict[str, tuple[np.ndarray, np.ndarray]], descriptors: np.ndarray | None,
                        info: dict[str, Any], thresh: float | None, low: dict[str, int]) -> None:
        """Group the pairs of every channel, measure both distances of each, store the state with the run."""
        n = len(self.keys)
        codes = {"perceptual": 1, "embedding": 2}
        rows = np.concatenate([np.asarray(r, np.int64) for r, _ in channels.values()])
        cols = np.concatenate([np.asarray(c, np.int64) for _, c in channels.values()])
        code = np.concatenate([np.full(len(r), codes[name], np.int8) for name, (r, _) in channels.items()])
        ok = (cols >= 0) & (rows != cols)
        rows, cols, code = rows[ok], cols[ok], code[ok]
        # one entry a pair, with the channels that paired it
        lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
        pair = lo * n + hi
        uniq, inv = np.unique(pair, return_inverse=True)
        matched = np.zeros(len(uniq), np.int8)
        np.bitwise_or.at(matched, inv, code)
        lo, hi = uniq // n, uniq % n
        emb_d = self._pair_distances(lo, hi)
        if descriptors is not None:
            from ..models.perceptual import pair_distance

            per_d = pair_distance(descriptors[lo], descriptors[hi]).astype(np.float64)
            # a duplicate joins the kept partner nearest by pixels; pairs only the embedding found come after
            order_d = np.where(matched & 1, per_d, 1.0 + emb_d)
        else:
            per_d = np.full(len(lo), np.nan)
            order_d = emb_d
        dup_row, kept_row, _ = _dups.assign(n, lo, hi, order_d)
        # each duplicate's pair with its kept row
        pos = np.searchsorted(uniq, np.minimum(dup_row, kept_row) * n + np.maximum(dup_row, kept_row))
        ch, de, dp = matched[pos], emb_d[pos], per_d[pos]
        dist = np.where(ch & 1, dp, de)  # the distance of the channel that matched (pixels when both did)
        order = np.lexsort((dup_row, dist, kept_row))
        kept_row, dup_row, ch, de, dp, dist = (a[order] for a in (kept_row, dup_row, ch, de, dp, dist))
        self._store_groups(kept_row, dup_row, ch, de, dp)
        flagged = len(dup_row)
        if info["rule"] == "default":
            thresh = float(de.max()) if flagged else None
        self.thresh = None if thresh is None else float(thresh)
        by_channel = {name: int(((ch & c) > 0).sum()) for name, c in codes.items() if name in channels}
        info.update(flagged=flagged, thresh=self.thresh, pairs_paired=int(len(uniq)), flagged_by_channel=by_channel,
                    low_mode=low)
        needed = max(2, int(math.ceil(0.005 * n)))
        if flagged == 0 and max(low.values()) >= needed:
            chan = max(low, key=low.get)
            msg = (f"find_duplicates() flagged nothing, but {low[chan]} of {n} rows have a {chan} neighbour closer "
                   f"than {_dups.LOW_MODE_FACTOR:g} x the median nearest-neighbour distance: a low-distance mode "
                   "that copies make. Try the default rule (no thresh/fraction), a smaller z, or a larger thresh")
            warnings.warn(msg, stacklevel=3)
            info["warning"] = msg
        self.duplicates_info = info
        update_run_state(self, {"dup_kept": kept_row.astype(np.int64), "dup_rows": dup_row.astype(np.int64),
                                "dup_dists": de.astype(np.float64), "dup_pdists": dp.astype(np.float64),
                                "dup_channels": ch.astype(np.int8)},
                         {"thresh": self.thresh, "duplicates_info": _jsonable(info)})

    def _pair_distances(self, a: np.ndarray, b: np.ndarray, block: int = 65_536) -> np.ndarray:
        """Distances (the index's metric) of rows ``a[i]`` and ``b[i]``, gathered a block at a time."""
        sq = self._norms2()
        out = np.empty(len(a), np.float64)
        x = self._matrix
        for s in range(0, len(a), block):
            ra, rb = a[s:s + block], b[s:s + block]
            xa = np.asarray(x[ra], np.float32)
            xb = np.asarray(x[rb], np.float32)
            dots = np.einsum("ij,ij->i", xa, xb).astype(np.float64)
            if self.metric == "cosine":
                denom = np.sqrt(np.maximum(sq[ra], 1e-24).astype(np.float64) * np.maximum(sq[rb], 1e-24))
                d = 1.0 - dots / denom
            else:
                d = np.sqrt(np.maximum(sq[ra] + sq[rb] - 2.0 * dots, 0.0))
            out[s:s + len(ra)] = np.maximum(d, 0.0)
        return out

    def _store_groups(self, kept_row, dup_row, ch, de, dp) -> None:
        keys = self.keys
        names = {1: "perceptual", 2: "embedding", 3: "both"}
        groups: dict[str, dict[str, Any]] = {}
        for k, j, c, e, p in zip(kept_row.tolist(), dup_row.tolist(), ch.tolist(), de.tolist(), dp.tolist()):
            g = groups.setdefault(keys[k], {"kept": keys[k], "copies": []})
            per = None if p != p else float(p)  # NaN: no perceptual distance
            g["copies"].append({"id": keys[j], "channel": names[int(c)],
                                "distance": per if c & 1 else float(e),
                                "embedding_distance": float(e), "perceptual_distance": per})
        self.duplicate_groups = [groups[k] for k in sorted(groups, key=self._pos.__getitem__)]
        self.neighbors_map = {g["kept"]: sorted(((c["id"], c["embedding_distance"]) for c in g["copies"]),
                                                key=lambda t: (t[1], self._pos[t[0]]))
                              for g in self.duplicate_groups}
        self.duplicate_ids = [c["id"] for g in self.duplicate_groups for c in g["copies"]]

    def duplicates_view(self, type_field: str | None = None, id_field: str | None = None,
                        dist_field: str | None = None) -> "DatasetView":
        """The duplicate groups (:attr:`duplicate_groups`): each kept sample followed by its duplicates, nearest first.

        Kept samples appear in index order. ``dist_field`` (distance to the kept sample in the channel
        that matched, 0 for the kept sample itself) is a column of the view only: nothing is written. ``type_field`` (``"nearest"`` for
        the kept sample, ``"duplicate"`` for the others) and ``id_field`` (the kept sample's id) are
        **written to the dataset**, as FiftyOne does, on every sample of the index's collection (None on
        samples outside the groups, replacing values of an earlier call). They need a sample-level index.
        """
        if self.duplicate_groups is None:
            raise InvalidInputError("call find_duplicates() first")
        for name in (type_field, id_field, dist_field):
            if name is not None:
                check_name(name)
        coll = self._rows_collection()
        ids, types, kept_ids, dists = [], [], [], []
        for g in self.duplicate_groups:
            kept = g["kept"]
            ids.append(kept)
            types.append("nearest")
            kept_ids.append(kept)
            dists.append(0.0)
            for c in g["copies"]:
                ids.append(c["id"])
                types.append("duplicate")
                kept_ids.append(kept)
                dists.append(c["distance"])
        if dist_field is not None and dist_field in coll.get_field_schema():
            raise InvalidInputError(f"dist_field {dist_field!r} is a field of the collection; choose another name")
        if (type_field or id_field) and self.patches_field:
            raise InvalidInputError("type_field/id_field are written to samples; this index holds objects")
        schema = coll.get_field_schema()
        for field in (type_field, id_field):
            if field in ("id", "filepath", "tags", "metadata", "sample_id"):
                raise InvalidInputError(f"{field!r} is a built-in field; choose another name")
            if field is not None and field in schema and schema[field] != "str":
                raise InvalidInputError(f"field {field!r} exists with type {schema[field]}; choose another name")
        all_ids = coll.values("id") if (type_field or id_field) else []
        for field, values in ((type_field, types), (id_field, kept_ids)):
            if field is None:
                continue
            if field not in schema:
                coll._dataset.add_sample_field(field, "str")
            by_id = dict(zip(ids, values))
            coll.set_values(field, [by_id.get(i) for i in all_ids])
        if dist_field is None:
            return coll.select(ids, ordered=True)
        return coll._view(SortBySimilarity(f"duplicates:{self.key}", ids, dists, k=None, reverse=False,
                                           dist_field=dist_field, brain_key=self.key))

    def visualize_duplicates(self, visualization: Any, backend: str = "plotly", **kwargs: Any):
        """A scatter plot of ``visualization``'s points: kept samples with duplicates, and the duplicates."""
        if self.neighbors_map is None:
            raise InvalidInputError("call find_duplicates() first")
        kept = set(self.neighbors_map)
        dups = set(self.duplicate_ids or [])
        return _highlight(visualization,
                          lambda key: "duplicate" if key in dups else ("nearest" if key in kept else "other"),
                          ["other", "nearest", "duplicate"], f"{len(dups)} duplicates", backend, kwargs)

    def _rows_collection(self) -> "SampleCollection":
        s = self._samples
        return s.to_patches(self.patches_field) if self.patches_field else s

    def __repr__(self) -> str:
        return (f"<SimilarityIndex key={self.key!r} metric={self.metric!r} method={self.method!r} "
                f"rows={len(self.keys)} dim={self.config['dim']}>")


def _pair_dist(rows: np.ndarray, rsq: np.ndarray, rnorm: np.ndarray, centres: np.ndarray, csq: np.ndarray,
               cnorm: np.ndarray, cosine: bool) -> np.ndarray:
    """``[len(rows), len(centres)]`` distances as :meth:`SimilarityIndex._point_dist` computes them."""
    dots = rows @ centres.T
    if cosine:
        ok = cnorm > 0
        d = 1.0 - dots / (rnorm[:, None] * np.where(ok, cnorm, 1.0)[None, :])
        if not ok.all():
            d[:, ~ok] = 1.0
        return d
    return rsq[:, None] - 2.0 * dots + csq[None, :]


def _farthest_points(x: np.ndarray, sq: np.ndarray, norms: np.ndarray, cosine: bool, first: int, count: int,
                     frontier: int | None = None) -> list[int]:
    """Greedy farthest-point order from row ``first``: see :meth:`SimilarityIndex.find_unique`.

    ``mind`` holds, for every row, an upper bound of its distance to the nearest chosen row (exact for the
    rows chosen before the last refresh, ``-inf`` for chosen rows). The frontier ``F`` (the rows with the
    largest bounds at the last refresh) has exact distances ``mF``, updated with one small product per
    pick; ``theta`` bounds every row outside it. While ``max(mF) > theta`` the frontier's best is the
    global best; otherwise the bounds are refreshed with the rows chosen since (``pending``), in blocks.
    """
    n, dim = x.shape
    size = min(n, frontier or UNIQUE_FRONTIER)
    step = max(1, _UNIQUE_BLOCK_BYTES // (4 * max(dim, 1)))
    mind = np.full(n, np.inf, np.float32)
    mind[first] = -np.inf
    chosen, pending = [first], [first]
    front = m_front = x_front = sq_front = n_front = None
    theta = np.inf
    while len(chosen) < count:
        pos: int | None
        if front is not None and m_front.max() > theta:
            pos = int(np.argmax(m_front))
            j = int(front[pos])
        else:
            if front is not None:
                mind[front] = m_front
            if pending:
                js = np.asarray(pending, np.int64)
                centres = np.ascontiguousarray(x[js], dtype=np.float32)
                for s in range(0, n, step):
                    block = np.asarray(x[s:s + step], dtype=np.float32)
                    d = _pair_dist(block, sq[s:s + step], norms[s:s + step], centres, sq[js], norms[js], cosine)
                    np.minimum(mind[s:s + step], d.min(axis=1), out=mind[s:s + step])
                pending = []
            if size < n:
                part = np.argpartition(-mind, size)
                front = np.sort(part[:size])
                theta = float(mind[part[size]])
            else:
                front, theta = np.arange(n), -np.inf
            x_front = np.ascontiguousarray(x[front], dtype=np.float32)
            sq_front, n_front = sq[front], norms[front]
            m_front = mind[front]
            # every bound is exact now: the global argmax is the pick (lowest row on ties)
            j = int(np.argmax(mind))
            hit = int(np.searchsorted(front, j))
            pos = hit if hit < len(front) and front[hit] == j else None
        chosen.append(j)
        pending.append(j)
        mind[j] = -np.inf
        d = _pair_dist(x_front, sq_front, n_front, np.asarray(x[j:j + 1], dtype=np.float32), sq[j:j + 1],
                       norms[j:j + 1], cosine)[:, 0]
        np.minimum(m_front, d, out=m_front)
        if pos is not None:
            m_front[pos] = -np.inf
    return chosen


def _highlight(visualization: Any, cls_of, classes: list[str], title: str, backend: str, kwargs: dict):
    keys = list(visualization.keys)
    labels = [cls_of(k) for k in keys]
    if hasattr(visualization, "visualize"):
        sizes = [3.0 if v == "other" else 9.0 for v in labels]
        kwargs.setdefault("title", title)
        kwargs.setdefault("size_range", (3.0, 9.0))
        return visualization.visualize(labels=labels, sizes=sizes, classes=classes, backend=backend, **kwargs)
    import plotly.graph_objects as go

    pts = np.asarray(visualization.points)
    fig = go.Figure()
    for c in classes:
        rows = [i for i, v in enumerate(labels) if v == c]
        fig.add_trace(go.Scattergl(x=pts[rows, 0], y=pts[rows, 1], mode="markers", name=c,
                                   text=[keys[i] for i in rows], marker={"size": 3 if c == "other" else 8}))
    fig.update_layout(title=title)
    return fig


def _looks_like_id(s: str) -> bool:
    return len(s) == 24 and all(c in "0123456789abcdef" for c in s)


def _check_k(k: Any) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidInputError(f"k must be a positive integer (or None for every match), got {k!r}")
    return int(k)


def _read_set(dataset: "Dataset", config: dict[str, Any], keys: list[str], key: str) -> np.ndarray:
    from ..core.embeddings import embedding_set

    name = config["embeddings_field"]
    store = embedding_set(dataset, name)
    if not store.exists:
        raise InvalidInputError(f"similarity index {key!r} reads its embeddings from the set {name!r}, which was "
                         "deleted; compute the index again")
    fp = config.get("model_fingerprint")
    if fp and store.meta.get("fingerprint") != fp:
        raise InvalidInputError(f"similarity index {key!r}: the embeddings set {name!r} now holds another model's "
                         "embeddings; compute the index again")
    # the set's own memory map when the index covers it in stored order (no copy), else gathered rows
    matrix, found = store.read(keys)
    if not found.all():
        raise InvalidInputError(f"similarity index {key!r}: {int((~found).sum())} of its rows are no longer in the "
                         f"embeddings set {name!r}; compute the index again")
    return matrix


def _map_faiss(path: Any) -> tuple[Any, Any]:
    """A stored FAISS index whose inverted lists are read from the mapped file (``IO_FLAG_MMAP``), and the
    file held open (the bytes it maps, whatever later happens to the path)."""
    import faiss

    f = open(path, "rb")
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP), f
    except BaseException:
        f.close()
        raise


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc keeps large freed blocks otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------- loading, cache


def _remember(dataset: "Dataset", key: str, index: SimilarityIndex) -> None:
    stamp = get_brain_info(dataset, key)["updated_at"]
    with _cache_lock:
        _cache[(str(dataset.path), key)] = (stamp, index)
        _cache.move_to_end((str(dataset.path), key))
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget the similarity indexes loaded in this process (they are loaded again on the next query)."""
    with _cache_lock:
        _cache.clear()


def load_similarity_index(dataset: "Dataset", brain_key: str | None = None) -> SimilarityIndex:
    """The similarity index ``brain_key`` of ``dataset`` (optional when there is exactly one).

    Loaded indexes are kept in memory (the last few, per dataset and key), so repeated queries pay no
    loading; an index that was overwritten or renamed since is loaded again.
    """
    key = _similarity_key(dataset, brain_key)
    stamp = get_brain_info(dataset, key)["updated_at"]
    ck = (str(dataset.path), key)
    with _cache_lock:
        hit = _cache.get(ck)
        if hit is not None and hit[0] == stamp:
            _cache.move_to_end(ck)
            return hit[1]
    index = dataset.load_brain_results(key)
    _remember(dataset, key, index)
    return index


def _similarity_key(dataset: "Dataset", brain_key: str | None) -> str:
    keys = list_brain_runs(dataset, type="similarity")
    if brain_key is None:
        if len(keys) == 1:
            return keys[0]
        if not keys:
            raise InvalidInputError(f"dataset {dataset.name!r} has no similarity index; build one with "
                             "el.compute_similarity(dataset, brain_key='similarity')")
        raise InvalidInputError(f"dataset {dataset.name!r} has {len(keys)} similarity indexes ({', '.join(keys)}); "
                         "pass brain_key= (on the command line: --brain-key) to choose one")
    if brain_key not in keys:
        if isinstance(brain_key, str) and has_brain_run(dataset, brain_key):
            kind = get_brain_info(dataset, brain_key)["type"]
            raise InvalidInputError(f"brain run {brain_key!r} is a {kind} run, not a similarity index; similarity "
                             f"indexes: {', '.join(keys) or 'none'}")
        raise InvalidInputError(f"no similarity index {brain_key!r} on dataset {dataset.name!r}; similarity indexes: "
                         f"{', '.join(keys) or 'none'}")
    return brain_key


def sort_by_similarity(samples: "SampleCollection", query: Any, k: int | None = None, reverse: bool = False,
                       dist_field: str | None = None, brain_key: str | None = None) -> "DatasetView":
    """The members of ``samples`` sorted by similarity to ``query`` (FiftyOne's ``sort_by_similarity``).

    Parameters
    ----------
    samples : SampleCollection
        A dataset or view; only its members are searched and returned. For an object index, a patches
        view (``dataset.to_patches(field)``).
    query : str, list of str, array, or path
        A sample id (label id, for an object index) in the index; a list of ids (the mean of their
        embeddings -- of their unit vectors for cosine); an embedding vector of the index's dimension
        (or ``[m, D]`` vectors, averaged); or an image file, embedded with the index's model (an error
        when the index was built from an array and has no model).
    k : int, optional
        Keep the ``k`` best matches; ``None`` sorts every member.
    reverse : bool
        Least similar first (the ``k`` least similar, with ``k``).
    dist_field : str, optional
        Add each match's distance to the view as this field (the dataset is not written).
    brain_key : str, optional
        The similarity index; optional when the dataset has exactly one.

    Returns
    -------
    DatasetView
        ``samples`` restricted to the matches, best first; the matched ids and distances are kept in the
        view's last stage, so saving or reloading the view needs no index.
    """
    k = _check_k(k)
    index = load_similarity_index(samples._dataset, brain_key)
    return index.sort_by_similarity(query, k=k, reverse=reverse, dist_field=dist_field, samples=samples)


__all__ = ["BACKENDS", "EXACT_MAX_VALUES", "FAISS_TARGET_RECALL", "GRAPH_K", "SimilarityIndex", "clear_cache",
           "compute_similarity", "load_similarity_index", "sort_by_similarity"]


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in info.items()}
