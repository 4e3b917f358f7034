"""compute_predictions, compute_mistakenness, compute_hardness, propose_labels on real digits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import embedlens as el
from embedlens.brain.hardness import compute_hardness
from embedlens.brain.mistakenness import box_iou, compute_mistakenness
from embedlens.brain.predictions import compute_predictions
from embedlens.brain.proposals import propose_labels
from embedlens.zoo import load_sample_dataset


@pytest.fixture
def digits():
    ds = load_sample_dataset("digits", progress=False)
    ds.compute_embeddings("pixels", embeddings_field="pixels", progress=False)
    return ds


def _flip(ds, fraction=0.05, seed=0):
    true = ds.values("ground_truth.label")
    rng = np.random.default_rng(seed)
    flip = rng.choice(len(true), int(len(true) * fraction), replace=False)
    noisy = list(true)
    for i in flip:
        noisy[i] = str((int(true[i]) + int(rng.integers(1, 10))) % 10)
    ds.set_values("ground_truth.label", noisy)
    wrong = np.zeros(len(true), bool)
    wrong[flip] = True
    return wrong


def test_predictions_are_out_of_fold_and_stored(digits):
    r = compute_predictions(digits, embeddings="pixels", folds=5, progress=False)
    preds = digits.values("predictions")
    assert all(p is not None and len(p.logits) == 10 for p in preds)
    labels = digits.values("ground_truth.label")
    acc = np.mean([p.label == g for p, g in zip(preds, labels)])
    assert acc == pytest.approx(r.accuracy) and 0.9 < acc < 1.0  # honest: held-out accuracy, not 100%
    # the classifier fitted on everything does better on its own training data than out of fold
    X = digits.get_embeddings("pixels")
    assert np.mean(np.array(r.classifier.predict(X)) == np.array(labels)) > acc
    assert r.classifier.prototypes.shape == (10, X.shape[1])
    again = digits.load_brain_results("predictions")
    np.testing.assert_allclose(again.classifier.decision_function(X[:5]), r.classifier.decision_function(X[:5]))
    assert digits.info["classes"]["predictions"] == [str(d) for d in range(10)]
    with pytest.raises(ValueError, match="exists"):
        compute_predictions(digits, embeddings="pixels", progress=False)


def test_mistakenness_finds_flipped_labels(digits):
    wrong = _flip(digits)
    compute_predictions(digits, embeddings="pixels", progress=False)
    res = compute_mistakenness(digits, "predictions")
    assert res.config["method"] == "confident-learning+neighbours"  # embeddings found through the run
    scores = np.array(digits.values("mistakenness"))
    assert scores.min() >= 0 and scores.max() <= 1
    top = np.argsort(-scores)[:wrong.sum()]
    assert roc_auc_score(wrong, scores) > 0.98 and wrong[top].mean() > 0.8
    # the plain 1 - p(label) baseline does worse than the combined score
    preds = digits.values("predictions")
    given = digits.values("ground_truth.label")
    p_given = [np.exp(p.logits[int(g)]) / np.exp(p.logits).sum() for p, g in zip(preds, given)]
    assert roc_auc_score(wrong, scores) > roc_auc_score(wrong, 1 - np.array(p_given))
    digits.delete_brain_run("mistakenness")
    assert "mistakenness" not in digits.get_field_schema()


def test_hardness_is_normalised_entropy(digits):
    compute_predictions(digits, embeddings="pixels", progress=False)
    compute_hardness(digits, "predictions")
    h = np.array(digits.values("hardness"))
    logits = np.array([p.logits for p in digits.values("predictions")])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1) / np.log(10)
    np.testing.assert_allclose(h, want, atol=1e-9)
    assert 0 <= h.min() and h.max() <= 1


def test_label_proposals_on_the_unlabelled_split(digits):
    truth = dict(zip(digits.values("id"), digits.values("ground_truth.label")))
    res = propose_labels(digits, embeddings="pixels", unlabeled=digits.match_tags("train"), min_confidence=0.5)
    train = digits.match_tags("train")
    assert res.num_labeled + res.num_left == len(train)
    got = train.exists("hypothesis")
    assert len(got) == res.num_labeled and res.num_labeled / len(train) > 0.9
    acc = np.mean([truth[i] == lab for i, lab in zip(got.values("id"), got.values("hypothesis.label"))])
    assert acc > 0.95
    assert all(c >= 0.5 for c in got.values("hypothesis.confidence"))
    assert digits.match_tags("test").exists("hypothesis").count() == 0


def test_bad_inputs_change_nothing(digits):
    before = digits.get_field_schema()
    with pytest.raises(el.UnknownFieldError, match="pred_field 'nope'"):
        compute_mistakenness(digits, "nope")
    digits.set_values("bare", [el.Classification("1")] * len(digits))
    digits.info.setdefault("classes", {})["bare"] = [str(d) for d in range(10)]
    with pytest.raises(ValueError, match="has no logits"):
        compute_mistakenness(digits, "bare")
    with pytest.raises(ValueError, match="has no logits"):
        compute_hardness(digits, "bare")
    digits.set_values("det", [el.Detections()] * len(digits))
    with pytest.raises(ValueError, match="both must be Classification, or both Detections"):
        compute_mistakenness(digits, "det")
    with pytest.raises(ValueError, match="at least 2 classes"):
        compute_predictions(digits.match(el.F("ground_truth.label") == "3"), embeddings="pixels", progress=False)
    with pytest.raises(ValueError, match="folds must be at least 2"):
        compute_predictions(digits, embeddings="pixels", folds=1, progress=False)
    assert {k: v for k, v in digits.get_field_schema().items() if k not in ("bare", "det")} == before
    assert "mistakenness" not in digits.get_field_schema() and digits.list_brain_runs() == []


def test_a_class_with_one_sample_is_predicted_without_crashing(digits):
    view = digits.limit(200)
    ids = view.values("id")
    digits.select(ids[0]).set_values("ground_truth.label", ["lonely"])
    compute_predictions(view, embeddings="pixels", progress=False)
    pred = digits[ids[0]].predictions
    assert pred.label != "lonely"  # no fold held a model that knew the class: its label looks wrong


# ---------------------------------------------------------------------------------------------- detection


def test_box_iou():
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.5, 0.5], [0.6, 0.6, 0.1, 0.1]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 0.125 / 0.375, 0.0]])


def test_detection_mistakes_of_each_kind():
    def det(label, box, conf=None):
        return el.Detection(label, box, confidence=conf)

    ds = el.Dataset()
    gt = el.Detections(detections=[
        det("cat", [0.05, 0.05, 0.2, 0.2]),   # right
        det("dog", [0.4, 0.05, 0.2, 0.2]),    # wrong class: the model says car
        det("cat", [0.05, 0.5, 0.2, 0.2]),    # shifted box
        det("bus", [0.7, 0.7, 0.2, 0.2]),     # spurious: nothing there
    ])
    pred = el.Detections(detections=[
        det("cat", [0.05, 0.05, 0.2, 0.2], 0.95),
        det("car", [0.4, 0.05, 0.2, 0.2], 0.9),
        det("cat", [0.12, 0.55, 0.2, 0.2], 0.9),
        det("bike", [0.4, 0.6, 0.15, 0.15], 0.8),  # missing from the ground truth
    ])
    ds.add_sample(el.Sample("/img.png", ground_truth=gt, predictions=pred))
    compute_mistakenness(ds, "predictions", copy_missing=True)
    g = ds.first().ground_truth.detections
    assert [round(d.mistakenness, 3) for d in g[:4]] == [0.0, 0.9, 0.0, 0.0]
    assert g[0].mistakenness_loc == pytest.approx(0.0, abs=1e-9) and g[2].mistakenness_loc > 0.4
    assert [d.possible_spurious for d in g[:4]] == [False, False, False, True]
    assert len(g) == 5 and g[4].label == "bike" and g[4].possible_missing is True
    p = ds.first().predictions.detections
    assert [d.possible_missing for d in p] == [False, False, False, True]
    s = ds.first()
    assert s.mistakenness == 1.0 and s.possible_missing == 1 and s.possible_spurious == 1


def test_label_quality_commands(digits):
    import json

    from typer.testing import CliRunner

    from embedlens.cli import app

    run = CliRunner().invoke
    out = run(app, ["predictions", "digits", "--embeddings", "pixels", "--no-progress", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["out_of_fold_accuracy"] > 0.9
    out = run(app, ["mistakes", "digits", "--top", "3", "--no-progress", "--json"])
    assert out.exit_code == 0, out.output
    top = json.loads(out.stdout)["top"]
    assert len(top) == 3 and top[0]["mistakenness"] >= top[2]["mistakenness"] and top[0]["label"] is not None
    out = run(app, ["hardness", "digits", "--json"])
    assert out.exit_code == 0 and len(json.loads(out.stdout)["top"]) == 10
    out = run(app, ["propose-labels", "digits", "--unlabeled-tags", "train", "--embeddings", "pixels",
                    "--no-progress", "--json"])
    report = json.loads(out.stdout)
    assert report["labeled"] + report["left"] == digits.match_tags("train").count()
    out = run(app, ["mistakes", "digits", "--pred-field", "nope", "--field", "m2"])
    assert out.exit_code == 1 and "nope" in out.output
