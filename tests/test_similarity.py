"""Similarity indexes on real handwritten digits and real photos: queries, views, persistence, unique, duplicates.

Reference answers come from scikit-learn's brute-force ``NearestNeighbors`` and from plain re-implementations
written here; nothing is mocked.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.neighbors import NearestNeighbors
from typer.testing import CliRunner

import embedlens as el
from embedlens.brain.duplicates import find_exact_duplicates
from embedlens.brain.similarity import (SimilarityIndex, clear_cache, compute_similarity, load_similarity_index)
from embedlens.cli import app


@pytest.fixture(scope="module")
def digits(digits_px):
    return digits_px


@pytest.fixture
def ds(digits_px_clean):
    yield digits_px_clean
    clear_cache()


def _brute(x, metric, rows=None):
    base = x if rows is None else x[rows]
    return NearestNeighbors(metric=metric, algorithm="brute").fit(base.astype(np.float64))


def _assert_same_ranking(ids, dists, ref_ids, ref_dists, atol=2e-5):
    """Same distances, and the same ids wherever the reference's distances are not tied."""
    assert len(ids) == len(ref_ids)
    np.testing.assert_allclose(dists, ref_dists, atol=atol, rtol=1e-5)
    ref_dists = np.asarray(ref_dists)
    for i, (a, b) in enumerate(zip(ids, ref_ids)):
        tied = np.abs(ref_dists - ref_dists[i]) <= atol
        if tied.sum() == 1:
            assert a == b, f"rank {i}: {a} != {b}"
        else:
            assert a in {ref_ids[j] for j in np.flatnonzero(tied)}


# ---------------------------------------------------------------------------------------------- queries


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_sort_by_similarity_matches_sklearn_brute_force(ds, digits, metric):
    _, x = digits
    ids = ds.values("id")
    index = compute_similarity(ds, embeddings="px", metric=metric, brain_key="sim")
    assert index.total_index_size == len(ids) and index.method == "exact" and index.metric == metric
    nn = _brute(x, metric)
    for row in (0, 17, 1234):
        view = ds.sort_by_similarity(ids[row], k=20, dist_field="dist")
        ref_d, ref_i = nn.kneighbors(x[row:row + 1].astype(np.float64), 20)
        _assert_same_ranking(view.values("id"), view.values("dist"), [ids[i] for i in ref_i[0]], ref_d[0])
    # k=None sorts every sample; reverse puts the farthest first
    full = ds.sort_by_similarity(ids[5], dist_field="d")
    d = np.array(full.values("d"))
    assert len(full) == len(ids) and np.all(np.diff(d) >= 0)
    rev = ds.sort_by_similarity(ids[5], k=7, reverse=True, dist_field="d")
    np.testing.assert_allclose(rev.values("d"), d[::-1][:7], atol=1e-6)
    assert "dist" not in ds.get_field_schema() and "d" not in ds.get_field_schema()


def test_a_view_searches_and_returns_only_its_members(ds, digits):
    _, x = digits
    ids = np.array(ds.values("id"))
    compute_similarity(ds, embeddings="px", brain_key="sim")
    test = ds.match_tags("test")
    members = set(test.values("id"))
    rows = np.flatnonzero([i in members for i in ids])
    q = ids[3]  # a train sample: the query need not be a member
    assert q not in members
    view = test.sort_by_similarity(q, k=15, dist_field="dist")
    got = view.values("id")
    assert len(got) == 15 and set(got) <= members
    ref_d, ref_i = _brute(x, "cosine", rows).kneighbors(x[3:4].astype(np.float64), 15)
    _assert_same_ranking(got, view.values("dist"), list(ids[rows][ref_i[0]]), ref_d[0])
    # k larger than the view: every member, once
    small = ds.match(el.F("ground_truth.label") == "0").limit(30)
    out = small.sort_by_similarity(q, k=100).values("id")
    assert sorted(out) == sorted(small.values("id"))
    # the membership cache notices writes: tagging a sample changes the view
    newcomer = ids[rows[0] - 1] if rows[0] > 0 else ids[0]
    assert newcomer not in members
    ds.select(newcomer).tag_samples("test")
    try:
        assert newcomer in test.sort_by_similarity(newcomer, k=1).values("id")
    finally:
        ds.select(newcomer).untag_samples("test")


