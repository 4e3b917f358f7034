"""compute_visualization on real handwritten digits: layout quality, reproducibility, storage, views, plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedlens as el
import embedlens.brain
from embedlens.brain.visualization import VisualizationResults, compute_visualization
from embedlens.models.pixels import PixelsModel

# Trustworthiness (k=10) on digits pixels, measured: UMAP 0.988, t-SNE 0.991, PCA 0.830, LDA 0.799.
# 0.97 passes a working non-linear layout with room for platform noise, and fails a linear projection
# (or a layout whose neighbour graph is wrong) by a wide margin.
TRUST_MIN = 0.97


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits sample dataset with its pixel embeddings stored as "pixels", built once for the module."""
    home = tmp_path_factory.mktemp("vis_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        ds = el.load_sample_dataset("digits", progress=False)
        x = ds.compute_embeddings("pixels", embeddings_field="pixels", progress=False)
    return ds, x, np.array(ds.values("ground_truth.label"))


@pytest.fixture
def ds(digits):
    ds = digits[0]
    yield ds
    ds.delete_brain_runs()


def _trust(x, y):
    from sklearn.manifold import trustworthiness

    return trustworthiness(x, y, n_neighbors=10)


def _knn_accuracy(points, labels):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(10), points, labels, cv=5).mean()


# ---------------------------------------------------------------------------------------------- methods


def test_umap_is_trustworthy_and_reuses_the_shared_graph(ds, digits):
    _, x, _ = digits
    r = compute_visualization(ds, embeddings="pixels", seed=51, progress=False)
    assert isinstance(r, VisualizationResults) and r.points.dtype == np.float32
    assert r.points.shape == (len(ds), 2) and r.keys == ds.values("id") and r.sample_ids == r.keys
    assert _trust(x, r.points) >= TRUST_MIN
    c = r.config
    assert (c["method"], c["metric"], c["n_neighbors"], c["knn_k"]) == ("umap", "cosine", 15, 14)
    assert (c["knn_method"], c["knn_recall"], c["embeddings_field"], c["model"]) == ("exact", 1.0, "pixels", "pixels")
    # The graph is the shared one: cached beside the embeddings, and the same rows any other method reads.
    from embedlens.brain import resolve_embeddings

    g = resolve_embeddings(ds, "pixels").graph(14, "cosine")
    assert list((ds.arrays_dir / "knn").glob("*-cosine.npz"))
    assert g.indices.shape == (len(ds), 15) and (g.indices[:, 0] == np.arange(len(ds))).all()


def test_tsne_is_trustworthy(ds, digits):
    _, x, _ = digits
    r = compute_visualization(ds, embeddings=x, method="tsne", seed=51, progress=False)
    assert r.points.shape == (len(ds), 2)
    assert _trust(x, r.points) >= TRUST_MIN
    assert (r.config["perplexity"], r.config["knn_k"], r.config["metric"]) == (30.0, 90, "cosine")


def test_seeded_layouts_are_reproducible_bit_for_bit(ds):
    view = ds.take(400, seed=3)
    xv = view.get_embeddings("pixels")
    a = compute_visualization(view, embeddings=xv, seed=7, num_dims=3, progress=False)
    b = compute_visualization(view, embeddings=xv, seed=7, num_dims=3, progress=False)
    c = compute_visualization(view, embeddings=xv, seed=8, num_dims=3, progress=False)
    assert a.points.shape == (400, 3)
    assert a.points.tobytes() == b.points.tobytes()
    assert not np.array_equal(a.points, c.points)
    t1 = compute_visualization(view, embeddings=xv, method="tsne", seed=7, progress=False, n_iter=150)
    t2 = compute_visualization(view, embeddings=xv, method="tsne", seed=7, progress=False, n_iter=150)
    assert t1.points.tobytes() == t2.points.tobytes()


