"""Foundation benchmarks: bulk writes, building datasets, and views on a million samples.

Run: ``.venv/bin/python bench/bench_dataset.py`` (or ``make bench``). Each case runs in a fresh process with
its own EMBEDLENS_HOME; the table gives seconds, peak memory above the process start, and the ratio to
the named baseline measured in the same run.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import measure, save, table  # noqa: E402

LABELS = [str(i % 10) for i in range(100_000)]


def _home() -> None:
    os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="elbench-")


def _dataset(n: int, with_label: bool = False):
    import embedlens as el

    _home()
    ds = el.Dataset("bench")
    ds.add_samples([el.Sample(f"/data/{i:07d}.png", **({"ground_truth": el.Classification(LABELS[i % 100_000])}
                                                      if with_label else {})) for i in range(n)])
    return ds


# ---------------------------------------------------------------- set_values of a new Classification field

def setup_60k(n: int):
    return (_dataset(n), n)


def set_values_classification(ds, n):
    import embedlens as el

    ds.set_values("predictions", [el.Classification(LABELS[i % 100_000]) for i in range(n)])
    assert ds.count("predictions.label") == n


def save_loop_classification(ds, n):
    import embedlens as el

    for i, sample in enumerate(ds.iter_samples()):
        sample.predictions = el.Classification(LABELS[i % 100_000])
        sample.save()
    assert ds.count("predictions.label") == n


# ---------------------------------------------------------------- building 100k samples from Python lists

def setup_lists(n: int):
    _home()
    return ([f"/data/{i:07d}.png" for i in range(n)], [LABELS[i % 100_000] for i in range(n)])


def build_dataset(paths, labels):
    import embedlens as el

    ds = el.Dataset("built")
    ds.add_samples([el.Sample(p, ground_truth=el.Classification(lab)) for p, lab in zip(paths, labels)])
    assert len(ds) == len(paths)


def build_raw_sqlite(paths, labels):
    """Lower bound: the same rows and JSON written with plain sqlite3, no validation."""
    import json

    con = sqlite3.connect(os.path.join(os.environ["EMBEDLENS_HOME"], "raw.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE samples (_rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, filepath TEXT, tags TEXT, gt TEXT)")
    con.execute("BEGIN")
    con.executemany("INSERT INTO samples (id, filepath, tags, gt) VALUES (?, ?, '[]', ?)",
                    ((f"{i:024x}", p, json.dumps({"_cls": "Classification", "id": f"{i:024x}", "label": lab}))
                     for i, (p, lab) in enumerate(zip(paths, labels))))
    con.execute("COMMIT")


# ---------------------------------------------------------------- set_values of a float on 100k

def setup_100k_floats(n: int):
    return (_dataset(n), [random.random() for _ in range(n)])


def set_values_float(ds, values):
    ds.set_values("score", values)


def raw_update_float(ds, values):
    db = ds._db
    ids = [r[0] for r in db.fetchall("SELECT _rowid FROM samples")]
    db.execute("ALTER TABLE samples ADD COLUMN raw REAL")
    with db.transaction():
        db.executemany("UPDATE samples SET raw = ? WHERE _rowid = ?", zip(values, ids))


# ---------------------------------------------------------------- match + sort_by + limit on 1M

def setup_1m(n: int):
    ds = _dataset(n, with_label=True)
    rng = random.Random(0)
    ds.set_values("score", [rng.random() for _ in range(n)])
    return (ds,)


def _median_ms(fn, repeat=7):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def view_queries(ds):
    from embedlens import F

    def query():
        return ds.match(F("ground_truth.label") == "3").sort_by("score", reverse=True).limit(50).values("id")

    scan = _median_ms(query)
    ds.create_index(["ground_truth.label", "score"])
    indexed = _median_ms(query)
    rows = list(zip(ds.values("id"), ds.values("ground_truth.label"), ds.values("score")))

    def python_filter():
        return [r[0] for r in sorted((r for r in rows if r[1] == "3"), key=lambda r: -r[2])[:50]]

    assert python_filter() == query()
    return {"scan_ms": scan, "indexed_ms": indexed, "python_list_ms": _median_ms(python_filter)}


# ---------------------------------------------------------------- import of the MNIST folder tree

def setup_tree(num_workers: int):
    import embedlens as el

    root = os.path.join(tempfile.gettempdir(), "embedlens-bench-mnist-tree")
    if not os.path.exists(root):
        os.environ["EMBEDLENS_HOME"] = os.path.join(tempfile.gettempdir(), "embedlens-bench-home")
        el.load_sample_dataset("mnist", progress=False).export(root, "classification-tree", progress=False)
    _home()
    return (root, num_workers)


def import_tree(root, num_workers):
    import embedlens as el

    ds = el.Dataset.from_dir(root, "classification-tree", name="imported", progress=False, num_workers=num_workers)
    assert len(ds) == 5000
    return {"n": len(ds)}


def main() -> None:
    quick = "--quick" in sys.argv
    rows = []
    n60 = 6_000 if quick else 60_000
    fast = measure(set_values_classification, n60, setup=setup_60k)
    slow = measure(save_loop_classification, n60, setup=setup_60k)
    rows.append({"case": f"set_values new Classification, {n60:,}", "baseline": "sample.save() loop",
                 "seconds": fast["wall_s"], "baseline_s": slow["wall_s"], "speedup": slow["wall_s"] / fast["wall_s"],
                 "peak_mib": fast["peak_mib"]})

    n100 = 10_000 if quick else 100_000
    built = measure(build_dataset, n100, setup=setup_lists, repeat=2)
    raw = measure(build_raw_sqlite, n100, setup=setup_lists, repeat=2)
    rows.append({"case": f"build {n100:,} samples + Classification", "baseline": "raw sqlite3 insert (lower bound)",
                 "seconds": built["wall_s"], "baseline_s": raw["wall_s"], "speedup": raw["wall_s"] / built["wall_s"],
                 "peak_mib": built["peak_mib"]})

    sv = measure(set_values_float, n100, setup=setup_100k_floats, repeat=2)
    rawsv = measure(raw_update_float, n100, setup=setup_100k_floats, repeat=2)
    rows.append({"case": f"set_values float, {n100:,}", "baseline": "raw sqlite3 update by rowid (lower bound)",
                 "seconds": sv["wall_s"], "baseline_s": rawsv["wall_s"], "speedup": rawsv["wall_s"] / sv["wall_s"],
                 "peak_mib": sv["peak_mib"]})

    par = measure(import_tree, 0, setup=setup_tree, repeat=2)
    one = measure(import_tree, 1, setup=setup_tree, repeat=2)
    rows.append({"case": "import MNIST tree, 5,000 PNGs (images/s)", "baseline": "same, one thread",
                 "seconds": par["wall_s"], "baseline_s": one["wall_s"], "speedup": one["wall_s"] / par["wall_s"],
                 "peak_mib": par["peak_mib"], "images_per_s": 5000 / par["wall_s"]})

    n1m = 100_000 if quick else 1_000_000
    vq = measure(view_queries, n1m, setup=setup_1m)["extra"]
    rows.append({"case": f"match+sort_by+limit(50), {n1m:,}, no index", "baseline": "Python list filter+sort",
                 "seconds": vq["scan_ms"] / 1000, "baseline_s": vq["python_list_ms"] / 1000,
                 "speedup": vq["python_list_ms"] / vq["scan_ms"]})
    rows.append({"case": f"match+sort_by+limit(50), {n1m:,}, create_index", "baseline": "Python list filter+sort",
                 "seconds": vq["indexed_ms"] / 1000, "baseline_s": vq["python_list_ms"] / 1000,
                 "speedup": vq["python_list_ms"] / vq["indexed_ms"]})
    print(table(rows, ["case", "seconds", "baseline", "baseline_s", "speedup", "peak_mib"]))
    print("saved", save("dataset" + ("-quick" if quick else ""), rows))


if __name__ == "__main__":
    main()
