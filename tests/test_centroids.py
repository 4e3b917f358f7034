"""Class centroids on real digits (and real photos): equal to numpy / scikit-learn, the closest pairs,
a heatmap, the centroids drawn in a plot."""

from __future__ import annotations

import numpy as np
import pytest

import embedlens as el
from embedlens.brain.centroids import CentroidResults, compute_class_centroids


@pytest.fixture
def ds(digits_px_clean):
    return digits_px_clean


def test_centroids_and_distances_equal_sklearn(ds, digits_px):
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import NearestCentroid

    x = np.asarray(digits_px[1], dtype=np.float64)
    y = np.array(ds.values("ground_truth.label"))
    r = compute_class_centroids(ds, embeddings="px", labels_field="ground_truth", brain_key="cent")
    assert isinstance(r, CentroidResults) and r.classes == [str(d) for d in range(10)]
    ref = NearestCentroid().fit(x, y)
    np.testing.assert_allclose(r.centroids, ref.centroids_, rtol=1e-10)
    np.testing.assert_array_equal(r.counts, [int((y == c).sum()) for c in r.classes])
    np.testing.assert_allclose(r.distances, pairwise_distances(ref.centroids_), rtol=1e-9, atol=1e-9)
    # The closest pair is the smallest off-diagonal distance; nearest_class agrees with it.
    d = pairwise_distances(ref.centroids_) + np.diag(np.full(10, np.inf))
    i, j = np.unravel_index(d.argmin(), d.shape)
    a, b, dist = r.confusable_pairs(3)[0]
    assert {a, b} == {r.classes[i], r.classes[j]} and dist == pytest.approx(d[i, j])
    assert r.nearest_class()[r.classes[i]][0] == r.classes[j]
    pairs = r.confusable_pairs(45)
    assert [p[2] for p in pairs] == sorted(p[2] for p in pairs) and len(pairs) == 45
    cos = compute_class_centroids(ds, embeddings="px", metric="cosine")
    np.testing.assert_allclose(cos.distances, pairwise_distances(ref.centroids_, metric="cosine"), atol=1e-9)
    table = r.distance_table()
    assert list(table.index) == r.classes and table.loc["3", "8"] == pytest.approx(r.distances[3, 8])
    # Stored and loaded back.
    back = ds.load_brain_results("cent")
    np.testing.assert_array_equal(back.distances, r.distances)
    assert back.confusable_pairs(2) == r.confusable_pairs(2)


def test_centroids_in_a_plot_and_heatmaps(ds):
    viz = el.compute_visualization(ds, embeddings="px", method="pca", brain_key="pca")
    y = np.array(ds.values("ground_truth.label"))
    r = compute_class_centroids(ds, labels_field="ground_truth", space="pca")
    np.testing.assert_allclose(r.centroids, [viz.points[y == c].mean(axis=0, dtype=np.float64) for c in r.classes], rtol=1e-6, atol=1e-6)
    plot = r.visualize()
    cent = [t for t in plot.figure.data if t.name == "centroids"][0]
    np.testing.assert_allclose(np.c_[cent.x, cent.y], r.centroids, rtol=1e-5, atol=1e-6)
    assert list(cent.text) == r.classes and plot.trace_ids[-1] == []
    # Embedding centroids placed in a PCA plot by its projection: the mean commutes with a linear map.
    emb = compute_class_centroids(ds, embeddings="px")
    p2 = emb.visualize("pca", backend="matplotlib")
    texts = [t.get_text() for t in p2.axes[0].texts]
    assert texts == r.classes
    np.testing.assert_allclose(viz.project(emb.centroids), r.centroids, rtol=1e-4, atol=1e-4)
    fig = r.heatmap()
    assert len(fig.axes[0].texts) == 100 and "centroids" in fig.axes[0].get_title()
    hm = r.heatmap(backend="plotly")
    np.testing.assert_allclose(np.asarray(hm.data[0].z), r.distances)
    with pytest.raises(el.InvalidInputError, match="pass visualization="):
        emb.visualize()


def test_photos(photos):
    from embedlens.models.pixels import PixelsModel

    ds = el.Dataset("photo_centroids")
    kinds = {"camera": "gray", "chelsea": "cat", "coffee": "cup", "astronaut": "person", "rocket": "rocket"}
    ds.add_samples([el.Sample(p, kind="gray" if n == "camera" else "colour") for n, p in photos.items()])
    x = np.asarray(ds.compute_embeddings(PixelsModel(size=(16, 16), grayscale=True), embeddings_field="px",
                                         progress=False), dtype=np.float64)
    r = compute_class_centroids(ds, embeddings="px", labels_field="kind")
    kind = np.array(ds.values("kind"))
    assert r.classes == ["colour", "gray"] and list(r.counts) == [4, 1]
    np.testing.assert_allclose(r.centroids[0], x[kind == "colour"].mean(axis=0))
    assert r.distances[0, 1] == pytest.approx(np.linalg.norm(x[kind == "colour"].mean(0) - x[kind == "gray"].mean(0)))
    assert kinds  # the five skimage photos


@pytest.mark.parametrize("kwargs, match", [
    ({"metric": "manhattan"}, "metric must be"),
    ({"metric": "dotproduct"}, "got 'dotproduct': the table is of distances"),
    ({"space": "nope"}, "space must be 'embedding' or the key"),
    ({"labels_field": "nope"}, "unknown field"),
    ({"labels_field": "filepath"}, None),  # one class per sample: fine, 1797 classes
])
def test_bad_input(ds, kwargs, match):
    if match is None:
        r = compute_class_centroids(ds.limit(5), embeddings=np.asarray(ds.limit(5).get_embeddings("px")), **kwargs)
        assert len(r.classes) == 5
        return
    with pytest.raises(el.EmbedlensError, match=match):
        compute_class_centroids(ds, embeddings="px", brain_key="never", **kwargs)
    assert "never" not in ds.list_brain_runs()
