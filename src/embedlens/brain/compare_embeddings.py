"""Compare embedding sets of the same samples: raw pixels vs a model, one layer vs another, model vs model.

For each set, on the rows every set has (in view order), with ``k`` neighbours from the set's shared kNN
graph (the row itself left out):

- ``knn_accuracy``: leave-one-out k-NN classification accuracy: each labelled row is predicted by the
  majority label of its ``k`` nearest labelled neighbours (a tie goes to the class first in sorted
  order, scikit-learn's rule); the fraction predicted right.
- ``label_agreement``: the mean fraction of a labelled row's ``k`` neighbours that share its label
  ("10-NN label agreement").
- ``trustworthiness``: of a 2-D layout of the set (``layout``: PCA by default, or UMAP / t-SNE computed
  now, or given visualization runs), by ``sklearn.manifold.trustworthiness`` with ``k`` neighbours on a
  seeded random subsample of ``trust_samples`` rows (1 = the layout's neighbours are true neighbours).

Between sets: ``agreement[a][b]``, the mean over rows of ``|N_a(i) & N_b(i)| / k`` (1 = the two sets
see the same neighbours). For ``queries`` the ``k`` most similar samples of each set are kept, to be
shown side by side (:meth:`EmbeddingComparison.show_neighbors`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..core.errors import InvalidInputError, WrongTypeError
from ..core.runs import BrainResults, load_brain_results, register_type
from .contract import brain_method
from .neighbors import METRICS, check_metric
from .source import EmbeddingSource, _digest, resolve_embeddings

if TYPE_CHECKING:
    from ..core.collection import SampleCollection

LAYOUTS = ("pca", "umap", "tsne")
METRIC_NAMES = ("knn_accuracy", "label_agreement", "trustworthiness")


@register_type
class EmbeddingComparison(BrainResults):
    """What :func:`compare_embeddings` measured: numbers per set, agreement between sets, query neighbours."""

    run_type = "embedding_comparison"

    @property
    def sets(self) -> list[str]:
        return list(self.config["sets"])

    @property
    def agreement(self) -> np.ndarray:
        """``[S, S]``: mean fraction of shared k-NN between sets (diagonal 1)."""
        return self._arrays["agreement"]

    @property
    def query_ids(self) -> list[str]:
        return [self.keys[i] for i in self._arrays["queries"]]

    def neighbors(self, set_name: str) -> list[list[str]]:
        """For each query, the ids of its ``k`` most similar samples in ``set_name``, most similar first."""
        s = self._set_index(set_name)
        return [[self.keys[j] for j in row] for row in self._arrays["neighbors"][s]]

    @property
    def metrics(self) -> dict[str, Any]:
        """``{set: {"knn_accuracy", "label_agreement", "trustworthiness"}, "agreement": {a: {b: v}}}``."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self.sets):
            out[name] = {m: _num(self._arrays[m][i]) for m in METRIC_NAMES}
        out["agreement"] = {a: {b: _num(self.agreement[i, j]) for j, b in enumerate(self.sets)}
                            for i, a in enumerate(self.sets)}
        return out

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "k": self.config["k"], "metrics": self.metrics}

    def _set_index(self, name: str) -> int:
        try:
            return self.sets.index(name)
        except ValueError:
            raise InvalidInputError(f"no embedding set {name!r} in this comparison; sets: {self.sets}") from None

    def report(self, figsize: tuple[float, float] | None = None) -> Any:
        """A matplotlib ``Figure``: the three numbers per set as grouped bars, and the agreement heatmap."""
        from ..display import new_figure

        sets = self.sets
        fig = new_figure(figsize=figsize or (6 + 1.2 * len(sets), 4.2))
        ax, hm = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        width = 0.8 / len(METRIC_NAMES)
        for m, metric in enumerate(METRIC_NAMES):
            vals = np.nan_to_num(self._arrays[metric].astype(float))
            bars = ax.bar(np.arange(len(sets)) + (m - 1) * width, vals, width, label=metric.replace("_", " "))
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(range(len(sets)), sets)
        ax.set_ylim(0, 1.08)
        ax.set_title(f"{self.config['k']}-NN quality per embedding set", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        im = hm.imshow(self.agreement, vmin=0, vmax=1, cmap="viridis")
        hm.set_xticks(range(len(sets)), sets, rotation=30)
        hm.set_yticks(range(len(sets)), sets)
        for i in range(len(sets)):
            for j in range(len(sets)):
                hm.text(j, i, f"{self.agreement[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if self.agreement[i, j] < 0.5 else "black")
        hm.set_title(f"shared {self.config['k']}-NN between sets", fontsize=10)
        fig.colorbar(im, ax=hm, fraction=0.046)
        fig.tight_layout()
        return fig

    def show_neighbors(self, query: int | str = 0, n: int | None = None, labels: bool = True) -> Any:
        """A matplotlib ``Figure``: one row per set, the query image then its ``n`` (default ``k``, at most 8)
        most similar samples, captioned with their labels."""
        from ..display import _open
        from ..images import cached_thumbnails

        q = self.query_ids.index(query) if isinstance(query, str) else int(query)
        if not 0 <= q < len(self.query_ids):
            raise InvalidInputError(f"query must be one of the {len(self.query_ids)} queries (index or id), "
                                    f"got {query!r}")
        n = min(int(n or self.config["k"]), self.config["k"])
        qid = self.query_ids[q]
        rows = [[qid, *self.neighbors(s)[q][:n]] for s in self.sets]
        ids = sorted({i for r in rows for i in r})
        coll = self._samples.select(ids)
        path_of = dict(zip(coll.values("id"), coll.values("filepath")))
        label_of = dict(zip(coll.values("id"), _labels_of(coll, self.config["labels_field"])))
        thumbs = dict(zip(ids, cached_thumbnails(self._samples._dataset.thumbnails_dir,
                                                 [(i, path_of[i]) for i in ids])))
        from ..display import new_figure

        fig = new_figure(figsize=(1.6 * (n + 1), 1.8 * len(self.sets)))
        axes = fig.subplots(len(self.sets), n + 1, squeeze=False)
        for r, (name, row) in enumerate(zip(self.sets, rows)):
            for c, sid in enumerate(row):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                pic = _open(thumbs[sid]) if thumbs[sid] else None
                if pic is not None:
                    ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None)
                cap = str(label_of.get(sid)) if labels and label_of.get(sid) is not None else ""
                ax.set_title(("query " if c == 0 else "") + cap, fontsize=8)
                if c == 0:
                    ax.set_ylabel(name, fontsize=9)
        fig.tight_layout()
        return fig


def _num(v: Any) -> float | None:
    v = float(v)
    return None if np.isnan(v) else round(v, 6)


def _labels_of(coll: "SampleCollection", field: str) -> list[Any]:
    from .visualization import _row_values

    return _row_values(coll, None, coll.values("id"), coll.values("id"), field)


def _sources(samples: "SampleCollection", sets: Any, metric: str, progress: bool) -> dict[str, EmbeddingSource]:
    """Each set's embeddings (a stored set's name, a model name, a Model, or an array in view order)."""
    dataset = samples._dataset
    if isinstance(sets, dict):
        items = list(sets.items())
    elif isinstance(sets, (list, tuple)):
        items = [(s if isinstance(s, str) else getattr(s, "name", f"set{i}"), s) for i, s in enumerate(sets)]
    else:
        raise WrongTypeError(f"embeddings_sets must be a list or a dict of embedding sets, got {type(sets).__name__}")
    if len(items) < 1:
        raise InvalidInputError("pass at least one embedding set")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"embedding set names must be distinct, got {names}")
    stored = dataset.list_embeddings()
    # Every name is checked (models built) before any set is computed: a typo in the second name must not
    # cost the first set's embedding run.
    specs = [(name, _model_of(spec, stored, dataset.name) if isinstance(spec, str) and spec not in stored else spec)
             for name, spec in items]
    out = {}
    for name, spec in specs:
        if isinstance(spec, (str, np.ndarray)):  # a stored set's name, or an array
            out[name] = resolve_embeddings(samples, spec, progress=progress)
        else:  # a Model: its stored set, or computed and stored once
            out[name] = resolve_embeddings(samples, model=spec, progress=progress)
    return out