def test_pca_is_exact(ds, digits):
    from sklearn.decomposition import PCA

    _, x, _ = digits
    r = compute_visualization(ds, embeddings="pixels", method="pca", num_dims=3, progress=False)
    ref = PCA(n_components=3).fit_transform(x)
    signs = np.sign((r.points * ref).sum(axis=0))
    np.testing.assert_allclose(r.points, ref * signs, atol=1e-4)
    # Independent of scikit-learn: the axes are uncorrelated and carry the top eigenvalues of the covariance.
    evals = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))[::-1][:3]
    cov = np.cov(r.points.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(np.diag(cov), evals, rtol=1e-3)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 1e-3 * evals[0]
    assert len(r.config["explained_variance_ratio"]) == 3


def test_lda_separates_the_classes(ds, digits):
    view = ds.match(el.F("ground_truth.label").is_in(["0", "1", "7"]))
    y = np.array(view.values("ground_truth.label"))
    lda = compute_visualization(view, embeddings="pixels", method="lda", labels_field="ground_truth",
                                progress=False)
    pca = compute_visualization(view, embeddings="pixels", method="pca", progress=False)
    acc_lda, acc_pca = _knn_accuracy(lda.points, y), _knn_accuracy(pca.points, y)
    assert acc_lda >= 0.98 and acc_lda > acc_pca
    assert lda.config["classes"] == ["0", "1", "7"] and lda.config["labels_field"] == "ground_truth"
    # A str field works as well as a label field; rows without a class are laid out but not fitted.
    ds.set_values("digit", [None if i % 10 == 0 else v for i, v in enumerate(ds.values("ground_truth.label"))])
    try:
        r = compute_visualization(ds, embeddings="pixels", method="lda", labels_field="digit", progress=False)
        assert r.points.shape == (len(ds), 2) and r.config["num_labelled"] == len(ds) - (len(ds) + 9) // 10
    finally:
        ds.delete_sample_field("digit")


def test_manual_points_are_stored_as_given(ds):
    ids = ds.values("id")
    pts = np.random.default_rng(0).normal(size=(len(ids), 2))
    r = compute_visualization(ds, method="manual", points=pts, brain_key="mine")
    assert r.config["method"] == "manual" and r.keys == ids
    np.testing.assert_array_equal(r.points, pts.astype(np.float32))
    # FiftyOne's spelling: points= alone selects "manual".
    r2 = compute_visualization(ds, points=pts)
    assert r2.config["method"] == "manual"
    np.testing.assert_array_equal(ds.load_brain_results("mine").points, r.points)


# ---------------------------------------------------------------------------------------------- storage


def test_run_is_stored_loaded_renamed_and_deleted(ds):
    view = ds.match_tags("test")
    r = compute_visualization(view, embeddings="pixels", seed=5, brain_key="viz", progress=False)
    assert r.key == "viz" and ds.list_brain_runs(type="visualization") == ["viz"]
    info = ds.get_brain_info("viz")
    assert info["type"] == "visualization" and info["method"] == "umap" and info["config"]["seed"] == 5
    folder = ds.arrays_dir / "runs" / "viz"
    assert (folder / "points.npy").exists() and not list(folder.glob("*.pkl"))
    loaded = ds.load_brain_results("viz")
    assert type(loaded) is VisualizationResults and loaded.keys == r.keys
    assert loaded.points.tobytes() == r.points.tobytes()
    assert loaded.samples.values("id") == view.values("id") == r.keys
    ds.rename_brain_run("viz", "viz2")
    assert not folder.exists() and (ds.arrays_dir / "runs" / "viz2" / "points.npy").exists()
    assert ds.load_brain_results("viz2").points.tobytes() == r.points.tobytes()
    ds.delete_brain_run("viz2")
    assert ds.list_brain_runs() == [] and not (ds.arrays_dir / "runs" / "viz2").exists()


def _fresh_python(code: str, home: Path) -> dict:
    env = {**os.environ, "EMBEDLENS_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fresh_process_loads_the_same_points_and_recomputes_them(ds):
    view = ds.take(300, seed=11)
    r = compute_visualization(view, embeddings="pixels", seed=9, brain_key="fresh", progress=False)
    code = (
        "import json, hashlib, embedlens as el\n"
        "from embedlens.brain.visualization import compute_visualization\n"
        f"ds = el.load_dataset({ds.name!r})\n"
        "r = ds.load_brain_results('fresh')\n"
        "again = compute_visualization(ds.load_brain_view('fresh'), embeddings='pixels', seed=9, progress=False)\n"
        "h = lambda a: hashlib.sha1(a.tobytes()).hexdigest()\n"
        "print(json.dumps({'type': type(r).__name__, 'loaded': h(r.points), 'again': h(again.points),"
        " 'keys': r.keys == again.keys}))\n"
    )
    out = _fresh_python(code, ds.path.parent)
    import hashlib

    want = hashlib.sha1(r.points.tobytes()).hexdigest()
    assert out == {"type": "VisualizationResults", "loaded": want, "again": want, "keys": True}


def test_fresh_process_knows_visualization_runs_without_importing_the_module(ds):
    compute_visualization(ds, method="manual", points=np.zeros((len(ds), 2)), brain_key="plain")
    code = ("import json, embedlens as el\n"
            f"r = el.load_dataset({ds.name!r}).load_brain_results('plain')\n"
            "print(json.dumps({'type': type(r).__name__, 'n': len(r.points)}))\n")
    assert _fresh_python(code, ds.path.parent) == {"type": "VisualizationResults", "n": len(ds)}


def test_existing_key_is_kept_unless_overwrite(ds):
    first = compute_visualization(ds, embeddings="pixels", method="pca", brain_key="k")
    with pytest.raises(ValueError, match="exists.*overwrite=True"):
        compute_visualization(ds, method="manual", points=np.zeros((len(ds), 2)), brain_key="k")
    assert ds.get_brain_info("k")["method"] == "pca"
    np.testing.assert_array_equal(ds.load_brain_results("k").points, first.points)
    compute_visualization(ds, method="manual", points=np.zeros((len(ds), 2)), brain_key="k", overwrite=True)
    assert ds.get_brain_info("k")["method"] == "manual" and not ds.load_brain_results("k").points.any()


# ---------------------------------------------------------------------------------------------- views and plots


def test_use_view_restricts_and_reorders_in_place(ds):
    """FiftyOne changes the results in place and returns them: a literal port plots the view's points."""
    pts = np.arange(2 * len(ds), dtype=np.float32).reshape(-1, 2)
    r = compute_visualization(ds, points=pts, brain_key="inplace")
    pos = {k: i for i, k in enumerate(r.keys)}
    view = ds.match(el.F("ground_truth.label") == "3").sort_by("index", reverse=True)
    assert r.use_view(view) is r  # for chaining
    assert r.keys == view.values("id") and len(r) == 183 and len(r.visualize().ids) == 183
    np.testing.assert_array_equal(r.points, pts[[pos[k] for k in r.keys]])
    assert r.samples is view and r.view is view
    # A later use_view picks from all the run's rows again; the stored run keeps all of them.
    fours = ds.match(el.F("ground_truth.label") == "4")
    assert r.use_view(fours).keys == fours.values("id")
    assert len(ds.load_brain_results("inplace")) == len(ds)
    r.save("inplace2")
    assert len(ds.load_brain_results("inplace2")) == len(ds) and len(r) == len(fours)
    assert len(r.use_view(ds)) == len(ds)
    part = compute_visualization(ds.limit(100), points=np.zeros((100, 2)))
    with pytest.warns(UserWarning, match="100 of 200 rows"):
        assert len(part.use_view(ds.limit(200))) == 100
    with pytest.raises(KeyError, match="100 rows of the view"):
        part.use_view(ds.limit(200), allow_missing=False)


def test_visualize_one_trace_per_class(ds):
    r = compute_visualization(ds, points=np.random.default_rng(1).normal(size=(len(ds), 2)))
    counts = ds.count_values("ground_truth.label")
    fig = r.visualize(labels="ground_truth.label")
    assert [t.name for t in fig.data] == [str(d) for d in range(10)]
    assert [len(t.x) for t in fig.data] == [counts[str(d)] for d in range(10)]
    assert all(t.visible in (None, True) for t in fig.data)  # nothing hidden until the legend is clicked
    t3 = fig.data[3]
    assert t3.type == "scattergl" and t3.customdata[0][0] in r.keys and "id: %{customdata[0]}" in t3.hovertemplate
    np.testing.assert_array_equal(np.c_[t3.x, t3.y], r.points[np.array(ds.values("ground_truth.label")) == "3"])
    # A label field means its label; classes restrict and order the traces.
    assert [t.name for t in r.visualize(labels="ground_truth", classes=["7", "1"]).data] == ["7", "1"]
    # Numbers get one trace on a colour scale; sizes scale the markers; lists and expressions work too.
    num = r.visualize(labels="index", sizes=list(range(len(ds))))
    assert len(num.data) == 1 and num.data[0].marker.showscale and len(num.data[0].marker.color) == len(ds)
    assert min(num.data[0].marker.size) == 3 and max(num.data[0].marker.size) == 15
    expr = r.visualize(labels=el.F("index") > 899)
    assert sorted(len(t.x) for t in expr.data) == [897, 900]
    vals = ["a" if i % 3 else None for i in range(len(ds))]
    assert [t.name for t in r.visualize(labels=vals).data] == ["a", "(none)"]


def test_visualize_3d_and_matplotlib(ds):
    from matplotlib.figure import Figure

    r = compute_visualization(ds, points=np.random.default_rng(2).normal(size=(len(ds), 3)), num_dims=3)
    fig = r.visualize(labels="ground_truth.label")
    assert len(fig.data) == 10 and fig.data[0].type == "scatter3d"
    mfig = r.visualize(labels="ground_truth.label", backend="matplotlib")
    assert isinstance(mfig.figure, Figure) and len(mfig.axes[0].get_legend().get_texts()) == 10
    r2 = compute_visualization(ds, points=np.zeros((len(ds), 2)))
    mnum = r2.visualize(labels="index", backend="matplotlib")
    assert len(mnum.axes) == 2  # the plot and its colour bar
    with pytest.raises(ValueError, match="backend"):
        r2.visualize(backend="bokeh")
    with pytest.raises(ValueError, match="one value per point|got 3 values"):
        r2.visualize(labels=[1, 2, 3])


# ---------------------------------------------------------------------------------------------- patches


@pytest.fixture
def tiles(tmp_path, digits):
    """24 images, each four real digits in a 2x2 grid, with one Detection per digit."""
    from sklearn.datasets import load_digits

    d = load_digits()
    ds = el.Dataset("tiles")
    samples = []
    boxes = [[0, 0, 0.5, 0.5], [0.5, 0, 0.5, 0.5], [0, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
    for i in range(24):
        idx = [4 * i + j for j in range(4)]
        cells = [np.kron(d.images[k] * (255 / 16), np.ones((4, 4))).astype(np.uint8) for k in idx]
        img = np.block([[cells[0], cells[1]], [cells[2], cells[3]]])
        path = tmp_path / f"tile_{i:02d}.png"
        Image.fromarray(img).save(path)
        dets = [el.Detection(str(d.target[k]), b) for k, b in zip(idx, boxes)]
        samples.append(el.Sample(path, digits=el.Detections(detections=dets)))
    ds.add_samples(samples)
    return ds


def test_patches_visualization(tiles):
    ds = tiles
    patches = ds.to_patches("digits")
    r = compute_visualization(ds, model=PixelsModel(size=(8, 8), grayscale=True), patches_field="digits",
                              embeddings_field="digit_px", seed=1, progress=False)
    assert r.points.shape == (96, 2) and r.keys == patches.values("id") == r.label_ids
    assert r.sample_ids == patches.values("sample_id") and r.config["patches_field"] == "digits"
    fig = r.visualize(labels="digits.label")
    counts = patches.count_values("digits.label")
    assert {t.name: len(t.x) for t in fig.data} == counts
    assert "sample: %{customdata[1]}" in fig.data[0].hovertemplate
    # A sample view gives its images' objects; a patches view its objects, in its order.
    first = ds.limit(5)
    assert r.use_view(first).keys == first.to_patches("digits").values("id")
    sevens = ds.filter_labels("digits", el.F("label") == "7").to_patches("digits")
    assert r.use_view(sevens).keys == sevens.values("id") and len(sevens) == counts["7"]
    # Object-level LDA reads the objects' labels.
    lda = compute_visualization(ds, embeddings="digit_px", patches_field="digits", method="lda",
                                labels_field="digits", progress=False)
    assert lda.config["classes"] == sorted(counts)
    with pytest.raises(ValueError, match="sample-level points"):
        compute_visualization(ds, points=np.zeros((24, 2))).use_view(patches)
    with pytest.raises(ValueError, match="patches_field"):
        compute_visualization(patches, points=np.zeros((96, 2)))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, error, match", [
    ({"embeddings": np.zeros((10, 4))}, ValueError, "10 rows but the collection has 1797"),
    ({"embeddings": "nan"}, ValueError, "NaN or inf in 1 rows"),
    ({"method": "isomap"}, ValueError, "unknown visualization method"),
    ({"num_dims": 4}, ValueError, "num_dims must be 2 or 3"),
    ({"method": "pca", "num_dims": 1}, ValueError, "num_dims must be at least 2"),
    ({"method": "pca", "components": (3,)}, ValueError, "2 or more distinct component numbers"),
    ({"method": "pca", "components": (0, 1)}, ValueError, "counted from 1"),
    ({"method": "pca", "components": (1, 2, 3), "num_dims": 4}, ValueError, "disagrees with components"),
    ({"components": (1, 2)}, ValueError, "method 'umap' has none"),
    ({"num_dims": True}, ValueError, "num_dims must be 2 or 3"),
    ({"method": "lda"}, ValueError, "pass labels_field="),
    ({"method": "manual"}, ValueError, "needs points="),
    ({"points": np.zeros((1797, 3))}, ValueError, r"shape \[1797, 2\]"),
    ({"points": np.full((1797, 2), np.nan)}, ValueError, "points has NaN"),
    ({"method": "tsne", "points": np.zeros((1797, 2))}, ValueError, "only used with method='manual'"),
    ({"n_components": 5}, ValueError, "n_components= is set by"),
    ({"brain_key": "bad key"}, ValueError, "invalid field name"),
    ({"seed": 1.5}, ValueError, "seed must be None or an int"),
    # The classes are read before the embeddings, so a wrong field fails first (not the bad array).
    ({"method": "lda", "labels_field": "nope", "embeddings": np.zeros((10, 4))}, ValueError, "unknown field 'nope'"),
])
def test_bad_input_is_a_clear_error_and_stores_nothing(ds, digits, kwargs, error, match):
    _, x, _ = digits
    if isinstance(kwargs.get("embeddings"), str):
        bad = x.copy()
        bad[5, 3] = np.nan
        kwargs = {**kwargs, "embeddings": bad}
    kwargs.setdefault("brain_key", "never")
    before = sorted(p.name for p in (ds.arrays_dir / "runs").glob("*")) if (ds.arrays_dir / "runs").exists() else []
    with pytest.raises(error, match=match):
        compute_visualization(ds, progress=False, **kwargs)
    assert ds.list_brain_runs() == []
    after = sorted(p.name for p in (ds.arrays_dir / "runs").glob("*")) if (ds.arrays_dir / "runs").exists() else []
    assert after == before


def test_lda_needs_more_classes_than_dimensions(ds):
    two = ds.match(el.F("ground_truth.label").is_in(["1", "2"]))
    with pytest.raises(ValueError, match="at least 3 classes.*found 2"):
        compute_visualization(two, embeddings="pixels", method="lda", labels_field="ground_truth")
    with pytest.raises(ValueError, match="at least 4 classes"):
        compute_visualization(ds.match(el.F("ground_truth.label").is_in(["1", "2", "3"])), embeddings="pixels",
                              method="lda", labels_field="ground_truth", num_dims=3)


def test_numba_cache_keeps_the_serial_and_parallel_layout_kernels_apart():
    """umap-learn jits one function twice (parallel or not); one shared cache entry would hand the
    non-deterministic parallel kernel to seeded runs."""
    from umap import layouts
    from numba.core.caching import NullCache

    from embedlens.brain.visualization import _enable_numba_cache

    if os.environ.get("EMBEDLENS_NUMBA_CACHE", "1") == "0":
        pytest.skip("numba cache switched off")
    _enable_numba_cache()
    serial = layouts._nb_optimize_layout_euclidean_single_epoch._cache
    parallel = layouts._nb_optimize_layout_euclidean_single_epoch_parallel._cache
    assert not isinstance(serial, NullCache) and not isinstance(parallel, NullCache)
    assert serial._cache_file._index_name != parallel._cache_file._index_name


def test_too_few_points_for_the_method(ds):
    three = ds.limit(3)
    with pytest.raises(ValueError, match="needs at least 4 points"):
        compute_visualization(three, embeddings="pixels", progress=False)
    with pytest.raises(ValueError, match="t-SNE needs at least 4 points"):
        compute_visualization(three, embeddings="pixels", method="tsne", progress=False)
    five = compute_visualization(ds.limit(5), embeddings="pixels", num_dims=3, seed=0, progress=False)
    assert five.points.shape == (5, 3) and five.config["n_neighbors"] == 4


# ---------------------------------------------------------------------------------------------- FiftyOne parity


@pytest.mark.parametrize("spelling", ["t-sne", "T-SNE", "t_sne", "tsne"])
def test_tsne_spellings_are_one_method_recorded_canonical(ds, spelling):
    view = ds.take(60, seed=1)
    r = compute_visualization(view, embeddings="pixels", method=spelling, seed=0, brain_key="ts", progress=False,
                              n_iter=50)
    assert r.method == "tsne" and ds.get_brain_info("ts")["method"] == "tsne"


def test_visualize_takes_fiftyones_arguments_and_returns_a_plot_with_show(ds):
    r = compute_visualization(ds, points=np.random.default_rng(3).normal(size=(len(ds), 2)))
    plot = r.visualize(labels="ground_truth.label", labels_title="digit", axis_equal=True, marker_size=4,
                       sizes="index", sizes_title="row", layout={"margin": {"t": 40}})
    fig = plot.figure
    assert fig.layout.legend.title.text == "digit" and fig.layout.yaxis.scaleanchor == "x"
    assert "digit: %{customdata[1]}" in fig.data[0].hovertemplate and "row: " in fig.data[0].hovertemplate
    assert fig.layout.margin.t == 40
    # The ids in plot order: trace by trace, each trace's points in the order drawn.
    assert plot.ids == [i for t in fig.data for i in (row[0] for row in t.customdata)]
    assert sorted(plot.ids) == sorted(r.keys) and plot.link_type == "samples" and plot.samples is ds
    assert plot.selected_ids == []  # what session.plots.attach() keeps in step with the app
    assert plot.trace_ids[2] == [row[0] for row in fig.data[2].customdata]
    plot.show(height=512)
    assert fig.layout.height == 512
    plot.show(height=600, yaxis_scaleanchor="x")  # FiftyOne's layout keywords
    assert fig.layout.height == 600
    num = r.visualize(labels="index", labels_title="row number", show_colorbar_title=True)
    assert num.figure.data[0].marker.colorbar.title.text == "row number"
    m = r.visualize(labels="ground_truth.label", backend="matplotlib", labels_title="digit", axis_equal=True)
    assert m.axes[0].get_legend().get_title().get_text() == "digit" and m.axes[0].get_aspect() == 1.0
    m.show(height=400)
    assert round(m.figure.get_size_inches()[1] * m.figure.dpi) == 400
    assert m._repr_mimebundle_()["image/png"][:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="unexpected arguments: bogus"):
        r.visualize(bogus=1)


def test_visualize_colours_by_tags(ds):
    r = compute_visualization(ds, points=np.random.default_rng(4).normal(size=(len(ds), 2)))
    counts = ds.count_sample_tags()
    plot = r.visualize(labels="tags")
    assert {t.name: len(t.x) for t in plot.data} == counts


def test_verbose_umap_prints_its_settings_without_the_knn_arrays(ds, capfd):
    view = ds.take(200, seed=2)
    compute_visualization(view, embeddings="pixels", seed=1, verbose=True, progress=False, n_epochs=20)
    out = capfd.readouterr().out
    assert "UMAP(" in out and "precomputed_knn=<shared kNN graph 200 x 15>" in out
    assert "array(" not in out and len(out) < 5000
    # PCA and LDA accept verbose= too (FiftyOne passes it to every method).
    compute_visualization(view, embeddings="pixels", method="pca", verbose=True)
    assert "pca" in capfd.readouterr().out


# ---------------------------------------------------------------------------------------------- projections


def test_pca_components_equal_sklearn_and_project_new_points_and_directions(ds, digits):
    from sklearn.decomposition import PCA

    _, x, _ = digits
    ref = PCA(n_components=6).fit(x)
    full = ref.transform(x)
    for comps in [(1, 2), (3, 4), (5, 6), (2, 5, 6)]:
        r = compute_visualization(ds, embeddings="pixels", method="pca", components=comps, progress=False)
        cols = [c - 1 for c in comps]
        signs = np.sign((r.points * full[:, cols]).sum(axis=0))  # a component's sign is arbitrary
        np.testing.assert_allclose(r.points, full[:, cols] * signs, atol=1e-3)
        assert r.num_dims == len(comps) and r.components == list(comps)
        np.testing.assert_allclose(r.explained_variance_ratio, ref.explained_variance_ratio_[cols], rtol=1e-4)
        # project(): new points land where transform() puts them; directions are rotated, not centred.
        np.testing.assert_allclose(r.project(x[:50]), r.points[:50], atol=1e-3)
        w = np.random.default_rng(0).normal(size=(3, x.shape[1]))
        np.testing.assert_allclose(r.project(w, directions=True), (w @ ref.components_[cols].T) * signs, atol=1e-4)
        assert r.project(w[0], directions=True).shape == (len(comps),)
    # More than three dimensions for a linear method, plotted two or three columns at a time.
    r = compute_visualization(ds, embeddings="pixels", method="pca", num_dims=6, progress=False)
    assert r.points.shape == (len(ds), 6)
    plot = r.visualize(dims=(2, 3))
    np.testing.assert_array_equal(plot.data[0].x, r.points[:, 2])
    with pytest.raises(ValueError, match="dims must be"):
        r.visualize(dims=(0, 9))


def test_lda_projection_survives_a_fresh_process(ds, digits):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    _, x, y = digits
    r = compute_visualization(ds, embeddings="pixels", method="lda", labels_field="ground_truth", brain_key="lda",
                              components=(2, 3), progress=False)
    ref = LinearDiscriminantAnalysis(n_components=3).fit(x, y)
    np.testing.assert_allclose(r.points, ref.transform(x)[:, 1:3], atol=1e-3)
    w = np.random.default_rng(1).normal(size=(10, x.shape[1]))
    np.testing.assert_allclose(r.project(w, directions=True), w @ ref.scalings_[:, 1:3], rtol=1e-6, atol=1e-9)
    folder = ds.arrays_dir / "runs" / "lda"
    assert (folder / "projection.npy").exists() and not list(folder.glob("*.pkl"))
    code = ("import json, numpy as np, embedlens as el\n"
            f"r = el.load_dataset({ds.name!r}).load_brain_results('lda')\n"
            "x = np.asarray(el.load_dataset(r.samples.dataset_name).get_embeddings('pixels'))\n"
            "print(json.dumps({'p': r.project(x[:5]).tolist(), 'comps': r.components}))\n")
    out = _fresh_python(code, ds.path.parent)
    np.testing.assert_allclose(out["p"], r.points[:5], atol=1e-3)
    assert out["comps"] == [2, 3]
    umap_like = compute_visualization(ds, points=np.zeros((len(ds), 2)))
    with pytest.raises(ValueError, match="needs a linear layout"):
        umap_like.project(w)
    with pytest.raises(ValueError, match="64 columns"):
        r.project(np.zeros((2, 5)))


# ---------------------------------------------------------------------------------------------- thumbnails


def test_thumbnails_at_their_points_never_overlap(ds):
    from embedlens.brain.plots import THUMBNAIL_SPACING, spread_sample

    r = compute_visualization(ds, embeddings="pixels", method="pca", progress=False)
    rows, side = spread_sample(r.points, 40)
    assert side == pytest.approx(THUMBNAIL_SPACING / np.sqrt(40)) and 10 <= len(rows) <= 40
    u = (r.points - r.points.min(0)) / np.ptp(r.points, axis=0)
    cheb = np.abs(u[rows][:, None] - u[rows][None]).max(axis=2) + np.eye(len(rows))
    assert cheb.min() >= side  # no two boxes overlap
    again, _ = spread_sample(r.points, 40)
    assert again.tolist() == rows.tolist()  # seeded: the same images each time
    plot = r.visualize(labels="ground_truth.label", thumbnails=40)
    images = plot.figure.layout.images
    assert len(images) == len(rows) and images[0].source.startswith("data:image/jpeg;base64,")
    np.testing.assert_allclose(sorted((i.x, i.y) for i in images), sorted(map(tuple, r.points[rows].astype(float))),
                               rtol=1e-6)
    assert images[0].sizex == pytest.approx(side * np.ptp(r.points[:, 0]))
    m = r.visualize(labels="ground_truth.label", thumbnails=40, backend="matplotlib")
    from matplotlib.offsetbox import AnnotationBbox

    boxes = [a for a in m.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == len(rows)
    with pytest.raises(ValueError, match="thumbnails must be a positive"):
        r.visualize(thumbnails=0)


def test_thumbnails_of_photos(photos):
    ds = el.Dataset("viz_photos")
    ds.add_samples([el.Sample(p) for p in photos.values()])
    r = compute_visualization(ds, points=np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]]))
    plot = r.visualize(thumbnails=5)
    assert len(plot.figure.layout.images) == 5  # far enough apart: every photo fits


