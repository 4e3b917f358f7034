"""Stored embedding sets are used in place: read as memory maps, written once, crash-safe, never copied whole."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

import embedlens as el
from embedlens.brain.similarity import _farthest_points, compute_similarity, load_similarity_index, clear_cache
from embedlens.brain.uniqueness import compute_uniqueness
from embedlens.core.embeddings import EmbeddingSet, is_mapped


def _dataset(n: int, name: str | None = None, boxes: bool = False) -> el.Dataset:
    ds = el.Dataset(name)
    ds.add_samples([el.Sample(f"/x/{i:06d}.png", **({"boxes": el.Detections(detections=[
        el.Detection("a", [0, 0, 0.5, 0.5]), el.Detection("b", [0.5, 0.5, 0.5, 0.5])])} if boxes else {}))
        for i in range(n)])
    return ds


def _rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _store(ds: el.Dataset, name: str) -> EmbeddingSet:
    return EmbeddingSet(ds.arrays_dir / "embeddings" / name)


# ---------------------------------------------------------------------------------------------- reading in place


def test_the_whole_set_in_stored_order_is_the_file_itself():
    ds = _dataset(300)
    x = _rows(300, 16)
    ds.set_embeddings("emb", x)
    got = ds.get_embeddings("emb")
    assert isinstance(got, np.memmap) and not got.flags.writeable
    assert os.path.samefile(got.filename, _store(ds, "emb").root / "embeddings.npy")
    np.testing.assert_array_equal(got, x)
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0] = 1.0
    # a fresh handle too; a view in another order (or a subset) is a new, writable array
    again = el.load_dataset(ds.name).get_embeddings("emb")
    assert isinstance(again, np.memmap)
    view = ds.sort_by("filepath", reverse=True)
    other = view.get_embeddings("emb")
    assert not is_mapped(other) and other.flags.writeable
    np.testing.assert_array_equal(other, x[::-1])


def test_a_similarity_index_over_a_stored_set_holds_no_copy():
    ds = _dataset(400)
    ds.set_embeddings("emb", _rows(400, 8))
    index = compute_similarity(ds, embeddings="emb", brain_key="sim", backend="exact")
    assert is_mapped(index._matrix)
    clear_cache()
    loaded = load_similarity_index(ds, "sim")
    assert is_mapped(loaded._matrix)
    q = ds.first().id
    assert ds.sort_by_similarity(q, k=3).values("id")[0] == q


def test_a_saved_faiss_index_maps_its_file_and_copies_survive_the_original():
    ds = _dataset(2_000)
    x = _rows(2_000, 16)
    ds.set_embeddings("emb", x)
    index = compute_similarity(ds, embeddings="emb", brain_key="sim", backend="faiss")
    assert index._faiss_file is not None  # the inverted lists are read from the run's file, not held in memory
    q = ds.first().id
    want = ds.sort_by_similarity(q, k=5, brain_key="sim").values("id")
    index.save("sim2")  # a mapped index is copied byte for byte, not written as a reference to its file
    ds.delete_brain_run("sim")
    clear_cache()
    assert ds.sort_by_similarity(q, k=5, brain_key="sim2").values("id") == want


# ---------------------------------------------------------------------------------------------- writing


def test_round_trips_in_any_order_views_and_patches():
    ds = _dataset(50, boxes=True)
    x = _rows(50, 12, seed=1)
    # written in a view's order, read back in that order (the file itself) and in the dataset's
    view = ds.sort_by("filepath", reverse=True)
    view.set_embeddings("emb", x)
    np.testing.assert_array_equal(view.get_embeddings("emb"), x)
    assert isinstance(view.get_embeddings("emb"), np.memmap)
    np.testing.assert_array_equal(ds.get_embeddings("emb"), x[::-1])
    # a partial view: its rows are replaced, the others kept
    part = ds.limit(10)
    y = _rows(10, 12, seed=2)
    part.set_embeddings("emb", y)
    full = ds.get_embeddings("emb")
    np.testing.assert_array_equal(full[:10], y)
    np.testing.assert_array_equal(full[10:], x[::-1][10:])
    np.testing.assert_array_equal(part.get_embeddings("emb"), y)
    assert ds.get_embeddings_info("emb")["count"] == 50
    # a set of some samples only: the others read as NaN, and adding them later keeps the first rows
    ds.limit(5).set_embeddings("few", y[:5])
    few = ds.get_embeddings("few")
    np.testing.assert_array_equal(few[:5], y[:5])
    assert np.isnan(few[5:]).all()
    ds.skip(45).set_embeddings("few", y[5:])
    few = ds.get_embeddings("few")
    np.testing.assert_array_equal(few[:5], y[:5])
    np.testing.assert_array_equal(few[45:], y[5:])
    assert np.isnan(few[5:45]).all() and ds.get_embeddings_info("few")["count"] == 10
    # object-level (patches) sets
    patches = ds.to_patches("boxes")
    p = _rows(100, 6, seed=3)
    patches.set_embeddings("pe", p)
    assert ds.get_embeddings_info("pe")["kind"] == "patches"
    np.testing.assert_array_equal(patches.get_embeddings("pe"), p)
    np.testing.assert_array_equal(ds.get_embeddings("pe"), p)
    # other dtypes are converted to float32, exactly as numpy converts them
    d64 = np.random.default_rng(4).normal(size=(50, 12))
    ds.set_embeddings("f64", d64)
    np.testing.assert_array_equal(ds.get_embeddings("f64"), d64.astype(np.float32))
    # no temporary files are left behind
    for name in ("emb", "few", "pe", "f64"):
        assert not [f for f in os.listdir(_store(ds, name).root) if f.endswith((".new", ".json")) and
                    f != "meta.json"]


def test_a_bad_row_in_the_last_block_leaves_the_set_as_it_was():
    ds = _dataset(5_000)
    x = _rows(5_000, 512)
    ds.set_embeddings("emb", x)
    bad = _rows(5_000, 512, seed=9)
    bad[4_990, 7] = np.inf
    bad[4_995, 0] = np.nan
    with pytest.raises(el.InvalidInputError, match=r"NaN or inf in 2 rows \(first: row 4990\)"):
        ds.set_embeddings("emb", bad)
    np.testing.assert_array_equal(ds.get_embeddings("emb"), x)
    assert not [f for f in os.listdir(_store(ds, "emb").root) if f.endswith(".new")]
    # and a first write that fails creates no set
    with pytest.raises(el.InvalidInputError, match="NaN or inf"):
        ds.set_embeddings("other", bad)
    assert "other" not in ds.list_embeddings()


WRITER = """
import sys, numpy as np, embedlens as el
ds = el.load_dataset("victim")
x = np.random.default_rng(1).normal(size=(len(ds), 512)).astype(np.float32)
print("writing", flush=True)
ds.set_embeddings("emb", x)
print("done", flush=True)
"""


def test_sigkill_during_an_overwrite_leaves_the_old_set_readable():
    n = 200_000  # 400 MB: the write takes long enough to be caught in the middle
    ds = _dataset(n, "victim")
    old = np.zeros((n, 512), np.float32)
    old[:, 0] = np.arange(n)
    ds.set_embeddings("emb", old)
    root = _store(ds, "emb").root
    proc = subprocess.Popen([sys.executable, "-c", WRITER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.time() + 60
        caught = False
        while time.time() < deadline and proc.poll() is None:
            part = [f for f in root.iterdir() if f.name.startswith("embeddings.npy.") and f.name.endswith(".new")]
            if part and 0 < part[0].stat().st_size < 0.8 * old.nbytes:
                os.kill(proc.pid, signal.SIGKILL)  # in the middle of streaming the new matrix
                caught = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert caught, "the writer finished before it could be killed"
    got = el.load_dataset("victim").get_embeddings("emb")
    np.testing.assert_array_equal(got[:, 0], old[:, 0])
    assert not got[:, 1:].any()
    # the killed writer's temporary file is removed by the next write, which succeeds
    y = np.ones((n, 512), np.float32)
    ds.set_embeddings("emb", y)
    assert not [f for f in root.iterdir() if f.name.endswith(".new")]
    assert (ds.get_embeddings("emb") == 1).all()


# ---------------------------------------------------------------------------------------------- memory


def test_uniqueness_with_a_cached_graph_allocates_less_than_the_matrix():
    n, dim = 50_000, 128
    ds = _dataset(n)
    x = _rows(n, dim)
    ds.set_embeddings("emb", x)
    nbytes = x.nbytes
    del x
    compute_uniqueness(ds, embeddings="emb")  # builds and caches the kNN graph
    gc.collect()
    tracemalloc.start()
    try:
        compute_uniqueness(ds, embeddings="emb", overwrite=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * nbytes, f"peak {peak / 2**20:.1f} MiB for a {nbytes / 2**20:.1f} MiB matrix"
    assert ds.count("uniqueness") == n


def test_reading_and_checking_a_stored_set_allocates_no_copy():
    n, dim = 50_000, 512  # (the ids read alongside cost ~200 bytes a row: 0.1x of the matrix at this width)
    ds = _dataset(n)
    ds.set_embeddings("emb", _rows(n, dim))
    gc.collect()
    tracemalloc.start()
    try:
        m = ds.get_embeddings("emb")
        from embedlens.core.embeddings import check_matrix

        assert np.shares_memory(check_matrix(m, n), m)  # checked in blocks, not converted or copied
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.3 * n * dim * 4


# ---------------------------------------------------------------------------------------------- find_unique


def _plain_greedy(x, count, cosine, first):
    sq = np.einsum("ij,ij->i", x, x)
    norms = np.sqrt(np.maximum(sq, 1e-24))

    def dist(c):
        dots = np.asarray(x @ c, dtype=np.float32)
        return (1.0 - dots / (norms * float(np.linalg.norm(c)))) if cosine else sq - 2.0 * dots + float(c @ c)

    chosen = [first]
    mind = dist(x[first])
    mind[first] = -np.inf
    for _ in range(count - 1):
        j = int(np.argmax(mind))
        chosen.append(j)
        np.minimum(mind, dist(x[j]), out=mind)
        mind[j] = -np.inf
    return chosen


@pytest.mark.parametrize("cosine", [True, False])
def test_farthest_points_with_a_small_frontier_is_the_plain_greedy_order(cosine):
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(20, 24))
    x = (centres[rng.integers(0, 20, 3_000)] + rng.normal(0, 0.5, (3_000, 24))).astype(np.float32)
    x[1_500:1_510] = x[100:110]  # exact duplicates: ties go to the lower row
    sq = np.einsum("ij,ij->i", x, x)
    norms = np.sqrt(np.maximum(sq, 1e-24))
    for frontier in (1, 16, 256, 10_000):
        got = _farthest_points(x, sq, norms, cosine, 5, 300, frontier=frontier)
        assert got == _plain_greedy(x, 300, cosine, 5), frontier
    assert len(set(got)) == 300
