"""Dataset comparison benchmarks: novelty AUROC against plain baselines, the shift test's p-values, and scale.

Run: ``.venv/bin/python bench/bench_compare.py [--models pixels,efficientnet-lite0]
[--photo-models efficientnet-lite0] [--channels auto] [--scale 100000] [--seeds 20] [--home DIR]``
(``--scale 0`` skips the scale case, an empty ``--photo-models`` the photo scenarios). Results:
``bench/results/compare.json``. ``compare_datasets`` runs with ``channels=--channels`` (default "auto": the
embeddings and the perceptual descriptors of the pixels); ``auroc_distance_only`` is the AUROC of the
embedding's kNN distance alone (``novelty_distance``: the novelty of embedlens before the channels).

1. Shift scenarios on MNIST-5,000 (reference: the 4,000 ``train`` digits), each model's embeddings stored
   once: the target is 800 ``test`` digits plus 200 other test digits rotated 90 degrees, blurred (Gaussian,
   radius 1.5), inverted, or with pixel noise (sigma 100 of 255), or 200 tiles of scikit-image's photos (28 px
   grayscale crops); a class missing from the reference (train without 7s vs all of test); a change of class
   balance only (test's 0s and 1s plus every 16th other digit). For the shifted samples: AUROC of
   ``compare_datasets``' novelty, and in the same run of the baselines a user would write on the same
   embeddings: distance to the nearest reference sample (cosine, exact), sklearn ``IsolationForest`` fitted
   on the reference, Mahalanobis distance (``LedoitWolf`` covariance of the reference). The shift test's
   p-value and effect for each scenario.
2. False positives: ``--seeds`` random halves of ``train`` (2,000 vs 2,000) must read "no shift": the
   fraction of p-values below 0.01 (the default ``alpha``) and below 0.05, and the mean fraction of the
   target with novelty >= 0.9 and >= 0.99 (0.10 and 0.01 when calibrated).
2b. Photos (``--photo-models``): 128-px RGB tiles of 12 of scikit-image's photos as the reference (100 a
   photo); the target is 400 other tiles of the same photos plus 100 of: tiles of the 6 other photos
   ("new photos"), MNIST test digits scaled to 128 px ("digits"), inverted tiles ("inverted"); and
   ``--seeds`` random halves of the reference for false positives. "new photos" also reports the AUROC of
   each held-out photo's tiles (``by_photo``): the held-out ``chelsea`` is a cat and the reference holds
   another cat photo (``cat``), so its tiles are new pixels but not new content for an ImageNet model.
3. Scale: ``--scale`` x ``--scale`` synthetic 512-d unit vectors (100 clusters; the target has 10% of its rows
   from 5 clusters the reference lacks), two datasets, in a fresh process: CPU s, wall s and peak memory of
   ``compare_datasets`` (nothing cached), against sklearn's brute ``NearestNeighbors.kneighbors`` of the
   target against the reference (one of the four searches compare makes), timed on 5,000 queries and scaled.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import measure, save, table  # noqa: E402

ROOT = Path(tempfile.gettempdir()) / "embedlens-bench-compare"
SHIFTS = ("rotated", "blurred", "inverted", "noisy", "photos")
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "moon", "page", "text", "brick", "grass",
          "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "cat", "horse", "clock")
PER_SHIFT = 200
#: ``compare_datasets(channels=...)`` of every run (``--channels``; child processes read the environment).
CHANNELS = os.environ.get("BENCH_COMPARE_CHANNELS", "auto")


def _el(home: Path):
    os.environ["EMBEDLENS_HOME"] = str(home)
    os.environ.setdefault("EMBEDLENS_MODEL_CACHE", str(ROOT / "models"))
    import embedlens as el

    return el


def shifted_image(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    if kind == "rotated":
        return np.rot90(img).copy()
    if kind == "inverted":
        return 255 - img
    if kind == "blurred":
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.5)))
    return np.clip(img.astype(np.int16) + rng.normal(0, 100, img.shape), 0, 255).astype(np.uint8)


def photo_tiles(count: int, size: int, mode: str, rng: np.random.Generator, names: tuple = PHOTOS) -> list:
    from PIL import Image
    from skimage import data

    photos = [Image.fromarray(getattr(data, n)()).convert(mode) for n in names]
    tiles = []
    for i in range(count):
        p = photos[i % len(photos)]
        side = int(rng.integers(64, min(p.size) // 2))
        x, y = int(rng.integers(0, p.size[0] - side)), int(rng.integers(0, p.size[1] - side))
        tiles.append(p.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR))
    return tiles


def build(home: Path, models: list[str]):
    """MNIST-5,000 with the shifted variants as new PNGs (tags ``shift:<kind>``), embedded by each model."""
    el = _el(home)
    from PIL import Image

    if el.dataset_exists("mnist-shifts"):
        ds = el.load_dataset("mnist-shifts")
    else:
        ds = el.load_sample_dataset("mnist", progress=False).clone("mnist-shifts")
        test = ds.match_tags("test")
        ids, paths = test.values("id"), test.values("filepath")
        rng = np.random.default_rng(0)
        out = home / "shifted"
        out.mkdir(parents=True, exist_ok=True)
        samples = []
        for s, kind in enumerate(SHIFTS):
            base = rng.permutation(len(ids))[:PER_SHIFT]
            ds.select([ids[i] for i in base]).tag_samples(f"base:{kind}")
            mode = Image.open(paths[0]).mode
            if kind == "photos":
                images = photo_tiles(PER_SHIFT, Image.open(paths[0]).size[0], mode, rng)
            else:
                images = [Image.fromarray(shifted_image(np.asarray(Image.open(paths[i])), kind, rng), mode=mode)
                          for i in base]
            for j, img in enumerate(images):
                path = out / f"{kind}_{j:03d}.png"
                img.save(path)
                samples.append(el.Sample(str(path), tags=[f"shift:{kind}"]))
        ds.add_samples(samples)
    for m in models:
        t = time.perf_counter()
        ds.compute_embeddings(m, embeddings_field=_set(m), progress=False)
        print(f"embedded {len(ds):,} images with {m} in {time.perf_counter() - t:.0f} s", flush=True)
    return el, ds


def _set(model: str) -> str:
    return "emb_" + model.replace("-", "_")


def baselines(ref: np.ndarray, tgt: np.ndarray) -> dict[str, np.ndarray]:
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest

    from embedlens.brain.neighbors import prepare, search

    _, d = search(prepare(ref, "cosine"), prepare(tgt, "cosine"), 1, "cosine")
    iso = IsolationForest(random_state=0).fit(ref)
    return {"nearest_reference": d[:, 0], "isolation_forest": -iso.score_samples(tgt),
            "mahalanobis": LedoitWolf().fit(ref).mahalanobis(tgt)}


def scenario(el, ds, name: str, reference, target, positives: set[str] | None, model: str) -> dict:
    from sklearn.metrics import roc_auc_score

    emb = _set(model)
    t = time.perf_counter()
    res = el.compare_datasets(reference, target, embeddings=emb, brain_key="bench", overwrite=True,
                              channels=CHANNELS, progress=False)
    row = {"model": model, "scenario": name, "reference": len(res.reference_ids), "target": len(res.keys),
           "compare_s": round(time.perf_counter() - t, 2), "p_value": res.shift["p_value"],
           "p_knn": res.shift["p_knn"], "p_novelty": res.shift["p_novelty"],
           "effect": round(res.shift["effect"], 3), "shift": res.shift["shift"],
           "novel_fraction": res.summary()["novel_fraction"],
           "clusters_over": res.summary()["clusters_over"], "clusters_under": res.summary()["clusters_under"],
           "channels": "+".join(res.config["channels"]["used"])}
    if positives:
        y = np.array([i in positives for i in res.keys])
        row["auroc_novelty"] = round(float(roc_auc_score(y, res.novelty)), 4)
        row["auroc_distance_only"] = round(float(roc_auc_score(y, res.novelty_distance)), 4)
        ref_x = np.asarray(reference.get_embeddings(emb), np.float32)
        tgt_x = np.asarray(target.select(res.keys, ordered=True).get_embeddings(emb), np.float32)
        for base, scores in baselines(ref_x, tgt_x).items():
            row[f"auroc_{base}"] = round(float(roc_auc_score(y, scores)), 4)
    return row, res


def quality(el, ds, model: str, seeds: int) -> list[dict]:
    rows = []
    train, test = ds.match_tags("train"), ds.match_tags("test")
    for kind in SHIFTS:
        shifted = ds.match_tags(f"shift:{kind}")
        target = ds.select(test.match_tags(f"base:{kind}", bool=False).values("id") + shifted.values("id"))
        row, _ = scenario(el, ds, kind, train, target, set(shifted.values("id")), model)
        rows.append(row)
        print(row, flush=True)
    no_seven = train.match(el.F("ground_truth.label") != "7")
    sevens = set(test.match(el.F("ground_truth.label") == "7").values("id"))
    row, _ = scenario(el, ds, "new class (7)", no_seven, test, sevens, model)
    rows.append(row)
    print(row, flush=True)
    labels = dict(zip(test.values("id"), test.values("ground_truth.label")))
    keep = [i for i, lab in labels.items() if lab in ("0", "1")] + \
        [i for i, lab in labels.items() if lab not in ("0", "1")][::16]
    row, res = scenario(el, ds, "balance only (0s, 1s)", train, ds.select(keep), None, model)
    ref_labels = dict(zip(train.values("id"), train.values("ground_truth.label")))
    over = [c for c in res.clusters if c["shift"] == "over"]
    members = [i for c in over for i in res.cluster_view(c["cluster"], "reference").values("id")]
    row["over_clusters_share_of_0s_1s"] = round(sum(ref_labels[i] in ("0", "1") for i in members) /
                                                max(1, len(members)), 3)
    rows.append(row)
    print(row, flush=True)
    rows.append(random_splits(el, ds, train, model, seeds, "train"))
    return rows


def random_splits(el, ds, collection, model: str, seeds: int, name: str) -> dict:
    """``seeds`` random halves of ``collection`` compared: p-values and the novelty's calibration."""
    ids = collection.values("id")
    p_values, high, top = [], [], []
    for seed in range(seeds):
        perm = np.random.default_rng(seed).permutation(len(ids))
        half = len(ids) // 2
        res = el.compare_datasets(ds.select([ids[i] for i in perm[:half]]), ds.select([ids[i] for i in perm[half:]]),
                                  embeddings=_set(model), brain_key="bench", overwrite=True, channels=CHANNELS,
                                  progress=False)
        p_values.append(res.shift["p_value"])
        high.append(float((res.novelty >= 0.9).mean()))
        top.append(float((res.novelty >= 0.99).mean()))
    row = {"model": model, "scenario": f"random halves of {name}, {seeds} seeds",
           "fpr_at_0.01": float(np.mean(np.array(p_values) < 0.01)),
           "fpr_at_0.05": float(np.mean(np.array(p_values) < 0.05)),
           "min_p": float(min(p_values)), "novelty_ge_0.9": round(float(np.mean(high)), 4),
           "novelty_ge_0.99": round(float(np.mean(top)), 4), "p_values": [round(p, 4) for p in p_values]}
    print(row, flush=True)
    return row


