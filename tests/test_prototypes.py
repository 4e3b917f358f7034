"""Class prototypes of a real classifier trained here on real digits: the head exposed by feature_extractor,
scores equal to the head's logits, rankings equal to ``X @ W[c]``, arrows in the LDA plane."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.brain.prototypes import PrototypeResults, compute_prototypes

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _pixels(img: Image.Image) -> np.ndarray:
    """The 8x8 digit as 64 values in [0, 1] (the classifier's input)."""
    return np.asarray(img.convert("L").resize((8, 8)), np.float32).reshape(-1) / np.float32(255.0)


@pytest.fixture(scope="module")
def trained(digits_px):
    """A small MLP (64 -> 32 -> 10) trained on the digits for 300 full-batch Adam steps (~1 s)."""
    import torch

    ds = digits_px[0]
    x = np.stack([_pixels(Image.open(p)) for p in ds.values("filepath")])
    y = np.array([int(v) for v in ds.values("ground_truth.label")])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        logits = net(xt).numpy()
    assert (logits.argmax(1) == y).mean() > 0.95  # it learned the digits
    return net, x, logits


@pytest.fixture
def ds(digits_px_clean):
    return digits_px_clean


def test_feature_extractor_exposes_the_head(trained):
    net, x, logits = trained
    fe = el.feature_extractor(net, transform=_pixels, classes=NAMES)
    head = fe.head
    np.testing.assert_array_equal(head.weights, net[3].weight.detach().numpy())
    np.testing.assert_array_equal(head.bias, net[3].bias.detach().numpy())
    assert head.classes == NAMES and head.prototypes.shape == (10, 32)
    emb = fe.embed_batch(x[:50])
    np.testing.assert_allclose(head.logits(emb), logits[:50], rtol=1e-5, atol=1e-5)
    assert el.feature_extractor(net).head.classes == [str(i) for i in range(10)]
    with pytest.raises(el.InvalidInputError, match="has no head"):
        el.from_torch(net, transform=_pixels, layer="1").head


def test_prototype_scores_rank_exactly_as_x_dot_w(ds, trained):
    net, _, logits = trained
    fe = el.feature_extractor(net, transform=_pixels, classes=NAMES)
    r = compute_prototypes(ds, head=fe, brain_key="protos", progress=False)
    assert isinstance(r, PrototypeResults) and r.classes == NAMES and r.field == "prototype_scores"
    x = np.asarray(ds.get_embeddings(r.config["embeddings_field"]))
    w, b = fe.head.weights, fe.head.bias
    # The scores are the classifier's logits (embedding . W[c] + b[c]) ...
    np.testing.assert_allclose(r.class_scores, logits, rtol=1e-4, atol=1e-4)
    ids = ds.values("id")
    pos = {i: k for k, i in enumerate(ids)}
    for c, name in enumerate(NAMES):
        dots = x @ w[c]
        # ... and the field ranks samples exactly as x @ W[c] does (a valid descending order of those numbers).
        order = ds.sort_by(f"prototype_scores.{name}", reverse=True).values("id")
        assert sorted(order) == sorted(ids)
        ranked = dots[[pos[i] for i in order]]
        assert (np.diff(ranked) <= 0).all()
        assert r.sort_by(name).values("id") == [ids[i] for i in np.argsort(-dots, kind="stable")]
        np.testing.assert_array_equal(r.scores_of(name), dots.astype(np.float64) + float(b[c]))
    assert ds.first()["prototype_scores"].keys() == set(NAMES)
    # The most "three-ish" samples are threes.
    top = r.sort_by("three").limit(20).values("ground_truth.label")
    assert top.count("3") >= 19
    # Deleting the run deletes the field; the head's arrays came back with a fresh load.
    np.testing.assert_array_equal(ds.load_brain_results("protos").head.weights, w)
    ds.delete_brain_run("protos")
    assert "prototype_scores" not in ds.get_field_schema()


def test_sort_by_similarity_to_a_prototype_with_dotproduct_ranks_as_x_dot_w(ds, trained):
    """The issue's example: a dotproduct similarity index queried with the prototype W[c] ranks as X @ W[c]."""
    from embedlens.brain.similarity import compute_similarity

    net, _, _ = trained
    fe = el.feature_extractor(net, transform=_pixels, classes=NAMES)
    r = compute_prototypes(ds, head=fe, progress=False)
    name = r.config["embeddings_field"]
    x = np.asarray(ds.get_embeddings(name)).astype(np.float64)
    compute_similarity(ds, embeddings=name, metric="dotproduct", brain_key="dot", progress=False)
    pos = {i: k for k, i in enumerate(ds.values("id"))}
    for c, cname in enumerate(NAMES):
        w = fe.head.weights[c]
        dots = x @ w.astype(np.float64)
        view = ds.sort_by_similarity(w, brain_key="dot", dist_field="d")
        got = np.array([pos[i] for i in view.values("id")])
        tol = 1e-5 * np.abs(dots).max()  # float32 rounding of a product
        assert sorted(got.tolist()) == list(range(len(x)))
        assert (np.diff(dots[got]) <= tol).all()  # descending x . W[c]; near-equal products in either order
        want = np.lexsort((np.arange(len(x)), -dots))
        gap = np.diff(dots[want]) < -tol
        clear = np.r_[True, gap] & np.r_[gap, True]
        np.testing.assert_array_equal(got[clear], want[clear])  # every row without a near-tie in its place
        assert clear.mean() > 0.9
        np.testing.assert_allclose(view.values("d"), -dots[got], rtol=1e-5, atol=tol)
        # ... the same top 20 as the prototype score field (which adds the bias: the same order)
        top = view.limit(20).values("id")
        assert set(top) == set(r.sort_by(cname).limit(20).values("id"))


def test_sort_by_prototype_reads_the_field_from_the_run(ds):
    w = np.random.default_rng(0).normal(size=(3, 64))
    compute_prototypes(ds, head=(w, np.zeros(3), ["roses", "tulips", "sea lion"]), embeddings="px",
                       brain_key="flowers", scores_field="flower_scores")
    view = ds.match_tags("test").sort_by_prototype("flowers", "roses")
    same = ds.match_tags("test").sort_by("flower_scores.roses", reverse=True)
    assert view.to_dicts() == same.to_dicts() and view.values("id") == same.values("id")
    x = np.asarray(ds.get_embeddings("px"), dtype=np.float64)
    pos = {i: k for k, i in enumerate(ds.values("id"))}
    scores = (x @ w[1])[[pos[i] for i in ds.sort_by_prototype("flowers", "tulips", reverse=False).values("id")]]
    assert (np.diff(scores) >= 0).all() and len(scores) == len(ds)
    assert view.to_dicts()[-1]["_stage"] == "SortBy"  # a plain sort_by: a saved view needs no run
    ds.delete_brain_run("flowers")
    assert "flower_scores" not in ds.get_field_schema()
    with pytest.raises(el.NotFoundError, match="no brain run 'flowers'"):
        ds.sort_by_prototype("flowers", "roses")
    compute_prototypes(ds, head=(w, np.zeros(3), ["roses", "tulips", "sea lion"]), embeddings="px",
                       brain_key="flowers", scores_field="flower_scores")
    with pytest.raises(el.NotFoundError, match=r"no class 'lilies' in prototype run 'flowers'; classes: \['roses'"):
        ds.sort_by_prototype("flowers", "lilies")
    with pytest.raises(el.InvalidInputError, match=r"load_brain_results\('flowers'\).sort_by\('sea lion'\)"):
        ds.sort_by_prototype("flowers", "sea lion")
    el.compute_visualization(ds, embeddings="px", method="pca", brain_key="pca")
    with pytest.raises(el.InvalidInputError, match="'pca' is a visualization run, not a compute_prototypes run"):
        ds.sort_by_prototype("pca", "roses")


def test_a_predictions_run_is_a_head_too(ds):
    pred = el.compute_predictions(ds, embeddings="px", pred_field="pred", folds=3, progress=False)
    r = compute_prototypes(ds, predictions_run="pred", brain_key="pp", scores_field="pp")
    np.testing.assert_allclose(r.class_scores, pred.classifier.decision_function(np.asarray(ds.get_embeddings("px"))),
                               rtol=1e-6, atol=1e-6)
    assert r.classes == pred.classes and r.config["embeddings_field"] == "px"


def test_prototypes_drawn_as_arrows_in_the_lda_plane(ds, trained):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    net, _, _ = trained
    fe = el.feature_extractor(net, transform=_pixels, classes=NAMES)
    r = compute_prototypes(ds, head=fe, progress=False)
    name = r.config["embeddings_field"]
    x = np.asarray(ds.get_embeddings(name))
    y = np.array(ds.values("ground_truth.label"))
    el.compute_visualization(ds, embeddings=name, method="lda", labels_field="ground_truth", brain_key="lda")
    words = [NAMES[int(v)] for v in y]
    plot = r.visualize("lda", labels=words)
    arrows = plot.figure.layout.annotations
    assert [a.text for a in arrows] == [f"<b>{n}</b>" for n in NAMES]
    # The notebook's formula: prototypes rotated by the LDA scalings, not centred, then scaled for display.
    lda = LinearDiscriminantAnalysis(n_components=2).fit(x, y)
    want = fe.head.weights @ lda.scalings_[:, :2] * plot.arrow_scale
    got = np.array([[a.x, a.y] for a in arrows])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert all((a.ax, a.ay) == (0, 0) for a in arrows)
    # Each arrow has its class's colour.
    colour = {t.name: t.marker.color for t in plot.figure.data}
    assert all(a.arrowcolor == colour[n] for a, n in zip(arrows, NAMES))
    # Without a run: an LDA plane is fitted now; matplotlib draws the same arrows.
    m = r.visualize(labels_field="ground_truth", backend="matplotlib")
    texts = [t.get_text().strip() for t in m.axes[0].texts if t.get_text().strip()]
    assert texts == NAMES
    pca = r.visualize()  # no labels: PCA
    assert len(pca.figure.layout.annotations) == 10
    umap_like = el.compute_visualization(ds, points=np.zeros((len(ds), 2)))
    with pytest.raises(el.InvalidInputError, match="linear plane"):
        r.visualize(umap_like)


def _arrow_ends_inside_the_axes(plot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrow ends and the axes' limits: matplotlib's drawn limits; plotly's autorange, which spans its traces."""
    if plot.backend == "matplotlib":
        ax = plot.figure.axes[0]
        plot.figure.canvas.draw()
        ends = np.array([a.xy for a in ax.texts if getattr(a, "arrow_patch", None) is not None], dtype=float)
        return ends, np.array([ax.get_xlim()[0], ax.get_ylim()[0]]), np.array([ax.get_xlim()[1], ax.get_ylim()[1]])
    ends = np.array([[a.x, a.y] for a in plot.figure.layout.annotations], dtype=float)
    xs = np.concatenate([np.asarray(t.x, float) for t in plot.figure.data])
    ys = np.concatenate([np.asarray(t.y, float) for t in plot.figure.data])
    return ends, np.array([xs.min(), ys.min()]), np.array([xs.max(), ys.max()])


@pytest.mark.parametrize("backend", ["plotly", "matplotlib"])
def test_arrows_stay_inside_the_axes_of_a_flat_cloud(ds, backend):
    """Prototypes along the 1st and 8th principal axes of the digits: the 8th spans far less than the 95% reach
    of the points, so arrows scaled to that reach ran past the axes; now every end is inside them."""
    x = np.asarray(ds.get_embeddings("px"), dtype=np.float64)
    viz = el.compute_visualization(ds, embeddings="px", method="pca", components=(1, 8), brain_key="pca")
    v1, v2 = viz.projection[:, 0], viz.projection[:, 1]
    w = np.stack([v1, -v1, v2, -v2, 0.5 * (v1 + v2)])
    r = compute_prototypes(ds, head=(w, None, ["+pc1", "-pc1", "+pc8", "-pc8", "diag"]), embeddings="px",
                           brain_key="axes")
    plot = r.visualize("pca", backend=backend)
    ends, lo, hi = _arrow_ends_inside_the_axes(plot)
    assert len(ends) == 5
    assert (ends >= lo - 1e-9).all() and (ends <= hi + 1e-9).all(), (ends, lo, hi)
    pts = viz.points[:, :2].astype(np.float64)
    # the rule: inside the points' own box (centred points: the origin is inside it) and as long as the box
    # allows -- one arrow touches its edge; directions and ratios are kept
    box_lo, box_hi = pts.min(0), pts.max(0)
    assert (box_lo < 0).all() and (box_hi > 0).all()
    assert (ends >= box_lo - 1e-9).all() and (ends <= box_hi + 1e-9).all()
    assert np.isclose(ends, box_lo).any() or np.isclose(ends, box_hi).any()
    reach = np.quantile(np.linalg.norm(pts, axis=1), 0.95)
    assert plot.arrow_scale * np.linalg.norm(viz.project(w, directions=True)[:, :2], axis=1).max() <= reach + 1e-9
    np.testing.assert_allclose(ends, viz.project(w, directions=True)[:, :2] * plot.arrow_scale, atol=1e-9)
    assert x.shape[1] == w.shape[1]


def test_arrow_scale_keeps_arrows_in_the_box_of_points_anywhere():
    from embedlens.brain.prototypes import arrow_scale

    rng = np.random.default_rng(0)
    for _ in range(200):
        pts = rng.normal(size=(300, 2)) * rng.uniform(0.01, 10, 2)  # flat clouds, any shape
        pts -= pts.mean(axis=0)  # centred, as PCA and LDA points are
        arrows = rng.normal(size=(6, 2)) * rng.uniform(0.01, 10, 2)
        ends = arrows * arrow_scale(arrows, pts)
        lo, hi = pts.min(0), pts.max(0)
        tol = 1e-9 * np.abs(pts).max()
        assert (ends >= lo - tol).all() and (ends <= hi + tol).all()
        # off-centre: every end still inside the box extended to the origin, where it points into it
        off = pts + rng.normal(0, 5, 2)
        ends = arrows * arrow_scale(arrows, off)
        lo, hi = np.minimum(off.min(0), 0), np.maximum(off.max(0), 0)
        inward = ((arrows > 0) & (hi > 0)) | ((arrows < 0) & (lo < 0))
        assert ((ends >= lo - tol) & (ends <= hi + tol) | ~inward).all()


@pytest.mark.parametrize("kwargs, match", [
    ({}, "one of them"),
    ({"head": "nope"}, "head must be"),
    ({"head": (np.zeros((3, 5)), np.zeros(3))}, "prototypes are 5-d but the embeddings are 64-d"),
    ({"head": {"weights": np.zeros((3, 64)), "colour": 1}}, "a head dict"),
    ({"head": (np.zeros((3, 64)), np.zeros(2))}, "one value per class"),
    ({"predictions_run": "missing"}, "no brain run 'missing'"),
    ({"head": (np.zeros((3, 64)),), "scores_field": "bad name"}, "invalid field name"),
])
def test_bad_input_is_refused_before_any_write(ds, kwargs, match):
    before = set(ds.get_field_schema())
    with pytest.raises(el.EmbedlensError, match=match):
        compute_prototypes(ds, embeddings="px", brain_key="never", **kwargs)
    assert set(ds.get_field_schema()) == before and "never" not in ds.list_brain_runs()


def test_photos_are_scored_too(photos, tmp_path):
    """Real photos through the default-sized transform: a head over pixel embeddings of 5 skimage photos."""
    ds = el.Dataset("photo_protos")
    ds.add_samples([el.Sample(p) for p in photos.values()])
    from embedlens.models.pixels import PixelsModel

    x = ds.compute_embeddings(PixelsModel(size=(16, 16), grayscale=True), embeddings_field="px", progress=False)
    assert np.isfinite(x).all()
    w = np.random.default_rng(0).normal(size=(2, x.shape[1])).astype(np.float32)
    r = compute_prototypes(ds, head=(w, np.array([0.5, -0.5]), ["bright", "dark"]), embeddings="px")
    np.testing.assert_allclose(r.class_scores, (np.asarray(x) @ w.T).astype(np.float64) + [0.5, -0.5], rtol=1e-5)
    order = ds.sort_by("prototype_scores.bright", reverse=True).values("id")
    assert order == [ds.values("id")[i] for i in np.argsort(-(np.asarray(x) @ w[0]), kind="stable")]


def test_compare_layers_of_one_model(ds, trained):
    """compare_embeddings over layers of the classifier trained here (from_torch(layer=...) sets) and pixels."""
    net, _, _ = trained
    sets = {"pixels": "px",
            "hidden": el.from_torch(net, transform=_pixels, layer="1", name="mlp-hidden"),
            "logits": el.from_torch(net, transform=_pixels, layer="3", name="mlp-logits")}
    cmp = el.compare_embeddings(ds, sets, labels_field="ground_truth", trust_samples=300, queries=1)
    m = cmp.metrics
    assert cmp.sets == ["pixels", "hidden", "logits"]
    assert cmp.config["embeddings_fields"]["hidden"] != cmp.config["embeddings_fields"]["logits"]
    # Trained layers put same-digit samples together at least as well as raw pixels do.
    assert m["logits"]["label_agreement"] > 0.95 and m["hidden"]["label_agreement"] > 0.95
    assert 0 < m["agreement"]["hidden"]["logits"] < 1
