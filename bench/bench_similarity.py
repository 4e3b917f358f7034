"""Similarity benchmarks: index, queries, unique, duplicates and uniqueness on 100,000 x 512 embeddings.

Run: ``.venv/bin/python bench/bench_similarity.py [--quick] [--quality]``. Every case runs in a fresh
process (``harness.py``): wall time and peak memory above the end of the untimed setup (which makes the
data and a dataset of as many samples). Baselines run on the same data in the same run:
``sklearn.neighbors.NearestNeighbors(algorithm="brute", metric="cosine")``.

* data: 100,000 x 512 float32 (``--quick``: 20,000), 100 isotropic Gaussian clusters (centre norm ~1,
  spread ~0.7 of it, so clusters touch), deterministic (seed 0).
* crossover: exact (BLAS) vs FAISS IVF single-query latency over sizes, in one process, to place
  ``EXACT_MAX_VALUES``.
* ``--quality``: precision / recall of ``find_duplicates()``'s default rule on MNIST-5000 with 2%
  planted near-copies, for raw pixels and EfficientNet-Lite0 embeddings (about 2 minutes: it embeds
  5,100 images).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import measure, reset_peak, save, table  # noqa: E402

DIM = 512


def clustered(n: int, dim: int = DIM, n_clusters: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 10_000):  # in blocks: generating never peaks far above the data's size
        lab = labels[start:start + 10_000]
        out[start:start + len(lab)] = centers[lab] + rng.normal(0.0, 0.7, (len(lab), dim)).astype(np.float32)
    return out


def _home() -> str:
    home = tempfile.mkdtemp(prefix="elbench-sim-")
    os.environ["EMBEDLENS_HOME"] = home
    return home


def setup_data(n: int, with_index: bool = False, backend: str = "auto"):
    """Untimed: the embeddings and a dataset of ``n`` samples (optionally with index "sim" built)."""
    _home()
    import embedlens as el

    x = clustered(n)
    ds = el.Dataset("bench")
    ds.add_samples([el.Sample(f"/data/{i:07d}.png") for i in range(n)])
    if with_index:
        from embedlens.brain.similarity import compute_similarity

        compute_similarity(ds, embeddings=x, brain_key="sim", backend=backend)
    return ds, x


# ---------------------------------------------------------------------------------------------- cases


def build_index(ds, x):
    from embedlens.brain.similarity import compute_similarity

    reset_peak()
    index = compute_similarity(ds, embeddings=x, brain_key="sim")
    return {"method": index.method, "faiss": index.config["faiss"], "bytes": int(x.nbytes)}


def sklearn_fit_and_query(ds, x):
    from sklearn.neighbors import NearestNeighbors

    reset_peak()
    nn = NearestNeighbors(algorithm="brute", metric="cosine").fit(x)
    t = time.perf_counter()
    nn.kneighbors(x[:1], 25)
    return {"first_query_s": time.perf_counter() - t}


def repeated_queries(ds, x, repeat: int = 200, k: int = 25):
    """Median / p95 latency of ``ds.sort_by_similarity(id, k)`` (index cached), incl. building the view."""
    rng = np.random.default_rng(1)
    ids = ds.values("id")
    picks = [ids[i] for i in rng.integers(0, len(ids), repeat)]
    ds.sort_by_similarity(picks[0], k=k)  # warm: loads nothing (compute_similarity cached it)
    view_ms, read_ms = [], []
    for q in picks:
        t = time.perf_counter()
        view = ds.sort_by_similarity(q, k=k)
        view_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        got = view.values("id")
        read_ms.append((time.perf_counter() - t) * 1000)
        assert got[0] == q or len(got) == k
    # a view of half the dataset: only its members are searched (its ids are read on every query)
    half = ds.limit(len(ids) // 2)
    half_ms = []
    for q in picks[:20]:
        t = time.perf_counter()
        half.sort_by_similarity(q, k=k)
        half_ms.append((time.perf_counter() - t) * 1000)
    return {"view_ms_median": statistics.median(view_ms), "view_ms_p95": float(np.percentile(view_ms, 95)),
            "read_ms_median": statistics.median(read_ms), "half_view_ms_median": statistics.median(half_ms)}


def fresh_process_first_query(ds, x):
    """Load the stored index in a fresh process and answer one query (what a new session pays once)."""
    from embedlens.brain.similarity import clear_cache

    clear_cache()
    q = ds.first().id
    reset_peak()
    t = time.perf_counter()
    ds.sort_by_similarity(q, k=25)
    first = time.perf_counter() - t
    t = time.perf_counter()
    ds.sort_by_similarity(q, k=25)
    return {"first_s": first, "second_ms": (time.perf_counter() - t) * 1000}


def sklearn_repeated_queries(ds, x, repeat: int = 50, k: int = 25):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(algorithm="brute", metric="cosine").fit(x)
    rng = np.random.default_rng(1)
    times = []
    for i in rng.integers(0, len(x), repeat):
        t = time.perf_counter()
        nn.kneighbors(x[i:i + 1], k)
        times.append((time.perf_counter() - t) * 1000)
    return {"query_ms_median": statistics.median(times)}


def find_unique_case(ds, x, count: int = 500):
    from embedlens.brain.similarity import load_similarity_index

    index = load_similarity_index(ds, "sim")
    reset_peak()
    t = time.perf_counter()
    index.find_unique(count)
    return {"s": time.perf_counter() - t}


def find_duplicates_case(ds, x):
    from embedlens.brain.similarity import load_similarity_index

    index = load_similarity_index(ds, "sim")
    reset_peak()
    t0 = time.perf_counter()
    g = index.graph()
    graph_s = time.perf_counter() - t0
    index.find_duplicates(fraction=0.01)
    return {"graph_s": graph_s, "graph_method": g.method, "graph_recall": g.recall,
            "flagged": len(index.duplicate_ids), "thresh": index.thresh}


def uniqueness_case(ds, x):
    from embedlens.brain.uniqueness import compute_uniqueness

    reset_peak()
    compute_uniqueness(ds, embeddings=x)
    u = np.array(ds.values("uniqueness"))
    return {"max": float(u.max()), "min": float(u.min())}


def sklearn_graph_sample(ds, x, queries: int = 2_000, k: int = 15):
    """sklearn brute kNN for ``queries`` rows against all rows; scaled to all rows (linear in queries)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(algorithm="brute", metric="cosine").fit(x)
    reset_peak()
    t = time.perf_counter()
    nn.kneighbors(x[:queries], k)
    s = time.perf_counter() - t
    return {"s_sample": s, "s_all_est": s * len(x) / queries}