# ---------------------------------------------------------------------------------------------- photos

HELD_OUT = PHOTOS[2::3]  # 6 photos the reference never sees
PHOTO_SHIFTS = ("new photos", "digits", "inverted")


def build_photos(home: Path, models: list[str], per_photo: int = 100, clean: int = 400, per_shift: int = 100):
    """Tiles of the photos (tags ``reference``, ``target``, ``shift:<kind>``), embedded by each model."""
    el = _el(home)
    from PIL import Image, ImageOps

    if el.dataset_exists("photo-shifts"):
        ds = el.load_dataset("photo-shifts")
    else:
        rng = np.random.default_rng(1)
        seen = tuple(p for p in PHOTOS if p not in HELD_OUT)
        out = home / "photo-tiles"
        out.mkdir(parents=True, exist_ok=True)
        mnist = el.load_sample_dataset("mnist", progress=False).match_tags("test")
        digits = [Image.open(p).convert("RGB").resize((128, 128), Image.BILINEAR)
                  for p in mnist.take(per_shift, seed=1).values("filepath")]
        groups = {"reference": photo_tiles(per_photo * len(seen), 128, "RGB", rng, seen),
                  "target": photo_tiles(clean, 128, "RGB", rng, seen),
                  "shift:new photos": photo_tiles(per_shift, 128, "RGB", rng, HELD_OUT),
                  "shift:digits": digits,
                  "shift:inverted": [ImageOps.invert(t) for t in photo_tiles(per_shift, 128, "RGB", rng, seen)]}
        samples = []
        for tag, images in groups.items():
            for j, img in enumerate(images):
                path = out / f"{tag.replace(':', '_').replace(' ', '_')}_{j:04d}.png"
                img.save(path)
                samples.append(el.Sample(str(path), tags=[tag] if tag in ("reference", "target") else [tag, "target"]))
        ds = el.Dataset("photo-shifts")
        ds.add_samples(samples)
    for m in models:
        t = time.perf_counter()
        ds.compute_embeddings(m, embeddings_field=_set(m), progress=False)
        print(f"embedded {len(ds):,} photo tiles with {m} in {time.perf_counter() - t:.0f} s", flush=True)
    return el, ds