def test_every_query_kind(ds, digits, tmp_path):
    _, x = digits
    ids = ds.values("id")
    index = compute_similarity(ds, embeddings="px", brain_key="sim")
    by_id = ds.sort_by_similarity(ids[10], k=8).values("id")
    # a vector, a 2-D array of one row, and a Sample object give the same answer
    assert ds.sort_by_similarity(x[10], k=8).values("id") == by_id
    assert ds.sort_by_similarity(x[10:11], k=8).values("id") == by_id
    assert ds.sort_by_similarity(ds[ids[10]], k=8).values("id") == by_id
    # a list of ids: the mean of their unit vectors
    group = [ids[i] for i in (10, 20, 30)]
    unit = x[[10, 20, 30]] / np.linalg.norm(x[[10, 20, 30]], axis=1, keepdims=True)
    ref_d, ref_i = _brute(x, "cosine").kneighbors(unit.mean(axis=0, keepdims=True).astype(np.float64), 8)
    view = ds.sort_by_similarity(group, k=8, dist_field="d")
    _assert_same_ranking(view.values("id"), view.values("d"), [ids[i] for i in ref_i[0]], ref_d[0])
    # an image file, embedded with the index's model (pixels, rebuilt from the stored set's settings)
    path = tmp_path / "query.png"
    shutil.copy(ds[ids[42]].filepath, path)
    view = ds.sort_by_similarity(str(path), k=3, dist_field="d")
    assert view.values("id")[0] == ids[42] and view.values("d")[0] < 1e-6
    assert index._model is not None and index._model.name == "pixels"


def test_index_without_model_refuses_image_queries(ds, digits):
    _, x = digits
    ids = ds.values("id")
    compute_similarity(ds, embeddings=x, brain_key="arr")
    with pytest.raises(ValueError, match="no model to embed an image query"):
        ds.sort_by_similarity(ds.first().filepath, k=3)
    assert ds.sort_by_similarity(ids[0], k=1).values("id") == [ids[0]]


@pytest.mark.parametrize("query, error, match", [
    ("ffffffffffffffffffffffff", KeyError, "is not in similarity index"),
    (["ffffffffffffffffffffffff"], KeyError, "is not in similarity index"),
    ("/no/such/image.png", ValueError, "neither an id"),
    ([], ValueError, "empty query"),
    (np.zeros(5), ValueError, "dimension 64"),
    (np.full(64, np.nan), ValueError, "NaN"),
    ({"a": 1}, TypeError, "cannot use dict"),
])
def test_bad_queries_are_clear_errors(ds, query, error, match):
    compute_similarity(ds, embeddings="px", brain_key="sim")
    with pytest.raises(error, match=match):
        ds.sort_by_similarity(query, k=3)


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_k_must_be_positive(ds, k):
    compute_similarity(ds, embeddings="px", brain_key="sim")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ds.sort_by_similarity(ds.first().id, k=k)


def test_dist_field_must_not_shadow_a_field(ds):
    compute_similarity(ds, embeddings="px", brain_key="sim")
    with pytest.raises(ValueError, match="dist_field 'index'"):
        ds.sort_by_similarity(ds.first().id, k=3, dist_field="index")


def test_brain_key_is_optional_only_with_one_index(ds):
    q = ds.first().id
    with pytest.raises(ValueError, match="has no similarity index"):
        ds.sort_by_similarity(q, k=3)
    compute_similarity(ds, embeddings="px", brain_key="a")
    assert len(ds.sort_by_similarity(q, k=3)) == 3
    compute_similarity(ds, embeddings="px", metric="euclidean", brain_key="b")
    with pytest.raises(ValueError, match=r"2 similarity indexes \(a, b\)"):
        ds.sort_by_similarity(q, k=3)
    assert ds.sort_by_similarity(q, k=3, brain_key="b").view_stages[-1].kwargs["brain_key"] == "b"
    with pytest.raises(ValueError, match="no similarity index 'zzz'.*a, b"):
        ds.sort_by_similarity(q, k=3, brain_key="zzz")
    from embedlens.brain.uniqueness import compute_uniqueness

    compute_uniqueness(ds, embeddings="px")
    with pytest.raises(ValueError, match="is a uniqueness run, not a similarity index"):
        ds.sort_by_similarity(q, k=3, brain_key="uniqueness")


