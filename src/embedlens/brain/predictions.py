"""Honest predictions without a GPU: a linear classifier on the embeddings, out of fold."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.labels import Classification
from .classify import DEFAULT_C, LinearClassifier, fit_linear, out_of_fold_logits, softmax
from .labels import check_new_field, label_indices, require_type
from .contract import brain_method
from ..core.runs import BrainResults, check_new_key, register_type
from .source import resolve_embeddings
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection


@register_type
class PredictionResults(BrainResults):
    """What :func:`compute_predictions` learned: the classifier (fitted on every label) and its classes."""

    run_type = "predictions"

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def classifier(self) -> LinearClassifier:
        """The model fitted on all labelled samples; ``classifier.prototypes`` are the class prototypes."""
        a = self._arrays
        return LinearClassifier(a["coef"], a["intercept"], a["mean"], a["scale"], self.classes)

    @property
    def accuracy(self) -> float:
        """Out-of-fold accuracy on the labelled samples (each predicted by a model that never saw it)."""
        return float(self.info["oof_accuracy"])


@brain_method(key_param="pred_field")
def compute_predictions(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                        label_field: str = "ground_truth", pred_field: str = "predictions", folds: int = 5,
                        seed: int = 51, C: float = DEFAULT_C, embeddings_field: str | None = None,
                        overwrite: bool = False, progress: bool = True) -> PredictionResults:
    """Out-of-fold ``Classification`` predictions (label, confidence, logits) from the embeddings.

    A multinomial logistic regression is trained on the embeddings of the labelled samples in ``folds``
    stratified folds; every labelled sample is predicted by the model of the fold that held it out, so
    no prediction has seen its own label (what mistakenness and hardness need). Unlabelled samples are
    predicted by the model fitted on all labels. Takes seconds on thousands of samples, no GPU.

    Parameters
    ----------
    samples : Dataset or DatasetView
    embeddings, model, embeddings_field
        Where the embeddings come from, as in every brain method.
    label_field : str
        ``Classification`` field with the (possibly noisy) labels.
    pred_field : str
        Field to write; also the brain key of the run (as in FiftyOne).
    folds : int
        Cross-validation folds (at least 2; fewer when the data set is tiny).
    C : float
        Inverse L2 strength of the logistic regression.

    Returns
    -------
    PredictionResults
        With ``classifier`` (whose ``prototypes`` are one vector per class), ``classes``, ``accuracy``.
    """
    check_new_key(samples, pred_field, overwrite)
    check_new_field(samples, pred_field, overwrite)
    require_type(samples, label_field, ("Classification",), "label_field")
    if folds < 2:
        raise InvalidInputError(f"folds must be at least 2, got {folds}")
    src = resolve_embeddings(samples, embeddings, model, embeddings_field=embeddings_field, progress=progress)
    by_id = dict(zip(samples.values("id"), samples.values(f"{label_field}.label")))
    labels = [by_id[k] for k in src.keys]
    classes = sorted({lab for lab in labels if lab is not None})
    if len(classes) < 2:
        raise InvalidInputError(f"{label_field!r} needs at least 2 classes with labels to learn from; found {classes}")
    y = label_indices(labels, classes, src.keys, label_field)
    logits, used = out_of_fold_logits(src.matrix, y, classes, folds, C, seed)
    finite = np.isfinite(logits)
    logits = np.where(finite, logits, logits[finite].min() - 50.0)  # JSON has no -inf
    probs = softmax(logits)
    top = probs.argmax(axis=1)
    preds = [Classification(classes[t], confidence=float(probs[i, t]), logits=logits[i]) for i, t in enumerate(top)]
    labelled = y >= 0
    accuracy = float((top[labelled] == y[labelled]).mean())
    clf = fit_linear(src.matrix, y, classes, C, seed)
    dataset = samples._dataset
    config = {"method": "logistic-regression", "label_field": label_field, "pred_field": pred_field,
              "folds": used, "seed": seed, "C": C, **src.record}
    results = PredictionResults(samples, config, src.keys, src.sample_ids,
                                {"coef": clf.coef_, "intercept": np.where(np.isfinite(clf.intercept_),
                                                                         clf.intercept_, -1e9),
                                 "mean": clf.mean_, "scale": clf.scale_},
                                pred_field, {"classes": classes, "oof_accuracy": accuracy})
    results.stage_field(pred_field, src.keys, preds)
    with dataset._database().transaction():  # the predictions, their class list and the run: all or nothing
        dataset.info.setdefault("classes", {})[pred_field] = classes
        dataset.save()
        results.save(pred_field, overwrite=True, fields=[pred_field])
    return results