def by_photo(ds, res, shifted: set[str]) -> dict[str, dict[str, float]]:
    """AUROC of the novelty and of the embedding distance alone for the tiles of each held-out photo (against
    every clean target tile): which new photos are found. Tile ``j`` of a group comes from photo ``j mod 6``
    (:func:`photo_tiles` cycles through the photos)."""
    import re

    from sklearn.metrics import roc_auc_score

    paths = dict(zip(ds.values("id"), ds.values("filepath")))
    source = [HELD_OUT[int(re.search(r"_(\d+)\.png$", paths[k]).group(1)) % len(HELD_OUT)] if k in shifted else None
              for k in res.keys]
    out = {}
    for photo in HELD_OUT:
        keep = np.array([s in (None, photo) for s in source])
        y = np.array([s == photo for s in source])[keep]
        out[photo] = {"auroc_novelty": round(float(roc_auc_score(y, res.novelty[keep])), 4),
                      "auroc_distance_only": round(float(roc_auc_score(y, res.novelty_distance[keep])), 4)}
    return out


def photo_quality(el, ds, model: str, seeds: int) -> list[dict]:
    rows = []
    ref, target = ds.match_tags("reference"), ds.match_tags("target")
    clean = target.match_tags([f"shift:{k}" for k in PHOTO_SHIFTS], bool=False).values("id")
    for kind in PHOTO_SHIFTS:
        shifted = ds.match_tags(f"shift:{kind}").values("id")
        row, res = scenario(el, ds, f"photos: {kind}", ref, ds.select(clean + shifted), set(shifted), model)
        if kind == "new photos":
            row["by_photo"] = by_photo(ds, res, set(shifted))
        rows.append(row)
        print(row, flush=True)
    rows.append(random_splits(el, ds, ref, model, seeds, "the photo tiles"))
    return rows