def test_exact_and_faiss_backends_agree(ds, digits):
    _, x = digits
    ids = ds.values("id")
    compute_similarity(ds, embeddings="px", brain_key="exact", backend="exact")
    ivf = compute_similarity(ds, embeddings="px", brain_key="ivf", backend="faiss")
    assert ivf.method == "faiss" and ivf.config["faiss"]["recall_at_10"] >= 0.99
    rng = np.random.default_rng(0)
    hits = total = 0
    for row in rng.choice(len(ids), 40, replace=False):
        a = ds.sort_by_similarity(ids[row], k=10, brain_key="exact").values("id")
        b = ds.sort_by_similarity(ids[row], k=10, brain_key="ivf").values("id")
        hits += len(set(a) & set(b))
        total += 10
    assert hits / total >= 0.97
    # on a view, FAISS filters by membership and still agrees
    test = ds.match_tags("test")
    members = set(test.values("id"))
    a = test.sort_by_similarity(ids[7], k=10, brain_key="exact").values("id")
    b = test.sort_by_similarity(ids[7], k=10, brain_key="ivf").values("id")
    assert set(b) <= members and len(set(a) & set(b)) >= 9
    # reverse and k=None are always exact
    assert test.sort_by_similarity(ids[7], k=5, reverse=True, brain_key="ivf").values("id") == \
        test.sort_by_similarity(ids[7], k=5, reverse=True, brain_key="exact").values("id")


def test_auto_backend_switches_to_faiss_above_the_threshold(ds, monkeypatch):
    from embedlens.brain import similarity

    assert compute_similarity(ds, embeddings="px").method == "exact"  # 1,797 x 64 (grayscale) is below it
    monkeypatch.setattr(similarity, "EXACT_MAX_VALUES", 1_797 * 64 - 1)
    index = compute_similarity(ds, embeddings="px", brain_key="auto")
    assert index.method == "faiss" and index.config["backend"] == "auto"
    q = ds.first().id
    assert ds.sort_by_similarity(q, k=5, brain_key="auto").values("id")[0] == q
    # a small view is searched exactly (its rows gathered), a large one through FAISS with a member filter
    compute_similarity(ds, embeddings="px", brain_key="exact", backend="exact")
    for view in (ds.match_tags("test"), ds.match_tags("train")):
        a = view.sort_by_similarity(q, k=10, brain_key="auto").values("id")
        b = view.sort_by_similarity(q, k=10, brain_key="exact").values("id")
        assert set(a) <= set(view.values("id")) and len(set(a) & set(b)) >= 9


def test_loaded_indexes_are_cached_until_the_run_changes(ds):
    compute_similarity(ds, embeddings="px", brain_key="sim")
    clear_cache()
    first = load_similarity_index(ds, "sim")
    assert load_similarity_index(ds) is first
    compute_similarity(ds, embeddings="px", metric="euclidean", brain_key="sim", overwrite=True)
    again = load_similarity_index(ds, "sim")
    assert again is not first and again.metric == "euclidean"
    ds.rename_brain_run("sim", "renamed")
    assert load_similarity_index(ds, "renamed").metric == "euclidean"
    with pytest.raises(ValueError, match="no similarity index 'sim'"):
        load_similarity_index(ds, "sim")


_FRESH = """
import json, sys
import embedlens as el
ds = el.load_dataset(sys.argv[1])
out = {}
for key, q in json.loads(sys.argv[2]).items():
    view = ds.sort_by_similarity(q, k=10, brain_key=key, dist_field="d")
    out[key] = [view.values("id"), view.values("d")]
print(json.dumps(out))
"""


