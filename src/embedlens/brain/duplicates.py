"""Near-duplicates on the shared kNN graph, and exact duplicates by file hash.

Near-duplicates are grouped the way FiftyOne's ``find_duplicates`` groups them: samples are visited in
index order and each one is *kept* unless it lies within the threshold of a sample kept before it
(the lexicographically-first maximal independent set of the "within threshold" graph). The kept
samples are therefore pairwise farther apart than the threshold (as far as the kNN graph sees), and
every duplicate is attached to its nearest kept sample within the threshold.

The default threshold (neither ``thresh`` nor ``fraction``) is relative, never an absolute distance:
a sample's nearest-neighbour distance is compared with the scale of its own neighbourhood (its
``DUPLICATE_SCALE_K``-th neighbour), and pairs whose ratio is a robust outlier of the ratios of the
whole set are near-duplicates. See :func:`default_edges`.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .neighbors import KnnGraph
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection

#: The neighbour whose distance is a sample's local scale (the 10th nearest).
DUPLICATE_SCALE_K = 10
#: A ratio is an outlier when its log is this many robust standard deviations (1.4826 MAD) below the
#: median log ratio. Natural MNIST pairs reach about -6.5 to -7.2 (pixels and EfficientNet-Lite0).
DUPLICATE_Z = 6.5
#: The ratio threshold never exceeds this, so sets whose ratios barely vary (high-dimensional noise,
#: where every ratio is near 1) are not split into "duplicates".
DUPLICATE_MAX_RATIO = 0.3
#: Pairs closer than this fraction of the median nearest-neighbour distance are always duplicates,
#: so a group of more than ``DUPLICATE_SCALE_K`` copies (whose local scale is itself tiny) is found.
DUPLICATE_FLOOR = 0.02


def _squared(d: np.ndarray, metric: str) -> np.ndarray:
    """Distances on a squared scale: cosine distance already is one (1 - cos = |u - v|^2 / 2)."""
    d = np.asarray(d, dtype=np.float64)
    return d * d if metric == "euclidean" else d


def default_ratio(graph: KnnGraph) -> tuple[float, int]:
    """The ratio threshold of the default rule and the scale neighbour it uses.

    ``r_i = d(i, 1st neighbour) / d(i, K-th neighbour)`` on the squared scale; the threshold is
    ``min(exp(median(log r) - DUPLICATE_Z * 1.4826 * MAD(log r)), DUPLICATE_MAX_RATIO)``.
    """
    k = min(DUPLICATE_SCALE_K, graph.k)
    sq = _squared(graph.distances, graph.metric)
    scale = sq[:, k]
    ok = scale > 0
    if not ok.any():
        return DUPLICATE_MAX_RATIO, k
    r = np.log(np.maximum(sq[ok, 1], 1e-30) / scale[ok])
    med = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - med)))
    return min(float(np.exp(med - DUPLICATE_Z * mad)), DUPLICATE_MAX_RATIO), k


def default_edges(graph: KnnGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Near-duplicate pairs by the default rule: ``(rows, cols, distances, info)``.

    Row ``i`` and its neighbour ``j`` are near-duplicates when, on the squared scale,
    ``d(i, j) <= ratio * d(i, K-th neighbour of i)`` (``ratio`` from :func:`default_ratio`) or
    ``d(i, j) <= DUPLICATE_FLOOR * median_i d(i, 1st neighbour)``.
    """
    ratio, k = default_ratio(graph)
    sq = _squared(graph.distances, graph.metric)
    floor = DUPLICATE_FLOOR * float(np.median(sq[:, 1]))
    tau = np.maximum(ratio * sq[:, k], floor)
    mask = sq[:, 1:] <= tau[:, None]
    rows, cols = np.nonzero(mask)
    info = {"rule": "default", "ratio": ratio, "scale_k": k, "z": DUPLICATE_Z, "max_ratio": DUPLICATE_MAX_RATIO,
            "floor": DUPLICATE_FLOOR}
    return rows, graph.indices[rows, cols + 1], graph.distances[rows, cols + 1], info


