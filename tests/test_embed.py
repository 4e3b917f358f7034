"""compute_embeddings / compute_patch_embeddings / apply_model on real images with real weights."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.embed import EmbeddingMismatchError
from embedlens.models import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("efficientnet-lite0")


@pytest.fixture
def photo_ds(photos, tmp_path):
    # copies, so tests may touch or corrupt them
    paths = []
    for name, p in photos.items():
        dst = tmp_path / p.name
        shutil.copy(p, dst)
        paths.append(dst)
    ds = el.Dataset("photos")
    ds.add_samples([el.Sample(p) for p in paths])
    return ds


def test_embeddings_match_the_model_and_are_stored(photo_ds, model):
    emb = photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False, batch_size=2)
    assert emb.shape == (5, 1280) and emb.dtype == np.float32 and np.isfinite(emb).all()
    direct = model.embed(photo_ds.values("filepath"))
    np.testing.assert_allclose(emb, direct, atol=1e-4)
    assert photo_ds.list_embeddings() == ["emb"]
    info = photo_ds.get_embeddings_info("emb")
    assert info["fingerprint"] == model.fingerprint and info["dim"] == 1280 and info["count"] == 5
    # stored rows come back in any view's order
    view = photo_ds.sort_by("filepath", reverse=True)
    order = [photo_ds.values("id").index(i) for i in view.values("id")]
    np.testing.assert_array_equal(view.get_embeddings("emb"), emb[order])
    # and in a fresh handle
    np.testing.assert_array_equal(el.load_dataset("photos").get_embeddings("emb"), emb)


def test_resume_computes_only_missing_or_changed(photo_ds, model):
    first = photo_ds.limit(2).compute_embeddings(model, embeddings_field="emb", progress=False)
    store = photo_ds.path / "arrays" / "embeddings" / "emb"
    before = os.stat(store / "embeddings.npy").st_mtime_ns
    photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    assert photo_ds.get_embeddings_info("emb")["count"] == 5
    ids = np.load(store / "ids.npy")
    assert sorted(ids.tolist()) == sorted(photo_ds.values("id"))
    # nothing to do: the matrix file is left alone
    mtime = os.stat(store / "embeddings.npy").st_mtime_ns
    photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    assert os.stat(store / "embeddings.npy").st_mtime_ns == mtime and mtime != before
    # a changed file is recomputed: replace image 0 by a flipped copy
    path = photo_ds.values("filepath")[0]
    Image.open(path).transpose(Image.FLIP_LEFT_RIGHT).save(path)
    again = photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    assert not np.allclose(again[0], first[0], atol=1e-3)
    np.testing.assert_allclose(again[1], first[1], atol=1e-5)


def test_interrupted_run_keeps_finished_batches(photo_ds, model):
    calls = {"n": 0}
    real = model.embed_batch

    def embed_then_stop(arrays):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(arrays)

    model.embed_batch = embed_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            photo_ds.compute_embeddings(model, embeddings_field="emb", batch_size=2, progress=False)
    finally:
        del model.embed_batch
    assert photo_ds.get_embeddings_info("emb") and len(photo_ds.get_embeddings("emb")) == 5
    kept = ~np.isnan(photo_ds.get_embeddings("emb")).any(axis=1)
    assert kept.sum() == 4  # two whole batches survived
    full = photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    assert np.isfinite(full).all()


def test_bad_images_are_skipped_with_an_error_message(photo_ds, tmp_path, model):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    photo_ds.add_samples([el.Sample(bad), el.Sample(tmp_path / "missing.png")])
    emb = photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    assert np.isnan(emb[5:]).all() and np.isfinite(emb[:5]).all()
    errors = photo_ds.values("embedding_error")
    assert errors[:5] == [None] * 5 and "corrupt.jpg" in errors[5] and "missing.png" in errors[6]
    assert photo_ds.get_embeddings_info("emb")["count"] == 5  # absent, never zeros
    with pytest.raises(el.ImageError, match="corrupt.jpg"):
        photo_ds.compute_embeddings(model, skip_failures=False, progress=False)


def test_models_never_mix_in_one_set(photo_ds, model):
    photo_ds.compute_embeddings(model, embeddings_field="emb", progress=False)
    stored = photo_ds.get_embeddings("emb")
    with pytest.raises(EmbeddingMismatchError, match="cannot be mixed"):
        photo_ds.compute_embeddings("pixels", embeddings_field="emb", progress=False)
    np.testing.assert_array_equal(photo_ds.get_embeddings("emb"), stored)


def test_user_arrays_are_validated_before_writing():
    ds = el.Dataset()
    ds.add_samples([el.Sample(f"/x/{i}.png") for i in range(4)])
    good = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    ds.set_embeddings("mine", good)
    np.testing.assert_array_equal(ds.get_embeddings("mine"), good)
    bad = good.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in 1 rows \\(first: row 2\\)"):
        ds.set_embeddings("mine", bad)
    with pytest.raises(ValueError, match="has 3 rows but the collection has 4"):
        ds.set_embeddings("mine", good[:3])
    with pytest.raises(EmbeddingMismatchError, match="dimension 5"):
        ds.set_embeddings("mine", good[:, :5])
    np.testing.assert_array_equal(ds.get_embeddings("mine"), good)


def test_pixels_model_on_the_digits(digits_tree):
    ds = el.Dataset()
    paths = sorted(str(p) for p in digits_tree.rglob("*.png"))[:20]
    ds.add_samples([el.Sample(p) for p in paths])
    emb = ds.compute_embeddings("pixels", progress=False)
    assert emb.shape == (20, 32 * 32)  # grayscale files stay grayscale (the FiftyOne tutorial's 784 for MNIST)
    np.testing.assert_allclose(emb[0], np.asarray(Image.open(paths[0]), np.float32).ravel() / 255, atol=1e-6)


def test_patch_embeddings_are_keyed_by_label(photos, model):
    ds = el.Dataset()
    box_a, box_b = [0.1, 0.1, 0.4, 0.5], [0.5, 0.3, 0.4, 0.6]
    ds.add_samples([el.Sample(photos["chelsea"], objects=el.Detections(detections=[
        el.Detection("cat", box_a), el.Detection("other", box_b)])),
        el.Sample(photos["coffee"], objects=el.Detections(detections=[el.Detection("cup", box_b)]))])
    emb = ds.compute_patch_embeddings(model, "objects", embeddings_field="patch_emb", progress=False)
    assert emb.shape == (3, 1280)
    from embedlens.embed.pipeline import crop_box
    from embedlens.images import load_image

    crop = crop_box(load_image(photos["chelsea"]), box_a, 0.1, True)
    np.testing.assert_allclose(emb[0], model.embed([crop])[0], atol=1e-4)
    assert ds.get_embeddings_info("patch_emb")["kind"] == "patches"
    np.testing.assert_array_equal(ds.to_patches("objects").get_embeddings("patch_emb"), emb)
    np.testing.assert_array_equal(ds.get_embeddings("patch_emb"), emb)


def test_apply_model_writes_predictions_with_logits(photo_ds, model):
    n = photo_ds.apply_model(model, label_field="predictions", progress=False)
    assert n == 5
    preds = dict(zip([os.path.basename(p) for p in photo_ds.values("filepath")], photo_ds.values("predictions")))
    assert np.argmax(preds["coffee.jpg"].logits) == 967 and preds["coffee.jpg"].confidence > 0.5
    assert 281 <= np.argmax(preds["chelsea.jpg"].logits) <= 285
    assert len(preds["camera.jpg"].logits) == 1000


def test_ray_engine_matches_local(photo_ds, model):
    local = photo_ds.compute_embeddings(model, progress=False)
    distributed = photo_ds.compute_embeddings("efficientnet-lite0", engine="ray", embeddings_field="ray_emb",
                                              progress=False, num_actors=1)
    np.testing.assert_allclose(distributed, local, atol=1e-4)
    assert photo_ds.get_embeddings_info("ray_emb")["count"] == 5


def test_no_progress_bar_when_nothing_is_left_to_embed(tmp_path, capsys):
    """Regression: a stored set printed an empty "embedding: 0img" bar on every reuse."""
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("L", (8, 8), 40 * i).save(paths[-1])
    ds = el.Dataset()
    ds.add_samples([el.Sample(p) for p in paths])
    ds.compute_embeddings("pixels", embeddings_field="px", progress=True)
    capsys.readouterr()
    ds.compute_embeddings("pixels", embeddings_field="px", progress=True)
    assert "embedding" not in capsys.readouterr().err


def test_an_image_the_model_cannot_take_stops_the_job_naming_it(tmp_path):
    """Regression: skip_failures is for unreadable files. A colour photo after grey ones (the pixels model's
    first image fixes one channel) was recorded as that sample's failure, so every colour image of the
    dataset was left out with a warning and ``compare_datasets`` then failed on mismatched dimensions."""
    from PIL import Image
    from skimage import data

    grey = Image.fromarray(data.camera()).convert("RGB").resize((32, 32))  # RGB file, grey content
    colour = Image.fromarray(data.astronaut()).resize((32, 32))
    paths = [tmp_path / "a_grey.png", tmp_path / "b_colour.png", tmp_path / "c_colour.png"]
    for p, img in zip(paths, (grey, colour, colour)):
        img.save(p)
    ds = el.Dataset("mixed-channels")
    ds.add_samples([el.Sample(p) for p in paths])
    with pytest.raises(el.InvalidInputError, match=r"colour image among grayscale ones.*b_colour\.png"):
        ds.compute_embeddings("pixels", num_workers=1, progress=False)
    assert "embedding_error" not in ds.get_field_schema()  # no sample was marked as failed
    with pytest.raises(el.InvalidInputError, match=r"colour image among grayscale ones.*_colour\.png"):
        ds.compute_embeddings("pixels", embeddings_field="by_ray", engine="ray", progress=False)
    # what the message says to do works
    rgb = ds.compute_embeddings(el.load_model("pixels", grayscale=False), embeddings_field="rgb", progress=False)
    assert rgb.shape == (3, 32 * 32 * 3) and np.isfinite(rgb).all()
