"""Near-duplicates on the shared kNN graphs (of the embeddings, and of the perceptual descriptors of the
pixels: :mod:`embedlens.models.perceptual`), and exact duplicates by file hash.

Near-duplicates are grouped the way FiftyOne's ``find_duplicates`` groups them: samples are visited in
index order and each one is *kept* unless it lies within the threshold of a sample kept before it
(the lexicographically-first maximal independent set of the "within threshold" graph). The kept
samples are therefore pairwise farther apart than the threshold (as far as the kNN graph sees), and
every duplicate is attached to its nearest kept sample within the threshold.

The default threshold (neither ``thresh`` nor ``fraction``) is relative, never an absolute distance:
a sample's nearest-neighbour distance is compared with the scale of its own neighbourhood (its
``DUPLICATE_SCALE_K``-th neighbour), and pairs whose ratio is a robust outlier of the ratios of the
whole set are near-duplicates. See :func:`default_edges`; the same rule runs on the perceptual graph,
whose pair distances are first re-measured by :func:`refine`. Grouping (:func:`keep_first`,
:func:`assign`) works on the pair arrays, never on a Python object a pair.
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
#: ``find_duplicates`` warns when it flags nothing although this many rows (at least 2, and 0.5% of them)
#: have a neighbour closer than ``LOW_MODE_FACTOR`` x the median nearest-neighbour distance.
LOW_MODE_FACTOR = 0.01


def _squared(d: np.ndarray, metric: str) -> np.ndarray:
    """Distances on a squared scale: cosine distance already is one (1 - cos = |u - v|^2 / 2)."""
    d = np.asarray(d, dtype=np.float64)
    return d * d if metric == "euclidean" else d


def default_ratio(graph: KnnGraph, z: float = DUPLICATE_Z) -> tuple[float, int]:
    """The ratio threshold of the default rule and the scale neighbour it uses.

    ``r_i = d(i, 1st neighbour) / d(i, K-th neighbour)`` on the squared scale; the threshold is
    ``min(exp(median(log r) - z * 1.4826 * MAD(log r)), DUPLICATE_MAX_RATIO)`` (``z`` = ``DUPLICATE_Z``).
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
    return min(float(np.exp(med - z * mad)), DUPLICATE_MAX_RATIO), k


def default_edges(graph: KnnGraph, z: float = DUPLICATE_Z) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Near-duplicate pairs by the default rule: ``(rows, cols, distances, info)``.

    Row ``i`` and its neighbour ``j`` are near-duplicates when, on the squared scale,
    ``d(i, j) <= ratio * d(i, K-th neighbour of i)`` (``ratio`` from :func:`default_ratio`) or
    ``d(i, j) <= DUPLICATE_FLOOR * median_i d(i, 1st neighbour)``.
    """
    ratio, k = default_ratio(graph, z)
    sq = _squared(graph.distances, graph.metric)
    floor = DUPLICATE_FLOOR * float(np.median(sq[:, 1]))
    tau = np.maximum(ratio * sq[:, k], floor)
    mask = sq[:, 1:] <= tau[:, None]
    rows, cols = np.nonzero(mask)
    info = {"ratio": ratio, "scale_k": k, "z": z, "max_ratio": DUPLICATE_MAX_RATIO, "floor": DUPLICATE_FLOOR}
    return rows, graph.indices[rows, cols + 1], graph.distances[rows, cols + 1], info


def threshold_edges(graph: KnnGraph, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of the graph at distance ``<= thresh``."""
    mask = graph.distances[:, 1:] <= thresh
    rows, cols = np.nonzero(mask)
    return rows, graph.indices[rows, cols + 1], graph.distances[rows, cols + 1]


#: Rounds of the vectorised keep-first sweep before the rows still undecided are settled one by one.
_MAX_ROUNDS = 64


