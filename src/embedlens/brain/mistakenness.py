"""Which human labels are probably wrong: classification labels, and objects of detection labels."""

from __future__ import annotations

import warnings

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.labels import Detection
from .classify import graph_similarity, knn_vote, softmax
from .labels import check_new_field, field_type, label_indices, prediction_classes
from .contract import brain_method
from ..core.runs import BrainResults, check_new_key, register_type
from .source import embeddings_of_run, resolve_embeddings
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection

# A prediction this confident that matches no ground-truth object is a possibly missing label.
MISSING_CONFIDENCE = 0.5
# Boxes overlapping less than this "do not touch": a ground-truth object no prediction touches is
# possibly spurious, and a confident prediction touching no ground truth possibly missing.
TOUCH_IOU = 0.1


@register_type
class MistakennessResults(BrainResults):
    """Scores per sample (``scores``, NaN where a sample has no label) and what went into them."""

    run_type = "mistakenness"

    @property
    def scores(self) -> np.ndarray:
        return self._arrays["scores"]


@brain_method(key_param="mistakenness_field")
def compute_mistakenness(samples: "SampleCollection", pred_field: str, label_field: str = "ground_truth",
                         mistakenness_field: str = "mistakenness", use_logits: bool = True,
                         embeddings: Any = None, embeddings_field: str | None = None, k: int = 10,
                         missing_field: str = "possible_missing", spurious_field: str = "possible_spurious",
                         copy_missing: bool = False, iou: float = 0.5, classwise: bool = True,
                         overwrite: bool = False, progress: bool = True) -> MistakennessResults:
    """Score how likely each human label is wrong, higher = more suspicious, in [0, 1].

    **Classification.** Two estimates of the probability of the *given* label are averaged:

    1. the model's: softmax of ``pred_field``'s logits (``use_logits``), or its confidence spread over the
       other classes; use honest predictions, e.g. :func:`compute_predictions`'s out-of-fold ones;
    2. the neighbours': a similarity-weighted vote of the given labels of the sample's ``k`` nearest
       neighbours in embedding space (the shared kNN graph). Used when embeddings are known: passed in,
       or the ones ``pred_field`` was computed from by ``compute_predictions``.

    ``mistakenness = 1 - mean(p_model(label), p_neighbours(label))``. This is confident learning's
    self-confidence score, with the neighbours' vote as a second, independent classifier: a flipped label
    disagrees with both. On MNIST with 5% flipped labels it finds the flips with AUROC 0.995 and AP 0.93
    from pixels (cleanlab's self-confidence on the same probabilities: see ``bench/bench_mistakes.py``).

    **Detection** (``Detections`` in both fields). Predictions are matched to ground truth greedily by
    confidence, first within each class (``classwise``), then across classes, at IoU >= ``iou``. Each
    ground-truth object gets ``mistakenness`` (the confidence of a matched prediction of *another* class:
    the label is likely wrong) and ``mistakenness_loc`` (``confidence * (1 - IoU)`` of the best
    same-class prediction: the box is likely misplaced); an unmatched ground-truth object that no unmatched
    prediction touches (IoU >= 0.1) gets ``possible_spurious``; an unmatched prediction with confidence
    >= 0.5 that touches no unmatched ground truth gets ``possible_missing`` (and is copied into ``label_field`` with ``copy_missing``). Per sample:
    ``mistakenness_field`` = max over its objects, ``missing_field`` / ``spurious_field`` = counts.

    The run's brain key is ``mistakenness_field``; deleting it deletes the sample fields it wrote.
    """
    check_new_key(samples, mistakenness_field, overwrite)
    check_new_field(samples, mistakenness_field, overwrite)
    gt_type = field_type(samples, label_field, "label_field")
    pred_type = field_type(samples, pred_field, "pred_field")
    if {gt_type, pred_type} == {"Classification"}:
        return _classification(samples, pred_field, label_field, mistakenness_field, use_logits, embeddings,
                               embeddings_field, k, progress)
    if {gt_type, pred_type} == {"Detections"}:
        for f in (missing_field, spurious_field):
            check_new_field(samples, f, overwrite)
        return _detection(samples, pred_field, label_field, mistakenness_field, missing_field, spurious_field,
                          copy_missing, iou, classwise)
    raise InvalidInputError(f"label_field {label_field!r} is {gt_type} and pred_field {pred_field!r} is {pred_type}: "
                     "both must be Classification, or both Detections")


# ---------------------------------------------------------------------------------------------- classification


