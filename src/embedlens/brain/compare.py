"""Compare two sets of samples without labels: train vs production, out-of-distribution samples, drift.

``compare_datasets(reference, target)`` (the brain method ``compare_to_reference(target, reference)``)
answers four questions without labels, from the embeddings (and the pixels' perceptual descriptors), with
four kNN searches (two more for the perceptual channel) and nothing of size N x M:

1. **Which target samples are novel?** Measured in each *channel* (``channels="auto"``: the embeddings,
   and the perceptual descriptors of the pixels, :mod:`embedlens.models.perceptual`, cosine), by two
   statistics. ``d_t`` = mean distance of target sample ``t`` to its ``k`` nearest reference samples;
   ``d_r`` = the same for each reference sample, leave-one-out (its ``k`` nearest *other* reference
   samples, from the reference's shared kNN graph); and the local ratio ``l_t = d_t / mean_{r in N_t} d_r``
   (``N_t`` its ``k`` nearest reference samples; ``l_r`` leave-one-out likewise: the simplified local
   outlier factor). Each statistic ``s`` gives conformal p-values ``p_t = (1 + #{r : s_r >= s_t}) /
   (n_ref + 1)`` and, leave-one-out, ``p_r = #{r' : s_r' >= s_r} / n_ref``; Fisher's statistic ``F = -2
   sum log p`` over the channels' statistics is computed for every target and reference sample, and the
   novelty is ``t``'s rank among the reference's own ``F``::

       novelty_t = #{r : F_r < F_t} / (n_ref + 1)          in [0, 1)

   ``1 - novelty_t`` is (up to the leave-one-out's one neighbour fewer) the conformal p-value of "t
   comes from the reference's distribution": with no shift, novelty is uniform on [0, 1) and
   ``P(novelty >= 0.99) <= 0.01``, whatever the channels; the p-values are dependent, so ``F`` is
   re-calibrated on the reference rather than read against a chi-square. Far-away samples all score
   close to 1; ``top(n)`` ranks them by the embedding distance ``d_t`` (``novelty_distance``).

   Why two channels and two statistics (``bench/bench_compare.py``, EfficientNet-Lite0 on MNIST): the
   ImageNet embedding places rotated and inverted digits among ordinary digits (AUROC of ``d_t`` 0.78
   and 0.87), the pixels' descriptor does not (0.99, 1.00) but misses blurred and noisy digits (0.56,
   0.79) that the embedding sees (1.00); a distance alone misses a new class that lies between dense
   classes (7s between 1s and 9s: 0.89 and 0.90), which the local ratio sees (0.98 on the pixels). Their
   combination scores >= 0.97 on all six shifts. Kth instead of mean distance and ``k`` from 1 to 50
   moved ``d_t``'s AUROC by at most +0.03 (k = 1) to -0.07 (k = 50); centring the embeddings lowered it.
   The price: where one channel sees nothing, it dilutes the other (tiles of 6 photos the reference
   lacks, among tiles of 12 it has: 0.89 against 0.93 for ``d_t`` alone; one of the 6 is a cat and the
   reference has another cat, the others score >= 0.90); ``channels="embedding"`` is the embeddings
   alone. At 100,000 x 100,000 the perceptual channel adds ~6 s of CPU to ~40 s (load 2; up to ~15 s
   on a busy machine).
2. **Which reference samples does the target still cover?** The mirror image, calibrated on the target:
   ``e_r`` = mean distance of reference sample ``r`` to its ``k`` nearest target samples, ``e_t`` = the
   target's leave-one-out distances, and ``coverage_r = 1 - #{t : e_t < e_r} / (n_target + 1)`` in
   (0, 1]. Calibrating on each set's own density makes both scores independent of the sets' sizes.
3. **Has the distribution shifted?** Two tests, combined by Bonferroni: ``p = min(1, 2 min(p_knn,
   p_novelty))``, verdict ``p < alpha`` (default 0.01, so that 20 random splits all read "no shift" with
   probability >= 0.98).

   (a) kNN two-sample test (Schilling 1986, Henze 1988) on the pooled kNN graph (merged from the four
   searches): ``f_i`` = fraction of sample ``i``'s ``k`` nearest pooled neighbours from its own set;
   ``T`` averages ``f`` within each set, then over the two sets (unequal sizes weigh equally; ``T ~ 0.5``
   with no shift). The set labels are shuffled ``n_permutations`` times on the fixed graph:
   ``p_knn = (1 + #{T_perm >= T}) / (1 + n_permutations)``, exact under "no shift". Effect size
   ``(T - T0) / (1 - T0)``, ``T0`` the permutation mean: 0 = no shift, 1 = no sample has a neighbour
   from the other set. Above ``max_test_samples`` (20,000) pooled samples the test runs on that many
   random ones (the target's at most half, unless the reference is short) with their own kNN graph:
   still exact, and the permutations stay cheap. It sees new clusters and changed
   proportions, not novel samples scattered one by one (their nearest neighbours are mostly reference
   samples still), hence:

   (b) novelty tail test: of the 1% largest of all novelty statistics (``F_r`` and ``F_t`` pooled), ``X`` are
   the target's; with no shift ``X`` is hypergeometric, ``p_novelty = P(X' >= X)``
   (:func:`novelty_tail_test`).
4. **Where?** Spherical k-means (cosine; plain for euclidean) on the pooled embeddings with
   ``n_clusters = clip(round(sqrt(N / 10)), 2, 50)`` for ``N`` pooled samples; each cluster's share of
   the reference and of the target, a two-proportion z-test, and "over" / "under" when its p-value is
   below ``alpha / n_clusters`` (Bonferroni); its examples are its most novel target samples and its
   least covered reference samples.

**Storage.** The run belongs to the target: it is stored on the target's dataset under ``brain_key``
(default ``"compare"``) with the target's view, and writes ``<brain_key>_novelty`` on the target
samples. The reference is recorded in ``config["reference"]`` (dataset name, view stages, count). When
the reference is in the same dataset, ``<brain_key>_coverage`` is written on its samples too (the only
brain run that writes outside its own view; deleting the run deletes both fields); when it is another
dataset nothing is written there and coverage lives in the results (``results.coverage``,
``results.uncovered(n)``). Reference and target must not share samples.

Cross-set neighbours (:func:`~embedlens.brain.neighbors.cross_knn`): exact BLAS blocks up to ``EXACT_MAX_POINTS ** 2`` pairs,
above that the inverted lists of :mod:`embedlens.brain.neighbors` (``sqrt(n)`` k-means lists over the
searched set, each list searched as block products, probes raised until the sampled recall@k >= 0.97).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.collection import SampleCollection
from ..core.errors import InvalidInputError
from ..core.fields import check_name
from ..core.runs import BrainResults, check_new_key, register_type
from .contract import brain_method
from .neighbors import check_metric, cross_knn, prepare
from .source import resolve_embeddings

if TYPE_CHECKING:
    from ..core.view import DatasetView

DEFAULT_KEY = "compare"
#: What ``compare_datasets(channels=...)`` takes (see :func:`compare_to_reference`).
COMPARE_CHANNELS = ("auto", "embedding", "perceptual")
MAX_CLUSTERS = 50


# ------------------------------------------------------------------------------------------ scores and tests


def rank_scores(distances: np.ndarray, calibration: np.ndarray) -> np.ndarray:
    """``#{c : c < d} / (len(calibration) + 1)`` for each ``d``: a distance's rank among the leave-one-out
    distances of the set it is compared with (1 minus the conformal p-value), in [0, 1)."""
    ranks = np.searchsorted(np.sort(calibration), distances, side="left")
    return (ranks / (len(calibration) + 1)).astype(np.float32)


def conformal_p_values(ref_stat: np.ndarray, tgt_stat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conformal p-values of "no farther than the reference" for a statistic (larger = more novel):
    ``p_t = (1 + #{r : s_r >= s_t}) / (n + 1)`` for each target value and, leave-one-out,
    ``p_r = #{r' : s_r' >= s_r} / n`` (itself counted once) for each reference value, ``n`` reference values.
    With no shift both are (nearly) uniform on ``(0, 1]``."""
    ordered = np.sort(ref_stat)
    n = len(ordered)
    p_ref = (n - np.searchsorted(ordered, ref_stat, side="left")) / n
    p_tgt = (1 + n - np.searchsorted(ordered, tgt_stat, side="left")) / (n + 1)
    return p_ref, p_tgt