def _model_of(name: str, stored: list[str], dataset_name: str) -> Any:
    """The model a set name that is not stored stands for, or an error naming the stored sets."""
    from ..models import load_model

    try:
        return load_model(name)
    except InvalidInputError as e:
        raise InvalidInputError(f"{name!r} is neither an embedding set of dataset {dataset_name!r} (stored: "
                                f"{', '.join(stored) or 'none'}) nor a model: {e}") from None


def _common(sources: dict[str, EmbeddingSource]) -> dict[str, EmbeddingSource]:
    """Every source restricted to the rows all of them have, in the first's order."""
    first = next(iter(sources.values()))
    common = set(first.keys)
    for s in sources.values():
        common &= set(s.keys)
    keys = [k for k in first.keys if k in common]
    if len(keys) < 3:
        raise InvalidInputError(f"the embedding sets share only {len(keys)} samples; at least 3 are needed")
    out = {}
    for name, s in sources.items():
        if s.keys == keys:
            out[name] = s
            continue
        pos = {k: i for i, k in enumerate(s.keys)}
        idx = np.array([pos[k] for k in keys])
        out[name] = EmbeddingSource(keys, [s.sample_ids[i] for i in idx], np.ascontiguousarray(s.matrix[idx]),
                                    f"{s.fingerprint}-{_digest(keys)}", None, s.embeddings_field, s.model,
                                    s.cache_dir)
    return out


