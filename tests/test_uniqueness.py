"""compute_uniqueness on real handwritten digits (and real photos, for regions of interest)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import NearestNeighbors

import embedlens as el
from embedlens.brain.uniqueness import UniquenessResults, compute_uniqueness

WEIGHTS = (0.6, 0.3, 0.1)  # FiftyOne's weights of the 1st, 2nd and 3rd neighbour distances


@pytest.fixture(scope="module")
def digits(digits_px):
    return digits_px


@pytest.fixture
def ds(digits_px_clean):
    return digits_px_clean


def _reference(x, metric="cosine"):
    d, _ = NearestNeighbors(n_neighbors=4, metric=metric, algorithm="brute").fit(x.astype(np.float64)) \
        .kneighbors(x.astype(np.float64))
    u = d[:, 1:4] @ np.array(WEIGHTS)
    return u / u.max()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_scores_follow_the_formula_in_0_1_with_max_exactly_1(ds, digits, metric):
    _, x = digits
    results = compute_uniqueness(ds, embeddings="px", metric=metric)
    u = np.array(ds.values("uniqueness"), dtype=float)
    assert u.min() >= 0 and u.max() == 1.0 and np.sum(u == 1.0) >= 1
    np.testing.assert_allclose(u, _reference(x, metric), atol=1e-5)
    assert isinstance(results, UniquenessResults) and results.key == "uniqueness"
    np.testing.assert_allclose(results.scores, u, atol=1e-6)
    info = ds.get_brain_info("uniqueness")
    assert info["type"] == "uniqueness" and info["fields"] == ["uniqueness"]
    assert info["config"]["metric"] == metric and info["config"]["knn_method"] == "exact"
    assert isinstance(ds.load_brain_results("uniqueness"), UniquenessResults)


def test_planted_outliers_are_the_most_unique(ds, tmp_path):
    out = ds.clone("outliers")
    try:
        rng = np.random.default_rng(3)
        paths = []
        for j in range(5):  # random noise: far from every handwritten digit
            p = tmp_path / f"noise{j}.png"
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(p)
            paths.append(str(p))
        new = out.add_samples([el.Sample(p) for p in paths])
        compute_uniqueness(out, model="pixels", embeddings_field="px", progress=False)
        top5 = out.sort_by("uniqueness", reverse=True).limit(5).values("id")
        assert set(top5) == set(new)
        # each outlier is above the 99th percentile of the scores, not merely in the top 5
        u = dict(zip(out.values("id"), out.values("uniqueness")))
        assert all(u[i] > np.quantile(list(u.values()), 0.99) for i in new)
    finally:
        out.delete()


def test_deleting_the_run_deletes_the_field(ds):
    compute_uniqueness(ds, embeddings="px", uniqueness_field="uniq")
    assert "uniq" in ds.get_field_schema() and ds.list_brain_runs(type="uniqueness") == ["uniq"]
    ds.delete_brain_run("uniq")
    assert "uniq" not in ds.get_field_schema() and not ds.list_brain_runs()


def test_existing_run_or_field_needs_overwrite_and_is_left_unchanged(ds, digits):
    _, x = digits
    compute_uniqueness(ds, embeddings="px")
    before = ds.values("uniqueness"), ds.get_brain_info("uniqueness")["updated_at"]
    with pytest.raises(ValueError, match="exists"):
        compute_uniqueness(ds, embeddings=x * 0 + np.eye(1, x.shape[1]))
    assert (ds.values("uniqueness"), ds.get_brain_info("uniqueness")["updated_at"]) == before
    ds.set_values("score", [1.0] * len(ds))
    with pytest.raises(ValueError, match="field 'score' exists"):
        compute_uniqueness(ds, embeddings="px", uniqueness_field="score")
    assert set(ds.values("score")) == {1.0} and not ds.has_brain_run("score")
    compute_uniqueness(ds, embeddings="px", metric="euclidean", overwrite=True)
    assert ds.get_brain_info("uniqueness")["config"]["metric"] == "euclidean"


@pytest.mark.parametrize("make, match", [
    (lambda x: x[:-1], "rows but the collection has"),
    (lambda x: np.where(np.arange(len(x))[:, None] == 9, np.nan, x), "NaN or inf"),
    (lambda x: "nope", "no embeddings 'nope'"),
])
def test_bad_embeddings_are_clear_errors_and_write_nothing(ds, digits, make, match):
    _, x = digits
    with pytest.raises(ValueError, match=match):
        compute_uniqueness(ds, embeddings=make(x))
    assert "uniqueness" not in ds.get_field_schema() and not ds.list_brain_runs()


def test_bad_field_names_and_tiny_collections(ds):
    with pytest.raises(ValueError, match="invalid field name"):
        compute_uniqueness(ds, embeddings="px", uniqueness_field="bad name")
    one = ds.limit(1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        compute_uniqueness(one, embeddings="px")
    assert "uniqueness" not in ds.get_field_schema()


def test_a_view_scores_only_its_samples(ds, digits):
    _, x = digits
    test = ds.match_tags("test")
    compute_uniqueness(test, embeddings="px")
    ids = ds.values("id")
    members = set(test.values("id"))
    u = ds.values("uniqueness")
    assert all((v is None) == (i not in members) for i, v in zip(ids, u))
    rows = [k for k, i in enumerate(ids) if i in members]
    np.testing.assert_allclose(test.values("uniqueness"), _reference(x[rows]), atol=1e-5)
    assert ds.load_brain_view("uniqueness").values("id") == test.values("id")


def test_roi_field_embeds_only_the_boxes(photos):
    ds = el.Dataset("rois")
    names = list(photos)
    boxes = {n: [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.4, 0.4]] for n in names[:4]}
    ds.add_samples([el.Sample(photos[n], objs=el.Detections(detections=[el.Detection("x", b) for b in
                                                                          boxes.get(n, [])]))
                    for n in names])
    model = el.load_model("pixels", size=(12, 12))
    with pytest.warns(UserWarning, match="1 of 5 samples have no objects"):
        compute_uniqueness(ds, model=model, roi_field="objs", progress=False)
    u = dict(zip(ds.values("filepath"), ds.values("uniqueness")))
    assert u[str(photos[names[4]])] is None
    # the reference: each sample is the mean of its crops' pixel embeddings
    patches = ds.compute_patch_embeddings(model, "objs", progress=False)
    sids = ds.to_patches("objs").values("sample_id")
    order = [i for i in ds.values("id") if i in set(sids)]
    mean = np.stack([patches[[k for k, s in enumerate(sids) if s == i]].mean(axis=0) for i in order])
    d = 1 - (mean / np.linalg.norm(mean, axis=1, keepdims=True)) @ (mean / np.linalg.norm(mean, axis=1,
                                                                                           keepdims=True)).T
    np.fill_diagonal(d, np.inf)
    ds_sorted = np.sort(d, axis=1)[:, :3]
    ref = ds_sorted @ np.array(WEIGHTS)
    ref /= ref.max()
    got = dict(zip(ds.values("id"), ds.values("uniqueness")))
    np.testing.assert_allclose([got[i] for i in order], ref, atol=1e-5)