def test_cli_takes_the_t_sne_spelling(ds, monkeypatch):
    from typer.testing import CliRunner

    from embedlens.cli import app

    monkeypatch.setenv("EMBEDLENS_HOME", str(ds.path.parent))
    out = CliRunner().invoke(app, ["visualize", ds.name, "--embeddings", "pixels", "--method", "t-sne", "--seed", "0",
                                   "--json"], prog_name="embedlens")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["method"] == "tsne" and ds.get_brain_info("tsne")["method"] == "tsne"


def test_object_plots_take_fiftyones_per_object_spellings(tiles):
    """The Brain guide's object plot: labels=F("gt.detections.label"), sizes=F("gt.detections[]").apply(area)."""
    F = el.F
    ds = tiles
    r = compute_visualization(ds, points=np.random.default_rng(5).normal(size=(96, 2)), patches_field="digits")
    area = F("bounding_box")[2] * F("bounding_box")[3]
    plot = r.visualize(labels=F("digits.detections.label"), sizes=F("digits.detections[]").apply(area))
    patches = ds.to_patches("digits")
    assert {t.name: len(t.x) for t in plot.data} == patches.count_values("digits.label")
    assert r.values("digits.detections.label") == patches.values("digits.label")
    assert r.values(F("digits.detections[]").apply(area)) == pytest.approx([0.25] * 96)