def test_index_persists_and_a_fresh_process_answers_the_same(ds, digits, tmp_path):
    _, x = digits
    ids = ds.values("id")
    compute_similarity(ds, embeddings="px", brain_key="byref")  # reads the stored set again when loaded
    compute_similarity(ds, embeddings=x * 2.0, metric="euclidean", brain_key="arr", backend="faiss")
    stored = ds.load_brain_results("byref")
    assert isinstance(stored, SimilarityIndex) and stored.config["matrix"] == "embeddings set"
    assert ds.load_brain_results("arr").config["matrix"] == "stored"
    runs_dir = ds.arrays_dir / "runs"
    assert not (runs_dir / "byref" / "embeddings.npy").exists()
    assert (runs_dir / "arr" / "embeddings.npy").exists() and (runs_dir / "arr" / "faiss.index").exists()
    assert not list(runs_dir.rglob("*.pkl"))
    image = tmp_path / "copy.png"
    shutil.copy(ds[ids[99]].filepath, image)
    queries = {"byref": ids[3], "arr": ids[4]}
    expected = {k: [ds.sort_by_similarity(q, k=10, brain_key=k, dist_field="d").values(f) for f in ("id", "d")]
                for k, q in queries.items()}
    queries_img = {"byref": str(image)}
    env = {**os.environ, "EMBEDLENS_HOME": str(ds.path.parent)}
    for qs, exp in ((queries, expected), (queries_img, None)):
        proc = subprocess.run([sys.executable, "-c", _FRESH, ds.name, json.dumps(qs)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        if exp is None:
            assert got["byref"][0][0] == ids[99] and got["byref"][1][0] < 1e-6
            continue
        for key in qs:
            assert got[key][0] == exp[key][0]
            np.testing.assert_allclose(got[key][1], exp[key][1], atol=1e-6)


def test_index_of_a_deleted_embeddings_set_says_so(ds, digits):
    ds2 = ds.clone("digits-copy")
    try:
        compute_similarity(ds2, embeddings="px", brain_key="sim")
        clear_cache()
        ds2.delete_embeddings("px")
        with pytest.raises(ValueError, match="was deleted; compute the index again"):
            ds2.sort_by_similarity(ds2.first().id, k=3)
    finally:
        ds2.delete()


def test_object_index_queries_patches_views(photos, tmp_path):
    ds = el.Dataset("boxes")
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
    ds.add_samples([el.Sample(p, gt=el.Detections(detections=[el.Detection("a", b) for b in boxes]))
                    for p in photos.values()])
    index = compute_similarity(ds, model=el.load_model("pixels", size=(16, 16)), patches_field="gt",
                               brain_key="obj")
    patches = ds.to_patches("gt")
    label_ids = patches.values("id")
    assert index.keys == label_ids and len(set(index.sample_ids)) == len(photos)
    view = patches.sort_by_similarity(label_ids[3], k=4, dist_field="d")
    assert view.values("id")[0] == label_ids[3] and len(view) == 4
    with pytest.raises(ValueError, match="holds objects of 'gt'"):
        ds.sort_by_similarity(label_ids[3], k=4)
    assert index.find_unique(3) == index.unique_ids and set(index.unique_ids) <= set(label_ids)


def test_image_query_with_the_default_model(photos, tmp_path):
    model = el.load_model(backend="torch")  # the same fingerprint as the ONNX default, no export needed
    ds = el.Dataset("photos")
    ds.add_images([str(p) for p in photos.values()])
    compute_similarity(ds, model=model, brain_key="sim", progress=False)
    # a re-encoded, slightly smaller copy of the cat is nearest to the cat
    query = tmp_path / "cat-copy.jpg"
    Image.open(photos["chelsea"]).resize((400, 280)).save(query, quality=70)
    view = ds.sort_by_similarity(str(query), k=2, dist_field="d")
    assert Path(view.first().filepath).name == "chelsea.jpg"
    d = view.values("d")
    assert d[0] < 0.5 * d[1]


# ---------------------------------------------------------------------------------------------- bad input


def _runs_state(ds):
    return {k: ds.get_brain_info(k)["updated_at"] for k in ds.list_brain_runs()}


@pytest.mark.parametrize("kwargs, match", [
    ({"embeddings": "rows"}, "rows but the collection has"),
    ({"embeddings": "nan"}, "NaN or inf"),
    ({"embeddings": "px", "metric": "manhattan"}, "unknown metric"),
    ({"embeddings": "px", "backend": "annoy"}, "unknown backend"),
    ({"embeddings": "px", "brain_key": "kept"}, "exists"),
    ({"embeddings": "px", "brain_key": "bad key!"}, "invalid field name"),
    ({"embeddings": "nope"}, "no embeddings .nope. in dataset"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(ds, digits, kwargs, match):
    _, x = digits
    compute_similarity(ds, embeddings="px", brain_key="kept")
    before = _runs_state(ds), ds.load_brain_results("kept").keys
    arrays = {"rows": x[:-1], "nan": np.where(np.arange(len(x))[:, None] == 5, np.nan, x)}
    kwargs = {**kwargs, "embeddings": arrays.get(kwargs["embeddings"], kwargs["embeddings"])}
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        compute_similarity(ds, **kwargs)
    assert (_runs_state(ds), ds.load_brain_results("kept").keys) == before
    compute_similarity(ds, embeddings="px", metric="euclidean", brain_key="kept", overwrite=True)
    assert ds.load_brain_results("kept").metric == "euclidean"


# ---------------------------------------------------------------------------------------------- unique


def _reference_farthest_points(x, count, metric):
    """Plain k-center greedy on the full distance matrix (float64): start farthest from the centroid."""
    x = x.astype(np.float64)
    if metric == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        dist = 1.0 - u @ u.T
        c = u.mean(axis=0)
        to_c = 1.0 - u @ c / np.linalg.norm(c)
    else:
        sq = (x * x).sum(1)
        dist = sq[:, None] + sq[None, :] - 2 * x @ x.T
        c = x.mean(axis=0)
        to_c = ((x - c) ** 2).sum(1)
    chosen = [int(np.argmax(to_c))]
    for _ in range(count - 1):
        mind = dist[:, chosen].min(axis=1)
        mind[chosen] = -np.inf
        chosen.append(int(np.argmax(mind)))
    return chosen, dist


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_find_unique_is_the_farthest_point_order(ds, digits, metric):
    _, x = digits
    ids = ds.values("id")
    index = compute_similarity(ds, embeddings="px", metric=metric)
    got = index.find_unique(25)
    ref, dist = _reference_farthest_points(x, 25, metric)
    assert got == index.unique_ids == [ids[i] for i in ref]
    # and each pick is (to rounding) the farthest from all earlier picks
    rows = [ids.index(i) for i in got]
    for t in range(1, len(rows)):
        mind = dist[:, rows[:t]].min(axis=1)
        mind[rows[:t]] = -np.inf
        assert mind[rows[t]] >= mind.max() - 1e-9
    assert index.unique_view().values("id") == got
    for bad in (0, len(ids) + 1, 2.0, True):
        with pytest.raises(ValueError, match="count must be an integer"):
            index.find_unique(bad)


def test_visualize_unique_highlights_the_unique_samples(ds):
    from embedlens.brain.visualization import compute_visualization

    index = compute_similarity(ds, embeddings="px")
    index.find_unique(12)
    vis = compute_visualization(ds, embeddings="px", method="pca", progress=False)
    fig = index.visualize_unique(vis)
    names = {t.name: len(t.x) for t in fig.data}
    assert names.get("unique") == 12 and names.get("other") == len(ds) - 12
    index.find_duplicates(fraction=0.02)
    names = {t.name: len(t.x) for t in index.visualize_duplicates(vis).data}
    assert names.get("duplicate") == len(index.duplicate_ids) and names.get("nearest") == len(index.neighbors_map)


# ---------------------------------------------------------------------------------------------- duplicates


def _jpeg(a, q):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))


@pytest.fixture
def planted(ds, tmp_path):
    """A copy of the digits with 2% near-copies added (noise, JPEG re-encode, darker), with pixel embeddings."""
    rng = np.random.default_rng(5)
    out = ds.clone("planted")
    ids, paths = out.values("id"), out.values("filepath")
    picks = rng.choice(len(ids), size=36, replace=False)
    makers = [lambda a: np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.uint8),
              lambda a: _jpeg(a, 95),
              lambda a: np.clip(a.astype(np.float32) * 0.97, 0, 255).astype(np.uint8)]
    samples, origin = [], {}
    for j, i in enumerate(picks):
        a = np.asarray(Image.open(paths[i]).convert("L"))
        p = tmp_path / f"copy{j:02d}.png"
        Image.fromarray(makers[j % 3](a)).save(p)
        samples.append(el.Sample(str(p)))
    new = out.add_samples(samples)
    origin = {c: ids[i] for c, i in zip(new, picks)}
    x = out.compute_embeddings("pixels", embeddings_field="px", progress=False)
    yield out, x, origin
    out.delete()


def test_default_rule_finds_planted_near_copies(planted):
    ds, x, origin = planted
    index = compute_similarity(ds, embeddings="px", brain_key="sim")
    dups = index.find_duplicates()
    tp = sum(1 for kept, lst in index.neighbors_map.items() for d, _ in lst if origin.get(d) == kept)
    precision, recall = tp / max(len(dups), 1), tp / len(origin)
    assert precision >= 0.97 and recall >= 0.97, (precision, recall, index.duplicates_info)
    info = index.duplicates_info  # one ratio a channel now (the pixels decide by default), not one for the set
    assert info["rule"] == "default" and all(0 < info[c]["ratio"] <= 0.3 for c in ("perceptual", "embedding"))
    assert index.thresh == max(d for lst in index.neighbors_map.values() for _, d in lst)
    # the map: kept -> duplicates sorted by distance; every duplicate once; no kept sample is a duplicate
    flat = [d for lst in index.neighbors_map.values() for d, _ in lst]
    assert sorted(flat) == sorted(dups) and len(set(flat)) == len(flat)
    assert not set(index.neighbors_map) & set(flat)
    for lst in index.neighbors_map.values():
        assert [d for _, d in lst] == sorted(d for _, d in lst)


def test_duplicates_view_puts_each_duplicate_after_its_kept_sample(planted):
    ds, x, origin = planted
    index = compute_similarity(ds, embeddings="px", brain_key="sim")
    index.find_duplicates()
    view = index.duplicates_view(type_field="dup_type", id_field="dup_of", dist_field="dup_dist")
    expected = [i for kept, lst in index.neighbors_map.items() for i in [kept, *(d for d, _ in lst)]]
    assert view.values("id") == expected
    dists = view.values("dup_dist")
    types, kept_of = view.values("dup_type"), view.values("dup_of")
    for i, sid in enumerate(expected):
        if sid in index.neighbors_map:
            assert types[i] == "nearest" and kept_of[i] == sid and dists[i] == 0.0
        else:
            assert types[i] == "duplicate" and kept_of[i] == expected[[j for j in range(i) if types[j] ==
                                                                       "nearest"][-1]]
            assert dists[i] > 0 or np.isclose(dists[i], 0)
    assert "dup_dist" not in ds.get_field_schema()  # the distance is a column of the view only
    assert ds.count("dup_type") == len(expected)  # type/id fields are written, on the groups only


def test_thresh_keeps_samples_farther_apart_than_it(ds, digits):
    _, x = digits
    index = compute_similarity(ds, embeddings="px")
    index.find_duplicates(thresh=0.02)
    assert index.thresh == 0.02
    kept_rows = [index.keys.index(k) for k in index.neighbors_map]
    dup_rows = {index.keys.index(d) for d in index.duplicate_ids}
    assert all(d <= 0.02 for lst in index.neighbors_map.values() for _, d in lst)
    # kept samples (and samples never flagged) are pairwise farther apart than thresh (brute force)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    keep = np.array([r for r in range(len(x)) if r not in dup_rows])
    dist = 1.0 - u[keep] @ u[keep].T
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 0.02 - 1e-6
    assert kept_rows and len(index.duplicate_ids) > 0


def test_fraction_flags_about_that_fraction(ds):
    index = compute_similarity(ds, embeddings="px")
    for fraction in (0.01, 0.05, 0.2):
        flagged = len(index.find_duplicates(fraction=fraction))
        assert abs(flagged / len(ds) - fraction) <= 0.01, (fraction, flagged)
        assert index.duplicates_info["rule"] == "fraction"
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
            index.find_duplicates(fraction=bad)
    with pytest.raises(ValueError, match="not both"):
        index.find_duplicates(thresh=0.1, fraction=0.1)
    with pytest.raises(ValueError, match="non-negative"):
        index.find_duplicates(thresh=-1)


def test_exact_duplicates_by_file_hash(ds, tmp_path):
    out = ds.clone("hashes")
    try:
        ids, paths = out.values("id"), out.values("filepath")
        copies = []
        for j, i in enumerate((3, 3, 50)):
            p = tmp_path / f"same{j}.png"
            shutil.copy(paths[i], p)
            copies.append(el.Sample(str(p)))
        near = tmp_path / "near.png"  # same pixels, different bytes: not an exact duplicate
        Image.open(paths[7]).save(near, optimize=True, compress_level=1)
        assert near.read_bytes() != Path(paths[7]).read_bytes()
        new = out.add_samples([*copies, el.Sample(str(near))])
        found = find_exact_duplicates(out, progress=False)
        natural = {k: v for k, v in found.items() if k not in (ids[3], ids[50])}
        assert found[ids[3]][-2:] == new[:2] and found[ids[50]][-1:] == new[2:3]
        assert new[3] not in {d for v in found.values() for d in v}
        # any other group is a real byte-identical pair of the digits themselves
        for kept, dups in natural.items():
            for d in dups:
                assert Path(out[d].filepath).read_bytes() == Path(out[kept].filepath).read_bytes()
    finally:
        out.delete()


# ---------------------------------------------------------------------------------------------- CLI


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="embedlens")


def _ok(*args):
    r = _cli(*args)
    assert r.exit_code == 0, (r.stdout, r.stderr, r.exception)
    return r


def _json(*args):
    return json.loads(_ok(*args, "--json").stdout)


def _fails(*args, mentions):
    r = _cli(*args)
    assert r.exit_code == 1, (r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err and mentions in err, err
    return err


def test_cli_brain_commands(ds, embedlens_home):
    local = ds.clone("digits")  # in this test's EMBEDLENS_HOME, with the "px" embeddings
    ids = local.values("id")
    out = _json("similar", "digits", ids[0], "-k", "4")  # builds the index from the only set, "px"
    assert [m["id"] for m in out["matches"]][0] == ids[0] and len(out["matches"]) == 4
    assert out["brain_key"] == "similarity" and out["matches"][0]["filepath"] == local[ids[0]].filepath
    image = local[ids[9]].filepath
    assert _json("similar", "digits", image, "-k", "1")["matches"][0]["id"] == ids[9]
    uniq = _json("unique", "digits", "5")["unique"]
    assert [u["id"] for u in uniq] == load_similarity_index(local).find_unique(5)
    dup = _json("duplicates", "digits", "--fraction", "0.02")
    assert dup["info"]["rule"] == "fraction" and abs(dup["duplicates"] - 0.02 * len(ids)) <= 0.01 * len(ids)
    assert _json("duplicates", "digits", "--exact")["exact"] is True
    u = _json("uniqueness", "digits", "--field", "uniq")
    assert u["max"] == 1.0 and u["count"] == len(ids) and local.count("uniq") == len(ids)
    runs = _json("runs", "digits")
    assert {r["key"]: r["type"] for r in runs} == {"similarity": "similarity", "uniq": "uniqueness"}
    assert _json("runs", "digits", "info", "uniq")["fields"] == ["uniq"]
    _ok("runs", "digits", "rename", "similarity", "sim2")
    assert _json("runs", "digits", "delete", "uniq")["fields_deleted"] == ["uniq"]
    assert "uniq" not in local.get_field_schema()
    vis = _json("visualize", "digits", "--method", "pca", "--embeddings", "px")
    assert vis["rows"] == len(ids) and vis["brain_key"] == "pca"
    models = _json("models")
    assert models[0]["name"] == el.DEFAULT_MODEL and "pixels" in [m["name"] for m in models]
    text = _ok("similar", "digits", ids[0], "-k", "2").stdout.splitlines()
    assert len(text) == 2 and ids[0] in text[0]
    _fails("similar", "digits", ids[0], "-k", "0", mentions="-k must be a positive")
    _fails("similar", "digits", "ffffffffffffffffffffffff", mentions="not in similarity index")
    _fails("similar", "digits", ids[0], "--brain-key", "nope", mentions="no similarity index 'nope'")
    _fails("duplicates", "digits", "--fraction", "2", mentions="fraction must be in (0, 1)")
    _fails("runs", "digits", "info", mentions="takes 1 key")
    _fails("runs", "digits", "delete", "nope", mentions="no brain run 'nope'")
    _fails("uniqueness", "digits", "--embeddings", "nope", mentions="no embeddings 'nope'")
    _fails("visualize", "digits", "--method", "magic", mentions="unknown --method")
    for cmd in ("embed", "models", "visualize", "similar", "duplicates", "unique", "uniqueness", "runs"):
        assert "Examples:" in _ok(cmd, "--help").stdout


def test_cli_embed(digits_tree, embedlens_home):
    ds = el.Dataset("tree")
    ds.add_dir(digits_tree, "classification-tree")
    ds.select(ds.values("id")[:10]).tag_samples("few")
    out = _json("embed", "tree", "--model", "pixels", "--tags", "few", "--no-progress")
    assert out == {**out, "field": "pixels", "count": 10, "failed": 0, "dim": 32 * 32}  # grayscale PNGs: one channel
    assert ds.list_embeddings() == ["pixels"]
    _fails("embed", "tree", "--model", "pixels", "--tags", "nope", mentions="no samples of 'tree'")
    _fails("embed", "tree", "--engine", "spark", mentions="unknown --engine")
