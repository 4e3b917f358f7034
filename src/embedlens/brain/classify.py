"""The two classifiers the label-quality methods share: a linear model on the embeddings and a
similarity-weighted vote of the nearest neighbours' labels.

Labels are class indices (``-1`` = no label). BLAS is held to one thread while fitting: on a busy
2-core machine multi-threaded OpenBLAS spin-waits and ran these small problems 20x slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

# Strong L2: embeddings have many dimensions and a class often has few hundred samples. Chosen on
# MNIST (pixels and EfficientNet-Lite0 embeddings) and digits; see bench/bench_mistakes.py.
DEFAULT_C = 0.05


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class LinearClassifier:
    """Multinomial logistic regression on standardised embeddings.

    ``coef_`` rows are the class prototypes (directions in the standardised embedding space).
    """

    coef_: np.ndarray  # [n_classes, D]
    intercept_: np.ndarray  # [n_classes]
    mean_: np.ndarray  # [D]
    scale_: np.ndarray  # [D]
    classes_: list[str]

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``[N, n_classes]``."""
        return ((np.asarray(X, np.float64) - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> list[str]:
        return [self.classes_[i] for i in self.decision_function(X).argmax(axis=1)]

    @property
    def prototypes(self) -> np.ndarray:
        """One row per class: the class's weight vector mapped back to embedding units."""
        return self.coef_ / self.scale_


def fit_linear(X: np.ndarray, y: np.ndarray, classes: list[str], C: float = DEFAULT_C,
               seed: int = 51) -> LinearClassifier:
    """Fit on the rows with ``y >= 0``; classes absent from ``y`` get logits of -inf."""
    from sklearn.linear_model import LogisticRegression

    keep = y >= 0
    Xl, yl = np.asarray(X, np.float64)[keep], y[keep]
    mean = Xl.mean(axis=0)
    scale = Xl.std(axis=0)
    scale[scale < 1e-12] = 1.0
    present = np.unique(yl)
    coef = np.zeros((len(classes), X.shape[1]))
    intercept = np.full(len(classes), -np.inf)
    if len(present) == 1:
        intercept[present[0]] = 0.0
    else:
        with threadpool_limits(1):
            lr = LogisticRegression(C=C, max_iter=500, random_state=seed).fit((Xl - mean) / scale, yl)
        if len(present) == 2:  # sklearn keeps one row for two classes
            coef[present[1]], intercept[present[1]] = lr.coef_[0] / 2, lr.intercept_[0] / 2
            coef[present[0]], intercept[present[0]] = -lr.coef_[0] / 2, -lr.intercept_[0] / 2
        else:
            coef[present], intercept[present] = lr.coef_, lr.intercept_
    return LinearClassifier(coef, intercept, mean, scale, list(classes))


def out_of_fold_logits(X: np.ndarray, y: np.ndarray, classes: list[str], folds: int = 5, C: float = DEFAULT_C,
                       seed: int = 51) -> tuple[np.ndarray, int]:
    """Logits for every row from a model that never saw that row's label.

    Labelled rows are split into stratified folds; unlabelled rows (``y == -1``) are predicted by the model
    fitted on all labelled rows. A class with fewer samples than folds is spread round-robin over the
    folds, so some of its samples are predicted by a model that has not seen the class at all (their own
    label then looks wrong, which is the honest answer). Returns the logits and the folds used.
    """
    from sklearn.model_selection import StratifiedKFold

    n = len(y)
    labelled = np.flatnonzero(y >= 0)
    counts = np.bincount(y[labelled], minlength=len(classes))
    folds = int(max(2, min(folds, len(labelled))))
    fold_of = np.full(n, -1)
    common = labelled[counts[y[labelled]] >= folds]
    rare = labelled[counts[y[labelled]] < folds]
    if len(common):
        skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(skf.split(np.zeros(len(common)), y[common])):
            fold_of[common[test]] = f
    fold_of[rare] = np.arange(len(rare)) % folds
    logits = np.zeros((n, len(classes)))
    for f in range(folds):
        test = fold_of == f
        train_y = np.where((fold_of != f) & (y >= 0), y, -1)
        logits[test] = fit_linear(X, train_y, classes, C, seed).decision_function(X[test])
    unlabelled = y < 0
    if unlabelled.any():
        logits[unlabelled] = fit_linear(X, y, classes, C, seed).decision_function(X[unlabelled])
    return logits, folds


def knn_vote(neighbors: np.ndarray, similarity: np.ndarray, y: np.ndarray, n_classes: int,
             smoothing: float = 0.05) -> np.ndarray:
    """Class probabilities from the labels of each row's neighbours, weighted by similarity.

    ``neighbors``/``similarity`` are ``[N, k]`` (the row itself excluded); unlabelled neighbours do not
    vote. ``smoothing`` pseudo-votes per class keep a row with few votes from being certain.
    """
    n, k = neighbors.shape
    votes = np.zeros((n, n_classes))
    lab = y[neighbors]
    w = np.where(lab >= 0, np.maximum(similarity, 0.0), 0.0)
    rows = np.repeat(np.arange(n), k)
    np.add.at(votes, (rows, np.maximum(lab, 0).ravel()), w.ravel())
    votes += smoothing
    return votes / votes.sum(axis=1, keepdims=True)


def graph_similarity(distances: np.ndarray, metric: str) -> np.ndarray:
    """Neighbour weights in [0, 1] from distances: cosine similarity, or a Gaussian of the distance scaled
    by the median neighbour distance for euclidean."""
    if metric == "cosine":
        return np.clip(1.0 - distances, 0.0, 1.0)
    scale = np.median(distances[distances > 0]) if (distances > 0).any() else 1.0
    return np.exp(-(distances / scale) ** 2)


def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, normalised to [0, 1] by log(n_classes)."""
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))