def test_thumbnails_of_objects_are_their_boxes(tiles):
    r = compute_visualization(tiles, points=np.random.default_rng(6).normal(size=(96, 2)), patches_field="digits")
    plot = r.visualize(thumbnails=20, backend="matplotlib")
    from matplotlib.offsetbox import AnnotationBbox

    boxes = [a for a in plot.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert 5 <= len(boxes) <= 20
    # Each image is one digit cell (a quarter of its tile): square, not the whole 2x2 tile.
    shapes = {b.offsetbox.get_data().shape[:2] for b in boxes}
    assert all(abs(h - w) <= 1 for h, w in shapes)
    tile = np.asarray(Image.open(tiles.first().filepath))
    assert all(h <= tile.shape[0] // 2 + 1 for h, _ in shapes)


@pytest.mark.parametrize("method", ["umap", "tsne", "pca", "lda"])
def test_unknown_reducer_arguments_are_refused_before_any_embedding(ds, method):
    """Regression: FiftyOne-only arguments (similarity_index=...) reached the reducer after the embeddings
    were computed, so the error came minutes late and the new set was already stored."""
    before = set(ds.list_embeddings())
    with pytest.raises(el.InvalidInputError, match="similarity_index"):
        el.compute_visualization(ds, model="pixels", embeddings_field="px_new", method=method,
                                 labels_field="ground_truth", similarity_index="sim")
    assert set(ds.list_embeddings()) == before
    el.compute_visualization(ds, embeddings="pixels", method=method, labels_field="ground_truth",
                             **{"umap": {"min_dist": 0.2}, "tsne": {"perplexity": 20.0},
                                "pca": {"whiten": True}, "lda": {"solver": "svd"}}[method])
