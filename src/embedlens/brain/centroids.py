"""Class centroids: the mean embedding of each class, how far apart they are, and which classes are close.

``centroid[c] = mean of the rows labelled c``; ``distances[a, b] = d(centroid[a], centroid[b])`` with
``metric`` "euclidean" (``||a - b||``) or "cosine" (``1 - a.b / (||a|| ||b||)``). The confusable pairs
are the class pairs with the smallest centroid distance. The space is the embeddings themselves
(``space="embedding"``) or the points of a visualization run (``space=<its brain key>``: the centroids
of the classes in the plot, as the latent-space tutorial draws them).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import InvalidInputError, WrongTypeError
from ..core.runs import BrainResults, get_brain_info, has_brain_run, load_brain_results, register_type
from .contract import brain_method
from .source import resolve_embeddings

if TYPE_CHECKING:
    from ..core.collection import SampleCollection
    from .plots import ScatterPlot

CENTROID_METRICS = ("euclidean", "cosine")


@register_type
class CentroidResults(BrainResults):
    """Centroids ``[C, D]`` (``classes`` order), their distance matrix ``[C, C]`` and class sizes."""

    run_type = "centroids"

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def centroids(self) -> np.ndarray:
        return self._arrays["centroids"]

    @property
    def distances(self) -> np.ndarray:
        return self._arrays["distances"]

    @property
    def counts(self) -> np.ndarray:
        return self._arrays["counts"]

    @property
    def space(self) -> str:
        return self.config["space"]

    def distance_table(self) -> Any:
        """The distance matrix as a pandas ``DataFrame`` indexed by class on both axes."""
        import pandas as pd

        return pd.DataFrame(self.distances, index=self.classes, columns=self.classes)

    def confusable_pairs(self, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` class pairs with the closest centroids, closest first: ``(class_a, class_b, distance)``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError(f"n must be a positive integer, got {n!r}")
        a, b = np.triu_indices(len(self.classes), k=1)
        d = self.distances[a, b]
        order = np.argsort(d, kind="stable")[:int(n)]
        return [(self.classes[a[i]], self.classes[b[i]], float(d[i])) for i in order]

    def nearest_class(self) -> dict[str, tuple[str, float]]:
        """For every class, the class whose centroid is nearest and the distance."""
        d = self.distances + np.diag(np.full(len(self.classes), np.inf))
        j = d.argmin(axis=1)
        return {c: (self.classes[k], float(d[i, k])) for i, (c, k) in enumerate(zip(self.classes, j))}

    def heatmap(self, backend: str = "matplotlib", annotate: bool = True, cmap: str = "viridis",
                figsize: tuple[float, float] | None = None) -> Any:
        """The centroid distance matrix as a heatmap (matplotlib ``Figure``, or plotly ``Figure``)."""
        d, names = self.distances, self.classes
        title = f"{self.config['metric'].capitalize()} distance between class centroids ({self._space_name()})"
        if backend == "plotly":
            import plotly.graph_objects as go

            fig = go.Figure(go.Heatmap(z=d, x=names, y=names, colorscale=cmap.capitalize(),
                                       text=np.round(d, 2) if annotate else None,
                                       texttemplate="%{text}" if annotate else None))
            fig.update_layout(title={"text": title}, yaxis={"autorange": "reversed"}, template="plotly_white")
            return fig
        if backend != "matplotlib":
            raise InvalidInputError(f"unknown backend {backend!r}: 'plotly' or 'matplotlib'")
        from ..display import new_figure

        side = max(4.0, 0.6 * len(names) + 2)
        fig = new_figure(figsize=figsize or (side + 1.5, side))
        ax = fig.add_subplot()
        im = ax.imshow(d, cmap=cmap)
        ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 12 else 0)
        ax.set_yticks(range(len(names)), names)
        if annotate and len(names) <= 30:
            mid = (np.nanmin(d) + np.nanmax(d)) / 2
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if d[i, j] < mid else "black")
        fig.colorbar(im, ax=ax)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        return fig

    def visualize(self, visualization: Any = None, labels: Any = None, backend: str = "plotly",
                  **kwargs: Any) -> "ScatterPlot":
        """The points of a 2-D visualization coloured by class, with the class centroids drawn on top.

        With ``space=<visualization key>`` the centroids are those of the plot's points (nothing else
        to pass). With ``space="embedding"`` pass ``visualization=`` (a key or results): a PCA/LDA run
        places the embedding centroids with its projection (``project(centroids)``); for UMAP/t-SNE,
        which have no projection, the centroids drawn are those of each class's points in the plot.
        """
        from .visualization import VisualizationResults

        dataset = self._samples._dataset
        if visualization is None:
            if self.space == "embedding":
                raise InvalidInputError("these centroids are in embedding space: pass visualization= (a brain key "
                                        "or results) to draw them in a plot")
            visualization = self.space
        viz = load_brain_results(dataset, visualization) if isinstance(visualization, str) else visualization
        if not isinstance(viz, VisualizationResults):
            raise WrongTypeError(f"visualization must be a visualization run, got {type(viz).__name__}")
        if self.space != "embedding" and self.space == viz.key:
            xy = self.centroids[:, :2]
        elif self.space == "embedding" and viz.projection is not None:
            xy = viz.project(self.centroids)[:, :2]
        else:  # the classes' centroids among the plot's own points
            lab = viz.values(self.config["labels_field"] if labels is None or not isinstance(labels, str)
                             else labels)
            names = np.array(["" if v is None else str(v) for v in lab], dtype=object)
            xy = np.array([viz.points[names == c, :2].mean(axis=0) if (names == c).any() else [np.nan, np.nan]
                           for c in self.classes])
        keep = np.isfinite(xy).all(axis=1)
        overlay = {"type": "markers", "title": "centroids", "names": [c for c, k in zip(self.classes, keep) if k],
                   "xy": xy[keep].tolist()}
        return viz._plot(self.config["labels_field"] if labels is None else labels, kwargs.pop("sizes", None),
                         kwargs.pop("classes", None), backend, kwargs.pop("thumbnails", None), None, [overlay], kwargs)

    def _space_name(self) -> str:
        return "embeddings" if self.space == "embedding" else f"plot {self.space!r}"

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["classes"] = len(self.classes)
        out["closest_pair"] = list(self.confusable_pairs(1)[0]) if len(self.classes) > 1 else None
        return out


def centroid_distances(centroids: np.ndarray, metric: str) -> np.ndarray:
    """``[C, C]`` distances between rows, one row at a time (never a C x C x D array)."""
    c = np.asarray(centroids, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(c, axis=1, keepdims=True)
        u = c / np.where(norms > 0, norms, 1.0)
        d = 1.0 - u @ u.T
        np.fill_diagonal(d, 0.0)
        return np.clip(d, 0.0, 2.0)
    return np.stack([np.sqrt(((c - row) ** 2).sum(axis=1)) for row in c]) if len(c) else np.zeros((0, 0))


@brain_method(key_param="brain_key")
def compute_class_centroids(samples: "SampleCollection", embeddings: Any = None, model: Any = None,
                            labels_field: str = "ground_truth", space: str = "embedding",
                            metric: str = "euclidean", brain_key: str | None = None,
                            embeddings_field: str | None = None, overwrite: bool = False,
                            progress: bool = True) -> CentroidResults:
    """The centroid of each class, the distances between centroids, and the most confusable class pairs.

    Parameters
    ----------
    samples : Dataset or DatasetView
    embeddings, model, embeddings_field
        Where the embeddings come from (``space="embedding"``), as in every brain method.
    labels_field : str
        The class of each row: a ``Classification`` field (its label) or a str/int field. Rows without
        a class are left out.
    space : str
        ``"embedding"`` (default): centroids of the embeddings. Or the brain key of a visualization run:
        centroids of its points (restricted to ``samples``), as drawn in its plot.
    metric : {"euclidean", "cosine"}
        Distance between centroids: ``||a - b||`` or ``1 - cos(a, b)`` (``"dotproduct"`` is refused: no
        distance; ``centroids @ centroids.T`` is one line of numpy).
    brain_key : str, optional
        Store the results under this key.

    Returns
    -------
    CentroidResults
        ``centroids``, ``distances``, ``counts``, ``classes``, ``confusable_pairs(n)``,
        ``nearest_class()``, ``distance_table()``, ``heatmap()``, ``visualize()``.
    """
    from .visualization import VisualizationResults, _row_values

    if metric not in CENTROID_METRICS:
        from .neighbors import DOTPRODUCT_NOT_A_DISTANCE

        why = (f": the table is of distances (the confusable pairs are the closest), and {DOTPRODUCT_NOT_A_DISTANCE}"
               if metric == "dotproduct" else "")
        raise InvalidInputError(f"metric must be one of {', '.join(CENTROID_METRICS)}, got {metric!r}{why}")
    if not isinstance(space, str):
        raise WrongTypeError(f"space must be 'embedding' or a visualization brain key, got {type(space).__name__}")
    dataset = samples._dataset
    started = time.perf_counter()
    if space == "embedding":
        source = resolve_embeddings(samples, embeddings, model, embeddings_field=embeddings_field, progress=progress)
        keys, sample_ids, x, patches_field = source.keys, source.sample_ids, source.matrix, None
        record = source.record
    else:
        if not has_brain_run(dataset, space) or get_brain_info(dataset, space)["type"] != "visualization":
            raise InvalidInputError(f"space must be 'embedding' or the key of a visualization run; {space!r} is "
                                    "neither")
        if embeddings is not None or model is not None:
            raise InvalidInputError("space=<visualization> uses that run's points: do not pass embeddings= or model=")
        viz = load_brain_results(dataset, space)
        assert isinstance(viz, VisualizationResults)
        viz.use_view(samples, allow_missing=True)
        keys, sample_ids, x, patches_field = viz.keys, viz.sample_ids, viz.points, viz.patches_field
        record = {"visualization": space}
        if not keys:
            raise InvalidInputError(f"visualization {space!r} has no points for these samples")
    labels = _row_values(samples, patches_field, keys, sample_ids, labels_field)
    for v in labels:
        if v is not None and not isinstance(v, (str, int, np.integer)) or isinstance(v, bool):
            raise InvalidInputError(f"labels_field {labels_field!r} must give one class per row (str or int), got a "
                                    f"{type(v).__name__}")
    names = np.array(["" if v is None else str(v) for v in labels], dtype=object)
    known = np.array([v is not None for v in labels])
    classes = sorted(set(names[known].tolist()))
    if len(classes) < 2:
        raise InvalidInputError(f"{labels_field!r} needs at least 2 classes with members; found {classes}")
    x64 = np.asarray(x, dtype=np.float64)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[n] if k else -1 for n, k in zip(names, known)])
    counts = np.bincount(y[known], minlength=len(classes))
    sums = np.zeros((len(classes), x64.shape[1]))
    np.add.at(sums, y[known], x64[known])
    centroids = sums / counts[:, None]
    distances = centroid_distances(centroids, metric)
    config = {"method": "mean", "labels_field": labels_field, "space": space, "metric": metric, "classes": classes,
              "patches_field": patches_field, **record}
    results = CentroidResults(samples, config, keys, sample_ids,
                              {"centroids": centroids, "distances": distances, "counts": counts.astype(np.int64)},
                              None, {"elapsed_s": round(time.perf_counter() - started, 3),
                                     "unlabelled": int((~known).sum())})
    if brain_key:
        results.save(brain_key, overwrite=overwrite)
    return results


__all__ = ["CENTROID_METRICS", "CentroidResults", "centroid_distances", "compute_class_centroids"]