def keep_first(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Which rows are duplicates under keep-first: bool ``[n]``.

    Rows are taken in order; a row is a duplicate when it is paired with a row kept before it (the
    lexicographically-first maximal independent set of the pair graph is kept). Settled in vectorised
    rounds over the pair list: each round marks every row paired with a kept lower row as a duplicate,
    and keeps every row whose lower partners are all duplicates; the lowest undecided row is always
    settled, so rounds end. Memory is a few arrays the size of the pair list, never a Python object a pair.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    ok = (rows >= 0) & (cols >= 0) & (rows != cols)
    lo = np.minimum(rows[ok], cols[ok])
    hi = np.maximum(rows[ok], cols[ok])
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, 2 duplicate
    has_lower = np.zeros(n, bool)
    has_lower[hi] = True
    state[~has_lower] = 1
    for _ in range(_MAX_ROUNDS):
        live = state[hi] == 0
        lo, hi = lo[live], hi[live]
        if not len(hi):
            return state == 2
        state[hi[state[lo] == 1]] = 2
        blocked = np.zeros(n, bool)
        blocked[hi[state[lo] != 2]] = True  # a lower partner that is kept or undecided
        state[(state == 0) & ~blocked] = 1
    # long chains: settle the rest in order (only rows still undecided, their lower partners from arrays)
    live = state[hi] == 0
    lo, hi = lo[live], hi[live]
    order = np.argsort(hi, kind="stable")
    lo, hi = lo[order], hi[order]
    rest = np.flatnonzero(state == 0)
    bounds = np.searchsorted(hi, rest)
    ends = np.append(bounds[1:], len(hi))
    flags = bytearray(state.tobytes())  # plain bytes and lists here: a numpy call a row costs ~50x more
    partners = lo.tolist()
    for r, a, b in zip(rest.tolist(), bounds.tolist(), ends.tolist()):
        flags[r] = 2 if any(flags[j] == 1 for j in partners[a:b]) else 1
    return np.frombuffer(bytes(flags), np.int8) == 2


def group(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> dict[int, list[tuple[int, float]]]:
    """Keep-first grouping of the (undirected) duplicate pairs: ``{kept row: [(dup row, distance), ...]}``.

    Duplicates are decided by :func:`keep_first`; each joins its nearest kept partner (lowest row on
    ties). Lists are sorted by distance, then row; kept rows in row order.
    """
    dup_row, kept_row, dist = assign(n, rows, cols, dists)
    order = np.lexsort((dup_row, dist, kept_row))
    out: dict[int, list[tuple[int, float]]] = {}
    for k, j, d in zip(kept_row[order].tolist(), dup_row[order].tolist(), dist[order].tolist()):
        out.setdefault(k, []).append((j, d))
    return out


def assign(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(duplicate rows, their kept rows, distances)``: every duplicate of :func:`keep_first` with its
    nearest kept partner, as arrays (sorted by duplicate row)."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    dists = np.asarray(dists, np.float64)
    dup = keep_first(n, rows, cols)
    ok = (rows >= 0) & (cols >= 0) & (rows != cols)
    a = np.concatenate([rows[ok], cols[ok]])
    b = np.concatenate([cols[ok], rows[ok]])
    d = np.concatenate([dists[ok], dists[ok]])
    sel = dup[a] & ~dup[b]
    a, b, d = a[sel], b[sel], d[sel]
    order = np.lexsort((b, d, a))
    a, b, d = a[order], b[order], d[order]
    first = np.ones(len(a), bool)
    first[1:] = a[1:] != a[:-1]
    return a[first], b[first], d[first]


def count_flagged(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> int:
    return int(keep_first(n, rows, cols).sum())


def fraction_thresh(graph: KnnGraph, fraction: float) -> float:
    """The smallest graph distance at which about ``fraction`` of the rows are flagged (binary search).

    No threshold below the ``target``-th smallest nearest-neighbour distance can flag ``target`` rows
    (only rows with a partner are flagged), so the search starts there.
    """
    n = len(graph.indices)
    target = max(1, int(round(fraction * n)))
    cand = np.unique(graph.distances[:, 1:])
    first = np.sort(graph.distances[:, 1])[min(target, n) - 1]
    lo, hi = int(np.searchsorted(cand, first)), len(cand) - 1
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


def low_mode(graph: KnnGraph, factor: float = LOW_MODE_FACTOR) -> int:
    """How many rows have a neighbour closer than ``factor`` x the median nearest-neighbour distance
    (on the squared scale): a low-distance mode that copies make, whatever a rule decided."""
    sq = _squared(graph.distances[:, 1], graph.metric)
    med = float(np.median(sq))
    return int((sq < factor * med).sum()) if med > 0 else int((sq == 0).sum())


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


# ---------------------------------------------------------------------------------------------- the perceptual channel


def perceptual_set_name(patches_field: str | None) -> str:
    """Where the perceptual descriptors are stored: ``"perceptual"``, or ``"perceptual_<field>"`` for objects."""
    return f"perceptual_{patches_field}" if patches_field else "perceptual"


def perceptual_rows(samples: "SampleCollection", keys: list[str], patches_field: str | None,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The perceptual descriptors of ``keys`` (sample ids, or label ids of ``patches_field``'s objects) and
    which were found: computed once and stored as an embeddings set (only missing or changed rows are
    computed again; objects are cropped by their boxes, no padding)."""
    from ..core.embeddings import embedding_set
    from ..models.perceptual import PerceptualModel

    name = perceptual_set_name(patches_field)
    model = PerceptualModel()
    store = embedding_set(samples._dataset, name)
    if store.exists and store.meta.get("fingerprint") != model.fingerprint:
        store.delete()  # descriptors of an older definition: never mixed with new ones
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable images are counted and reported by the caller
        if patches_field:
            samples.compute_patch_embeddings(model, patches_field, name, alpha=0.0, force_square=False,
                                             progress=progress)
        else:
            samples.compute_embeddings(model, name, progress=progress)
    matrix, found = embedding_set(samples._dataset, name).read(keys)
    return np.asarray(matrix, np.float32), np.asarray(found, bool)


def perceptual_channel(samples: "SampleCollection", keys: list[str], patches_field: str | None, progress: bool,
                       fallback: str) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The perceptual descriptors of ``keys`` (computed and stored once) and what happened, or ``(None, info)``
    with a warning when no image can be read. ``fallback`` says in the warning what runs instead ("near-duplicates
    by embeddings only"); rows whose image cannot be read get a zero descriptor (near nothing), with a warning."""
    try:
        descriptors, found = perceptual_rows(samples, keys, patches_field, progress)
    except (OSError, InvalidInputError) as e:
        msg = f"the perceptual channel could not run ({e}); {fallback}"
        warnings.warn(msg, stacklevel=3)
        return None, {"skipped": msg}
    info: dict[str, Any] = {"set": perceptual_set_name(patches_field), "missing": int((~found).sum())}
    if not found.any():
        msg = f"no image could be read for the perceptual channel; {fallback}"
        warnings.warn(msg, stacklevel=3)
        info["skipped"] = msg
        return None, info
    if not found.all():
        warnings.warn(f"{int((~found).sum())} of {len(found)} images could not be read: their perceptual "
                      "descriptor is zero (near nothing)", stacklevel=3)
        descriptors[~found] = 0.0
    return descriptors, info


def perceptual_graph(descriptors: np.ndarray, keys: list[str], k: int, cache_dir: Any = None) -> KnnGraph:
    """The shared cosine kNN graph of perceptual descriptors (cached by their content and keys)."""
    from .neighbors import knn_graph
    from .source import _digest

    return knn_graph(descriptors, "perceptual-" + _digest(descriptors, keys), min(k, len(keys) - 1), "cosine",
                     cache_dir=cache_dir)


def refine(graph: KnnGraph, descriptors: np.ndarray, block: int = 65_536) -> KnnGraph:
    """The perceptual graph with each pair's distance taken by :func:`~embedlens.models.perceptual.pair_distance`
    (whole images and their inner parts), rows re-sorted nearest first. Only the graph's pairs are compared."""
    from ..models.perceptual import pair_distance

    idx = graph.indices.copy()
    dist = np.empty(idx.shape, np.float32)
    n, width = idx.shape
    for start in range(0, n, block):
        rows = idx[start:start + block]
        a = np.repeat(np.arange(start, start + len(rows)), width)
        b = rows.ravel()
        d = pair_distance(descriptors[a], descriptors[np.maximum(b, 0)])
        d[b < 0] = np.inf
        dist[start:start + len(rows)] = d.reshape(len(rows), width)
    dist[:, 0] = 0.0
    order = np.argsort(dist[:, 1:], axis=1, kind="stable") + 1
    idx[:, 1:] = np.take_along_axis(idx, order, 1)
    dist[:, 1:] = np.take_along_axis(dist, order, 1)
    return KnnGraph(idx, dist, "cosine", graph.method, graph.recall)