def knn_votes(neighbors: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out k-NN predictions and label agreement from ``[N, k]`` neighbour rows (self excluded).

    ``y`` holds class indices, -1 for unlabelled (neither voting nor scored). Returns ``(predicted
    class or -1, fraction of labelled neighbours sharing the row's label or NaN)``.
    """
    lab = y[neighbors]
    votes = np.zeros((len(y), n_classes), dtype=np.int64)
    rows = np.repeat(np.arange(len(y)), neighbors.shape[1])
    ok = lab.ravel() >= 0
    np.add.at(votes, (rows[ok], lab.ravel()[ok]), 1)
    has = votes.sum(axis=1) > 0
    pred = np.where(has, votes.argmax(axis=1), -1)  # argmax: ties to the first class in sorted order
    same = (lab == y[:, None]) & (y[:, None] >= 0)
    counted = (lab >= 0).sum(axis=1)
    agree = np.where(counted > 0, same.sum(axis=1) / np.maximum(counted, 1), np.nan)
    return pred, agree


@brain_method(key_param="brain_key")
def compare_embeddings(samples: "SampleCollection", embeddings_sets: Any, labels_field: str | None = "ground_truth",
                       k: int = 10, metric: str = "cosine", layout: Any = "pca", trust_samples: int = 2000,
                       queries: Any = 3, seed: int = 51, brain_key: str | None = None, overwrite: bool = False,
                       progress: bool = True) -> EmbeddingComparison:
    """Compare embedding sets of the same samples (see the module docstring for every number).

    Parameters
    ----------
    samples : Dataset or DatasetView
    embeddings_sets : list or dict
        The sets: names of stored embedding sets (``"pixels"``, ``"layer3"``), model names or Models
        (their stored set, computed and stored once: ``"efficientnet-lite0"``), or ``[N, D]`` arrays in
        view order; a dict gives them names (``{"pixels": "px", "fc1": x_fc1}``).
    labels_field : str or None
        The class of each sample, for ``knn_accuracy`` and ``label_agreement`` (None: skip them).
    k : int
        Neighbours (default 10).
    metric : {"cosine", "euclidean", "dotproduct"}
        Of the kNN graphs and of trustworthiness' high-dimensional side. ``"dotproduct"``: neighbours
        are the rows with the largest ``x . y`` (raw embeddings); trustworthiness then ranks the
        high-dimensional neighbours by ``max - x . y`` (a precomputed matrix of the subsample, non-negative as
        sklearn requires; only ranks count).
    layout : "pca", "umap", "tsne", or dict
        The 2-D layout whose trustworthiness is measured: computed now for each set, or ``{set: brain
        key of a visualization run}``.
    trust_samples : int
        Rows in the trustworthiness subsample (``sklearn.manifold.trustworthiness`` is O(n^2)).
    queries : int or list of ids
        Samples whose ``k`` most similar samples are kept per set: that many random labelled samples
        (seeded), or these ids.
    seed : int
        For the subsample, the queries and UMAP / t-SNE.
    brain_key : str, optional
        Store the comparison under this key.
    """
    from sklearn.manifold import trustworthiness

    check_metric(metric, METRICS)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if isinstance(trust_samples, bool) or not isinstance(trust_samples, (int, np.integer)) or trust_samples < 10:
        raise InvalidInputError(f"trust_samples must be an integer >= 10, got {trust_samples!r}")
    if not (isinstance(layout, dict) or layout in LAYOUTS):
        raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)} or a dict {{set: visualization key}}, "
                                f"got {layout!r}")
    if samples._is_patches:
        raise InvalidInputError("compare_embeddings() compares sample embeddings: pass a dataset or sample view")
    labels = None
    if labels_field is not None:
        from .visualization import _row_values

        ids = samples.values("id")
        labels = dict(zip(ids, _row_values(samples, None, ids, ids, labels_field)))
    started = time.perf_counter()
    sources = _common(_sources(samples, embeddings_sets, metric, progress))
    names = list(sources)
    first = sources[names[0]]
    keys, n = first.keys, len(first.keys)
    kk = min(int(k), n - 1)
    rng = np.random.default_rng(seed)
    if labels is not None:
        vals = [labels.get(i) for i in keys]
        classes = sorted({str(v) for v in vals if v is not None})
        index = {c: j for j, c in enumerate(classes)}
        y = np.array([-1 if v is None else index[str(v)] for v in vals])
    else:
        y = np.full(n, -1)
        classes = []
    query_rows = _query_rows(queries, keys, y, rng)
    sub = np.sort(rng.choice(n, size=min(int(trust_samples), n), replace=False))
    graphs, acc, agree, trust, neigh = {}, [], [], [], []
    for name in names:
        src = sources[name]
        g = src.graph(kk, metric)
        nb = g.indices[:, 1:kk + 1]
        graphs[name] = nb
        if labels is not None and (y >= 0).any():
            pred, frac = knn_votes(nb, y, len(classes))
            scored = (y >= 0) & (pred >= 0)
            acc.append(float((pred[scored] == y[scored]).mean()) if scored.any() else np.nan)
            agree.append(float(np.nanmean(frac[y >= 0])))
        else:
            acc.append(np.nan)
            agree.append(np.nan)
        pts = _layout(samples, src, name, layout, seed)
        xs = np.asarray(src.matrix[sub], dtype=np.float64)
        if metric == "dotproduct":  # sklearn takes no negative "distances": max - x . y ranks the same
            dots = xs @ xs.T
            high, high_metric = dots.max() - dots, "precomputed"
        else:
            high, high_metric = xs, metric
        trust.append(float(trustworthiness(high, np.asarray(pts[sub], dtype=np.float64),
                                           n_neighbors=min(kk, len(sub) // 2 - 1), metric=high_metric)))
        neigh.append(nb[query_rows])
    agreement = np.eye(len(names))
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            agreement[a, b] = agreement[b, a] = _shared(graphs[names[a]], graphs[names[b]])
    config = {"method": "knn", "sets": names, "k": kk, "metric": metric, "labels_field": labels_field,
              "layout": layout if isinstance(layout, str) else dict(layout), "trust_samples": int(len(sub)),
              "seed": seed, "models": {nm: sources[nm].model for nm in names},
              "embeddings_fields": {nm: sources[nm].embeddings_field for nm in names}}
    results = EmbeddingComparison(samples, config, keys, first.sample_ids,
                                  {"knn_accuracy": np.array(acc), "label_agreement": np.array(agree),
                                   "trustworthiness": np.array(trust), "agreement": agreement,
                                   "queries": query_rows.astype(np.int64), "trust_rows": sub.astype(np.int64),
                                   "neighbors": np.stack(neigh).astype(np.int64)}, None,
                                  {"elapsed_s": round(time.perf_counter() - started, 3)})
    if brain_key:
        results.save(brain_key, overwrite=overwrite)
    return results


def _query_rows(queries: Any, keys: list[str], y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if isinstance(queries, (int, np.integer)) and not isinstance(queries, bool):
        if queries < 0:
            raise InvalidInputError(f"queries must be a count >= 0 or a list of ids, got {queries!r}")
        pool = np.flatnonzero(y >= 0) if (y >= 0).any() else np.arange(len(keys))
        return np.sort(rng.choice(pool, size=min(int(queries), len(pool)), replace=False))
    if isinstance(queries, Sequence) and not isinstance(queries, str):
        pos = {k: i for i, k in enumerate(keys)}
        missing = [q for q in queries if q not in pos]
        if missing:
            raise InvalidInputError(f"{len(missing)} query ids are not rows of every set (first: {missing[0]!r})")
        return np.array([pos[q] for q in queries], dtype=np.int64)
    raise WrongTypeError(f"queries must be a count or a list of sample ids, got {type(queries).__name__}")


def _shared(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of |row of a & row of b| / k (one sort per block, no Python loop over rows)."""
    k = a.shape[1]
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    dup = (both[:, 1:] == both[:, :-1]).sum(axis=1)  # each shared neighbour appears twice
    return float((dup / k).mean())


def _layout(samples: "SampleCollection", src: EmbeddingSource, name: str, layout: Any, seed: int) -> np.ndarray:
    from .visualization import compute_visualization

    if isinstance(layout, dict):
        if name not in layout:
            raise InvalidInputError(f"layout has no visualization for set {name!r}")
        viz = load_brain_results(samples._dataset, layout[name])
        pos = {kk: i for i, kk in enumerate(viz.keys)}
        missing = [kk for kk in src.keys if kk not in pos]
        if missing:
            raise InvalidInputError(f"visualization {layout[name]!r} has no point for {len(missing)} compared samples")
        return np.asarray(viz.points)[[pos[kk] for kk in src.keys], :2]
    if layout == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(src.matrix)
    rows = samples.select(src.keys, ordered=True)
    return compute_visualization(rows, embeddings=src.matrix, method=layout, seed=seed, progress=False).points


__all__ = ["EmbeddingComparison", "LAYOUTS", "compare_embeddings", "knn_votes"]
