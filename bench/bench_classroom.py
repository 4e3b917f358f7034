"""The classroom analyses on MNIST-5000 and digits: figures measured, not asserted.

compare_embeddings (pixels vs EfficientNet-Lite0, 10-NN), class centroids and PCA/LDA projections checked
against scikit-learn on the same matrices. Run: ``.venv/bin/python bench/bench_classroom.py [--quick]``
(--quick: digits only). Results: bench/results/classroom.json.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from harness import save, table


def run(name: str, models: list[str]) -> list[dict]:
    import embedlens as el
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import NearestCentroid

    ds = el.load_sample_dataset(name, progress=False)
    t0 = time.perf_counter()
    cmp = el.compare_embeddings(ds, models, labels_field="ground_truth", k=10, layout="umap", trust_samples=2000,
                                queries=3, progress=False)
    elapsed = time.perf_counter() - t0
    rows = []
    y = np.array(ds.values("ground_truth.label"))
    for m in models:
        x = np.asarray(ds.get_embeddings(cmp.config["embeddings_fields"][m]), dtype=np.float64)
        cent = el.compute_class_centroids(ds, embeddings=cmp.config["embeddings_fields"][m])
        ref = NearestCentroid().fit(x, y)
        pca = el.compute_visualization(ds, embeddings=cmp.config["embeddings_fields"][m], method="pca",
                                       components=(3, 4), progress=False)
        pts = PCA(n_components=4).fit_transform(x)[:, 2:4]
        lda = el.compute_visualization(ds, embeddings=cmp.config["embeddings_fields"][m], method="lda",
                                       labels_field="ground_truth", progress=False)
        lref = LinearDiscriminantAnalysis(n_components=2).fit(x, y).transform(x)
        rows.append({"dataset": name, "set": m, **cmp.metrics[m],
                     "agreement_with_" + models[1 - models.index(m)] if len(models) == 2 else "agreement":
                         cmp.metrics["agreement"][m][models[-1] if m == models[0] else models[0]],
                     "closest_pair": "-".join(cent.confusable_pairs(1)[0][:2]),
                     "centroid_max_rel_err": float(np.abs(cent.centroids - ref.centroids_).max()
                                                   / np.abs(ref.centroids_).max()),
                     "distance_max_rel_err": float(np.abs(cent.distances - pairwise_distances(ref.centroids_)).max()
                                                   / cent.distances.max()),
                     "pca34_max_abs_err": float(np.abs(np.abs(pca.points) - np.abs(pts)).max() / np.abs(pts).max()),
                     "lda_max_abs_err": float(np.abs(np.abs(lda.points) - np.abs(lref)).max() / np.abs(lref).max()),
                     "compare_s": round(elapsed, 1)})
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    rows = run("digits", ["pixels", "efficientnet-lite0"])
    if not quick:
        rows += run("mnist", ["pixels", "efficientnet-lite0"])
    cols = ["dataset", "set", "knn_accuracy", "label_agreement", "trustworthiness", "closest_pair",
            "centroid_max_rel_err", "distance_max_rel_err", "pca34_max_abs_err", "lda_max_abs_err", "compare_s"]
    print(table(rows, cols))
    print(save("classroom-quick" if quick else "classroom", rows))


if __name__ == "__main__":
    main()
