"""Visualization benchmarks: embedlens UMAP / t-SNE against umap-learn's and scikit-learn's defaults.

Run: ``.venv/bin/python bench/bench_visualization.py [--quick] [--parts synthetic,mnist,tsne,first,steady]``
(default: every part). Every case runs in a fresh process (see ``harness.py``): wall time, peak memory
above the process start (measured from the end of the untimed setup, which builds the dataset and the
data), and trustworthiness (k=10, euclidean, as
``sklearn.manifold.trustworthiness``) on a fixed 5,000-point subsample. Baselines run on the same data in
the same run:

* synthetic: 100,000 x 512 float32 (``--quick``: 20,000 x 512), 100 Gaussian clusters, each spread along
  its own random 8-dimensional subspace plus small isotropic noise; deterministic (seed 0).
* MNIST-5000: the 5,000 28x28 digits of ``el.load_sample_dataset("mnist")`` as 784 raw pixels in [0, 1].

UMAP: ``compute_visualization(method="umap")`` (shared cosine kNN graph: exact below 10k points, FAISS IVF
above) against ``umap.UMAP()`` with its defaults (euclidean, pynndescent). ``seed=None`` is the like-for-like
case (both parallel); ``seed=0`` is embedlens's reproducible single-threaded layout. t-SNE:
``compute_visualization(method="tsne")`` (openTSNE on the shared graph) against ``sklearn.manifold.TSNE()``.
First call vs second call: two calls in one fresh process (embedlens's kNN graph is recomputed for the
second, so only import and numba costs differ), with numba's on-disk cache warm (the usual case) and cold
(``NUMBA_CACHE_DIR`` pointing to an empty folder: the first run on a machine); ``steady`` does the same
for the synthetic comparison, to show the ratio without start-up costs.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import measure, reset_peak, save, table  # noqa: E402

TRUST_SAMPLE = 5_000


# ---------------------------------------------------------------------------------------------- data


def clustered(n: int, dim: int = 512, n_clusters: int = 100, seed: int = 0) -> np.ndarray:
    """``n`` points in ``n_clusters`` Gaussian clusters, each along its own 8-d subspace; deterministic.

    Centres have norm ~10, a cluster spreads ~3 along its subspace, plus noise of norm ~0.45: clusters are
    apart, and inside each one the neighbours follow the subspace (what trustworthiness can tell apart).
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_clusters, dim)).astype(np.float32)
    bases = (rng.normal(0.0, 1.0, (n_clusters, 8, dim)) / np.sqrt(8 * dim) * 3).astype(np.float32)
    labels = np.arange(n) % n_clusters
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 10_000):  # in blocks, so generating the data never peaks far above its size
        lab = labels[start:start + 10_000]
        z = rng.normal(0.0, 1.0, (len(lab), 8)).astype(np.float32)
        noise = rng.normal(0.0, 0.02, (len(lab), dim)).astype(np.float32)
        out[start:start + len(lab)] = centers[lab] / np.sqrt(dim) * 10 + np.einsum("nk,nkd->nd", z, bases[lab]) + noise
    return out


def mnist() -> np.ndarray:
    from embedlens.zoo import _load_mnist

    images, _ = _load_mnist()
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def setup(kind: str, n: int, cold_numba: bool = False):
    """Untimed: the data, and a dataset of as many samples for embedlens to key the points by."""
    if cold_numba:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="numba-cold-")
    os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="elbench-")
    import embedlens as el

    x = clustered(n) if kind == "synthetic" else mnist()[:n]
    ds = el.Dataset("bench")
    ds.add_samples([el.Sample(f"/data/{i:07d}.png") for i in range(len(x))])
    reset_peak()
    return ds, x


# ---------------------------------------------------------------------------------------------- cases


def embedlens_layout(ds, x, method: str, seed):
    from embedlens.brain.visualization import compute_visualization

    r = compute_visualization(ds, embeddings=x, method=method, seed=seed, progress=False)
    return {"points": r.points, "knn": f"{r.config.get('knn_method')} (recall {r.config.get('knn_recall')})"}


def umap_default(ds, x):
    import umap

    return {"points": umap.UMAP().fit_transform(x).astype(np.float32)}


def sklearn_tsne(ds, x):
    from sklearn.manifold import TSNE

    return {"points": TSNE().fit_transform(x).astype(np.float32)}


def _forget_graphs(ds) -> None:
    """Drop the cached kNN graphs (memory and disk), so a second call pays for its graph like the first."""
    import shutil

    from embedlens.brain import neighbors

    neighbors._cache.clear()
    shutil.rmtree(ds.arrays_dir / "knn", ignore_errors=True)


def twice_embedlens(ds, x, seed=0):
    """Two identical calls in one process; the graph is recomputed, so only import/JIT costs differ."""
    from embedlens.brain.visualization import compute_visualization

    times = []
    for _ in range(2):
        _forget_graphs(ds)
        t = time.perf_counter()
        compute_visualization(ds, embeddings=x, seed=seed, progress=False)
        times.append(time.perf_counter() - t)
    return {"first_s": times[0], "second_s": times[1]}


def twice_umap(ds, x, seed=0):
    times = []
    for _ in range(2):
        t = time.perf_counter()
        import umap

        umap.UMAP(random_state=seed).fit_transform(x)
        times.append(time.perf_counter() - t)
    return {"first_s": times[0], "second_s": times[1]}


