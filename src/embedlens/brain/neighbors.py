"""The k-nearest-neighbour graph of an embedding set: computed once, shared by every method that needs it.

Column 0 of every row is the point itself (distance 0), the convention umap-learn expects.

Metrics (``METRICS``): ``"cosine"`` (distance ``1 - cos``), ``"euclidean"`` (``||x - y||``) and
``"dotproduct"``: similarity ``x . y`` (larger is more similar, as FiftyOne's dot-product backends rank),
kept as the distance ``-x . y`` so that "nearest first" means "largest dot product first" everywhere.
That distance may be negative and is no metric: a row's largest dot product may be with another, longer
row rather than with itself, so column 0 still holds the row itself but its distance is ``-x . x``, not 0,
and methods that need a true distance (duplicates, uniqueness, UMAP, t-SNE) refuse it
(:func:`check_metric`'s default, ``allowed=DISTANCE_METRICS``).

Up to ``EXACT_MAX_POINTS`` rows the graph is exact: blocks of rows multiplied with BLAS, never the N x N
matrix. Above, ``"ivf"``: inverted lists searched as block matrix products.

1. Lists. FAISS k-means puts ``sqrt(N)`` centroids (10 iterations on 32 sampled rows a centroid: coarse
   centroids are enough, each list is then searched exactly). One BLAS product a block of rows gives each
   row its 32 nearest centroids: the nearest is the list it belongs to, all are its probes, nearest first.
2. Search. For each list, the rows that probe it against its members: one ``faiss.knn`` (sgemm + heap) a
   block of <= 8 MiB of rows, merged into per-row heaps (``faiss.ResultHeap``); one thread a core, each
   running FAISS single-threaded. Exact distances, so a miss is a neighbour in a list not probed.
3. Effort. Probes are raised 4, 5, 6, 8, 10, 12, 16, ... (only the new ones are searched) until the
   recall@k of 1,000 random rows against exact search is >= ``target_recall`` (0.97) with 99% confidence;
   the measured recall is kept with the graph. Probing every list is exact search.
4. Reverse edges. If j found i, j is offered to i at the same distance (no new products): about a
   third of the misses come back, which often saves a step.

``x`` is read block by block (a read-only memory map is fine and never copied whole); on top of the data
the builder holds ~0.5 KiB a row (heaps, probes): +530 MiB at 1M rows.

Why (``bench/bench_knn.py``, 1M x 512 unit vectors, k = 15, this 2-core machine, fresh processes):

    builder (CPU s, recall@15 on 1,000 rows)  clustered (100 blobs)  manifold (16-d latent)  peak over data
    this ("ivf"), wall 65 s / 78 s            124 s  0.987           111 s  0.983            +0.5 GiB
    FAISS IVFFlat, 4 sqrt(N) lists, nprobe 16 1,742 s 0.956          830 s  0.954            +2.7 GiB
    FAISS HNSWFlat M 32, efSearch 64          1,175 s 0.612          824 s  0.683            +2.4 GiB
    pynndescent, warm (+21 s numba compile)   149 s  0.422           96 s   0.977            +2.5 GiB
    128-d PCA candidates, exact re-rank       151 s  0.141           142 s  0.975            +2.3 GiB
    previous builder (per-row IVF search)     ~1,990 s 0.99 (measured before this change)

One sgemm a list does what FAISS IVF does with a vector loop a row (~100 vs ~10 GFLOP/s a core), and
every list is read once a probe step, not once a row. ``sqrt(N)`` lists: 2 ``sqrt(N)`` cost 3-21% more
at 1M, 4 ``sqrt(N)`` 50-66% more (more probes for the same recall, more centroids to compare rows with).
From 100k to 1M the cost grows 31x (clustered) and 24x (manifold), more than N^1.2: a row of the
clustered data has its neighbours anywhere in its cluster (isotropic 512-d noise), and the 100 clusters
grow with N, so the candidates a row needs grow ~6x (1.6k -> 10k); FAISS IVF grows 73x there. Graph
methods (HNSW, NN-descent) grow less but miss most neighbours on that data. PCA candidates lose the
neighbours that differ in the dropped dimensions.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ..core.errors import InvalidInputError

#: Metrics that are distances: non-negative, 0 for a row and itself.
DISTANCE_METRICS = ("cosine", "euclidean")
#: Every metric a neighbour search takes; ``"dotproduct"`` ranks by ``x . y`` (distance ``-x . y``).
METRICS = DISTANCE_METRICS + ("dotproduct",)
#: Metrics searched as inner products (FAISS ``METRIC_INNER_PRODUCT``, heaps that keep the largest).
_IP_METRICS = ("cosine", "dotproduct")
# Exact blocks while they cost no more than ivf_graph (bench/bench_knn.py crossover, 512-d, 2 cores, CPU s):
# 5k rows 0.37 exact vs 0.32; 10k 1.44 vs 0.37; 20k 5.9 vs 0.73.
EXACT_MAX_POINTS = 5_000
_BLOCK_BYTES = 64 << 20
_cache: dict[tuple[str, str], "KnnGraph"] = {}
_log = logging.getLogger(__name__)
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


#: Why methods that need a true distance refuse ``"dotproduct"`` (the reason in their error).
DOTPRODUCT_NOT_A_DISTANCE = ("a dot product is a similarity, not a distance (it is not 0 for a row and itself, "
                             "and a long vector can be more 'similar' to another than to itself); use 'cosine', "
                             "the dot product of unit vectors")


def check_metric(metric: str, allowed: tuple[str, ...] = DISTANCE_METRICS,
                 why: str = DOTPRODUCT_NOT_A_DISTANCE) -> str:
    """``metric`` if it is one of ``allowed``, else an :class:`InvalidInputError` listing them.

    By default only true distances pass: a method that ranks by ``x . y`` says so with
    ``allowed=METRICS``. ``why``: the reason a known metric is refused here.
    """
    if metric not in allowed:
        if metric in METRICS and why:
            raise InvalidInputError(f"metric {metric!r} is not accepted here: {why}; one of {', '.join(allowed)}")
        raise InvalidInputError(f"unknown metric {metric!r}: one of {', '.join(allowed)}")
    return metric


def to_distance(sim: np.ndarray, metric: str) -> np.ndarray:
    """Distances from inner products (cosine: ``1 - s``; dotproduct: ``-s``) or squared L2 (``sqrt``)."""
    if metric == "cosine":
        return np.maximum(1.0 - sim, 0.0)
    if metric == "dotproduct":
        return -sim
    return np.sqrt(np.maximum(sim, 0.0))


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
    ``self_offset + i`` and is put first (distance 0; ``-x . x`` for dotproduct) whatever ties exist.
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
        elif metric == "dotproduct":
            d = -prod
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
    if metric == "dotproduct":  # a signed score: no clamping; the row itself at its own -x . x
        if self_offset is not None:
            out_d[:, 0] = -np.einsum("ij,ij->i", queries, queries)
        return out_i, out_d
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


def ivf_graph(x: np.ndarray, k: int, metric: str, seed: int = 51, target_recall: float = 0.97,
              recall_sample: int = 1000, nlist: int | None = None) -> KnnGraph:
    """Approximate graph: inverted lists searched as block matrix products (see the module docstring).

    ``x`` may be a read-only memory map: rows are read in blocks, never copied whole. The recall of the
    returned graph, measured on ``recall_sample`` random rows against exact search, is kept with it.
    """
    import faiss

    n, d = x.shape
    kk = k + 1
    rows = _reader(x, metric)
    nlist = max(1, min(nlist or int(np.sqrt(n)), n // 8))
    rng = np.random.default_rng(seed)
    # 32 rows a centroid and 10 iterations: coarse centroids are enough, every list is searched exactly
    km = faiss.Kmeans(d, nlist, niter=10, seed=seed, max_points_per_centroid=32, min_points_per_centroid=1)
    km.train(rows(np.sort(rng.choice(n, size=min(n, 32 * nlist), replace=False))))
    sample = np.sort(rng.choice(n, size=min(n, recall_sample), replace=False))
    kth = _kth_distance(rows, n, sample, k, metric)
    heap = faiss.ResultHeap(n, kk, keep_max=metric in _IP_METRICS)
    probes, lists, done = None, None, 0
    for p in [s for s in _PROBE_STEPS if s < nlist] + [nlist]:
        if probes is None or p > probes.shape[1]:
            probes = _nearest_lists(rows, n, km.centroids, min(nlist, max(32, 2 * p)), metric)
            if lists is None:
                # a row belongs to its L2-nearest centroid's list (balanced lists), also for dotproduct,
                # whose probes (by c . x) would put most rows in the lists of the longest centroids
                own = probes[:, 0] if metric != "dotproduct" else _nearest_lists(rows, n, km.centroids, 1)[:, 0]
                lists = _members(own, nlist)
        _scan(heap, rows, probes[:, done:p], lists, kk, metric, d)
        done = p
        per_row = _sample_recall(heap, sample, kth, metric)
        recall = float(per_row.mean())
        _log.debug("kNN graph of %d rows: %d lists, %d probes, sampled recall %.4f", n, nlist, p, recall)
        # done when the whole graph's recall is >= the target with 99% confidence (one-sided), not only the sample's
        if recall - 2.33 * per_row.std() / np.sqrt(len(per_row)) >= target_recall and heap.I.min() >= 0:
            break
    del probes, lists
    _add_reverse_edges(heap, metric)
    heap.finalize()  # rows sorted, nearest first
    idx, dist = _self_first(heap.I, to_distance(heap.D, metric).astype(np.float32, copy=False))
    if metric == "dotproduct":  # the row itself at -x . x (see the module docstring)
        for start in range(0, n, _block_rows(d)):
            b = rows(slice(start, start + _block_rows(d)))
            dist[start:start + len(b), 0] = -np.einsum("ij,ij->i", b, b)
    return KnnGraph(idx, dist, metric, "ivf", recall)


# Probes a row gets, raised step by step (only the new ones are searched) until the sampled recall is met.
_PROBE_STEPS = (4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 192, 256)
_GATHER_BYTES = 8 << 20  # rows gathered at once: 4,096 at 512-d (BLAS is as fast as with more)


def _reader(x: np.ndarray, metric: str):
    """``rows(ids)``: the given rows (array or slice) as float32, unit length for cosine; ``x`` is not copied."""
    inv = None
    if metric == "cosine":
        inv = np.empty(len(x), np.float32)
        for start in range(0, len(x), _block_rows(x.shape[1])):
            b = np.asarray(x[start:start + _block_rows(x.shape[1])], dtype=np.float32)
            inv[start:start + len(b)] = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", b, b)), 1e-12)

    def rows(ids) -> np.ndarray:
        if isinstance(ids, slice):  # a view of x, never written to
            return np.asarray(x[ids], np.float32) if inv is None else np.multiply(x[ids], inv[ids, None],
                                                                                    dtype=np.float32)
        r = np.asarray(x[ids], np.float32)  # fancy indexing made a copy: scaled in place
        if inv is not None:
            r *= inv[ids, None]
        return r
    return rows


def _block_rows(dim: int) -> int:
    return max(1, _GATHER_BYTES // (4 * dim))


def _faiss_metric(metric: str) -> int:
    import faiss
    return faiss.METRIC_INNER_PRODUCT if metric in _IP_METRICS else faiss.METRIC_L2


def _in_parallel(fn, items: list) -> None:
    """``fn(item)`` for every item, one thread a core, each running FAISS (and its BLAS) single-threaded.

    Threads that each multiply their own blocks wait at no OpenMP barrier: on a busy machine this was
    2-4x faster than one block at a time on every core, and as fast on an idle one.
    """
    import faiss

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with ThreadPoolExecutor(min(cores, 16), initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        for _ in pool.map(fn, items):
            pass


def _nearest_lists(rows, n: int, centroids: np.ndarray, p: int, metric: str = "euclidean") -> np.ndarray:
    """int32 [n, p]: each row's ``p`` nearest centroids, nearest first (one BLAS product a block).

    By L2, except for ``"dotproduct"``: the lists whose centroids have the largest ``c . x`` first, as FAISS'
    inner-product IVF probes (a row's largest dot products lie towards long rows, not around the row).
    Measured (tests/test_knn.py's data, k = 15, 2 busy cores): probing by ``c . x``
    took 2.4 vs 4.4 CPU s (digits-64d x8, recall 0.987 vs 0.985) and 2.6 vs 16.4 CPU s (manifold-256d 20k,
    0.983 vs 0.990) against L2 probes; the lists themselves stay L2 (balanced).
    """
    import faiss

    out = np.empty((n, p), np.int32)
    step = _block_rows(centroids.shape[1])
    how = faiss.METRIC_INNER_PRODUCT if metric == "dotproduct" else faiss.METRIC_L2

    def assign(start: int) -> None:
        out[start:start + step] = faiss.knn(rows(slice(start, start + step)), centroids, p, how)[1]
    _in_parallel(assign, range(0, n, step))
    return out


def _members(assign: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by list (``order[bounds[l]:bounds[l + 1]]`` are list ``l``'s members)."""
    order = np.argsort(assign, kind="stable")
    return order, np.r_[0, np.cumsum(np.bincount(assign, minlength=nlist))]


def _scan(heap, rows, probes: np.ndarray, lists: tuple[np.ndarray, np.ndarray], kk: int, metric: str,
          dim: int) -> None:
    """Search every list for the rows that probe it: one BLAS product (``faiss.knn``) a block of rows,
    merged into the rows' heaps."""
    import faiss

    order, bounds = lists
    queries, qbounds = _members(probes.ravel(), len(bounds) - 1)
    queries //= max(1, probes.shape[1])  # position in the flattened probes -> row
    step = _block_rows(dim)
    blocks = [(queries[q:min(q + step, q_end)], order[m:min(m + step, m_end)])
              for q_start, q_end, m_start, m_end in zip(qbounds[:-1], qbounds[1:], bounds[:-1], bounds[1:])
              for m in range(m_start, m_end, step) for q in range(q_start, q_end, step)]
    lock = threading.Lock()

    def search_block(block) -> None:
        q, m = block
        dist, idx = faiss.knn(rows(q), rows(m), min(kk, len(m)), _faiss_metric(metric))
        with lock:
            heap.add_result_subset(q, dist, m[idx])
    _in_parallel(search_block, blocks)


def _kth_distance(rows, n: int, sample: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact similarity (cosine, dotproduct) or squared distance (euclidean) of each sample row's k-th neighbour."""
    import faiss

    queries = rows(sample)
    truth = faiss.ResultHeap(len(sample), k + 1, keep_max=metric in _IP_METRICS)
    step = _block_rows(queries.shape[1])
    lock = threading.Lock()

    def search_block(start: int) -> None:
        dist, idx = faiss.knn(queries, rows(slice(start, start + step)), min(k + 1, n - start), _faiss_metric(metric))
        with lock:
            truth.add_result(dist, np.where(idx >= 0, idx + start, -1))
    _in_parallel(search_block, range(0, n, step))
    truth.finalize()
    if metric == "dotproduct":
        # the row itself need not be among its k + 1 largest products: the k-th of the others
        others = truth.I != sample[:, None]
        return np.array([d[o][k - 1] for d, o in zip(truth.D, others)], dtype=truth.D.dtype)
    # the row itself is one of the k + 1 (or a duplicate of it, at the same distance): column k is the k-th
    return truth.D[:, k].copy()


def _sample_recall(heap, sample: np.ndarray, kth: np.ndarray, metric: str) -> np.ndarray:
    """Recall@k of each sample row as the finished graph will have it (with reverse edges).

    A neighbour counts when it is as near as the exact k-th one, so that ties (duplicates) are no misses.
    """
    sign = -1.0 if metric in _IP_METRICS else 1.0  # nearer = smaller
    k = heap.k - 1
    in_sample = np.zeros(len(heap.I) + 1, bool)  # + 1: id -1 (an empty slot) reads the last entry
    in_sample[sample] = True
    at_r, at_c = np.nonzero(in_sample[heap.I])  # reverse edges into sample rows
    into, at_d = heap.I[at_r, at_c], heap.D[at_r, at_c]
    out = np.empty(len(sample))
    for j, s in enumerate(sample.tolist()):
        ids, dist = np.r_[heap.I[s], at_r[into == s]], np.r_[heap.D[s], at_d[into == s]]
        ids, first = np.unique(ids, return_index=True)
        near = np.sort(sign * dist[first][(ids >= 0) & (ids != s)])[:k]
        out[j] = (near <= sign * kth[j] + 1e-6 * max(1.0, abs(kth[j]))).sum() / k  # 1e-6: float32 rounding
    return out


def _add_reverse_edges(heap, metric: str, chunk: int = 8192) -> None:
    """If row j found i, offer j to i at the same distance: no new products, ~1/3 of the misses recovered.

    Each call gives every heap at most one new entry (no two threads touch one heap).
    """
    n, kk = heap.I.shape
    ip = metric in _IP_METRICS
    found_i, found_d = heap.I.copy(), heap.D.copy()  # the edges as found, before any is pushed out
    for start in range(0, n, chunk):
        to = found_i[start:start + chunk].ravel()
        dist = found_d[start:start + chunk].ravel()
        src = np.repeat(np.arange(start, start + len(to) // kk, dtype=np.int64), kk)
        ok = (to >= 0) & (to != src)
        to, dist, src = to[ok], dist[ok], src[ok]
        top = heap.D[to, 0]  # a heap's top is the worst neighbour it keeps
        ok = dist > top if ip else dist < top
        to, dist, src = to[ok], dist[ok], src[ok]
        ok = ~(heap.I[to] == src[:, None]).any(axis=1)  # already there (found both ways)
        to, dist, src = to[ok], dist[ok], src[ok]
        order = np.argsort(to, kind="stable")
        to, dist, src = to[order], dist[order], src[order]
        first = np.r_[0, np.flatnonzero(np.diff(to)) + 1]
        nth = np.arange(len(to)) - np.repeat(first, np.diff(np.r_[first, len(to)]))  # occurrence of its `to`
        order = np.argsort(nth, kind="stable")
        rounds = np.searchsorted(nth[order], np.arange(nth.max() + 2 if len(nth) else 1))
        for a, b in zip(rounds[:-1], rounds[1:]):  # round r: each heap's r-th new entry
            sel = order[a:b]
            heap.add_result_subset(to[sel], dist[sel, None], src[sel, None])


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
    # 2 sqrt(n): 20% faster than 4 sqrt(n) at equal recall for the former per-row kNN graph search;
    # n / 39: FAISS wants 39 training rows a list
    nlist = max(1, min(nlist or int(2 * np.sqrt(n)), n // 39))
    ip = metric in _IP_METRICS
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
        if metric == "cosine":
            dist = -dots / np.sqrt(np.maximum(sq, 1e-24))
        else:
            dist = -dots if metric == "dotproduct" else sq - 2.0 * dots
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

    ``method``: ``"exact"``, ``"ivf"`` (approximate: :func:`ivf_graph`), or ``"auto"`` (exact up to
    ``EXACT_MAX_POINTS`` rows). A cached graph with at least ``k`` neighbours is reused.
    """
    check_metric(metric, METRICS)
    if k < 1:
        raise InvalidInputError(f"k must be at least 1, got {k}")
    k = min(k, len(x) - 1)
    if k < 1:
        raise InvalidInputError("a neighbour graph needs at least 2 points")
    if method == "auto":
        method = "exact" if len(x) <= EXACT_MAX_POINTS else "ivf"
    if method not in ("exact", "ivf"):
        raise InvalidInputError(f"unknown kNN method {method!r}: 'auto', 'exact' or 'ivf'")
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


def cross_knn(base: np.ndarray, queries: np.ndarray, k: int, metric: str, seed: int = 51,
              target_recall: float = 0.97, recall_sample: int = 1000) -> tuple[np.ndarray, np.ndarray, float]:
    """The ``k`` nearest rows of ``base`` for every row of ``queries``: ``(indices, distances, recall)``.

    Exact blocks (:func:`~embedlens.brain.neighbors.search`) while ``len(base) * len(queries)`` is at
    most ``EXACT_MAX_POINTS ** 2`` (the work of an exact graph at the crossover). Above, the inverted
    lists of the shared graph builder: ``sqrt(len(base))`` coarse k-means lists over ``base``; each
    query probes its nearest lists, every list is searched for the queries that probe it as block
    products, and probes are raised until the recall@k of ``recall_sample`` random queries against exact
    search is >= ``target_recall`` (99% one-sided confidence), as in ``ivf_graph``. Distances are exact.
    Neither input is copied whole (memory maps are read in blocks).
    """
    import faiss

    nb, nq, dim = len(base), len(queries), base.shape[1]
    k = min(k, nb)
    if nb * nq <= EXACT_MAX_POINTS ** 2 or nb < 64:
        idx, dist = search(prepare(base, metric), prepare(queries, metric), k, metric)
        return idx, dist, 1.0
    brows, qrows = _reader(base, metric), _reader(queries, metric)

    def rows(ids):  # queries are ids [0, nq), base rows nq + i: _scan reads both through one reader
        if isinstance(ids, slice):
            return qrows(ids)
        ids = np.asarray(ids)
        return brows(ids - nq) if ids[0] >= nq else qrows(ids)

    nlist = max(1, min(int(np.sqrt(nb)), nb // 8))
    rng = np.random.default_rng(seed)
    km = faiss.Kmeans(dim, nlist, niter=10, seed=seed, max_points_per_centroid=32, min_points_per_centroid=1)
    km.train(brows(np.sort(rng.choice(nb, size=min(nb, 32 * nlist), replace=False))))
    base_lists = np.empty(nb, np.int64)
    step = max(1, (8 << 20) // (4 * dim))
    for start in range(0, nb, step):
        base_lists[start:start + step] = faiss.knn(brows(slice(start, start + step)), km.centroids, 1)[1][:, 0]
    order, bounds = _members(base_lists, nlist)
    lists = (order + nq, bounds)
    sample = np.sort(rng.choice(nq, size=min(nq, recall_sample), replace=False))
    kth = _exact_kth(brows, nb, qrows(sample), k, metric)
    heap = faiss.ResultHeap(nq, k, keep_max=metric in _IP_METRICS)
    probes, done, recall = None, 0, 0.0
    for p in [s for s in _PROBE_STEPS if s < nlist] + [nlist]:
        if probes is None or p > probes.shape[1]:
            probes = _nearest_lists(qrows, nq, km.centroids, min(nlist, max(32, 2 * p)), metric)
        _scan(heap, rows, probes[:, done:p], lists, k, metric, dim)
        done = p
        found = to_distance(heap.D[sample], metric)
        tol = 1e-5 * np.maximum(1.0, np.abs(kth))[:, None]  # float32 rounding (dot products can be large)
        per_row = (np.where(heap.I[sample] >= 0, found, np.inf) <= kth[:, None] + tol).sum(axis=1) / k
        recall = float(per_row.mean())
        if recall - 2.33 * per_row.std() / np.sqrt(len(per_row)) >= target_recall and heap.I.min() >= 0:
            break
    heap.finalize()
    idx = heap.I - nq
    return idx, to_distance(heap.D, metric).astype(np.float32), recall


def _exact_kth(brows, nb: int, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact distance of each query's k-th nearest base row, the base read in blocks (never copied whole)."""
    import faiss

    ip = metric in _IP_METRICS
    truth = faiss.ResultHeap(len(queries), k, keep_max=ip)
    step = max(1, (8 << 20) // (4 * queries.shape[1]))
    for start in range(0, nb, step):
        dist, idx = faiss.knn(queries, brows(slice(start, start + step)), min(k, nb - start),
                              faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2)
        truth.add_result(dist, np.where(idx >= 0, idx + start, -1))
    truth.finalize()
    return to_distance(truth.D[:, k - 1], metric)


# ------------------------------------------------------------------------------------------ the scores