def local_ratio(own: np.ndarray, neighbours: np.ndarray, ref_loo: np.ndarray) -> np.ndarray:
    """``own_i / mean_{r in N_i} ref_loo_r``: a row's kNN distance over the leave-one-out kNN distances of its
    ``k`` nearest reference samples ``N_i`` (the simplified local outlier factor). ``1`` = as far as its
    neighbours are from theirs; the floor ``1e-6 x median(ref_loo)`` keeps groups of exact copies finite."""
    scale = ref_loo[np.maximum(neighbours, 0)].mean(axis=1)
    floor = 1e-6 * max(float(np.median(ref_loo)), 1e-30)
    return own / np.maximum(scale, floor)


def channel_statistics(ref_neighbours: np.ndarray, ref_d: np.ndarray, tgt_neighbours: np.ndarray,
                       tgt_d: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The two novelty statistics of one channel, ``{name: (reference values, target values)}``:
    ``distance`` = mean distance to the ``k`` nearest reference samples (the reference's leave-one-out),
    ``local_ratio`` = that distance over its reference neighbours' own (:func:`local_ratio`). Inputs: the
    reference's leave-one-out neighbours and distances ``[n_ref, k]`` and the target's ``[n_tgt, k]``."""
    ref_loo, tgt_mean = ref_d.mean(axis=1), tgt_d.mean(axis=1)
    return {"distance": (ref_loo, tgt_mean),
            "local_ratio": (local_ratio(ref_loo, ref_neighbours, ref_loo),
                            local_ratio(tgt_mean, tgt_neighbours, ref_loo))}


def combine_novelty(statistics: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fisher's combination of the statistics' conformal p-values, re-calibrated on the reference.

    ``F = -2 sum_j log p_j`` over the statistics ``j`` (:func:`conformal_p_values`), for every target sample
    and (leave-one-out) every reference sample; the statistics are dependent, so ``F`` is not read against
    a chi-square: the novelty is the target's rank among the reference's own ``F``
    (:func:`rank_scores`), uniform under no shift again. Returns ``(F_ref, F_tgt, novelty)``.
    """
    f_ref = np.zeros(len(statistics[0][0]))
    f_tgt = np.zeros(len(statistics[0][1]))
    for ref_stat, tgt_stat in statistics:
        p_ref, p_tgt = conformal_p_values(np.asarray(ref_stat, np.float64), np.asarray(tgt_stat, np.float64))
        f_ref -= 2 * np.log(p_ref)
        f_tgt -= 2 * np.log(p_tgt)
    return f_ref, f_tgt, rank_scores(f_tgt, f_ref)


def pooled_graph(ref_within: np.ndarray, ref_within_d: np.ndarray, ref_cross: np.ndarray,
                 ref_cross_d: np.ndarray, tgt_within: np.ndarray, tgt_within_d: np.ndarray,
                 tgt_cross: np.ndarray, tgt_cross_d: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest pooled neighbours of every row (reference rows first, then target rows, each
    row itself excluded), merged from each set's own graph and its cross search: the nearest ``k`` of
    the union are among the nearest ``k`` of each part."""
    n_ref = len(ref_within)
    out = []
    for within, wd, cross, cd, own_offset, other_offset in (
            (ref_within, ref_within_d, ref_cross, ref_cross_d, 0, n_ref),
            (tgt_within, tgt_within_d, tgt_cross, tgt_cross_d, n_ref, 0)):
        cand = np.concatenate([within[:, :k] + own_offset, cross[:, :k] + other_offset], axis=1)
        cand_d = np.concatenate([wd[:, :k], cd[:, :k]], axis=1)
        pick = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        out.append(np.take_along_axis(cand, pick, axis=1))
    return np.concatenate(out)


def knn_shift_test(graph: np.ndarray, is_target: np.ndarray, n_permutations: int = 1000,
                   seed: int = 51) -> dict[str, Any]:
    """Schilling-Henze kNN two-sample test on a kNN graph of pooled samples (see the module docstring).

    ``graph`` [N, k] neighbour indices (self excluded), ``is_target`` [N] bool. The labels are shuffled
    ``n_permutations`` times on the fixed graph; each statistic comes from one sparse product.
    """
    from scipy import sparse

    n, k = graph.shape
    # edges i -> j; (adjacency @ z)[i] = how many of i's neighbours are targets
    adjacency = sparse.csr_matrix((np.ones(n * k, np.float32), graph.ravel(), np.arange(0, n * k + 1, k)),
                                  shape=(n, n))

    def statistic(z: np.ndarray) -> np.ndarray:  # z [N, B] labels in {0, 1} -> [B] statistics
        t_nbrs = adjacency @ z
        t_count = z.sum(axis=0)
        same_t = (t_nbrs * z).sum(axis=0) / np.maximum(k * t_count, 1)
        same_r = ((k - t_nbrs) * (1 - z)).sum(axis=0) / np.maximum(k * (n - t_count), 1)
        return 0.5 * (same_t + same_r)

    rng = np.random.default_rng(seed)
    labels = is_target.astype(np.float32)
    observed = float(statistic(labels[:, None])[0])
    chunk = max(1, min(n_permutations, (16 << 20) // (4 * n)))
    perms = np.concatenate([statistic(rng.permuted(np.tile(labels, (b, 1)), axis=1).T)
                            for b in [chunk] * (n_permutations // chunk) + [n_permutations % chunk] if b])
    null_mean, null_sd = float(perms.mean()), float(perms.std())
    p = (1 + int((perms >= observed - 1e-6).sum())) / (1 + n_permutations)
    return {"statistic": observed, "null_mean": null_mean, "null_sd": null_sd,
            "effect": (observed - null_mean) / (1.0 - null_mean) if null_mean < 1 else 0.0,
            "z": (observed - null_mean) / null_sd if null_sd > 0 else 0.0,
            "p_value": p, "n_permutations": int(n_permutations), "rows_tested": int(n), "k": int(k)}


def novelty_tail_test(ref_scores: np.ndarray, tgt_scores: np.ndarray, tail: float = 0.01) -> dict[str, Any]:
    """Are there more target samples among the ``tail`` farthest of all than chance allows?

    The pooled scores (the reference's leave-one-out ones and the target's: the novelty statistic ``F``,
    or any distance computed the same way for both) are ranked; of
    the top ``m = ceil(tail * N)``, ``X`` are target samples (ties count for the reference). With no shift
    the ranks are (nearly) exchangeable, so ``X`` is hypergeometric: ``p = P(X' >= X)``, exact, no
    permutations. ``d_t`` has one more candidate neighbour than ``d_r``, which only makes the test
    conservative.
    """
    from scipy.stats import hypergeom

    n_ref, n_tgt = len(ref_scores), len(tgt_scores)
    n = n_ref + n_tgt
    m = max(1, math.ceil(tail * n))
    scores = np.concatenate([ref_scores, tgt_scores]).astype(np.float64)
    is_target = np.r_[np.zeros(n_ref, bool), np.ones(n_tgt, bool)]
    top = np.lexsort((is_target, -scores))[:m]
    x = int(is_target[top].sum())
    expected = m * n_tgt / n
    return {"tail": tail, "top": m, "target_in_top": x, "expected": expected,
            "excess": x / expected if expected > 0 else 0.0,
            "p_value": float(min(1.0, hypergeom.sf(x - 1, n, n_tgt, m)))}


def default_clusters(n: int) -> int:
    """``clip(round(sqrt(n / 10)), 2, 50)``: about ``sqrt(10 n)`` samples a cluster, enough to measure shares."""
    return int(min(MAX_CLUSTERS, max(2, round(math.sqrt(n / 10))), n))


def shift_clusters(ref: np.ndarray, tgt: np.ndarray, ref_ids: list[str], tgt_ids: list[str], metric: str,
                   n_clusters: int, alpha: float, ref_far: np.ndarray, tgt_far: np.ndarray, seed: int = 51,
                   examples: int = 5) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """k-means on the pooled rows; each cluster's shares in both sets, a two-proportion z-test, and as
    examples the members that differ most: the target's farthest from the reference (``tgt_far``) and
    the reference's farthest from the target (``ref_far``). Returns ``(clusters, reference cluster of each
    row, target cluster of each row)``."""
    import faiss

    n_ref, n_tgt, dim = len(ref), len(tgt), ref.shape[1]
    rng = np.random.default_rng(seed)
    per = 256  # rows a centroid to train on: FAISS's default cap
    take_r = np.sort(rng.choice(n_ref, size=min(n_ref, per * n_clusters // 2), replace=False))
    take_t = np.sort(rng.choice(n_tgt, size=min(n_tgt, per * n_clusters // 2), replace=False))
    train = np.concatenate([prepare(ref[take_r], metric), prepare(tgt[take_t], metric)])
    km = faiss.Kmeans(dim, n_clusters, niter=20, seed=seed, spherical=metric == "cosine",
                      max_points_per_centroid=per, min_points_per_centroid=1)
    km.train(train)

    def assign(x: np.ndarray) -> np.ndarray:
        lab = np.empty(len(x), np.int64)
        step = max(1, (8 << 20) // (4 * dim))
        for start in range(0, len(x), step):
            lab[start:start + step] = faiss.knn(prepare(x[start:start + step], metric), km.centroids, 1)[1][:, 0]
        return lab

    ref_lab, tgt_lab = assign(ref), assign(tgt)
    c_ref = np.bincount(ref_lab, minlength=n_clusters)
    c_tgt = np.bincount(tgt_lab, minlength=n_clusters)
    clusters = []
    for c in range(n_clusters):
        s_r, s_t = c_ref[c] / n_ref, c_tgt[c] / n_tgt
        pooled = (c_ref[c] + c_tgt[c]) / (n_ref + n_tgt)
        se = math.sqrt(max(pooled * (1 - pooled), 1e-300) * (1 / n_ref + 1 / n_tgt))
        z = (s_t - s_r) / se if se > 0 else 0.0
        p = math.erfc(abs(z) / math.sqrt(2))
        where = "over" if p < alpha / n_clusters and z > 0 else "under" if p < alpha / n_clusters else "same"

        def farthest(lab, far, ids):
            members = np.flatnonzero(lab == c)
            return [ids[i] for i in members[np.argsort(-far[members], kind="stable")[:examples]]]

        clusters.append({"cluster": c, "reference_count": int(c_ref[c]), "target_count": int(c_tgt[c]),
                         "reference_share": float(s_r), "target_share": float(s_t),
                         "ratio": float(s_t / s_r) if s_r > 0 else None, "z": float(z), "p_value": float(p),
                         "shift": where, "example_reference_ids": farthest(ref_lab, ref_far, ref_ids),
                         "example_target_ids": farthest(tgt_lab, tgt_far, tgt_ids)})
    clusters.sort(key=lambda c: -abs(c["target_share"] - c["reference_share"]))
    return clusters, ref_lab, tgt_lab


# ------------------------------------------------------------------------------------------ results


@register_type
class ComparisonResults(BrainResults):
    """A comparison of a target collection (the run's samples, ``keys``) with a reference.

    Arrays (in ``keys`` order for the target, ``reference_ids`` order for the reference): ``scores`` =
    ``novelty`` in [0, 1), ``novelty_distance`` (mean distance to the ``k`` nearest reference samples),
    ``target_cluster``; ``coverage`` in (0, 1], ``coverage_distance``, ``reference_cluster``. ``shift``
    is the two-sample test, ``clusters`` the clusters sorted by how much their share changed.
    """

    run_type = "comparison"

    def __init__(self, *args: Any, shift: dict[str, Any] | None = None,
                 clusters: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shift = dict(shift or {})
        self.clusters = list(clusters or [])

    @property
    def novelty(self) -> np.ndarray:
        return self._arrays["scores"]

    @property
    def novelty_distance(self) -> np.ndarray:
        return self._arrays["novelty_distance"]

    @property
    def coverage(self) -> np.ndarray:
        return self._arrays["coverage"]

    @property
    def coverage_distance(self) -> np.ndarray:
        return self._arrays["coverage_distance"]

    @property
    def target_clusters(self) -> np.ndarray:
        """The cluster (``clusters[i]["cluster"]``) of each target sample, in ``keys`` order."""
        return self._arrays["target_cluster"]

    @property
    def reference_clusters(self) -> np.ndarray:
        """The cluster of each reference sample, in ``reference_ids`` order."""
        return self._arrays["reference_cluster"]

    @property
    def reference_ids(self) -> list[str]:
        return self._arrays["reference_ids"].tolist()

    @property
    def target_ids(self) -> list[str]:
        return self.keys

    @property
    def novelty_field(self) -> str:
        return self.config["novelty_field"]

    @property
    def coverage_field(self) -> str | None:
        return self.config["coverage_field"] if self.config["reference"]["same_dataset"] else None

    @property
    def reference(self) -> "DatasetView":
        """The reference collection (of the target's dataset, or of the dataset it names)."""
        from ..core.dataset import load_dataset

        ref = self.config["reference"]
        ds = self._samples._dataset
        ds = ds if ref["dataset"] == ds.name else load_dataset(ref["dataset"])
        return ds.view_from_dicts(ref["stages"])

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        novelty = np.asarray(self.novelty, np.float64)
        out.update({"reference": {"dataset": self.config["reference"]["dataset"], "count": len(self.reference_ids)},
                    "target": {"dataset": self._samples._dataset.name, "count": len(self.keys)},
                    "novel_fraction": float((novelty >= 0.99).mean()) if len(novelty) else 0.0,
                    "uncovered_fraction": float((np.asarray(self.coverage) <= 0.01).mean())
                    if len(self.coverage) else 0.0,
                    "shift": {k: self.shift[k] for k in ("shift", "p_value", "p_knn", "p_novelty", "effect",
                                                         "statistic", "null_mean", "z")},
                    "clusters_over": sum(c["shift"] == "over" for c in self.clusters),
                    "clusters_under": sum(c["shift"] == "under" for c in self.clusters)})
        return out

    def report(self, n: int = 5) -> dict[str, Any]:
        """The summary with the ``n`` most novel target samples, the ``n`` least covered reference samples
        (id, file, score) and the ``n`` clusters whose share changed most: what the CLI prints."""
        _check_n(n)
        out = self.summary()
        out.update(novelty_field=self.novelty_field, coverage_field=self.coverage_field, shift=dict(self.shift))
        rows = []
        for name, view, ids, scores in (("novelty", self.top(n), self.keys, self.novelty),
                                        ("coverage", self.uncovered(n), self.reference_ids, self.coverage)):
            by_id = dict(zip(ids, np.asarray(scores, np.float64).tolist()))
            rows.append([{"id": i, "filepath": p, name: by_id[i]}
                         for i, p in zip(view.values("id"), view.values("filepath"))])
        out["most_novel"], out["least_covered"] = rows
        out["clusters"] = self.clusters[:n]
        return out

    def top(self, n: int = 10) -> "DatasetView":
        """The ``n`` most novel target samples, most novel first (ties of novelty broken by distance)."""
        _check_n(n)
        order = np.lexsort((-self.novelty_distance, -np.asarray(self.novelty, np.float64)))[:int(n)]
        return self._samples.select([self.keys[i] for i in order], ordered=True)

    def uncovered(self, n: int = 10) -> "DatasetView":
        """The ``n`` reference samples the target covers least (farthest from any target sample, relative
        to the target's own spacing), least covered first, as a view of the reference."""
        _check_n(n)
        order = np.lexsort((-self.coverage_distance, np.asarray(self.coverage, np.float64)))[:int(n)]
        ids = self.reference_ids
        return self.reference.select([ids[i] for i in order], ordered=True)

    def cluster_view(self, cluster: int, which: str = "target") -> "DatasetView":
        """The samples of ``cluster`` (a ``clusters[i]["cluster"]`` number) in the target or the reference."""
        if which not in ("target", "reference"):
            raise InvalidInputError(f"which must be 'target' or 'reference', got {which!r}")
        if isinstance(cluster, bool) or not isinstance(cluster, (int, np.integer)) or \
                not 0 <= cluster < len(self.clusters):
            raise InvalidInputError(f"cluster must be an integer in [0, {len(self.clusters)}), got {cluster!r}")
        if which == "target":
            lab, ids, base = self.target_clusters, self.keys, self._samples
        else:
            lab, ids, base = self.reference_clusters, self.reference_ids, self.reference
        return base.select([ids[i] for i in np.flatnonzero(lab == cluster)])

    def _results_json(self) -> dict[str, Any]:
        return {"shift": self.shift, "clusters": self.clusters}

    @classmethod
    def _from_stored(cls, samples, config, keys, sample_ids, arrays, key, stored):
        return cls(samples, config, keys, sample_ids, arrays, key, stored.get("info"),
                   shift=stored.get("shift"), clusters=stored.get("clusters"))


def _check_n(n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")


# ------------------------------------------------------------------------------------------ the method


def as_collection(value: Any, name: str) -> SampleCollection:
    """A dataset or view, or a dataset's name, as a collection (``name`` says which argument it was)."""
    if isinstance(value, SampleCollection):
        return value
    if isinstance(value, str):
        from ..core.dataset import load_dataset

        return load_dataset(value)
    raise InvalidInputError(f"{name} must be a dataset, a view or a dataset's name, got {type(value).__name__}")


def collection_from_spec(spec: str, dataset: Any) -> SampleCollection:
    """A collection from the CLI's short form: ``tag:NAME`` / ``view:NAME`` (saved view) of ``dataset``,
    ``all`` (the whole of ``dataset``), or ``dataset:OTHER`` optionally followed by ``/tag:NAME`` or
    ``/view:NAME``."""
    from ..core.dataset import load_dataset

    head, _, rest = spec.partition("/")
    if head.startswith("dataset:"):
        dataset, spec = load_dataset(head[len("dataset:"):]), rest or "all"
    kind, _, value = spec.partition(":")
    if spec == "all":
        return dataset
    if kind == "tag" and value:
        return dataset.match_tags(value)
    if kind == "view" and value:
        return dataset.load_saved_view(value)
    raise InvalidInputError(f"cannot read {spec!r} as a set of samples: use tag:NAME, view:NAME, all, "
                            "or dataset:NAME[/tag:NAME | /view:NAME]")


def _check_float_field(dataset: Any, field: str, overwrite: bool) -> None:
    check_name(field)
    schema = dataset.get_field_schema()
    if field in schema:
        if not overwrite:
            raise InvalidInputError(f"field {field!r} exists on dataset {dataset.name!r}; pass overwrite=True "
                                    "to replace it, or choose another brain_key or field name")
        if schema[field] not in ("float", "int"):
            raise InvalidInputError(f"field {field!r} has type {schema[field]}; choose another field name")


def _set_model(dataset: Any, name: str) -> str | None:
    if name in dataset.list_embeddings():
        return dataset.get_embeddings_info(name).get("fingerprint")
    return None


@brain_method(key_param="brain_key")
def compare_to_reference(samples: SampleCollection, reference: Any, embeddings: Any = None,
                         reference_embeddings: Any = None, model: Any = None, brain_key: str = DEFAULT_KEY,
                         k: int = 10, metric: str = "cosine", novelty_field: str | None = None,
                         coverage_field: str | None = None, n_clusters: int | None = None,
                         n_permutations: int = 1000, alpha: float = 0.01, max_test_samples: int = 20_000,
                         seed: int = 51, overwrite: bool = False, progress: bool = True,
                         channels: str = "auto") -> ComparisonResults:
    """Compare ``samples`` (the target: production, test, new data) with ``reference`` (train).

    The brain-method form of :func:`compare_datasets` (the target first, like every brain method's
    ``samples``); see the module's docstring for the formulas.

    Parameters
    ----------
    samples : SampleCollection
        The target; the run is stored on its dataset, with its view.
    reference : SampleCollection or str
        A view of the same dataset (sharing no sample with the target), another dataset or its name.
    embeddings : array or str, optional
        The target's embeddings: ``[N, D]`` in view order, or a stored set's name (then, unless
        ``reference_embeddings`` is given, the set of the same name is used for the reference).
        Otherwise both are resolved with ``model`` by the one embeddings policy.
    reference_embeddings : array or str, optional
        The reference's embeddings (required when ``embeddings`` is an array).
    model : str or Model, optional
        Embed both sets with this model (default EfficientNet-Lite0); stored sets are reused.
    brain_key : str
        The run's key on the target's dataset (default ``"compare"``).
    k : int
        Neighbours of the novelty, coverage and the test (capped at each set's size - 1).
    metric : {"cosine", "euclidean"}
    novelty_field, coverage_field : str, optional
        Fields to write; default ``<brain_key>_novelty`` and ``<brain_key>_coverage``.
    n_clusters : int, optional
        Clusters for "where"; default ``clip(round(sqrt(N / 10)), 2, 50)``, ``N`` pooled samples.
    n_permutations : int
        Permutations of the shift test (the smallest p-value is ``1 / (n_permutations + 1)``).
    alpha : float
        Level of the shift test's verdict and (Bonferroni-corrected) of the clusters' flags.
    max_test_samples : int
        Above this many pooled samples the kNN test runs on that many random ones, with their own graph.
    seed : int
        Seed of the k-means, the subsample and the permutations.
    overwrite : bool
        Replace an existing run and its fields.
    progress : bool
        Show progress bars while embedding (and computing perceptual descriptors).
    channels : {"auto", "embedding", "perceptual"}
        What the novelty (and the novelty tail test) is measured on. ``"auto"`` (default): the embeddings
        and the perceptual descriptors of the pixels (:mod:`embedlens.models.perceptual`, stored once as
        the set ``"perceptual"`` of each dataset, as for ``find_duplicates``), combined; when no image can
        be read (no files on disk) the embeddings alone, with a warning, recorded in
        ``config["channels"]``. ``"embedding"`` / ``"perceptual"``: that channel alone (``"perceptual"``
        refuses to run without images). Coverage, the kNN two-sample test and the clusters use the
        embeddings.
    """
    started = time.perf_counter()
    reference = as_collection(reference, "reference")
    check_metric(metric)
    for name, value, low in (("k", k, 1), ("n_permutations", n_permutations, 19),
                             ("max_test_samples", max_test_samples, 100)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer))
                                   or not 2 <= n_clusters <= 1000):
        raise InvalidInputError(f"n_clusters must be an integer in [2, 1000], got {n_clusters!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InvalidInputError(f"alpha must be in (0, 1), got {alpha!r}")
    if channels not in COMPARE_CHANNELS:
        raise InvalidInputError(f"channels must be one of {', '.join(COMPARE_CHANNELS)}, got {channels!r}")
    if samples._is_patches or reference._is_patches:
        raise InvalidInputError("compare_datasets() compares samples: pass datasets or sample views")
    dataset, ref_dataset = samples._dataset, reference._dataset
    same = ref_dataset.name == dataset.name
    check_new_key(samples, brain_key, overwrite)
    novelty_field = novelty_field or f"{brain_key}_novelty"
    coverage_field = coverage_field or f"{brain_key}_coverage"
    _check_float_field(dataset, novelty_field, overwrite)
    if same:
        if coverage_field == novelty_field:
            raise InvalidInputError("novelty_field and coverage_field must differ")
        _check_float_field(dataset, coverage_field, overwrite)
        shared = set(samples.values("id")) & set(reference.values("id"))
        if shared:
            raise InvalidInputError(f"reference and target share {len(shared)} samples: compare disjoint sets "
                                    "(e.g. ds.match_tags('train') vs ds.match_tags('production'))")
    if reference_embeddings is None:
        if isinstance(embeddings, str):
            reference_embeddings = embeddings
        elif embeddings is not None:
            raise InvalidInputError("embeddings= is an array of the target's rows: pass the reference's rows as "
                                    "reference_embeddings= too")
    for name, value, ds_ in (("embeddings", embeddings, dataset), ("reference_embeddings", reference_embeddings,
                                                                   ref_dataset)):
        if isinstance(value, str) and value not in ds_.list_embeddings():
            raise InvalidInputError(f"{name}: no embeddings {value!r} in dataset {ds_.name!r}; stored: "
                                    f"{', '.join(ds_.list_embeddings()) or 'none'}")
    if isinstance(embeddings, str) and isinstance(reference_embeddings, str):
        a, b = _set_model(dataset, embeddings), _set_model(ref_dataset, reference_embeddings)
        if a and b and a != b:
            raise InvalidInputError(f"the target's embeddings {embeddings!r} and the reference's "
                                    f"{reference_embeddings!r} come from different models: compare embeddings "
                                    "of one model")

    tgt = resolve_embeddings(samples, embeddings, model, progress=progress)
    ref = resolve_embeddings(reference, reference_embeddings, model, progress=progress)
    if tgt.model and ref.model and tgt.model != ref.model:
        raise InvalidInputError(f"the target's embeddings come from model {tgt.model!r} and the reference's from "
                                f"{ref.model!r}: compare embeddings of one model")
    if tgt.matrix.shape[1] != ref.matrix.shape[1]:
        raise InvalidInputError(f"the target's embeddings have {tgt.matrix.shape[1]} dimensions and the "
                                f"reference's {ref.matrix.shape[1]}: compare embeddings of one model")
    for name, src in (("reference", ref), ("target", tgt)):
        if len(src) < 3:
            raise InvalidInputError(f"the {name} needs at least 3 samples with embeddings, got {len(src)}")
    k_ref, k_tgt = min(int(k), len(ref) - 1), min(int(k), len(tgt) - 1)

    # four searches: each set's shared graph (leave-one-out) and the two cross searches
    g_ref, g_tgt = ref.graph(k_ref, metric), tgt.graph(k_tgt, metric)
    t2r_i, t2r_d, t2r_recall = cross_knn(ref.matrix, tgt.matrix, k_ref, metric, seed)
    r2t_i, r2t_d, r2t_recall = cross_knn(tgt.matrix, ref.matrix, k_tgt, metric, seed)
    tgt_loo = g_tgt.distances[:, 1:].mean(axis=1)
    novelty_d = t2r_d.mean(axis=1)
    coverage_d = r2t_d.mean(axis=1)
    statistics = {}
    if channels != "perceptual":
        statistics["embedding"] = channel_statistics(g_ref.indices[:, 1:], g_ref.distances[:, 1:], t2r_i, t2r_d)
    channel_info = {"requested": channels}
    if channels != "embedding":
        perceptual, channel_info["perceptual"] = _perceptual_statistics(reference, ref, samples, tgt, k_ref, seed,
                                                                        progress, required=channels == "perceptual")
        if perceptual is not None:
            statistics["perceptual"] = perceptual
    channel_info["used"] = list(statistics)
    channel_info["statistics"] = list(statistics[channel_info["used"][0]])
    ref_score, tgt_score, novelty = combine_novelty([pair for ch in statistics.values() for pair in ch.values()])
    coverage = (1.0 - rank_scores(coverage_d, tgt_loo)).astype(np.float32)

    k_test = min(k_ref, k_tgt)
    if len(ref) + len(tgt) <= max_test_samples:  # the pooled graph, merged from the four searches
        graph = pooled_graph(g_ref.indices[:, 1:], g_ref.distances[:, 1:], r2t_i, r2t_d,
                             g_tgt.indices[:, 1:], g_tgt.distances[:, 1:], t2r_i, t2r_d, k_test)
        is_target = np.r_[np.zeros(len(ref), bool), np.ones(len(tgt), bool)]
    else:
        graph, is_target = _subsample_graph(ref, tgt, int(max_test_samples), k_test, metric, seed)
    shift = knn_shift_test(graph, is_target, int(n_permutations), seed)
    tail = novelty_tail_test(ref_score, tgt_score)
    p_value = min(1.0, 2 * min(shift["p_value"], tail["p_value"]))  # Bonferroni over the two tests
    shift.update(p_knn=shift.pop("p_value"), p_novelty=tail["p_value"], novelty_tail=tail, p_value=p_value,
                 shift=bool(p_value < alpha), alpha=float(alpha))
    n_c = int(n_clusters) if n_clusters else default_clusters(len(ref) + len(tgt))
    clusters, ref_lab, tgt_lab = shift_clusters(ref.matrix, tgt.matrix, ref.keys, tgt.keys, metric, n_c, alpha,
                                                coverage_d, novelty_d, seed)

    config = {"method": "knn", "brain_key": brain_key, "novelty_field": novelty_field,
              "coverage_field": coverage_field, "k": int(k), "k_reference": k_ref, "k_target": k_tgt,
              "metric": metric, "channels": channel_info, "n_clusters": n_c, "n_permutations": int(n_permutations), "alpha": float(alpha),
              "max_test_samples": int(max_test_samples), "seed": int(seed),
              "reference": {"dataset": ref_dataset.name, "stages": [s.to_dict() for s in reference._stages],
                            "same_dataset": same, "count": len(ref)},
              **tgt.record, "reference_embeddings": ref.record,
              "knn": {"reference_graph": g_ref.method, "target_graph": g_tgt.method,
                      "recall": {"reference_graph": _r(g_ref.recall), "target_graph": _r(g_tgt.recall),
                                 "target_to_reference": _r(t2r_recall), "reference_to_target": _r(r2t_recall)}}}
    arrays = {"scores": novelty, "novelty_distance": novelty_d.astype(np.float32),
              "target_cluster": tgt_lab.astype(np.int32), "coverage": coverage,
              "coverage_distance": coverage_d.astype(np.float32), "reference_cluster": ref_lab.astype(np.int32),
              "reference_ids": np.asarray(ref.keys, dtype="<U24")}
    results = ComparisonResults(samples, config, tgt.keys, tgt.sample_ids, arrays, None,
                                {"elapsed_s": round(time.perf_counter() - started, 3)}, shift=shift,
                                clusters=clusters)
    fields = [novelty_field]
    results.stage_field(novelty_field, *_values_for(samples.values("id"), tgt.keys, novelty))
    if same:
        results.stage_field(coverage_field, *_values_for(reference.values("id"), ref.keys, coverage))
        fields.append(coverage_field)
    results.save(brain_key, overwrite=True, fields=fields)
    return results


def _perceptual_statistics(reference: SampleCollection, ref: Any, target: SampleCollection, tgt: Any, k: int,
                           seed: int, progress: bool, required: bool
                           ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]] | None, dict[str, Any]]:
    """The perceptual channel's novelty statistics (:func:`channel_statistics` on the descriptors of the
    rows of ``ref`` and ``tgt``, cosine), or ``(None, info)`` with a warning when either set has no
    readable image (an error when the channel was ``required``)."""
    from . import duplicates as dups

    fallback = "novelty by the embeddings only"
    ref_desc, ref_info = dups.perceptual_channel(reference, list(ref.keys), None, progress, fallback)
    tgt_desc, tgt_info = (None, {}) if ref_desc is None else \
        dups.perceptual_channel(target, list(tgt.keys), None, progress, fallback)
    info = {"reference": ref_info, "target": tgt_info}
    if ref_desc is None or tgt_desc is None:
        if required:
            raise InvalidInputError("channels='perceptual' needs the images: "
                                    + (ref_info if ref_desc is None else tgt_info).get("skipped", ""))
        info["skipped"] = (ref_info if ref_desc is None else tgt_info)["skipped"]
        return None, info
    graph = dups.perceptual_graph(ref_desc, list(ref.keys), k, reference._dataset.arrays_dir / "knn")
    cross_i, cross_d, recall = cross_knn(ref_desc, tgt_desc, graph.k, "cosine", seed)
    info["knn"] = {"reference_graph": graph.method, "recall": {"reference_graph": _r(graph.recall),
                                                               "target_to_reference": _r(recall)}}
    return channel_statistics(graph.indices[:, 1:], graph.distances[:, 1:], cross_i, cross_d), info


def _subsample_graph(ref: Any, tgt: Any, size: int, k: int, metric: str, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph of ``size`` random pooled rows (the target's at most half unless the reference is
    short) and which are the target's: with no shift every row is a draw from one distribution, so the
    test on them is exact, and its permutations cost ``size`` labels, not N."""
    from .neighbors import knn_graph
    from .source import _digest

    rng = np.random.default_rng(seed)
    n_t = min(len(tgt), max(size // 2, size - len(ref)))
    n_r = min(len(ref), size - n_t)
    ri = np.sort(rng.choice(len(ref), size=n_r, replace=False))
    ti = np.sort(rng.choice(len(tgt), size=n_t, replace=False))
    rows = np.concatenate([np.asarray(ref.matrix[ri], np.float32), np.asarray(tgt.matrix[ti], np.float32)])
    graph = knn_graph(rows, "shift-test-" + _digest(ref.fingerprint, tgt.fingerprint, ri, ti), k, metric)
    return graph.indices[:, 1:], np.r_[np.zeros(n_r, bool), np.ones(n_t, bool)]


def _r(recall: float | None) -> float | None:
    return None if recall is None else round(float(recall), 4)


def _values_for(ids: list[str], keys: list[str], scores: np.ndarray) -> tuple[list[str], list[Any]]:
    """Values for every sample of the view: its score, or None where it had no embedding."""
    if keys == ids:
        return ids, scores.astype(np.float64).tolist()
    by_id = dict(zip(keys, scores.astype(np.float64).tolist()))
    return ids, [by_id.get(i) for i in ids]


def compare_datasets(reference: Any, target: Any, embeddings: Any = None, model: Any = None,
                     brain_key: str = DEFAULT_KEY, k: int = 10, **kwargs: Any) -> ComparisonResults:
    """Compare a ``target`` set of samples (production, test) with a ``reference`` (train), without labels.

    ``reference`` and ``target`` are views of one dataset (``ds.match_tags("train")`` vs
    ``ds.match_tags("production")``, sharing no sample) or two datasets (or their names) embedded with
    the same model. ``embeddings``: a stored set's name (the same name in both datasets) or a pair of
    arrays ``(reference_rows, target_rows)``; else both are embedded with ``model`` (default
    EfficientNet-Lite0) by the one embeddings policy; embeddings of different models are refused.

    Returns :class:`ComparisonResults`: ``novelty`` of every target sample (also in the target's field
    ``<brain_key>_novelty``), ``coverage`` of every reference sample (in ``<brain_key>_coverage`` when
    the reference is in the same dataset), ``shift`` (the kNN two-sample test: ``p_value``, ``effect``,
    ``shift``), ``clusters`` (where), ``top(n)`` and ``uncovered(n)``. The run is stored on the target's
    dataset under ``brain_key``. Other keyword arguments: see :func:`compare_to_reference`.

    >>> res = el.compare_datasets(ds.match_tags("train"), ds.match_tags("production"))
    >>> res.shift["p_value"], res.top(20)
    """
    target = as_collection(target, "target")
    if isinstance(embeddings, (tuple, list)):
        if len(embeddings) != 2:
            raise InvalidInputError("embeddings= as a pair is (reference_rows, target_rows)")
        kwargs["reference_embeddings"], embeddings = embeddings
    elif embeddings is not None and not isinstance(embeddings, str):
        raise InvalidInputError("embeddings= is a stored set's name or a pair (reference_rows, target_rows)")
    return compare_to_reference(target, reference, embeddings=embeddings, model=model, brain_key=brain_key, k=k,
                                **kwargs)


__all__ = ["ComparisonResults", "collection_from_spec", "compare_datasets", "compare_to_reference",
           "knn_shift_test", "rank_scores"]
