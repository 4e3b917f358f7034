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
