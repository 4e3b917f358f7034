"""``metric="dotproduct"``: similarity ``x . q`` on the raw embeddings, larger first, wherever a metric is taken.

Reference answers are numpy's ``X @ q``. On sklearn's digits (integer pixels 0-16, given as the embeddings)
every product is an exact integer in float32, so the whole ranking, ties broken by row, must be equal. On
EfficientNet-Lite0 embeddings of scikit-image photo tiles the products are real numbers: the ranking must
equal the float64 one wherever neighbouring scores differ by more than float32 rounding. Methods that need
a true distance refuse the metric with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.brain.similarity import clear_cache, compute_similarity, load_similarity_index

TILE = 64


def _ranking(scores: np.ndarray) -> np.ndarray:
    """Rows by descending score, ties by row: the order an index with dotproduct must return."""
    return np.lexsort((np.arange(len(scores)), -scores))


def _rows(view, ds) -> np.ndarray:
    pos = {i: r for r, i in enumerate(ds.values("id"))}
    return np.array([pos[i] for i in view.values("id")], dtype=np.int64)


@pytest.fixture(scope="module")
def digits(digits_px):
    """The digits dataset and sklearn's integer pixels in its sample order (``index`` is sklearn's row)."""
    from sklearn.datasets import load_digits

    ds = digits_px[0]
    x = load_digits().data.astype(np.float32)[np.asarray(ds.values("index"))]
    return ds, x


@pytest.fixture
def ds(digits, digits_px_clean):
    yield digits[0]
    clear_cache()


@pytest.mark.parametrize("backend", ["exact", "faiss"])
def test_sort_by_similarity_ranks_exactly_as_numpy_x_dot_q(ds, digits, backend):
    x = digits[1]
    compute_similarity(ds, embeddings=x, metric="dotproduct", backend=backend, brain_key="dot", progress=False)
    ids = ds.values("id")
    for r in (0, 5, 900):
        want = _ranking(x.astype(np.int64) @ x[r].astype(np.int64))
        for query in (ids[r], x[r], x[r].tolist()):  # an id, or the vector itself
            view = ds.sort_by_similarity(query, brain_key="dot", dist_field="d")  # every member: exact
            got = _rows(view, ds)
            np.testing.assert_array_equal(got, want)
            # the view's "distance" is -x . q (smallest first, like every metric)
            np.testing.assert_array_equal(view.values("d"), -(x[got] @ x[r]))
        least = _rows(ds.sort_by_similarity(ids[r], brain_key="dot", reverse=True, k=20), ds)
        np.testing.assert_array_equal(least, np.lexsort((np.arange(len(x)), x @ x[r]))[:20])
        top = _rows(ds.sort_by_similarity(ids[r], brain_key="dot", k=25), ds)
        if backend == "exact":
            np.testing.assert_array_equal(top, want[:25])
        else:  # FAISS IVF (inner product): approximate membership, exact products, the same order among them
            s = x @ x[r]
            assert (np.diff(s[top]) <= 0).all()
            assert len(set(top.tolist()) & set(want[:25].tolist())) >= 23
    # a list of ids queries with the mean of their vectors: the ranking of the mean product
    view = ds.sort_by_similarity([ids[1], ids[2]], brain_key="dot")
    np.testing.assert_array_equal(_rows(view, ds), _ranking(x.astype(np.int64) @ (x[1] + x[2]).astype(np.int64)))
    # the same answers after a reload in this process from what was stored
    clear_cache()
    index = load_similarity_index(ds, "dot")
    assert index.metric == "dotproduct" and index.method == backend
    np.testing.assert_array_equal(_rows(ds.sort_by_similarity(ids[5], brain_key="dot"), ds),
                                  _ranking(x.astype(np.int64) @ x[5].astype(np.int64)))


def test_the_faiss_backend_is_an_inner_product_index(ds, digits):
    import faiss

    index = compute_similarity(ds, embeddings=digits[1], metric="dotproduct", backend="faiss", progress=False)
    assert index._faiss.metric_type == faiss.METRIC_INNER_PRODUCT
    assert index.config["faiss"]["recall_at_10"] >= 0.99


def test_a_dotproduct_index_refuses_what_needs_a_distance(ds, digits):
    index = compute_similarity(ds, embeddings=digits[1], metric="dotproduct", brain_key="dot", progress=False)
    with pytest.raises(el.InvalidInputError, match="find_duplicates.*a dot product is a similarity, not a distance"):
        index.find_duplicates()
    with pytest.raises(el.InvalidInputError, match="find_duplicates"):
        index.find_duplicates(thresh=1.0)
    with pytest.raises(el.InvalidInputError, match="find_unique.*not a distance"):
        index.find_unique(10)
    with pytest.raises(el.InvalidInputError, match="uniqueness.*not a distance.*one of cosine, euclidean"):
        el.compute_uniqueness(ds, embeddings=digits[1], metric="dotproduct", progress=False)
    for method in ("umap", "tsne"):
        with pytest.raises(el.InvalidInputError, match="not a distance"):
            el.compute_visualization(ds, embeddings=digits[1], method=method, metric="dotproduct", progress=False)
    with pytest.raises(el.InvalidInputError, match="unknown metric 'dot': one of cosine, euclidean, dotproduct"):
        compute_similarity(ds, embeddings=digits[1], metric="dot", progress=False)
    assert "uniqueness" not in ds.get_field_schema()


def test_compare_embeddings_with_dotproduct_neighbours(ds, digits):
    x = digits[1]
    r = el.compare_embeddings(ds, {"ints": x, "half": x * 0.5}, labels_field="ground_truth", k=5,
                              metric="dotproduct", queries=[ds.values("id")[0]], progress=False)
    s = x.astype(np.int64) @ x[0].astype(np.int64)
    s[0] = -1
    top = np.sort(s)[::-1][:5]
    nb = r._arrays["neighbors"][0, 0]
    np.testing.assert_array_equal(s[nb], top)  # the 5 largest products (ties may pick other rows)
    m = r.metrics
    assert r.config["metric"] == "dotproduct"
    # scaling every vector by 0.5 keeps every ranking: the two sets agree completely
    np.testing.assert_allclose(r._arrays["agreement"], 1.0)
    assert m["ints"]["knn_accuracy"] == m["half"]["knn_accuracy"]
    # 5-NN label accuracy by the largest products, computed here with numpy (ties at the cut may differ)
    from embedlens.brain.compare_embeddings import knn_votes

    y = np.array([int(v) for v in ds.values("ground_truth.label")])
    full = x.astype(np.int64) @ x.astype(np.int64).T
    np.fill_diagonal(full, -1)
    pred, _ = knn_votes(np.argsort(-full, axis=1, kind="stable")[:, :5], y, 10)
    assert abs(m["ints"]["knn_accuracy"] - (pred == y).mean()) < 0.01
    # (0.76 on the digits: long, inky digits are everyone's largest product -- cosine scores 0.98 there)


# ---------------------------------------------------------------------------------------------- photos


@pytest.fixture(scope="module")
def photo_tiles(tmp_path_factory):
    """64-px tiles of scikit-image's photos, embedded with EfficientNet-Lite0 (the torch backend)."""
    import skimage.data as sd

    home = tmp_path_factory.mktemp("dot_photos_home")
    root = tmp_path_factory.mktemp("dot_photos")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera"):
        a = getattr(sd, name)()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        for y in range(0, a.shape[0] - TILE + 1, 2 * TILE):
            for x in range(0, a.shape[1] - TILE + 1, 2 * TILE):
                p = root / f"{name}_{y}_{x}.png"
                Image.fromarray(np.ascontiguousarray(a[y:y + TILE, x:x + TILE])).save(p)
                paths.append(str(p))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        ds = el.Dataset("dot_photos")
        ds.add_images(paths)
        x = ds.compute_embeddings(el.load_model(backend="torch"), embeddings_field="effnet", progress=False)
        yield ds, np.asarray(x, dtype=np.float32), home
    clear_cache()


