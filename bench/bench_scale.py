"""Scale benchmarks: stored embedding sets and the brain calls that read them, at 100k and 1M x 512.

Run: ``.venv/bin/python bench/bench_scale.py [--sizes 100000,1000000] [--home DIR] [--quick]``
(default ``--sizes 100000``; ``--quick``: 20,000). Every case runs in a fresh process (``harness.py``):
CPU seconds, wall seconds and peak RSS above the end of the untimed setup, against a baseline on the
same data in the same run (the modules a case uses are imported in its setup). The 100k -> 1M growth factor of each case's CPU time is reported when both
sizes ran. At 1M the preparation (the dataset, the stored set, the similarity index and the shared kNN
graph) takes several minutes: pass ``--home DIR`` to keep it and reuse it in the next run.

* data: ``n x 512`` float32 unit vectors, 100 isotropic Gaussian clusters (centre norm ~1 per
  coordinate, spread 0.7 of it, so clusters touch), deterministic (seed 0), generated in chunks.
* ``add_samples(n)`` of plain samples vs a raw ``sqlite3`` insert of the same ids and paths.
* ``set_embeddings`` of the in-memory matrix vs ``np.save`` of it (and ``np.save`` + fsync, the durability
  ``set_embeddings`` has), median of 5 interleaved runs, user and kernel CPU apart; extra peak / matrix.
* ``compute_similarity(embeddings=<stored set>, brain_key=...)``: what the process keeps resident after
  it returns (RSS, split in anonymous memory and mapped file pages), / matrix size.
* repeated ``sort_by_similarity(id, k=25)`` vs sklearn ``NearestNeighbors(brute, cosine).kneighbors``.
* ``find_duplicates`` (embedding channel: the samples have no image files) and ``compute_uniqueness``
  with the kNN graph cached: peak / matrix size.
* ``find_unique(1000)`` vs the previous method (one matrix-vector pass over all rows per pick),
  timed on 20 picks and scaled to 1,000.
* ``compute_visualization(method="umap")`` on the stored set with the shared graph cached (the layout
  alone: umap-learn's fuzzy set, spectral initialisation and SGD epochs), vs umap-learn's own
  ``UMAP().fit_transform`` (its NN-descent graph included) where ``n <= UMAP_BASELINE_MAX`` (at 1M the
  baseline alone would take most of an hour here, and its graph's recall there is 0.42, ``bench_knn.py``).

The kNN graph builders themselves (embedlens' against FAISS IVF, FAISS HNSW and pynndescent, with recall)
are compared in ``bench_knn.py``; the graph is built here untimed, during the preparation.
``--cases umap,uniqueness`` runs some cases only (keys: ``CASES``) and saves ``scale-<keys>.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_similarity import sklearn_repeated_queries  # noqa: E402
from harness import measure, reset_peak, save, table  # noqa: E402

DIM = 512
UNIQUE_COUNT = 1000
OLD_UNIQUE_PICKS = 20
SAVE_REPEAT = 5
UMAP_BASELINE_MAX = 200_000
CASES = ("adds", "set", "similarity", "queries", "duplicates", "uniqueness", "unique", "umap")


def _status_mib() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def clustered_into(out: np.ndarray, n_clusters: int = 100, seed: int = 0, chunk: int = 20_000) -> None:
    """Fill ``out`` (``[n, d]``, e.g. a memory map) with clustered unit vectors, a chunk at a time."""
    n, dim = out.shape
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    for start in range(0, n, chunk):
        lab = labels[start:start + chunk]
        block = centers[lab] + rng.normal(0.0, 0.7, (len(lab), dim)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(lab)] = block


# ---------------------------------------------------------------------------------------------- preparation


def prepare(home: str, n: int) -> dict:
    """Untimed, once per size: x.npy, dataset "bench" with set "emb", similarity index "sim", cached graph."""
    os.environ["EMBEDLENS_HOME"] = home
    import embedlens as el
    from embedlens.brain.similarity import GRAPH_K, compute_similarity

    t = time.perf_counter()
    path = Path(home) / "x.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    clustered_into(x)
    x.flush()
    del x
    x = np.load(path, mmap_mode="r")
    ds = el.Dataset("bench")
    ds.add_samples([el.Sample(f"/data/{i:07d}.png") for i in range(n)])
    ds.set_embeddings("emb", x)
    index = compute_similarity(ds, embeddings="emb", brain_key="sim")
    g = index.graph(GRAPH_K)  # the shared graph find_duplicates and compute_uniqueness read, cached on disk
    (Path(home) / "ready").write_text(str(n))
    return {"prepare_s": time.perf_counter() - t, "graph_method": g.method, "graph_recall": g.recall,
            "index": index.config["faiss"]}


def _open(home: str):
    """The prepared dataset, with the modules the cases use imported (their fixed cost is not the call's)."""
    os.environ["EMBEDLENS_HOME"] = home
    import faiss  # noqa: F401

    import embedlens as el
    import embedlens.brain.duplicates  # noqa: F401
    import embedlens.brain.similarity  # noqa: F401
    import embedlens.brain.uniqueness  # noqa: F401

    return el.load_dataset("bench")


def setup_home(home: str, n: int):
    return (home, n)


def setup_ds(home: str, n: int):
    return (_open(home), n)


def setup_ds_x(home: str, n: int):
    ds = _open(home)
    x = np.load(Path(home) / "x.npy")  # in memory, as a user's array would be
    return (ds, x)


def setup_x(home: str, n: int):
    return (home, np.load(Path(home) / "x.npy"))


# ---------------------------------------------------------------------------------------------- cases


def add_samples_case(home, n):
    os.environ["EMBEDLENS_HOME"] = home
    import embedlens as el

    ds = el.Dataset("adds")
    ds.add_samples([el.Sample(f"/data/{i:07d}.png") for i in range(n)])
    assert len(ds) == n
    return {}


def raw_sqlite_case(home, n):
    """Lower bound: the same ids and paths written with plain sqlite3, no validation."""
    con = sqlite3.connect(os.path.join(home, "raw.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE samples (_rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, filepath TEXT, tags TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO samples (id, filepath, tags) VALUES (?, ?, '[]')",
                    ((f"{i:024x}", f"/data/{i:07d}.png") for i in range(n)))
    con.execute("COMMIT")
    con.close()
    return {}


def _times(fn):
    t0 = os.times()
    fn()
    t1 = os.times()
    return {"user_s": t1.user - t0.user, "sys_s": t1.system - t0.system}


def set_embeddings_case(ds, x):
    reset_peak()
    return _times(lambda: ds.set_embeddings("written", x))


def np_save_case(home, x):
    reset_peak()
    return _times(lambda: np.save(os.path.join(home, "saved.npy"), x))


def np_save_fsync_case(home, x):
    """``np.save`` made durable as ``set_embeddings`` is (fsync), for reference."""
    def run():
        with open(os.path.join(home, "saved.npy"), "wb") as f:
            np.save(f, x)
            f.flush()
            os.fsync(f.fileno())

    reset_peak()
    return _times(run)


def compute_similarity_case(ds, n):
    from embedlens.brain.similarity import compute_similarity

    before = _status_mib()
    reset_peak()
    index = compute_similarity(ds, embeddings="emb", brain_key="sim_timed", overwrite=True)
    after = _status_mib()
    out = {k: after[k] - before[k] for k in ("VmRSS", "RssAnon", "RssFile")}
    out["method"] = index.method
    out["faiss"] = index.config["faiss"]
    return out


def sklearn_fit_query_case(ds, x):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(algorithm="brute", metric="cosine").fit(x)
    nn.kneighbors(x[:1], 25)
    return {}


def repeated_queries_case(ds, n, repeat: int = 100, k: int = 25):
    """Median / p95 latency over ``repeat`` random ids, then the same ids again (the index's mapped lists
    are read from the OS cache on first use: the second pass is the steady state)."""
    from embedlens.brain.similarity import load_similarity_index

    before = _status_mib()
    load_similarity_index(ds, "sim")
    rng = np.random.default_rng(1)
    ids = ds.values("id")
    picks = [ids[i] for i in rng.integers(0, len(ids), repeat)]
    ds.sort_by_similarity(picks[0], k=k, brain_key="sim")
    passes = []
    for _ in range(2):
        times = []
        for q in picks:
            t = time.perf_counter()
            view = ds.sort_by_similarity(q, k=k, brain_key="sim")
            times.append((time.perf_counter() - t) * 1000)
            assert len(view.values("id")) == k
        passes.append(times)
    after = _status_mib()
    return {"ms_median": statistics.median(passes[0]), "ms_p95": float(np.percentile(passes[0], 95)),
            "ms_median_warm": statistics.median(passes[1]), "ms_p95_warm": float(np.percentile(passes[1], 95)),
            "resident": {k: after[k] - before[k] for k in ("VmRSS", "RssAnon", "RssFile")}}


def find_duplicates_case(ds, n):
    """The default rule (relative to each row's neighbourhood), on the embedding channel alone: these
    samples have no image files for the perceptual channel (its cost is in ``bench_duplicates.py``)."""
    from embedlens.brain.similarity import load_similarity_index

    reset_peak()
    index = load_similarity_index(ds, "sim")
    index.find_duplicates(channels="embedding", progress=False)
    return {"flagged": len(index.duplicate_ids)}


def find_duplicates_fraction_case(ds, n):
    from embedlens.brain.similarity import load_similarity_index

    reset_peak()
    index = load_similarity_index(ds, "sim")
    index.find_duplicates(fraction=0.01)
    return {"flagged": len(index.duplicate_ids)}


def uniqueness_case(ds, n):
    from embedlens.brain.uniqueness import compute_uniqueness

    reset_peak()
    res = compute_uniqueness(ds, embeddings="emb", overwrite=True)
    return {"knn_method": res.config["knn_method"]}


def find_unique_case(ds, n):
    from embedlens.brain.similarity import load_similarity_index

    reset_peak()
    index = load_similarity_index(ds, "sim")
    picked = index.find_unique(UNIQUE_COUNT)
    return {"first": picked[:3]}


def old_find_unique_case(ds, n):
    """The previous method: one matrix-vector product over all rows per pick (``OLD_UNIQUE_PICKS`` picks)."""
    from embedlens.brain.similarity import load_similarity_index

    index = load_similarity_index(ds, "sim")
    x = index._matrix
    sq = index._norms2()
    norms = np.sqrt(np.maximum(sq, 1e-24))
    c0 = time.process_time()
    mind = index._point_dist(np.asarray(x[0], np.float32), sq, norms, True)
    mind[0] = -np.inf
    for _ in range(OLD_UNIQUE_PICKS - 1):
        j = int(np.argmax(mind))
        np.minimum(mind, index._point_dist(np.asarray(x[j], np.float32), sq, norms, True), out=mind)
        mind[j] = -np.inf
    return {"cpu_per_pick": (time.process_time() - c0) / OLD_UNIQUE_PICKS}


def setup_ds_umap_warm(home: str, n: int):
    """The dataset, and umap-learn's numba kernels compiled on a small matrix, as the baseline gets them."""
    import umap

    umap.UMAP(metric="cosine").fit_transform(np.load(Path(home) / "x.npy", mmap_mode="r")[:2000])
    return setup_ds(home, n)


def umap_case(ds, n):
    """UMAP through embedlens: the cached shared graph (k = 14, built in the preparation) is the layout's input."""
    from embedlens.brain.visualization import compute_visualization

    reset_peak()
    res = compute_visualization(ds, embeddings="emb", method="umap", brain_key="umap_timed", overwrite=True)
    assert res.points.shape == (n, 2) and np.isfinite(res.points).all()
    return {"n_epochs": res.config.get("method_kwargs", {}).get("n_epochs")}


def umap_learn_case(home, x):
    """Baseline: umap-learn on the in-memory matrix, its own NN-descent graph included (numba kernels
    compiled once untimed, on a small matrix, so compilation is not counted against it)."""
    import umap

    umap.UMAP(metric="cosine").fit_transform(x[:2000])
    reset_peak()
    c0 = time.process_time()
    out = umap.UMAP(metric="cosine").fit_transform(x)
    assert out.shape == (len(x), 2)
    return {"cpu_s_after_warmup": time.process_time() - c0}


# ---------------------------------------------------------------------------------------------- main


def _cleanup(home: str) -> None:
    """Remove what the cases wrote, so the next case (and run) starts from the prepared state."""
    os.environ["EMBEDLENS_HOME"] = home
    import embedlens as el

    for name in ("adds",):
        if name in el.list_datasets():
            el.load_dataset(name).delete()
    ds = el.load_dataset("bench")
    if "written" in ds.list_embeddings():
        ds.delete_embeddings("written")
    for key in ("sim_timed", "umap_timed"):
        if key in ds.list_brain_runs():
            ds.delete_brain_run(key)
    for f in ("raw.db", "raw.db-wal", "raw.db-shm", "saved.npy"):
        Path(home, f).unlink(missing_ok=True)


def run_size(home: str, n: int, cases: tuple[str, ...] = CASES) -> list[dict]:
    mib = n * DIM * 4 / 2**20
    rows = []

    def row(case, m, base=None, base_name="", ratio_kind="cpu", **extra):
        r = {"n": n, "case": case, "cpu_s": m["cpu_s"], "wall_s": m["wall_s"], "peak_mib": m["peak_mib"],
             "peak_x_matrix": m["peak_mib"] / mib, "baseline": base_name}
        if base is not None:
            r["baseline_cpu_s"] = base["cpu_s"]
            r["baseline_peak_mib"] = base["peak_mib"]
            r["ratio"] = m["cpu_s"] / base["cpu_s"]
        r.update(extra)
        rows.append(r)
        print(f"  {case}: cpu {m['cpu_s']:.2f} s, wall {m['wall_s']:.2f} s, peak {m['peak_mib']:.0f} MiB"
              + (f", ratio {r['ratio']:.2f} vs {base_name}" if base is not None else "")
              + "".join(f", {k} {v:.3g}" if isinstance(v, float) else f", {k} {v}" for k, v in extra.items()),
              flush=True)

    _cleanup(home)
    if "adds" in cases:
        m = measure(add_samples_case, home, n, setup=setup_home)
        b = measure(raw_sqlite_case, home, n, setup=setup_home)
        row("add_samples", m, b, "raw sqlite3 insert (lower bound)")
        _cleanup(home)
    if "set" in cases:
        set_embeddings_rows(home, n, row)
    if "similarity" in cases:
        m = measure(compute_similarity_case, home, n, setup=setup_ds)
        b = measure(sklearn_fit_query_case, home, n, setup=setup_ds_x)
        e = m["extra"]
        row("compute_similarity (stored set)", m, b, "sklearn brute fit + 1st query",
            resident_x_matrix=e["VmRSS"] / mib, anon_x_matrix=e["RssAnon"] / mib, file_x_matrix=e["RssFile"] / mib,
            method=e["method"])
        _cleanup(home)
    if "queries" in cases:
        rows.append(queries_row(home, n, mib))
    if "duplicates" in cases:
        m = measure(find_duplicates_case, home, n, setup=setup_ds)
        row("find_duplicates() default rule, graph cached", m, None, "the matrix's size (peak ratio)",
            flagged=m["extra"]["flagged"])
        m = measure(find_duplicates_fraction_case, home, n, setup=setup_ds)
        row("find_duplicates(fraction=0.01), graph cached", m, None, "the matrix's size (peak ratio)",
            flagged=m["extra"]["flagged"])
    if "uniqueness" in cases:
        m = measure(uniqueness_case, home, n, setup=setup_ds)
        row("compute_uniqueness, graph cached", m, None, "the matrix's size (peak ratio)")
    if "unique" in cases:
        m = measure(find_unique_case, home, n, setup=setup_ds)
        b = measure(old_find_unique_case, home, n, setup=setup_ds)
        old = {"cpu_s": b["extra"]["cpu_per_pick"] * UNIQUE_COUNT, "peak_mib": b["peak_mib"]}
        row(f"find_unique({UNIQUE_COUNT})", m, old, f"one pass per pick (previous method; {OLD_UNIQUE_PICKS} "
            f"picks, scaled to {UNIQUE_COUNT})")
    if "umap" in cases:
        m = measure(umap_case, home, n, setup=setup_ds_umap_warm)
        b = measure(umap_learn_case, home, n, setup=setup_x) if n <= UMAP_BASELINE_MAX else None
        row("compute_visualization(method='umap'), graph cached", m, b,
            "umap-learn UMAP().fit_transform, its own graph" if b else f"none above {UMAP_BASELINE_MAX:,} points")
        _cleanup(home)
    return rows


def set_embeddings_rows(home: str, n: int, row) -> None:
    mib = n * DIM * 4 / 2**20

    # Copying 2 GB into the OS cache costs 0.4-4 s of kernel CPU here, depending on what the cache must evict
    # first (it swings that much for np.save alone), so the cases are interleaved SAVE_REPEAT times and the
    # median of each kept; user and kernel time are reported apart (peaks: the largest).
    runs: dict[str, list] = {"set": [], "save": [], "sync": []}
    for _ in range(SAVE_REPEAT):
        for key, fn, setup in (("set", set_embeddings_case, setup_ds_x), ("save", np_save_case, setup_x),
                               ("sync", np_save_fsync_case, setup_x)):
            runs[key].append(measure(fn, home, n, setup=setup))
            _cleanup(home)

    def median_run(rs):
        med = sorted(rs, key=lambda r: r["cpu_s"])[len(rs) // 2]
        return {**med, "peak_mib": max(r["peak_mib"] for r in rs)}

    m, b, c = median_run(runs["set"]), median_run(runs["save"]), median_run(runs["sync"])
    row("set_embeddings", m, b, f"np.save of the same matrix (median of {SAVE_REPEAT}, interleaved)",
        extra_peak_x_matrix=m["peak_mib"] / mib, np_save_peak_x_matrix=b["peak_mib"] / mib,
        user_s=m["extra"]["user_s"], sys_s=m["extra"]["sys_s"],
        np_save_user_s=b["extra"]["user_s"], np_save_sys_s=b["extra"]["sys_s"],
        ratio_vs_np_save_fsync=m["cpu_s"] / c["cpu_s"],
        cpu_s_all=[round(r["cpu_s"], 2) for r in runs["set"]],
        np_save_cpu_s_all=[round(r["cpu_s"], 2) for r in runs["save"]],
        np_save_fsync_cpu_s_all=[round(r["cpu_s"], 2) for r in runs["sync"]])


def queries_row(home: str, n: int, mib: float) -> dict:
    m = measure(repeated_queries_case, home, n, setup=setup_ds)
    b = measure(sklearn_repeated_queries, home, n, setup=setup_ds_x)
    rq, sq = m["extra"], b["extra"]
    print(f"  sort_by_similarity: {rq['ms_median']:.2f} ms median (p95 {rq['ms_p95']:.2f}), same ids again "
          f"{rq['ms_median_warm']:.2f} ms (p95 {rq['ms_p95_warm']:.2f}); sklearn {sq['query_ms_median']:.1f} ms "
          f"({sq['query_ms_median'] / rq['ms_median']:.0f}x); resident after 200 queries "
          f"{rq['resident']['VmRSS'] / mib:.2f}x the matrix ({rq['resident']['RssFile'] / mib:.2f}x mapped file "
          f"pages)", flush=True)
    return {"n": n, "case": "sort_by_similarity(id, k=25) repeated, incl. view", "ms_median": rq["ms_median"],
            "ms_p95": rq["ms_p95"], "ms_median_warm": rq["ms_median_warm"], "ms_p95_warm": rq["ms_p95_warm"],
            "baseline": "sklearn brute kneighbors(1 row, k=25)",
            "baseline_ms_median": sq["query_ms_median"], "speedup": sq["query_ms_median"] / rq["ms_median"],
            "resident_after_queries_x_matrix": rq["resident"]["VmRSS"] / mib,
            "file_pages_after_queries_x_matrix": rq["resident"]["RssFile"] / mib}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--home", default=None, help="keep the prepared data here and reuse it")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    args, _ = ap.parse_known_args()
    cases = tuple(c for c in args.cases.split(",") if c)
    unknown = set(cases) - set(CASES)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []
    prepared = []
    for n in sizes:
        home = os.path.join(args.home, str(n)) if args.home else tempfile.mkdtemp(prefix=f"elbench-scale-{n}-")
        os.makedirs(home, exist_ok=True)
        ready = Path(home) / "ready"
        if not (ready.exists() and ready.read_text() == str(n)):
            shutil.rmtree(home, ignore_errors=True)
            os.makedirs(home)
            print(f"preparing {n:,} x {DIM} in {home} ...", flush=True)
            p = measure(prepare, home, n)
            prepared.append({"n": n, **p["extra"]})
            print(f"  prepared in {p['wall_s']:.0f} s: {p['extra']}", flush=True)
        print(f"n = {n:,}", flush=True)
        rows += run_size(home, n, cases)
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    if len(sizes) > 1:
        lo, hi = min(sizes), max(sizes)
        by = {(r["n"], r["case"]): r for r in rows}
        for r in rows:
            if r["n"] == hi and (lo, r["case"]) in by:
                small = by[(lo, r["case"])]
                key = "cpu_s" if "cpu_s" in r else "ms_median"
                r[f"growth_{lo // 1000}k_to_{hi // 1000}k"] = r[key] / small[key] if small[key] else None
    cols = ["n", "case", "cpu_s", "wall_s", "peak_mib", "peak_x_matrix", "ratio", "baseline", "baseline_cpu_s"]
    growth = [k for r in rows for k in r if k.startswith("growth")][:1]
    print(table([r for r in rows if "cpu_s" in r], cols + growth))
    if any("ms_median" in r for r in rows):
        print(table([r for r in rows if "ms_median" in r], ["n", "case", "ms_median", "ms_p95", "ms_median_warm",
                                                             "baseline_ms_median", "speedup"] + growth))
    name = "scale" + ("" if cases == CASES else "-" + "-".join(cases)) + ("-quick" if args.quick else "")
    out = save(name, [{"rows": rows, "prepared": prepared, "sizes": sizes}])
    print("saved", out)


if __name__ == "__main__":
    main()
