"""Label-quality benchmarks: finding flipped labels, planted detection mistakes, and label proposals.

Run: ``.venv/bin/python bench/bench_mistakes.py [--quick]``.

1. Label noise: 5% of the labels of MNIST-5000 and of digits flipped to another class at random (seed 0).
   Out-of-fold predictions (compute_predictions) on the noisy labels, then, on the SAME probabilities:
   embedlens mistakenness, the plain ``1 - p(given label)``, cleanlab's ``get_label_quality_scores``
   (self-confidence) and ``find_label_issues`` (its ranking of flagged issues). AUROC, average precision,
   precision at N (N = number of flipped labels). Pixels and EfficientNet-Lite0 embeddings.
2. Detection: a generated set of boxes with planted mistakes of four kinds; recall of each kind among the
   top-ranked objects of the score that should find it.
3. Label proposals on MNIST: ``test`` labelled, ``train`` unlabelled; accuracy and coverage.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import save, table  # noqa: E402

ROOT = Path(tempfile.gettempdir()) / "embedlens-bench-mistakes"
os.environ.setdefault("EMBEDLENS_HOME", str(ROOT / "home"))
os.environ.setdefault("EMBEDLENS_MODEL_CACHE", str(ROOT / "models"))

import embedlens as el  # noqa: E402
from embedlens.brain.mistakenness import compute_mistakenness  # noqa: E402
from embedlens.brain.predictions import compute_predictions  # noqa: E402
from embedlens.brain.proposals import propose_labels  # noqa: E402


def metrics(wrong: np.ndarray, scores: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    top = np.argsort(-scores, kind="stable")[: wrong.sum()]
    return {"auroc": roc_auc_score(wrong, scores), "ap": average_precision_score(wrong, scores),
            "p_at_n": float(wrong[top].mean())}


def embedded(name: str, kind: str):
    ds = el.load_sample_dataset(name, progress=False)
    if kind == "pixels":
        ds.compute_embeddings("pixels", embeddings_field="pixels", progress=False)
    else:
        ds.compute_embeddings(el.DEFAULT_MODEL, embeddings_field="efficientnet", progress=True)
    return ds


def label_noise(name: str, kind: str) -> list[dict]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    base = embedded(name, kind)
    ds = base.clone(f"{name}-{kind}-noisy", persistent=False)  # keeps the embeddings
    field = "pixels" if kind == "pixels" else "efficientnet"
    true = ds.values("ground_truth.label")
    rng = np.random.default_rng(0)
    flip = rng.choice(len(true), len(true) // 20, replace=False)
    noisy = list(true)
    for i in flip:
        noisy[i] = str((int(true[i]) + int(rng.integers(1, 10))) % 10)
    ds.set_values("ground_truth.label", noisy)
    wrong = np.zeros(len(true), bool)
    wrong[flip] = True
    t = time.perf_counter()
    compute_predictions(ds, embeddings=field, progress=False)
    t_pred = time.perf_counter() - t
    t = time.perf_counter()
    compute_mistakenness(ds, "predictions")
    t_mist = time.perf_counter() - t
    logits = np.array([p.logits for p in ds.values("predictions")])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    y = np.array([int(v) for v in noisy])
    p_given = probs[np.arange(len(y)), y]
    cl_scores = get_label_quality_scores(y, probs, method="self_confidence")
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    cl_rank = np.zeros(len(y))
    cl_rank[ranked] = np.linspace(1.0, 0.5, len(ranked)) if len(ranked) else 0  # flagged first, in its order
    case = f"{name} ({len(y)}) {kind}"
    rows = []
    for method, scores in (("embedlens mistakenness", np.array(ds.values("mistakenness"))),
                           ("1 - p(given label)", 1 - p_given),
                           ("cleanlab get_label_quality_scores", 1 - cl_scores),
                           ("cleanlab find_label_issues", cl_rank)):
        rows.append({"case": case, "method": method, **metrics(wrong, scores)})
    rows[0]["seconds"] = t_pred + t_mist
    return rows


def detection_mistakes(n_images: int = 500, seed: int = 0) -> list[dict]:
    from embedlens.brain.mistakenness import compute_mistakenness as cm

    rng = np.random.default_rng(seed)
    classes = ["car", "person", "bike", "dog", "bus"]
    samples, planted = [], {"wrong class": set(), "shifted box": set(), "deleted box": set(), "extra box": set()}
    for i in range(n_images):
        gts, preds = [], []
        for _ in range(int(rng.integers(2, 6))):
            w, h = rng.uniform(0.08, 0.25, 2)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            label = str(rng.choice(classes))
            conf = float(rng.uniform(0.6, 0.99))
            jitter = rng.normal(0, 0.005, 2)
            px, py = np.clip([x + jitter[0], y + jitter[1]], 0, [1 - w, 1 - h])
            pred = el.Detection(label, [float(px), float(py), float(w), float(h)], confidence=conf)
            gt = el.Detection(label, [float(x), float(y), float(w), float(h)])
            kind = rng.random()
            if kind < 0.04:
                gt.label = str(rng.choice([c for c in classes if c != label]))
                planted["wrong class"].add(gt.id)
            elif kind < 0.08:
                gt.bounding_box = [float(min(x + 0.45 * w, 1 - w)), float(y), float(w), float(h)]
                planted["shifted box"].add(gt.id)
            elif kind < 0.12:
                planted["deleted box"].add(pred.id)
                gt = None
            preds.append(pred)
            if gt is not None:
                gts.append(gt)
        if rng.random() < 0.1:
            extra = el.Detection(str(rng.choice(classes)), [0.9, 0.9, 0.08, 0.08])
            planted["extra box"].add(extra.id)
            gts.append(extra)
        samples.append(el.Sample(f"/synthetic/{i:05d}.png", ground_truth=el.Detections(detections=gts),
                                 predictions=el.Detections(detections=preds)))
    ds = el.Dataset(persistent=False)
    ds.add_samples(samples)
    t = time.perf_counter()
    cm(ds, "predictions")
    seconds = time.perf_counter() - t
    gt_p = ds.to_patches("ground_truth")
    pr_p = ds.to_patches("predictions")
    ranking = {
        "wrong class": (gt_p.values("id"), gt_p.values("ground_truth.mistakenness")),
        "shifted box": (gt_p.values("id"), gt_p.values("ground_truth.mistakenness_loc")),
        "extra box": (gt_p.values("id"), [float(v) for v in gt_p.values("ground_truth.possible_spurious")]),
        "deleted box": (pr_p.values("id"), [float(v) for v in pr_p.values("predictions.possible_missing")]),
    }
    rows = []
    for kind, (ids, scores) in ranking.items():
        order = np.argsort(-np.array(scores, float), kind="stable")[: len(planted[kind])]
        found = sum(ids[i] in planted[kind] for i in order)
        rows.append({"mistake": kind, "planted": len(planted[kind]), "recall_at_planted": found / len(planted[kind]),
                     "seconds_all": seconds})
    return rows


def proposals(kind: str) -> dict:
    ds = embedded("mnist", kind).clone(f"mnist-{kind}-proposals", persistent=False)
    field = "pixels" if kind == "pixels" else "efficientnet"
    truth = dict(zip(ds.values("id"), ds.values("ground_truth.label")))
    t = time.perf_counter()
    res = propose_labels(ds, embeddings=field, unlabeled=ds.match_tags("train"))
    seconds = time.perf_counter() - t
    got = ds.match_tags("train").exists("hypothesis")
    acc = np.mean([truth[i] == lab for i, lab in zip(got.values("id"), got.values("hypothesis.label"))])
    return {"embeddings": kind, "labelled": res.num_labeled, "left": res.num_left,
            "coverage": res.num_labeled / (res.num_labeled + res.num_left), "accuracy": float(acc),
            "seconds": seconds}


def main() -> None:
    quick = "--quick" in sys.argv
    noise = []
    cases = [("digits", "pixels"), ("mnist", "pixels")] + ([] if quick else [("mnist", "efficientnet"),
                                                                            ("digits", "efficientnet")])
    for name, kind in cases:
        noise += label_noise(name, kind)
    print(table(noise, ["case", "method", "auroc", "ap", "p_at_n", "seconds"]))
    det = detection_mistakes(200 if quick else 1000)
    print()
    print(table(det, ["mistake", "planted", "recall_at_planted", "seconds_all"]))
    props = [proposals("pixels")] + ([] if quick else [proposals("efficientnet")])
    print()
    print(table(props, ["embeddings", "labelled", "left", "coverage", "accuracy", "seconds"]))
    print("saved", save("mistakes" + ("-quick" if quick else ""), noise + det + props))


if __name__ == "__main__":
    main()
