"""compare_embeddings on real digits: the numbers equal scikit-learn's, the report and the side-by-side grid."""

from __future__ import annotations

import numpy as np
import pytest

import embedlens as el
from embedlens.brain.compare_embeddings import EmbeddingComparison, compare_embeddings
from embedlens.models.pixels import PixelsModel


@pytest.fixture
def ds(digits_px_clean):
    return digits_px_clean


def _sklearn_numbers(x, y, k):
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(x).kneighbors(x)[1]
    nb = np.array([[j for j in row if j != i][:k] for i, row in enumerate(idx)])
    classes = sorted(set(y))
    yi = np.array([classes.index(v) for v in y])
    pred = np.array([np.bincount(yi[row], minlength=len(classes)).argmax() for row in nb])
    return nb, float((pred == yi).mean()), float((yi[nb] == yi[:, None]).mean())


def test_numbers_equal_sklearn_and_pixels_beat_a_coarse_copy(ds, digits_px):
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness

    x = np.asarray(digits_px[1], dtype=np.float64)
    y = np.array(ds.values("ground_truth.label"))
    coarse = PixelsModel(size=(3, 3), grayscale=True)
    r = compare_embeddings(ds, {"pixels": "px", "coarse": coarse}, labels_field="ground_truth", k=10,
                           trust_samples=400, queries=2, brain_key="cmp")
    assert isinstance(r, EmbeddingComparison) and r.sets == ["pixels", "coarse"]
    m = r.metrics
    nb, acc, agree = _sklearn_numbers(x, y, 10)
    # Equidistant neighbours (duplicate digits) may be ordered differently: equal to within a few rows.
    assert m["pixels"]["knn_accuracy"] == pytest.approx(acc, abs=2e-3)
    assert m["pixels"]["label_agreement"] == pytest.approx(agree, abs=2e-3)
    assert m["pixels"]["knn_accuracy"] > 0.95 and m["pixels"]["knn_accuracy"] > m["coarse"]["knn_accuracy"]
    sub = r._arrays["trust_rows"]
    assert len(sub) == 400
    want = trustworthiness(x[sub], PCA(n_components=2, random_state=51).fit_transform(x)[sub], n_neighbors=10,
                           metric="cosine")
    assert m["pixels"]["trustworthiness"] == pytest.approx(want, abs=1e-6)
    # Agreement: 1 with itself, the shared fraction of the two sets' neighbours otherwise.
    xc = np.asarray(ds.get_embeddings(r.config["embeddings_fields"]["coarse"]), dtype=np.float64)
    nbc, _, _ = _sklearn_numbers(xc, y, 10)
    shared = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nb, nbc)])
    assert m["agreement"]["pixels"]["pixels"] == 1.0
    assert m["agreement"]["pixels"]["coarse"] == pytest.approx(shared, abs=0.01) and 0 < shared < 0.9
    # The queries' neighbours, per set, are the graph's.
    q = r.query_ids
    assert len(q) == 2 and all(len(row) == 10 for row in r.neighbors("pixels"))
    pos = {i: n for n, i in enumerate(ds.values("id"))}
    assert [pos[i] for i in r.neighbors("pixels")[0]][:5] == list(nb[pos[q[0]]][:5])
    # Stored, with the numbers, for a fresh process.
    back = ds.load_brain_results("cmp")
    assert back.metrics == m and back.summary()["metrics"] == m


def test_report_and_side_by_side_neighbors(ds):
    x = np.asarray(ds.get_embeddings("px"))
    r = compare_embeddings(ds, {"px": "px", "scaled": x * 3.0}, k=5, trust_samples=200, queries=[ds.first().id])
    assert r.metrics["agreement"]["px"]["scaled"] == 1.0  # cosine neighbours do not change with scale
    fig = r.report()
    assert len(fig.axes) == 3 and "5-NN" in fig.axes[0].get_title()
    grid = r.show_neighbors(0, n=4)
    assert len(grid.axes) == 2 * 5 and grid.axes[0].get_title().startswith("query")
    assert grid.axes[0].get_ylabel() == "px" and grid.axes[5].get_ylabel() == "scaled"


def test_umap_layout_and_given_layouts(ds):
    view = ds.take(300, seed=4)
    viz = el.compute_visualization(view, embeddings="px", method="pca", brain_key="pca300")
    r = compare_embeddings(view, ["px"], layout={"px": "pca300"}, trust_samples=300, queries=0)
    r2 = compare_embeddings(view, ["px"], layout="pca", trust_samples=300, queries=0)
    assert r.metrics["px"]["trustworthiness"] == pytest.approx(r2.metrics["px"]["trustworthiness"], abs=1e-3)
    u = compare_embeddings(view, ["px"], layout="umap", trust_samples=300, queries=0)
    assert u.metrics["px"]["trustworthiness"] > r.metrics["px"]["trustworthiness"]  # UMAP keeps neighbours
    assert len(viz) == 300


@pytest.mark.parametrize("kwargs, match", [
    ({"embeddings_sets": "px"}, "list or a dict"),
    ({"embeddings_sets": ["px"], "k": 0}, "k must be"),
    ({"embeddings_sets": ["px"], "layout": "isomap"}, "layout must be"),
    ({"embeddings_sets": ["px"], "metric": "l1"}, "metric"),
    ({"embeddings_sets": ["px"], "queries": ["nope"]}, "query ids"),
    ({"embeddings_sets": ["px"], "labels_field": "nope"}, "unknown field"),
    ({"embeddings_sets": {"a": "px", "b": np.zeros((5, 3))}}, "rows but the collection has"),
])
def test_bad_input(ds, kwargs, match):
    with pytest.raises(el.EmbedlensError, match=match):
        compare_embeddings(ds, brain_key="never", trust_samples=100, **kwargs)
    assert "never" not in ds.list_brain_runs()


def test_a_misspelt_set_fails_before_any_set_is_computed(ds):
    """A name that is neither stored nor a model is refused with the stored sets named, before the sets
    before it in the list are embedded (it used to embed 'pixels' first, then fail on the second name)."""
    sets = ds.list_embeddings()
    with pytest.raises(el.EmbedlensError, match=r"neither an embedding set .*stored: .*px.* nor a model"):
        compare_embeddings(ds, [PixelsModel(size=(4, 4)), "efficientnet_lite"], brain_key="never",
                           trust_samples=100)
    assert ds.list_embeddings() == sets and "never" not in ds.list_brain_runs()