# ---------------------------------------------------------------------------------------------- scale


def prepare_scale(home: str, n: int) -> dict:
    el = _el(Path(home))
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_scale import clustered_into

    x = np.empty((2 * n, 512), np.float32)
    clustered_into(x)
    novel = np.empty((n // 10, 512), np.float32)
    clustered_into(novel, n_clusters=5, seed=7)
    x[2 * n - len(novel):] = novel  # the last 10% of the target come from 5 clusters the reference lacks
    desc = perceptual_rows(n)
    for (name, rows), descriptors in zip((("big_ref", x[:n]), ("big_tgt", x[n:])), (desc[:n], desc[n:])):
        if el.dataset_exists(name):
            el.delete_dataset(name)
        ds = el.Dataset(name)
        # empty files: a stored descriptor is reused while its file's stamp is unchanged, as in a real dataset
        folder = Path(home) / "files" / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = [str(folder / f"{i:07d}.png") for i in range(n)]
        for p in paths:
            open(p, "wb").close()
        ds.add_samples([el.Sample(p) for p in paths])
        ds.set_embeddings("emb", rows)
        store_perceptual(ds, descriptors, paths)
    return {"novel_rows": len(novel)}


def perceptual_rows(n: int) -> np.ndarray:
    """Synthetic perceptual descriptors of both sets, ``[2n, 189]``: clustered unit vectors of the descriptor's
    size drawn like the embeddings (one distribution for the reference and the target, the target's last 10%
    from 5 clusters the reference lacks)."""
    from bench_scale import clustered_into

    from embedlens.models.perceptual import PerceptualModel

    dim = PerceptualModel().embedding_dim
    rows = np.empty((2 * n, dim), np.float32)
    clustered_into(rows, seed=10)
    extra = np.empty((n // 10, dim), np.float32)
    clustered_into(extra, n_clusters=5, seed=12)
    rows[2 * n - len(extra):] = extra
    return rows


def store_perceptual(ds, rows: np.ndarray, paths: list[str]) -> None:
    """Store ``rows`` as the "perceptual" set that ``channels="auto"`` reads, stamped with the (empty) files:
    what is timed is the channel's lookup of stored descriptors and its kNN work, as for the embeddings
    (computing a descriptor costs about as much as decoding the image)."""
    from embedlens.core.embeddings import embedding_set
    from embedlens.embed.pipeline import file_stamp
    from embedlens.models.perceptual import PerceptualModel

    model = PerceptualModel()
    store = embedding_set(ds, "perceptual")
    store.create({"model": model.name, "fingerprint": model.fingerprint, "config": model.config,
                  "dim": model.embedding_dim, "kind": "samples", "patches_field": None, "count": 0})
    store.append(ds.values("id"), rows, np.array([file_stamp(p) for p in paths], np.int64))
    store.consolidate()


def compare_case(home: str, n: int):
    el = _el(Path(home))
    import faiss  # noqa: F401  (imported in the setup of a real session too)

    tgt = el.load_dataset("big_tgt")
    res = el.compare_datasets("big_ref", tgt, embeddings="emb", brain_key="scale", overwrite=True, progress=False,
                              channels=CHANNELS)
    from sklearn.metrics import roc_auc_score

    y = np.arange(len(res.keys)) >= len(res.keys) - n // 10
    return {"p_value": res.shift["p_value"], "p_knn": res.shift["p_knn"], "p_novelty": res.shift["p_novelty"],
            "effect": round(res.shift["effect"], 3),
            "auroc_novelty": round(float(roc_auc_score(y, res.novelty)), 4), "knn": res.config["knn"],
            "clusters_over": res.summary()["clusters_over"], "channels": res.config["channels"]}


def sklearn_case(home: str, n: int, queries: int = 5000):
    el = _el(Path(home))
    from sklearn.neighbors import NearestNeighbors

    ref = np.asarray(el.load_dataset("big_ref").get_embeddings("emb"))
    tgt = np.asarray(el.load_dataset("big_tgt").get_embeddings("emb"))[:queries]
    t0, c0 = time.perf_counter(), time.process_time()
    NearestNeighbors(n_neighbors=10, algorithm="brute", metric="cosine").fit(ref).kneighbors(tgt)
    return {"queries": queries, "scaled_wall_s": (time.perf_counter() - t0) * n / queries,
            "scaled_cpu_s": (time.process_time() - c0) * n / queries}


def _noop(*args):
    return args


def scale(home: Path, n: int) -> list[dict]:
    home.mkdir(parents=True, exist_ok=True)
    info = measure(prepare_scale, str(home), n)
    print(f"prepared {n:,} x {n:,} in {info['wall_s']:.0f} s", flush=True)
    ours = measure(compare_case, str(home), n, setup=_setup_compare)
    base = measure(sklearn_case, str(home), n, setup=_setup_sklearn)
    row = {"scenario": f"scale {n:,} x {n:,} x 512", "compare_cpu_s": round(ours["cpu_s"], 1),
           "compare_wall_s": round(ours["wall_s"], 1), "compare_peak_mib": round(ours["peak_mib"]),
           "data_mib": round(2 * n * 512 * 4 / 2 ** 20), **ours["extra"],
           "sklearn_one_search_cpu_s_scaled": round(base["extra"]["scaled_cpu_s"], 1),
           "sklearn_one_search_wall_s_scaled": round(base["extra"]["scaled_wall_s"], 1)}
    print(row, flush=True)
    return [row]


def _setup_compare(home: str, n: int):
    _el(Path(home))
    import faiss  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import embedlens.brain.compare  # noqa: F401
    return (home, n)


def _setup_sklearn(home: str, n: int):
    _el(Path(home))
    import sklearn.neighbors  # noqa: F401
    return (home, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="pixels,efficientnet-lite0")
    ap.add_argument("--photo-models", default="efficientnet-lite0")
    ap.add_argument("--channels", default="auto")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--scale", type=int, default=100_000)
    ap.add_argument("--home", default=str(ROOT / "home"))
    args = ap.parse_args()
    global CHANNELS
    CHANNELS = os.environ["BENCH_COMPARE_CHANNELS"] = args.channels  # the scale case runs in child processes
    home = Path(args.home)
    rows: list[dict] = []
    models = [m for m in args.models.split(",") if m]
    if models:
        el, ds = build(home, models)
        for m in models:
            rows += quality(el, ds, m, args.seeds)
            save("compare", rows)
    photo_models = [m for m in args.photo_models.split(",") if m]
    if photo_models:
        el, ds = build_photos(home, photo_models)
        for m in photo_models:
            rows += photo_quality(el, ds, m, args.seeds)
            save("compare", rows)
    if args.scale:
        rows += scale(home / "scale", args.scale)
        save("compare", rows)
    def show(selected: list[dict], columns: list[str]) -> None:
        if selected:
            print(table(selected, columns))

    cols = ["model", "scenario", "auroc_novelty", "auroc_distance_only", "auroc_nearest_reference", "auroc_isolation_forest",
            "auroc_mahalanobis", "p_value", "p_knn", "p_novelty", "effect", "shift", "novel_fraction", "clusters_over", "clusters_under"]
    show([r for r in rows if "model" in r and "p_value" in r], cols)
    show([r for r in rows if "fpr_at_0.01" in r], ["model", "scenario", "fpr_at_0.01", "fpr_at_0.05", "min_p",
                                                    "novelty_ge_0.9", "novelty_ge_0.99"])
    show([r for r in rows if "compare_cpu_s" in r],
                ["scenario", "compare_cpu_s", "compare_wall_s", "compare_peak_mib", "data_mib", "p_value",
                 "auroc_novelty", "sklearn_one_search_cpu_s_scaled"])


if __name__ == "__main__":
    main()