def test_photo_embeddings_rank_as_numpy_x_dot_q(photo_tiles, monkeypatch):
    ds, x, home = photo_tiles
    monkeypatch.setenv("EMBEDLENS_HOME", str(home))
    assert len(x) > 50 and x.shape[1] > 100
    compute_similarity(ds, embeddings="effnet", metric="dotproduct", brain_key="dot", overwrite=True,
                       progress=False)
    x64 = x.astype(np.float64)
    rng = np.random.default_rng(0)
    for q in [x[0], x[len(x) // 2], rng.normal(0, 1, x.shape[1]).astype(np.float32)]:
        s = x64 @ q.astype(np.float64)
        tol = 1e-5 * np.abs(s).max()  # float32 rounding of a product
        view = ds.sort_by_similarity(q, brain_key="dot", dist_field="d")
        got = _rows(view, ds)
        # numpy's ranking: every row once, in descending x . q; rows whose products are equal to float32
        # rounding (tiles of a blank sky) may come in either order, any other swap fails here
        assert sorted(got.tolist()) == list(range(len(x)))
        assert (np.diff(s[got]) <= tol).all()
        clear = np.r_[True, np.diff(s[_ranking(s)]) < -tol] & np.r_[np.diff(s[_ranking(s)]) < -tol, True]
        np.testing.assert_array_equal(got[clear], _ranking(s)[clear])  # rows with no near-tie: same place
        np.testing.assert_allclose(view.values("d"), -s[got], rtol=1e-5, atol=1e-4)
        # a vector's own tile is not always its best dot product (longer vectors score higher): no distance
    norms = np.einsum("ij,ij->i", x64, x64)
    best_other = (x64 @ x64.T - np.diag(np.full(len(x), np.inf))).max(axis=1)
    assert (best_other < norms).any()  # (the statement above, checked on this data either way it falls)
