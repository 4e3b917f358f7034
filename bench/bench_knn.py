"""kNN graph builders side by side at 100,000 and 1,000,000 x 512 (k = 15), each in a fresh process.

Run: ``.venv/bin/python bench/bench_knn.py [--skip-1m] [--data clustered,manifold] [--only ivf-gemm,faiss-ivf]``.
Writes ``bench/results/knn.json``. A 1M run of every candidate on one kind of data takes ~30 minutes here.

* data (unit vectors, written once in chunks to ``$TMPDIR/embedlens-bench/`` and memory-mapped read-only):
  ``clustered``: 100 isotropic Gaussian clusters that touch (``bench_similarity.clustered``), so within a
  cluster the neighbours are set by 512-d noise: the hard case for partitions; ``manifold``: a 16-d latent
  mixture through a random ReLU MLP (low intrinsic dimension, like CNN features).
* recall@15 on 1,000 random rows against exact search (computed once per data set, not timed); a neighbour
  counts when it is as near as the exact 15th.
* candidates: ``ivf-gemm`` (embedlens: inverted lists searched as block matrix products, probes raised
  until its own sampled recall is >= 0.97); ``pca-rerank`` (the same on a 128-d PCA copy for 64
  candidates, re-ranked exactly in 512-d); ``faiss-hnsw`` (IndexHNSWFlat M=32, efConstruction 40,
  efSearch 64, batched search); ``faiss-ivf`` (IndexIVFFlat, 4 sqrt(N) lists, nprobe 16, batched search:
  the reference for ``cpu_vs_faiss_ivf``); ``pynndescent`` (defaults, warm: its numba compilation is
  reported apart, in ``note``).
* CPU seconds are ``time.process_time()`` (both cores), peak MiB is the process's RSS high-water mark
  above the start, data pages of the memory map included (``peak_over_data_mib`` subtracts them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import RESULTS, measure, save, table  # noqa: E402

K = 15
DIM = 512
SAMPLE = 1000
CACHE = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "embedlens-bench"


# ---------------------------------------------------------------------------------------------- data


def _write(path: Path, n: int, make_chunk) -> None:
    tmp = path.with_name(path.name + ".part.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, 50_000):
        b = make_chunk(start, min(n, start + 50_000))
        out[start:start + len(b)] = b / np.linalg.norm(b, axis=1, keepdims=True)
    out.flush()
    del out
    tmp.replace(path)


def make_data(kind: str, n: int) -> Path:
    path = CACHE / f"knn-{kind}-{n}.npy"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if kind == "clustered":  # as bench_similarity.clustered, in chunks
        centers = rng.normal(0.0, 1.0, (100, DIM)).astype(np.float32)
        labels = rng.integers(0, 100, n)
        _write(path, n, lambda a, b: centers[labels[a:b]] + rng.normal(0.0, 0.7, (b - a, DIM)).astype(np.float32))
    elif kind == "manifold":
        means, scales = rng.normal(0, 3.0, (50, 16)), rng.uniform(0.3, 1.5, 50)
        w1 = rng.normal(0, 0.25, (16, 256)).astype(np.float32)
        w2 = (np.abs(rng.normal(0, 1 / 16, (256, DIM))) * rng.choice([1.0, -0.3], (256, DIM))).astype(np.float32)
        modes = rng.integers(0, 50, n)

        def chunk(a, b):
            z = means[modes[a:b]] + rng.normal(0, 1, (b - a, 16)) * scales[modes[a:b], None]
            h = np.maximum(np.maximum(z.astype(np.float32) @ w1, 0) @ w2, 0)
            return h + np.abs(rng.normal(0, 0.05, h.shape)).astype(np.float32) * h.std()
        _write(path, n, chunk)
    else:
        raise ValueError(kind)
    return path


def make_truth(path: Path) -> Path:
    """Exact top-(k+1) of 1,000 random rows (inner product of unit rows = cosine), in blocks of the data."""
    import faiss

    out = path.with_name(path.stem + "-truth.npz")
    if out.exists():
        return out
    x = np.load(path, mmap_mode="r")
    sample = np.sort(np.random.default_rng(123).choice(len(x), SAMPLE, replace=False))
    heap = faiss.ResultHeap(SAMPLE, K + 1, keep_max=True)
    q = np.ascontiguousarray(x[sample])
    for start in range(0, len(x), 65536):
        d, i = faiss.knn(q, np.ascontiguousarray(x[start:start + 65536]), K + 1, faiss.METRIC_INNER_PRODUCT)
        heap.add_result(d, i + start)
    heap.finalize()
    np.savez(out, sample=sample, kth=heap.D[:, K])
    return out


def recall(x: np.ndarray, idx: np.ndarray, truth: Path) -> float:
    """Recall@k of the sample rows: found neighbours (self excluded) at least as similar as the exact k-th."""
    t = np.load(truth)
    hits = 0
    for s, kth in zip(t["sample"].tolist(), t["kth"].tolist()):
        nb = [j for j in idx[s].tolist() if j != s and j >= 0][:K]
        sims = np.asarray(x[np.sort(nb)]) @ np.asarray(x[s])
        hits += int((sims >= kth - 1e-6).sum())
    return hits / (K * len(t["sample"]))


# ---------------------------------------------------------------------------------------------- candidates


def ivf_gemm(path: str, truth: str) -> dict:
    from embedlens.brain.neighbors import ivf_graph

    x = np.load(path, mmap_mode="r")
    g = ivf_graph(x, K, "cosine")
    return {"recall": recall(x, g.indices, Path(truth)), "note": f"own sampled recall {g.recall:.4f}"}


def pca_rerank(path: str, truth: str, dims: int = 128, candidates: int = 64) -> dict:
    import faiss

    from embedlens.brain.neighbors import ivf_graph

    x = np.load(path, mmap_mode="r")
    n = len(x)
    rng = np.random.default_rng(0)
    pca = faiss.PCAMatrix(DIM, dims)
    pca.train(np.ascontiguousarray(x[np.sort(rng.choice(n, min(n, 65536), replace=False))]))
    low = np.empty((n, dims), np.float32)
    for start in range(0, n, 65536):
        low[start:start + 65536] = pca.apply(np.ascontiguousarray(x[start:start + 65536]))
    cand = ivf_graph(low, candidates, "euclidean", target_recall=0.9).indices  # neighbours in the 128-d copy
    del low
    idx = np.empty((n, K + 1), np.int64)
    xs = np.ascontiguousarray(x)  # a view of the memory map
    for start in range(0, n, 65536):
        c = np.ascontiguousarray(cand[start:start + 65536])
        q = np.ascontiguousarray(x[start:start + 65536])
        d = np.empty((len(c), K + 1), np.float32)
        faiss.knn_inner_products_by_idx(faiss.swig_ptr(q), faiss.swig_ptr(xs), faiss.swig_ptr(c), DIM, len(c), n,
                                        c.shape[1], K + 1, faiss.swig_ptr(d), faiss.swig_ptr(idx[start:]),
                                        c.shape[1])
    return {"recall": recall(x, idx, Path(truth)), "note": f"PCA {dims}-d, {candidates} candidates re-ranked"}


def _search_all(index, x: np.ndarray) -> np.ndarray:
    idx = np.empty((len(x), K + 1), np.int64)
    for start in range(0, len(x), 65536):
        idx[start:start + 65536] = index.search(np.ascontiguousarray(x[start:start + 65536]), K + 1)[1]
    return idx


def faiss_hnsw(path: str, truth: str) -> dict:
    import faiss

    x = np.load(path, mmap_mode="r")
    index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    for start in range(0, len(x), 65536):
        index.add(np.ascontiguousarray(x[start:start + 65536]))
    index.hnsw.efSearch = 64
    return {"recall": recall(x, _search_all(index, x), Path(truth)), "note": "M 32, efC 40, efSearch 64; "
            "stores a copy of the data"}


def faiss_ivf(path: str, truth: str) -> dict:
    import faiss

    x = np.load(path, mmap_mode="r")
    n = len(x)
    nlist = int(4 * np.sqrt(n))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10  # 39 rows a list, 10 iterations: FAISS's minimum, or training alone takes minutes
    index.train(np.ascontiguousarray(x[np.sort(np.random.default_rng(0).choice(n, min(n, 39 * nlist), replace=False))]))
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(x[start:start + 65536]))
    index.nprobe = 16
    return {"recall": recall(x, _search_all(index, x), Path(truth)), "note": f"{nlist} lists, nprobe 16; "
            "stores a copy of the data"}


def _pynndescent_warm(path: str, truth: str):
    from pynndescent import NNDescent

    c0 = time.process_time()
    NNDescent(np.random.default_rng(0).random((2000, 16), dtype=np.float32), n_neighbors=K + 1, metric="cosine",
              random_state=0)
    return path, truth, time.process_time() - c0


def pynndescent(path: str, truth: str, compile_cpu_s: float) -> dict:
    from pynndescent import NNDescent

    x = np.load(path, mmap_mode="r")
    idx, _ = NNDescent(x, n_neighbors=K + 1, metric="cosine", random_state=0).neighbor_graph
    return {"recall": recall(x, idx, Path(truth)), "note": f"defaults; numba compile {compile_cpu_s:.0f} CPU s "
            "not counted"}


CANDIDATES = {"ivf-gemm": (ivf_gemm, None), "pca-rerank": (pca_rerank, None), "faiss-hnsw": (faiss_hnsw, None),
              "faiss-ivf": (faiss_ivf, None), "pynndescent": (pynndescent, _pynndescent_warm)}


def crossover(sizes: list[int]) -> list[dict]:
    """Exact blocks vs the approximate builder on the clustered data, to place ``EXACT_MAX_POINTS``."""
    from embedlens.brain import neighbors

    x = np.load(make_data("clustered", 100_000), mmap_mode="r")
    rows = []
    for n in sizes:
        part = np.asarray(x[:n])
        out = {"n": n}
        for name, fn in (("exact", neighbors.exact_graph), ("ivf", neighbors.ivf_graph)):
            c0 = time.process_time()
            fn(part, K, "cosine")
            out[f"{name}_cpu_s"] = time.process_time() - c0
        rows.append(out)
    return rows


# ---------------------------------------------------------------------------------------------- main


def derive(rows: list[dict]) -> None:
    """CPU ratio to FAISS IVF on the same data and size, and growth from the smallest size measured."""
    for r in rows:
        same = {(b["data"], b["n"], b["candidate"]): b for b in rows}
        ref = same.get((r["data"], r["n"], "faiss-ivf"))
        r["cpu_vs_faiss_ivf"] = r["cpu_s"] / ref["cpu_s"] if ref else None
        smallest = min((b["n"] for b in rows if b["data"] == r["data"] and b["candidate"] == r["candidate"]))
        small = same[(r["data"], smallest, r["candidate"])]
        r["growth_from_100k"] = r["cpu_s"] / small["cpu_s"] if r["n"] > smallest else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-1m", action="store_true", help="only 100,000 rows")
    ap.add_argument("--sizes", default="100000,1000000", help=argparse.SUPPRESS)  # smoke tests
    ap.add_argument("--data", default="clustered,manifold")
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidates")
    ap.add_argument("--append", action="store_true", help="keep the rows already in knn.json (replacing re-runs)")
    ap.add_argument("--no-crossover", action="store_true", help="skip exact vs approximate at 5k-40k rows")
    args = ap.parse_args()
    sizes = [n for n in map(int, args.sizes.split(",")) if not (args.skip_1m and n > 100_000)]
    old = json.loads((RESULTS / "knn.json").read_text())["rows"][0] if args.append else {}
    rows, cross = old.get("rows", []), old.get("crossover")
    for kind in args.data.split(","):
        for n in sizes:
            path = make_data(kind, n)
            truth = make_truth(path)
            data_mib = n * DIM * 4 / 2**20
            for name in args.only.split(","):
                fn, setup = CANDIDATES[name]
                print(f"{kind} {n:,} {name} (load {os.getloadavg()[0]:.1f}) ...", flush=True)
                r = measure(fn, str(path), str(truth), setup=setup)
                rows = [b for b in rows if (b["data"], b["n"], b["candidate"]) != (kind, n, name)]
                rows.append({"data": kind, "n": n, "candidate": name, "cpu_s": r["cpu_s"], "wall_s": r["wall_s"],
                             "peak_mib": r["peak_mib"], "peak_over_data_mib": r["peak_mib"] - data_mib,
                             "recall": r["extra"]["recall"], "note": r["extra"]["note"],
                             "load_1m": os.getloadavg()[0]})
                print(table(rows[-1:], ["data", "n", "candidate", "cpu_s", "wall_s", "peak_mib", "recall"]),
                      flush=True)
                derive(rows)
                save("knn", [{"rows": rows, "crossover": cross}])  # after each case: a long run can be cut
    print()
    print(table(rows, ["data", "n", "candidate", "cpu_s", "wall_s", "peak_mib", "peak_over_data_mib", "recall",
                       "cpu_vs_faiss_ivf", "growth_from_100k", "note"]))
    if not args.no_crossover:
        cross = measure(crossover, [5_000, 10_000, 20_000, 40_000])["extra"]
        print()
        print(table(cross, ["n", "exact_cpu_s", "ivf_cpu_s"]))
    print("saved", save("knn", [{"rows": rows, "crossover": cross}]))


if __name__ == "__main__":
    main()