# ---------------------------------------------------------------------------------------------- main


def _trust(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.manifold import trustworthiness

    idx = np.random.default_rng(1).choice(len(x), size=min(TRUST_SAMPLE, len(x)), replace=False)
    return float(trustworthiness(x[idx], y[idx], n_neighbors=10))


# measure() calls fn(*setup(*args)); these adapters keep the per-case arguments out of setup's signature.
def _el_umap_parallel(kind, n):
    return (*setup(kind, n), "umap", None)


def _el_umap_seeded(kind, n):
    return (*setup(kind, n), "umap", 0)


def _el_tsne(kind, n):
    return (*setup(kind, n), "tsne", 0)


def _plain(kind, n):
    return setup(kind, n)


def _cold(kind, n):
    return setup(kind, n, cold_numba=True)


def _unseeded(kind, n):
    return (*setup(kind, n), None)


PARTS = ("synthetic", "mnist", "tsne", "first", "steady")


def main() -> None:
    """``--quick``: 20,000 synthetic points. ``--parts synthetic,mnist,...`` runs only those parts.

    ``steady`` repeats the synthetic UMAP comparison as two calls in one process each, so the second call
    shows both libraries without their import and numba start-up costs.
    """
    quick = "--quick" in sys.argv
    parts = PARTS
    if "--parts" in sys.argv:
        parts = tuple(sys.argv[sys.argv.index("--parts") + 1].split(","))
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    n_syn = 20_000 if quick else 100_000
    x_mn = mnist()
    rows: list[dict] = []

    def layout(kind, n, x, name, fn, setup_fn):
        m = measure(fn, kind, n, setup=setup_fn)
        out = m["extra"]
        row = {"data": f"{kind} {len(x):,}x{x.shape[1]}", "case": name, "seconds": m["wall_s"], "cpu_s": m["cpu_s"],
               "peak_mib": m["peak_mib"], "trust10": _trust(x, out["points"]), "knn": out.get("knn", "")}
        rows.append(row)
        print(f"{row['data']:>20} | {name:<36} | {m['wall_s']:7.1f} s | {m['peak_mib']:7.0f} MiB | "
              f"trust {row['trust10']:.4f}", flush=True)
        return row

    def versus(row, base):
        row.update(baseline=base["case"], speedup=base["seconds"] / row["seconds"],
                   trust_vs_baseline=row["trust10"] - base["trust10"])

    sets = []
    if "synthetic" in parts:
        sets.append(("synthetic", n_syn, clustered(n_syn)))
    if "mnist" in parts:
        sets.append(("mnist", len(x_mn), x_mn))
    for kind, n, x in sets:
        ours = layout(kind, n, x, "embedlens umap (seed=None)", embedlens_layout, _el_umap_parallel)
        seeded = layout(kind, n, x, "embedlens umap (seed=0)", embedlens_layout, _el_umap_seeded)
        base = layout(kind, n, x, "umap.UMAP() defaults", umap_default, _plain)
        versus(ours, base)
        versus(seeded, base)

    if "tsne" in parts:
        ts = layout("mnist", len(x_mn), x_mn, "embedlens tsne (seed=0)", embedlens_layout, _el_tsne)
        sk = layout("mnist", len(x_mn), x_mn, "sklearn TSNE() defaults", sklearn_tsne, _plain)
        versus(ts, sk)

    first = []
    if "first" in parts:
        for name, fn, setup_fn in (("embedlens umap, numba cache warm", twice_embedlens, _plain),
                                   ("embedlens umap, numba cache cold", twice_embedlens, _cold),
                                   ("umap.UMAP(random_state=0)", twice_umap, _plain)):
            e = measure(fn, "mnist", len(x_mn), setup=setup_fn)["extra"]
            first.append({"case": name, "first_s": e["first_s"], "second_s": e["second_s"],
                          "first_over_second": e["first_s"] / e["second_s"]})
            print(f"{'mnist first/second':>20} | {name:<36} | {e['first_s']:7.1f} s | {e['second_s']:7.1f} s",
                  flush=True)

    if "steady" in parts:
        for name, fn in (("embedlens umap (seed=None)", twice_embedlens), ("umap.UMAP() defaults", twice_umap)):
            e = measure(fn, "synthetic", n_syn, setup=_unseeded)["extra"]
            first.append({"case": f"synthetic {n_syn:,}: {name}", "first_s": e["first_s"], "second_s": e["second_s"],
                          "first_over_second": e["first_s"] / e["second_s"]})
            print(f"{'synthetic 1st/2nd':>20} | {name:<36} | {e['first_s']:7.1f} s | {e['second_s']:7.1f} s",
                  flush=True)

    print()
    if rows:
        print(table(rows, ["data", "case", "seconds", "peak_mib", "trust10", "speedup", "trust_vs_baseline", "knn"]))
    if first:
        print()
        print(table(first, ["case", "first_s", "second_s", "first_over_second"]))
    suffix = ("-quick" if quick else "") + ("" if parts == PARTS else "-" + "-".join(parts))
    print("saved", save("visualization" + suffix, rows + [{"first_call": f} for f in first]))


if __name__ == "__main__":
    main()
