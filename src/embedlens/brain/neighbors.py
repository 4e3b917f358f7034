"""The k-nearest-neighbour graph of an embedding set: computed once, shared by every method that needs it.

Exact search multiplies blocks of rows with BLAS (never the whole N x N matrix); above
``EXACT_MAX_POINTS`` the graph comes from a FAISS inverted-file index, and the recall of the
approximation is measured on a sample of rows against exact search and kept with the graph.
Column 0 of every row is the point itself (distance 0), the convention umap-learn expects.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("cosine", "euclidean")
# Measured on this project's 2-core machine (bench/bench_brain.py): exact blocks win below ~10k points.
EXACT_MAX_POINTS = 10_000
_BLOCK_BYTES = 64 << 20
_cache: dict[tuple[str, str], "KnnGraph"] = {}
_lock = threading.Lock()


@dataclass
class KnnGraph:
    indices: np.ndarray  # int64 [N, k + 1]; column 0 is the point itself
    distances: np.ndarray  # float32 [N, k + 1]
    metric: str
    method: str  # "exact" | "ivf"
    recall: float | None = None  # of the neighbours, measured against exact search on a sample

    @property
    def k(self) -> int:
        return self.indices.shape[1] - 1

    def take(self, k: int) -> "KnnGraph":
        """The graph with the ``k`` nearest neighbours (plus self) of each point."""
        return KnnGraph(self.indices[:, :k + 1], self.distances[:, :k + 1], self.metric, self.method, self.recall)


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
    return metric


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """Rows ready for inner products: unit length for cosine (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, 1e-12)
    return x