def graph_recall(ds, x, sample: int = 500, k: int = 14):
    """Recall of the shared graph (as built for find_duplicates) against sklearn brute on a row sample."""
    from sklearn.neighbors import NearestNeighbors

    from embedlens.brain.similarity import load_similarity_index

    g = load_similarity_index(ds, "sim").graph(k)
    rows = np.random.default_rng(2).choice(len(x), sample, replace=False)
    _, true = NearestNeighbors(algorithm="brute", metric="cosine").fit(x).kneighbors(x[rows], k + 1)
    hits = [len(set(t[1:]) & set(g.indices[r, 1:])) for t, r in zip(true, rows)]
    return {"recall": float(np.sum(hits)) / (k * sample), "method": g.method}


# ---------------------------------------------------------------------------------------------- crossover


def crossover(sizes: list[int], repeat: int = 40) -> list[dict]:
    """Exact vs FAISS single-query latency (k=25) by index size, 512-d, in this process."""
    _home()
    import embedlens as el
    from embedlens.brain.similarity import compute_similarity

    out = []
    full = clustered(max(sizes))
    for n in sizes:
        x = np.ascontiguousarray(full[:n])
        ds = el.Dataset(f"cross{n}")
        ds.add_samples([el.Sample(f"/d/{i}.png") for i in range(n)])
        ex = compute_similarity(ds, embeddings=x, backend="exact")
        t = time.perf_counter()
        fa = compute_similarity(ds, embeddings=x, backend="faiss")
        build = time.perf_counter() - t  # includes checking the matrix (as compute_similarity does)
        rng = np.random.default_rng(3)
        qs = [fa._prepare(x[i]) for i in rng.integers(0, n, repeat)]
        times = {}
        for name, idx in (("exact", ex), ("faiss", fa)):
            ts = []
            for q in qs:
                t = time.perf_counter()
                idx._search(q, 25, False, None)
                ts.append((time.perf_counter() - t) * 1000)
            times[name] = statistics.median(ts)
        hits = [len(set(ex._search(q, 25, False, None)[0].tolist()) & set(fa._search(q, 25, False, None)[0].tolist()))
                for q in qs]
        out.append({"n": n, "values": n * DIM, "exact_ms": times["exact"], "faiss_ms": times["faiss"],
                    "faiss_build_s": build, "nprobe": fa.config["faiss"]["nprobe"],
                    "recall_at_25": float(np.sum(hits)) / (25 * len(qs))})
        ds.delete()
    return out