def threshold_edges(graph: KnnGraph, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of the graph at distance ``<= thresh``."""
    mask = graph.distances[:, 1:] <= thresh
    rows, cols = np.nonzero(mask)
    return rows, graph.indices[rows, cols + 1], graph.distances[rows, cols + 1]


def group(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> dict[int, list[tuple[int, float]]]:
    """Keep-first grouping of the (undirected) duplicate pairs: ``{kept row: [(dup row, distance), ...]}``.

    Rows are visited in order; a row is a duplicate when it is paired with a row kept before it, and
    each duplicate joins its nearest kept partner. Lists are sorted by distance, then row.
    """
    valid = cols >= 0
    rows, cols, dists = rows[valid], cols[valid], dists[valid]
    keep = rows != cols
    a = np.concatenate([rows[keep], cols[keep]]).astype(np.int64)
    b = np.concatenate([cols[keep], rows[keep]]).astype(np.int64)
    d = np.concatenate([dists[keep], dists[keep]]).astype(np.float64)
    if not len(a):
        return {}
    order = np.lexsort((b, d, a))
    a, b, d = a[order], b[order], d[order]
    nodes, starts = np.unique(a, return_index=True)
    ends = np.append(starts[1:], len(a))
    bl, dl = b.tolist(), d.tolist()
    dup: set[int] = set()
    for i, lo, hi in zip(nodes.tolist(), starts.tolist(), ends.tolist()):
        for j in bl[lo:hi]:
            if j < i and j not in dup:
                dup.add(i)
                break
    out: dict[int, list[tuple[int, float]]] = {}
    for i, lo, hi in zip(nodes.tolist(), starts.tolist(), ends.tolist()):
        if i not in dup:
            continue
        for j, dist in zip(bl[lo:hi], dl[lo:hi]):  # nearest first
            if j not in dup:
                out.setdefault(j, []).append((i, dist))
                break
    for lst in out.values():
        lst.sort(key=lambda t: (t[1], t[0]))
    return dict(sorted(out.items()))


def count_flagged(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> int:
    return sum(len(v) for v in group(n, rows, cols, dists).values())


def fraction_thresh(graph: KnnGraph, fraction: float) -> float:
    """The smallest graph distance at which about ``fraction`` of the rows are flagged (binary search)."""
    n = len(graph.indices)
    target = max(1, int(round(fraction * n)))
    cand = np.unique(graph.distances[:, 1:])
    lo, hi = 0, len(cand) - 1
    best, best_gap = float(cand[-1]), None
    while lo <= hi:
        mid = (lo + hi) // 2
        t = float(cand[mid])
        c = count_flagged(n, *threshold_edges(graph, t))
        gap = abs(c - target)
        if best_gap is None or gap < best_gap or (gap == best_gap and t < best):
            best, best_gap = t, gap
        if c >= target:
            hi = mid - 1
        else:
            lo = mid + 1
    return best


# ---------------------------------------------------------------------------------------------- exact duplicates


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_exact_duplicates(samples: "SampleCollection", num_workers: int | None = None,
                          progress: bool = True) -> dict[str, list[str]]:
    """Samples whose files have identical bytes (SHA-256), as in FiftyOne.

    Parameters
    ----------
    samples : SampleCollection
        A dataset or a sample view.
    num_workers : int, optional
        Threads hashing files (default: up to 8).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``{kept_id: [duplicate_id, ...]}``: the first sample of each group (in the collection's order) is
        kept and the others are its duplicates. Files that cannot be read are left out with a warning.

    Examples
    --------
    >>> dups = el.find_exact_duplicates(ds)
    >>> ds.exclude([i for ids in dups.values() for i in ids])  # one copy of each file
    """
    from ..utils import parallel_map

    if samples._is_patches:
        raise InvalidInputError("find_exact_duplicates() compares image files: pass a dataset or sample view")
    ids, paths = samples.values("id"), samples.values("filepath")
    results = parallel_map(_sha256, paths, num_workers, "hashing files", progress)
    groups: dict[str, list[str]] = {}
    failed = []
    for i, p, (digest, err) in zip(ids, paths, results):
        if err is not None:
            failed.append(p)
            continue
        groups.setdefault(digest, []).append(i)
    if failed:
        warnings.warn(f"{len(failed)} files could not be read and were left out (first: {failed[0]})",
                      stacklevel=2)
    return {g[0]: g[1:] for g in groups.values() if len(g) > 1}
