"""Class prototypes: how strongly each sample points along each class's direction of a linear head.

A linear classifier scores class ``c`` by ``x . W[c] + b[c]``: row ``W[c]`` is the class's prototype,
the direction in embedding space the classifier associates with the class. :func:`compute_prototypes`
writes every sample's score for every class into one dict field, so samples can be ranked by how
"rosy" they are (``view.sort_by("prototype_scores.roses", reverse=True)``), and
:meth:`PrototypeResults.visualize` draws the prototypes as arrows in an LDA or PCA plane.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.errors import InvalidInputError, NotFoundError, WrongTypeError
from ..core.fields import check_name
from ..core.runs import BrainResults, check_new_key, get_brain_info, has_brain_run, load_brain_results, register_type
from ..models.torch_model import Head, head_of_linear
from .contract import brain_method
from .labels import check_new_field
from .source import EmbeddingSource, embeddings_of_run, resolve_embeddings

if TYPE_CHECKING:
    from ..core.collection import SampleCollection
    from .plots import ScatterPlot
    from .visualization import VisualizationResults

#: The longest arrow reaches this quantile of the points' distances from the origin (all arrows share one
#: scale factor, so their relative lengths are the prototypes' relative lengths in the plane), unless an
#: arrow would then leave the points' box: see :func:`arrow_scale`.
ARROW_QUANTILE = 0.95


def arrow_scale(arrows: np.ndarray, points: np.ndarray, quantile: float = ARROW_QUANTILE) -> float:
    """The one factor every arrow (from the origin to ``arrows[i]``) is multiplied by in the plot.

    ``s = min(s_reach, s_box)``: ``s_reach = q / max_i |a_i|`` with ``q`` the ``quantile`` of the points'
    distances from the origin (the longest arrow reaches as far as most points), and ``s_box`` the largest
    factor that keeps every arrow's end inside the points' bounding box extended to contain the origin,
    ``[min(0, min x), max(0, max x)] x [min(0, min y), max(0, max y)]``: per coordinate, ``hi / a`` for a
    positive ``a`` and ``lo / a`` for a negative one. PCA and LDA points are centred, so the origin is
    inside the box and every arrow ends inside it, however flat the cloud. Only when the origin is on the
    box's edge (points not centred) can an arrow point out of it: that coordinate sets no limit, and the
    plot's axes grow to the arrow's end (the plots always span the origin and every arrow's end).
    """
    arrows = np.asarray(arrows, dtype=np.float64)[:, :2]
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    longest = float(np.linalg.norm(arrows, axis=1).max()) if len(arrows) else 0.0
    if longest == 0 or not len(pts):
        return 1.0
    reach = float(np.quantile(np.linalg.norm(pts, axis=1), quantile))
    lo, hi = np.minimum(pts.min(axis=0), 0.0), np.maximum(pts.max(axis=0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        room = np.where(arrows > 0, hi / arrows, np.where(arrows < 0, lo / arrows, np.inf))
    room = room[room > 0]  # 0: the origin on the box's edge and the arrow pointing out (see above)
    return min(reach / longest, float(room.min()) if room.size else np.inf)


@register_type
class PrototypeResults(BrainResults):
    """Scores of a prototype run: ``class_scores[i, c] = x_i . W[c] + b[c]`` for row ``keys[i]``.

    ``head`` is the head the scores came from (its arrays are stored with the run). There is no single
    ``scores`` array (a score per class is not in [0, 1]); rank by a class with :meth:`sort_by`.
    """

    run_type = "prototypes"

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def head(self) -> Head:
        return Head(self._arrays["weights"], self._arrays["bias"], self.classes)

    @property
    def class_scores(self) -> np.ndarray:
        """``[N, n_classes]`` float64, rows in :attr:`keys` order, columns in :attr:`classes` order."""
        return self._arrays["class_scores"]

    @property
    def field(self) -> str:
        return self.config["scores_field"]

    def scores_of(self, cls: str) -> np.ndarray:
        """Every row's score for class ``cls``."""
        return self.class_scores[:, self._column(cls)]

    def _column(self, cls: Any) -> int:
        try:
            return self.classes.index(str(cls))
        except ValueError:
            raise NotFoundError(f"no class {cls!r} in this head; classes: {self.classes}") from None

    def sort_by(self, cls: str, reverse: bool = True) -> "SampleCollection":
        """The samples ordered by their score for ``cls`` (highest first unless ``reverse=False``).

        The same order as ``view.sort_by(f"{field}.{cls}", reverse=True)`` (which needs ``cls`` to be
        a plain name), for any class name. Ties keep the run's row order.
        """
        s = self.scores_of(cls)
        order = np.argsort(-s if reverse else s, kind="stable")
        return self._samples.select([self.keys[i] for i in order], ordered=True)

    def visualize(self, visualization: "str | VisualizationResults | None" = None, labels: Any = None,
                  method: str | None = None, labels_field: str | None = None, backend: str = "plotly",
                  **kwargs: Any) -> "ScatterPlot":
        """The samples in a linear plane with the prototypes drawn as arrows from the origin.

        ``visualization``: a PCA or LDA visualization run (its brain key or results) on the same
        embeddings; without one, a plane is fitted now and not stored: LDA when ``labels_field`` is
        given (the classes' best separating plane, as the course notebook does), else PCA. The arrows
        are ``project(W, directions=True)`` (rotated, not centred: prototypes are directions), all
        multiplied by one factor (:func:`arrow_scale`, ``plot.arrow_scale``): the longest reaches the
        ``ARROW_QUANTILE`` (95%) quantile of the points' distances from the origin, or less so that every
        arrow ends inside the points' box (extended to the origin), which the axes span. Arrows take the colour of
        the class of the same name in ``labels`` (default: ``labels_field``, or the LDA run's labels).
        Other keywords are those of ``VisualizationResults.visualize``.
        """
        from .visualization import VisualizationResults, compute_visualization

        dataset = self._samples._dataset
        if visualization is None:
            if method is None:
                method = "lda" if labels_field else "pca"
            embeddings = self._embeddings_for_plot()
            viz = compute_visualization(self._samples, embeddings=embeddings, method=method,
                                        labels_field=labels_field, progress=False)
        elif isinstance(visualization, str):
            viz = load_brain_results(dataset, visualization)
        else:
            viz = visualization
        if not isinstance(viz, VisualizationResults):
            raise WrongTypeError(f"visualization must be a visualization run, got {type(viz).__name__}")
        if viz.projection is None:
            raise InvalidInputError(f"prototypes are drawn in a linear plane (PCA or LDA); {viz.key or 'the run'!r} "
                                    f"is {viz.method!r}")
        if viz.projection.shape[0] != self._arrays["weights"].shape[1]:
            raise InvalidInputError(f"the visualization was fitted on {viz.projection.shape[0]}-d embeddings; the "
                                    f"head's prototypes are {self._arrays['weights'].shape[1]}-d")
        arrows = viz.project(self._arrays["weights"], directions=True)[:, :2]
        scale = arrow_scale(arrows, viz.points)
        if labels is None:
            labels = labels_field or viz.config.get("labels_field")
        overlay = {"type": "arrows", "names": self.classes, "xy": (arrows * scale).tolist()}
        plot = viz._plot(labels, kwargs.pop("sizes", None), kwargs.pop("classes", None), backend,
                         kwargs.pop("thumbnails", None), None, [overlay], kwargs)
        plot.arrow_scale = scale
        return plot

    def _embeddings_for_plot(self) -> Any:
        name = self.config.get("embeddings_field")
        if name and name in self._samples._dataset.list_embeddings():
            return name
        from .source import _recall

        array = _recall(self.config.get("embeddings_fingerprint") or "")
        if array is None:
            raise InvalidInputError("the run's embeddings were an array no longer in memory: pass "
                                    "visualization= (a PCA/LDA run on them)")
        return array


def resolve_head(head: Any) -> Head:
    """A :class:`Head` from what a user has: a ``feature_extractor`` model, a ``Head``, a
    ``torch.nn.Linear``, a dict ``{"weights", "bias", "classes"}`` or a tuple ``(weights, bias[, classes])``."""
    if isinstance(head, Head):
        return head
    if hasattr(head, "head") and not isinstance(head, dict):  # a feature_extractor TorchModel
        return head.head
    try:
        import torch

        if isinstance(head, torch.nn.Linear):
            return head_of_linear(head)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(head, dict):
        unknown = set(head) - {"weights", "bias", "classes"}
        if unknown or "weights" not in head:
            raise InvalidInputError(f"a head dict has 'weights' and optionally 'bias' and 'classes'; got {sorted(head)}")
        head = (head["weights"], head.get("bias"), head.get("classes"))
    if isinstance(head, (tuple, list)) and 1 <= len(head) <= 3:
        w = np.asarray(head[0])
        if w.dtype.kind in "iu":
            w = w.astype(np.float64)
        b = head[1] if len(head) > 1 and head[1] is not None else np.zeros(w.shape[0] if w.ndim == 2 else 0)
        classes = head[2] if len(head) > 2 and head[2] is not None else [str(i) for i in range(len(w))]
        return Head(w, np.asarray(b, dtype=np.float64), [str(c) for c in classes])
    raise WrongTypeError(f"head must be a feature_extractor model, a Head, a torch.nn.Linear, a dict or "
                         f"(weights, bias, classes); got {type(head).__name__}")


def _head_of_predictions(dataset: Any, key: str) -> Head:
    """The linear model of a ``compute_predictions`` run in embedding units: it standardises, so
    ``W = coef / scale`` and ``b = intercept - (mean / scale) . coef`` give the same logits."""
    if not has_brain_run(dataset, key):
        raise NotFoundError(f"no brain run {key!r} on dataset {dataset.name!r}")
    if get_brain_info(dataset, key)["type"] != "predictions":
        raise InvalidInputError(f"predictions_run {key!r} is not a compute_predictions run")
    clf = load_brain_results(dataset, key).classifier
    w = clf.coef_ / clf.scale_
    b = clf.intercept_ - (clf.mean_ / clf.scale_) @ clf.coef_.T
    return Head(w, np.where(np.isfinite(b), b, -1e9), list(clf.classes_))


@brain_method(key_param="brain_key")
def compute_prototypes(samples: "SampleCollection", head: Any = None, predictions_run: str | None = None,
                       embeddings: Any = None, model: Any = None, scores_field: str = "prototype_scores",
                       brain_key: str = "prototypes", embeddings_field: str | None = None,
                       overwrite: bool = False, progress: bool = True) -> PrototypeResults:
    """Score every sample against every class prototype of a linear head; write the scores to a field.

    ``score[c] = x . W[c] + b[c]``: the head's logit for class ``c`` (the bias shifts a class's scores
    all alike, so ranking by a class is ranking by ``x . W[c]``, the notebook's "how rosy is it").
    The scores go to ``scores_field`` as a dict ``{class: score}`` per sample, so
    ``view.sort_by("prototype_scores.roses", reverse=True)`` ranks by a class whose name is a plain
    identifier; :meth:`PrototypeResults.sort_by` ranks by any class.

    Parameters
    ----------
    samples : Dataset or DatasetView
    head
        The head: an ``el.feature_extractor(model)`` model (its cut-off ``nn.Linear``; its embeddings are
        then computed with that model unless ``embeddings=`` says otherwise), a ``Head``, a
        ``torch.nn.Linear``, a dict ``{"weights", "bias", "classes"}`` or ``(weights, bias, classes)``.
    predictions_run
        Instead of ``head``: the brain key of a ``compute_predictions`` run; its logistic regression is
        the head, on the embeddings that run used.
    embeddings, model, embeddings_field
        Where the embeddings come from, as in every brain method. Their dimension must be the head's.
    scores_field
        The dict field written (one ``{class: score}`` per sample).
    brain_key
        The run's key (deleting the run deletes the field).
    overwrite
        Replace an existing run / field.
    """
    if (head is None) == (predictions_run is None):
        raise InvalidInputError("pass head= (a feature_extractor model, Head or weights) or predictions_run=, one of "
                                "them")
    check_name(scores_field)
    check_new_key(samples, brain_key, overwrite)
    check_new_field(samples, scores_field, overwrite)
    if samples._is_patches:
        raise InvalidInputError("compute_prototypes() scores samples: pass a dataset or sample view")
    dataset = samples._dataset
    if predictions_run is not None:
        h = _head_of_predictions(dataset, predictions_run)
        if embeddings is None and model is None and embeddings_field is None:
            embeddings, why = embeddings_of_run(dataset, predictions_run)
            if embeddings is None:
                raise InvalidInputError(f"{why}; pass embeddings=")
    else:
        h = resolve_head(head)
        if embeddings is None and model is None and hasattr(head, "embed_batch"):
            model = head  # a feature_extractor model: its own embeddings are the head's input
    started = time.perf_counter()
    source: EmbeddingSource = resolve_embeddings(samples, embeddings, model, embeddings_field=embeddings_field,
                                                 progress=progress)
    x = source.matrix
    if x.shape[1] != h.weights.shape[1]:
        raise InvalidInputError(f"the head's prototypes are {h.weights.shape[1]}-d but the embeddings are "
                                f"{x.shape[1]}-d: use the embeddings the head was trained on")
    # One matrix-vector product per class: exactly the numbers ``x @ W[c]`` gives, so the ranking is that one.
    scores = np.empty((len(x), len(h.classes)), dtype=np.float64)
    for c in range(len(h.classes)):
        scores[:, c] = (x @ h.weights[c]).astype(np.float64) + float(h.bias[c])
    values = [dict(zip(h.classes, row)) for row in scores.tolist()]
    config = {"method": "dot-product", "scores_field": scores_field, "classes": list(h.classes),
              "predictions_run": predictions_run, **source.record}
    results = PrototypeResults(samples, config, source.keys, source.sample_ids,
                               {"class_scores": scores, "weights": np.asarray(h.weights),
                                "bias": np.asarray(h.bias, dtype=np.float64)}, None,
                               {"elapsed_s": round(time.perf_counter() - started, 3)})
    results.stage_field(scores_field, source.keys, values)
    results.save(brain_key, overwrite=overwrite, fields=[scores_field])
    return results


__all__ = ["ARROW_QUANTILE", "Head", "arrow_scale", "PrototypeResults", "compute_prototypes", "resolve_head"]