def search(base: np.ndarray, queries: np.ndarray, k: int, metric: str,
           self_offset: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``base`` for each query row, nearest first, in blocks of queries.

    Both arrays must already be :func:`prepare`-d. With ``self_offset``, query ``i`` is base row
    ``self_offset + i`` and is put first (distance 0) whatever ties exist.
    """
    n = base.shape[0]
    k = min(k, n)
    sq = (base * base).sum(axis=1) if metric == "euclidean" else None
    rows = max(1, _BLOCK_BYTES // (4 * max(n, 1)))
    out_i = np.empty((len(queries), k), np.int64)
    out_d = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        prod = q @ base.T
        if metric == "cosine":
            d = 1.0 - prod
        else:
            d = (q * q).sum(axis=1)[:, None] + sq[None, :] - 2.0 * prod
        if self_offset is not None:
            r = np.arange(len(q))
            d[r, self_offset + start + r] = -np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(q), 1))
        pd = np.take_along_axis(d, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        out_i[start:start + len(q)] = np.take_along_axis(part, order, axis=1)
        out_d[start:start + len(q)] = np.take_along_axis(pd, order, axis=1)
    if self_offset is not None:
        out_d[:, 0] = 0.0
    np.maximum(out_d, 0.0, out=out_d)
    if metric == "euclidean":
        np.sqrt(out_d, out=out_d)
    return out_i, out_d


def exact_graph(x: np.ndarray, k: int, metric: str) -> KnnGraph:
    p = prepare(x, metric)
    idx, dist = search(p, p, k + 1, metric, self_offset=0)
    return KnnGraph(idx, dist, metric, "exact", 1.0)


def ivf_graph(x: np.ndarray, k: int, metric: str, seed: int = 51, target_recall: float = 0.99,
              recall_sample: int = 256) -> KnnGraph:
    """Approximate graph from a :func:`build_ivf` index (exact distances within the probed lists).

    The recall measured by :func:`build_ivf` is kept with the graph. FAISS is compiled C++, so a fresh
    process pays no JIT warm-up (pynndescent spent ~40 s compiling on every new process here).
    """
    index, _, recall = build_ivf(x, metric, k, seed=seed, recall_target=target_recall, recall_sample=recall_sample)
    dist, idx = index.search(prepare(x, metric), k + 1)
    idx = idx.astype(np.int64)
    dist = (1.0 - dist) if metric == "cosine" else np.sqrt(np.maximum(dist, 0.0))
    idx, dist = _self_first(idx, np.asarray(dist, np.float32))
    np.maximum(dist, 0.0, out=dist)
    return KnnGraph(idx, dist, metric, "ivf", recall)


def build_ivf(x: np.ndarray, metric: str, k: int, nlist: int | None = None, seed: int = 51,
              recall_target: float = 0.99, recall_sample: int = 256,
              sqnorms: np.ndarray | None = None) -> tuple[Any, int, float]:
    """A FAISS ``IndexIVFFlat`` of the rows of ``x`` (unit rows for cosine), its ``nprobe`` and recall.

    ``nlist`` lists (default ``2 sqrt(N)``); ``nprobe`` starts at 4 and doubles until recall@``k`` of a
    random sample of rows (against exact search, the row itself excluded) reaches ``recall_target``.
    ``x`` may be memory-mapped: it is never copied whole. ``sqnorms``: ``|x|^2`` of the rows, if known.
    """
    import faiss

    n, d = x.shape
    # 2 sqrt(n): 20% faster than 4 sqrt(n) at equal recall (kNN graph); n / 39: FAISS wants 39 training rows a list
    nlist = max(1, min(nlist or int(2 * np.sqrt(n)), n // 39))
    ip = metric == "cosine"
    quantizer = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
    index.cp.seed = seed
    rng = np.random.default_rng(seed)
    # sorted rows: a memory-mapped x is read front to back
    index.train(prepare(x[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))], metric))
    fill_ivf(index, x, metric)
    if n < 2:
        return index, 1, 1.0
    sample = np.sort(rng.choice(n, size=min(recall_sample, n), replace=False))
    queries = prepare(x[sample], metric)
    kk = min(k, n - 1)
    sq = np.einsum("ij,ij->i", x, x) if sqnorms is None else sqnorms
    truth = []
    # 16 queries at a time: [16, N] temporaries (6 MB at N = 100k), not [256, N] ones (100 MB)
    for start in range(0, len(sample), 16):
        rows = sample[start:start + 16]
        dots = queries[start:start + 16] @ np.asarray(x).T
        dist = -dots / np.sqrt(np.maximum(sq, 1e-24)) if ip else sq - 2.0 * dots
        dist[np.arange(len(rows)), rows] = np.inf
        truth.append(np.argpartition(dist, kk - 1, axis=1)[:, :kk].copy())  # not a view of all N
    truth = np.concatenate(truth)
    nprobe = 4
    while True:
        index.nprobe = min(nprobe, nlist)
        _, found = index.search(queries, kk + 1)
        hits = sum(len(set(t.tolist()) & (set(f.tolist()) - {s})) for t, f, s in zip(truth, found, sample.tolist()))
        recall = hits / (kk * len(sample))
        if recall >= recall_target or index.nprobe >= nlist:
            return index, index.nprobe, recall
        nprobe *= 2


def fill_ivf(index, rows: np.ndarray, metric: str | None = None, chunk: int = 4096) -> None:
    """Add ``rows`` to a trained ``IndexIVFFlat``, writing each inverted list once at its final size.

    ``index.add`` grows the lists' buffers geometrically (up to twice the data). With ``metric`` the rows
    are :func:`prepare`-d chunk by chunk, so no prepared copy of the whole matrix is made.
    """
    import faiss

    def ready(x: np.ndarray) -> np.ndarray:
        return prepare(x, metric) if metric else np.ascontiguousarray(x, dtype=np.float32)

    n = len(rows)
    assign = np.empty(n, np.int64)
    for start in range(0, n, chunk):
        _, lists = index.quantizer.search(ready(rows[start:start + chunk]), 1)
        assign[start:start + len(lists)] = lists[:, 0]
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=index.nlist)
    invlists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    offset = 0
    for list_no, count in enumerate(counts.tolist()):
        if count:
            ids = np.ascontiguousarray(order[offset:offset + count], dtype=np.int64)
            codes = ready(rows[ids])
            invlists.resize(list_no, count)
            invlists.update_entries(list_no, 0, count, faiss.swig_ptr(ids), faiss.swig_ptr(codes.view(np.uint8)))
            offset += count
    index.ntotal = n


def _self_first(idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each point first in its own row (exact duplicates may have outranked it)."""
    n, width = idx.shape
    for i in np.flatnonzero(idx[:, 0] != np.arange(n)):
        keep = idx[i] != i
        others, dothers = idx[i][keep][: width - 1], dist[i][keep][: width - 1]
        idx[i, 1:len(others) + 1], dist[i, 1:len(others) + 1] = others, dothers
        idx[i, 0] = i
    dist[:, 0] = 0.0
    return idx, dist


def knn_graph(x: np.ndarray, fingerprint: str, k: int = 15, metric: str = "cosine", method: str = "auto",
              cache_dir: Path | None = None) -> KnnGraph:
    """The ``k``-NN graph of the rows of ``x`` (identified by ``fingerprint``), cached in memory and on disk.

    ``method``: ``"exact"``, ``"ivf"`` (approximate, FAISS), or ``"auto"`` (exact up to
    ``EXACT_MAX_POINTS`` rows). A cached graph with at least ``k`` neighbours is reused.
    """
    check_metric(metric)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, len(x) - 1)
    if k < 1:
        raise ValueError("a neighbour graph needs at least 2 points")
    if method == "auto":
        method = "exact" if len(x) <= EXACT_MAX_POINTS else "ivf"
    if method not in ("exact", "ivf"):
        raise ValueError(f"unknown kNN method {method!r}: 'auto', 'exact' or 'ivf'")
    key = (fingerprint, metric)
    with _lock:
        g = _cache.get(key)
    if g is None and cache_dir is not None:
        g = _load(cache_dir / f"{fingerprint}-{metric}.npz", metric)
    if g is not None and g.k >= k and (method == g.method or g.method == "exact"):
        graph = g.take(k)
    else:
        graph = exact_graph(x, k, metric) if method == "exact" else ivf_graph(x, k, metric)
        if cache_dir is not None:
            _save(cache_dir / f"{fingerprint}-{metric}.npz", graph)
        g = graph
    with _lock:
        _cache[key] = g
    return graph


def _save(path: Path, g: KnnGraph) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, indices=g.indices, distances=g.distances, method=np.array(g.method),
             recall=np.array(-1.0 if g.recall is None else g.recall))
    tmp.replace(path)


def _load(path: Path, metric: str) -> KnnGraph | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        recall = float(z["recall"])
        return KnnGraph(z["indices"], z["distances"], metric, str(z["method"]), None if recall < 0 else recall)