# ---------------------------------------------------------------------------------------------- duplicates quality


def duplicates_quality(seed: int = 7) -> list[dict]:
    """Precision / recall of the default rule on MNIST-5000 + 2% planted near-copies (pixels, EfficientNet)."""
    _home()
    from PIL import Image

    import embedlens as el
    from embedlens.brain.similarity import compute_similarity

    base = el.load_sample_dataset("mnist", progress=False)
    ds = base.clone("planted")
    paths, ids = ds.values("filepath"), ds.values("id")
    rng = np.random.default_rng(seed)
    n0 = len(ids)
    picks = rng.choice(n0, size=n0 // 50, replace=False)
    out_dir = os.path.join(os.environ["EMBEDLENS_HOME"], "copies")
    os.makedirs(out_dir)

    def jpeg(a, q):
        b = io.BytesIO()
        Image.fromarray(a).save(b, "JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("L"))

    kinds = {
        "noise sigma=1/255": lambda a: np.clip(a + rng.normal(0, 1, a.shape), 0, 255).astype(np.uint8),
        "JPEG q=98": lambda a: jpeg(a, 98),
        "brightness x0.98": lambda a: np.clip(a.astype(np.float32) * 0.98, 0, 255).astype(np.uint8),
        "noise sigma=4/255": lambda a: np.clip(a + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8),
        "JPEG q=90": lambda a: jpeg(a, 90),
        "1-px shift": lambda a: np.roll(a, 1, axis=1),
    }
    groups = {}  # kind -> (copy ids, original ids)
    for kind, fn in kinds.items():
        samples, origs = [], []
        for j, i in enumerate(picks):
            a = np.asarray(Image.open(paths[i]).convert("L"))
            p = os.path.join(out_dir, f"{len(groups)}-{j:04d}.png")
            Image.fromarray(fn(a)).save(p)
            samples.append(el.Sample(p))
            origs.append(ids[i])
        groups[kind] = (samples, origs)
    all_samples = [s for ss, _ in groups.values() for s in ss]
    new_ids = ds.add_samples(all_samples)
    pos = 0
    copy_of = {}
    kind_of = {}
    for kind, (ss, origs) in groups.items():
        for cid, oid in zip(new_ids[pos:pos + len(ss)], origs):
            copy_of[cid] = oid
            kind_of[cid] = kind
        pos += len(ss)
    rows = []
    for field, model in (("pixels", "pixels"), ("effnet", None)):
        ds.compute_embeddings(model, embeddings_field=field, progress=False)
        for mix_name, mix in (("mix: noise 1/255 + JPEG 98", ["noise sigma=1/255", "JPEG q=98"]),
                              *((k, [k]) for k in kinds)):
            keep_ids = set(ids) | {c for c, k in kind_of.items() if k in mix}
            view = ds.select([i for i in ds.values("id") if i in keep_ids], ordered=True)
            index = compute_similarity(view, embeddings=field)
            index.find_duplicates()
            tp = sum(1 for kept, lst in index.neighbors_map.items() for dup, _ in lst
                     if dup in copy_of and (copy_of[dup] == kept or copy_of.get(kept) == copy_of[dup]))
            n_copies = sum(1 for c, k in kind_of.items() if k in mix)
            flagged = len(index.duplicate_ids)
            rows.append({"embeddings": field, "copies": mix_name, "n_copies": n_copies, "flagged": flagged,
                         "precision": tp / flagged if flagged else 1.0, "recall": tp / n_copies,
                         "ratio": index.duplicates_info["ratio"]})
    return rows


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    quick = "--quick" in sys.argv
    n = 20_000 if quick else 100_000
    rows = []
    mib = n * DIM * 4 / 2**20

    built = measure(build_index, n, setup=setup_data)
    base = measure(sklearn_fit_and_query, n, setup=setup_data)
    rows.append({"case": f"compute_similarity {n:,}x{DIM} ({built['extra']['method']})",
                 "seconds": built["wall_s"], "peak_mib": built["peak_mib"], "peak_x_data": built["peak_mib"] / mib,
                 "baseline": "sklearn brute fit + 1st query", "baseline_s": base["wall_s"],
                 "note": f"faiss {built['extra']['faiss']}"})

    rq = measure(repeated_queries, n, True, setup=setup_data)["extra"]
    sq = measure(sklearn_repeated_queries, n, setup=setup_data)["extra"]
    rows.append({"case": "sort_by_similarity(id, k=25) repeated, incl. view", "seconds": rq["view_ms_median"] / 1000,
                 "baseline": "sklearn kneighbors(1 row, 25)", "baseline_s": sq["query_ms_median"] / 1000,
                 "speedup": sq["query_ms_median"] / rq["view_ms_median"],
                 "note": f"median {rq['view_ms_median']:.2f} ms, p95 {rq['view_ms_p95']:.2f} ms; "
                         f"reading the view's ids +{rq['read_ms_median']:.2f} ms; on a view of half the "
                         f"dataset {rq['half_view_ms_median']:.1f} ms"})
    fp = measure(fresh_process_first_query, n, True, setup=setup_data)
    rows.append({"case": "fresh process: load index + 1st query", "seconds": fp["extra"]["first_s"],
                 "peak_mib": fp["peak_mib"], "note": f"2nd query {fp['extra']['second_ms']:.2f} ms"})

    fu = measure(find_unique_case, n, True, setup=setup_data)
    rows.append({"case": "find_unique(500)", "seconds": fu["extra"]["s"], "peak_mib": fu["peak_mib"]})

    fd = measure(find_duplicates_case, n, True, setup=setup_data)
    gb = measure(sklearn_graph_sample, n, setup=setup_data)["extra"]
    rows.append({"case": "find_duplicates(fraction=0.01), graph included", "seconds": fd["wall_s"],
                 "peak_mib": fd["peak_mib"], "baseline": "sklearn brute kNN graph (k=15), est.",
                 "baseline_s": gb["s_all_est"], "speedup": gb["s_all_est"] / fd["wall_s"],
                 "note": f"graph {fd['extra']['graph_method']} {fd['extra']['graph_s']:.1f}s recall "
                         f"{fd['extra']['graph_recall']}; flagged {fd['extra']['flagged']}"})
    un = measure(uniqueness_case, n, setup=setup_data)
    rows.append({"case": "compute_uniqueness, graph included", "seconds": un["wall_s"], "peak_mib": un["peak_mib"],
                 "baseline": "sklearn brute kNN graph (k=15), est.", "baseline_s": gb["s_all_est"],
                 "speedup": gb["s_all_est"] / un["wall_s"]})
    gr = measure(graph_recall, n, True, setup=setup_data)["extra"]
    rows.append({"case": "shared kNN graph recall@14 vs sklearn brute", "seconds": gr["recall"],
                 "note": f"method {gr['method']} (the 'seconds' column holds the recall)"})
    print(table(rows, ["case", "seconds", "peak_mib", "peak_x_data", "baseline", "baseline_s", "speedup", "note"]))

    sizes = [2_500, 5_000, 10_000, 20_000] if quick else [2_500, 5_000, 10_000, 20_000, 40_000, 100_000]
    cross = measure(crossover, sizes)["extra"]
    print()
    print(table(cross, ["n", "values", "exact_ms", "faiss_ms", "faiss_build_s", "nprobe", "recall_at_25"]))
    result = {"rows": rows, "crossover": cross}
    if "--quality" in sys.argv:
        quality = measure(duplicates_quality)["extra"]
        print()
        print(table(quality, ["embeddings", "copies", "n_copies", "flagged", "precision", "recall", "ratio"]))
        result["duplicates_quality"] = quality
    print("saved", save("similarity" + ("-quick" if quick else ""), [result]))


if __name__ == "__main__":
    main()