def _model_probs(preds: list[Any], ids: list[str], pred_field: str, use_logits: bool,
                 classes: list[str] | None) -> tuple[np.ndarray, list[str]]:
    if use_logits:
        missing = [i for i, p in zip(ids, preds) if p is not None and p.logits is None]
        if missing:
            raise InvalidInputError(f"sample {missing[0]!r}: {pred_field!r} has no logits ({len(missing)} samples); "
                             "store them (apply_model(store_logits=True), compute_predictions) "
                             "or pass use_logits=False")
        rows = [p.logits for p in preds if p is not None]
        n = len(rows[0])
        classes = prediction_classes_or_fail(classes, pred_field, n)
        logits = np.zeros((len(preds), n))
        for i, p in enumerate(preds):
            if p is not None:
                if len(p.logits) != n:
                    raise InvalidInputError(f"sample {ids[i]!r}: {len(p.logits)} logits in {pred_field!r}, others have {n}")
                logits[i] = p.logits
        return softmax(logits), classes
    if classes is None:
        classes = sorted({p.label for p in preds if p is not None and p.label is not None})
    index = {c: j for j, c in enumerate(classes)}
    probs = np.zeros((len(preds), len(classes)))
    for i, p in enumerate(preds):
        if p is None or p.label is None:
            continue
        conf = 1.0 if p.confidence is None else float(p.confidence)
        probs[i] = (1.0 - conf) / max(len(classes) - 1, 1)
        probs[i, index[p.label]] = conf
    return probs, classes


def prediction_classes_or_fail(classes: list[str] | None, pred_field: str, n: int) -> list[str]:
    if classes is None:
        raise InvalidInputError(f"{pred_field!r} has logits but no class list: make it with compute_predictions() or "
                         "apply_model(), or set dataset.info['classes'][pred_field]")
    return classes


def _embeddings_for(samples: "SampleCollection", pred_field: str, embeddings: Any,
                    embeddings_field: str | None) -> tuple[Any, str | None, str | None]:
    """``(embeddings, embeddings_field, why_not)``: the ones given, else those of the predictions' run."""
    if embeddings is not None or embeddings_field:
        return embeddings, embeddings_field, None
    found, why_not = embeddings_of_run(samples._dataset, pred_field)
    return found, None, why_not


def _classification(samples, pred_field, label_field, field, use_logits, embeddings, embeddings_field, k,
                    progress) -> MistakennessResults:
    ids = samples.values("id")
    if not ids:
        raise InvalidInputError("the collection is empty")
    given = samples.values(f"{label_field}.label")
    preds = samples.values(pred_field)
    first = next((p for p in preds if p is not None and p.logits is not None), None)
    classes = prediction_classes(samples, pred_field, None if first is None else len(first.logits))
    probs, classes = _model_probs(preds, ids, pred_field, use_logits, classes)
    y = label_indices(given, classes, ids, label_field)
    has_pred = np.array([p is not None for p in preds])
    p_given = np.where(y >= 0, probs[np.arange(len(ids)), np.maximum(y, 0)], np.nan)
    used_neighbours = False
    emb, emb_field, why_not = _embeddings_for(samples, pred_field, embeddings, embeddings_field)
    p_knn = np.full(len(ids), np.nan)
    skipped = []
    if why_not is not None:
        # never a silently weaker score: say which half is missing, and keep it in the run's record
        skipped.append(f"neighbours' vote: {why_not}")
        warnings.warn(f"compute_mistakenness() scores from the model alone, without the neighbours' vote: {why_not}",
                      stacklevel=3)
    if emb is not None or emb_field:
        src = resolve_embeddings(samples, emb, embeddings_field=emb_field, progress=progress)
        pos = {key: i for i, key in enumerate(ids)}
        rows = np.array([pos[key] for key in src.keys])
        graph = src.graph(k, "cosine")
        votes = knn_vote(graph.indices[:, 1:], graph_similarity(graph.distances[:, 1:], "cosine"), y[rows],
                         len(classes))
        yr = y[rows]
        p_knn[rows] = np.where(yr >= 0, votes[np.arange(len(rows)), np.maximum(yr, 0)], np.nan)
        used_neighbours = True
    p_model = np.where(has_pred, p_given, np.nan)
    combined = np.where(np.isnan(p_knn), p_model, np.where(np.isnan(p_model), p_knn, (p_model + p_knn) / 2))
    scores = 1.0 - combined
    values = [None if np.isnan(s) else float(np.clip(s, 0.0, 1.0)) for s in scores]
    config = {"method": "confident-learning+neighbours" if used_neighbours else "confident-learning",
              "pred_field": pred_field, "label_field": label_field, "use_logits": use_logits, "k": k,
              "mistakenness_field": field, "skipped": skipped,
              **(src.record if used_neighbours else {"embeddings_field": emb_field})}
    results = MistakennessResults(samples, config, ids, ids, {"scores": scores.astype(np.float64)}, field,
                                  {"classes": classes})
    results.stage_field(field, ids, values)
    results.save(field, overwrite=True, fields=[field])
    return results


# ---------------------------------------------------------------------------------------------- detection


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` [m, 4] with every box in ``b`` [n, 4]; boxes are [x, y, w, h]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ax1, ay1, ax2, ay2 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(ax1[:, None], bx1[None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(ay1[:, None], by1[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _match(gts: list[Detection], preds: list[Detection], iou: float, classwise: bool) -> dict[int, int]:
    """Greedy one-to-one matching, most confident prediction first: ground-truth index -> prediction index."""
    m = box_iou(np.array([g.bounding_box for g in gts], float).reshape(-1, 4),
                np.array([p.bounding_box for p in preds], float).reshape(-1, 4))
    order = sorted(range(len(preds)), key=lambda j: -(preds[j].confidence or 0.0))
    matched: dict[int, int] = {}
    passes = [True, False] if classwise else [False]
    for same_class in passes:
        taken = set(matched.values())
        for j in order:
            if j in taken:
                continue
            best, best_iou = None, iou
            for i, g in enumerate(gts):
                if i in matched or m[i, j] < best_iou or (same_class and g.label != preds[j].label):
                    continue
                best, best_iou = i, m[i, j]
            if best is not None:
                matched[best] = j
                taken.add(j)
    return matched


def _detection(samples, pred_field, label_field, field, missing_field, spurious_field, copy_missing, iou,
               classwise) -> MistakennessResults:
    ids = samples.values("id")
    gts_all, preds_all = samples.values(label_field), samples.values(pred_field)
    gt_attrs: dict[str, dict[str, Any]] = {"mistakenness": {}, "mistakenness_loc": {}, "possible_spurious": {}}
    missing_ids: dict[str, bool] = {}
    per_sample, n_missing, n_spurious, copies = [], [], [], {}
    for sid, gt, pr in zip(ids, gts_all, preds_all):
        gts = gt.detections if gt is not None else []
        preds = pr.detections if pr is not None else []
        m = box_iou(np.array([g.bounding_box for g in gts], float).reshape(-1, 4),
                    np.array([p.bounding_box for p in preds], float).reshape(-1, 4))
        matched = _match(gts, preds, iou, classwise)
        scores, spurious = [], 0
        free_preds = [j for j in range(len(preds)) if j not in set(matched.values())]
        free_gts = [i for i in range(len(gts)) if i not in matched]
        for i, g in enumerate(gts):
            mist, loc = 0.0, 0.0
            if i in matched:
                p = preds[matched[i]]
                conf = 1.0 if p.confidence is None else p.confidence
                if p.label != g.label:
                    mist = conf
            same = [j for j, p in enumerate(preds) if p.label == g.label]
            if same:
                j = max(same, key=lambda j: m[i, j])
                if m[i, j] >= TOUCH_IOU:
                    conf = 1.0 if preds[j].confidence is None else preds[j].confidence
                    loc = conf * (1.0 - m[i, j])
            # an unmatched object that no unmatched prediction touches: nothing explains it (a prediction
            # already matched to a neighbouring object does not)
            lonely = i not in matched and not any(m[i, j] >= TOUCH_IOU for j in free_preds)
            spurious += lonely
            gt_attrs["mistakenness"][g.id] = mist
            gt_attrs["mistakenness_loc"][g.id] = loc
            gt_attrs["possible_spurious"][g.id] = bool(lonely)
            scores.append(max(mist, loc, 1.0 if lonely else 0.0))
        matched_preds = set(matched.values())
        missing = 0
        for j, p in enumerate(preds):
            touches = any(m[i, j] >= TOUCH_IOU for i in free_gts)
            flag = j not in matched_preds and not touches and (p.confidence or 0.0) >= MISSING_CONFIDENCE
            missing_ids[p.id] = bool(flag)
            if flag:
                missing += 1
                if copy_missing:
                    copies.setdefault(sid, []).append(Detection(p.label, p.bounding_box, confidence=p.confidence,
                                                                possible_missing=True))
        per_sample.append(max(scores) if scores else (None if gt is None else 0.0))
        n_missing.append(missing)
        n_spurious.append(spurious)
    dataset = samples._dataset
    with dataset._database().transaction():
        for attr, by_id in gt_attrs.items():
            if by_id:
                dataset._set_label_attr(label_field, by_id, attr)
        if missing_ids:
            dataset._set_label_attr(pred_field, missing_ids, "possible_missing")
        dataset._set_values_by_id(field, ids, per_sample)
        dataset._set_values_by_id(missing_field, ids, n_missing)
        dataset._set_values_by_id(spurious_field, ids, n_spurious)
        if copies:
            from ..core.labels import Detections

            current = dict(zip(samples.values("id"), samples.values(label_field)))  # with the attributes just set
            new = [Detections(detections=[*(current[s].detections if current[s] else []), *dets])
                   for s, dets in copies.items()]
            dataset._set_values_by_id(label_field, list(copies), new)
        scores = np.array([np.nan if s is None else s for s in per_sample], float)
        config = {"method": "detection-matching", "pred_field": pred_field, "label_field": label_field, "iou": iou,
                  "classwise": classwise, "copy_missing": copy_missing, "mistakenness_field": field,
                  "missing_field": missing_field, "spurious_field": spurious_field}
        results = MistakennessResults(samples, config, ids, ids, {"scores": scores}, field, {})
        # inside the labels' transaction: the attributes, the fields and the run record land together
        results.save(field, overwrite=True, fields=[field, missing_field, spurious_field])
    return results
