"""FiftyOne spellings the tutorials use, beyond expressions: ``el.types`` dataset type classes, the default
model's torch module, and raw pixels of grayscale images as one channel (784 values for an MNIST digit)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.models.pixels import PixelsModel


@pytest.fixture
def gray_digits(tmp_path):
    """Twelve real handwritten digits as 28x28 grayscale PNGs (mode L), like MNIST's files."""
    from sklearn.datasets import load_digits

    d = load_digits()
    paths = []
    for i in range(12):
        img = Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).resize((28, 28), Image.NEAREST)
        paths.append(tmp_path / f"digit_{i:02d}.png")
        img.save(paths[-1])
    ds = el.Dataset()
    ds.add_samples([el.Sample(str(p), ground_truth=el.Classification(str(d.target[i]))) for i, p in enumerate(paths)])
    return ds, paths


# ---------------------------------------------------------------------------------------------- el.types


def test_dataset_type_classes_work_wherever_strings_do(gray_digits, tmp_path):
    ds, _ = gray_digits
    ds.export(tmp_path / "tree", dataset_type=el.types.ImageClassificationDirectoryTree, label_field="ground_truth")
    again = el.Dataset.from_dir(tmp_path / "tree", el.types.ImageClassificationDirectoryTree)
    assert sorted(again.values("ground_truth.label")) == sorted(ds.values("ground_truth.label"))
    folder = el.Dataset.from_dir(tmp_path / "tree", dataset_type=el.types.ImageDirectory)
    assert len(folder) == len(ds) and "ground_truth" not in folder.get_field_schema()
    # the string spelling keeps working, and the classes name the strings they stand for
    assert el.types.ImageClassificationDirectoryTree.name == "classification-tree"
    assert el.types.COCODetectionDataset.name == "coco" and el.types.ImageDirectory.name == "image-folder"
    assert el.types.CSVDataset.name == "csv"


def test_coco_round_trip_by_class(tmp_path, gray_digits):
    _, paths = gray_digits
    ds = el.Dataset()
    ds.add_samples([el.Sample(str(p), gt=el.Detections(detections=[el.Detection("digit", [0.1, 0.1, 0.5, 0.5])]))
                    for p in paths[:3]])
    ds.export(tmp_path / "coco", el.types.COCODetectionDataset, label_field="gt")
    again = el.Dataset.from_dir(tmp_path / "coco", el.types.COCODetectionDataset)
    assert again.count_values("ground_truth.detections.label") == {"digit": 3}


def test_abstract_or_foreign_types_are_refused(gray_digits, tmp_path):
    ds, _ = gray_digits
    with pytest.raises(el.InvalidInputError, match="not a concrete dataset type"):
        ds.export(tmp_path / "x", el.types.DatasetType)
    with pytest.raises(el.InvalidInputError, match="unknown dataset_type"):
        ds.export(tmp_path / "x", int)


# ---------------------------------------------------------------------------------------------- torch module


def test_default_model_exposes_its_torch_module(photos):
    import torch

    model = el.load_model("efficientnet-lite0", backend="torch")
    net = model.torch_module
    assert isinstance(net, torch.nn.Module) and not net.training
    x = model.prepare_batch([photos["chelsea"]])
    with torch.inference_mode():
        feats = net.extract_features(torch.from_numpy(x)).mean((2, 3)).numpy()
        logits = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(feats, model.embed([photos["chelsea"]]), atol=1e-4)
    assert int(logits.argmax()) == int(model.predict([photos["chelsea"]]).argmax())
    # it feeds the helpers that take any torch module
    assert el.feature_extractor(net).embed([photos["chelsea"]]).shape[1] == 1280


# ---------------------------------------------------------------------------------------------- pixels


def test_pixels_keep_grayscale_images_grayscale(gray_digits):
    ds, paths = gray_digits
    emb = ds.compute_embeddings("pixels", progress=False)
    assert emb.shape == (12, 784)  # was 2,352 (the digit repeated in R, G and B)
    np.testing.assert_array_equal(emb[3], np.asarray(Image.open(paths[3]), np.float32).ravel() / 255)
    rgb = ds.compute_embeddings(el.load_model("pixels", grayscale=False), progress=False)
    assert rgb.shape == (12, 2352)
    np.testing.assert_array_equal(rgb[:, ::3], emb)


def test_pixels_default_has_its_own_fingerprint_so_old_rgb_sets_are_not_reused(gray_digits):
    auto, rgb, gray = PixelsModel(), PixelsModel(grayscale=False), PixelsModel(grayscale=True)
    assert auto.config["grayscale"] == "auto"
    assert len({auto.fingerprint, rgb.fingerprint, gray.fingerprint}) == 3
    ds, _ = gray_digits
    ds.compute_embeddings(rgb, embeddings_field="px_rgb", progress=False)
    res = el.compute_visualization(ds, model="pixels", method="pca", progress=False)
    assert res.config["embeddings_field"] != "px_rgb"  # the RGB set is another model's
    assert ds.get_embeddings(res.config["embeddings_field"]).shape == (12, 784)


def test_pixels_refuse_mixed_grayscale_and_colour(photos, gray_digits):
    _, paths = gray_digits
    model = PixelsModel(size=(28, 28))
    assert model.embedding_dim is None  # channels unknown until the first image
    model.embed([paths[0]])
    assert model.embedding_dim == 784 and model.channels == 1
    with pytest.raises(el.InvalidInputError, match=r"pass grayscale=True \(luma\) or grayscale=False"):
        model.embed([photos["chelsea"]])
    with pytest.raises(el.InvalidInputError, match="grayscale must be"):
        PixelsModel(grayscale="yes")


def test_pixels_of_grayscale_crops_and_gray_images_among_colour_ones(photos, gray_digits):
    """Objects are cropped from an RGB decode: a crop of a grayscale file is still one channel. A gray
    image among colour ones is repeated into R, G and B (nothing lost)."""
    ds, paths = gray_digits
    model = PixelsModel(size=(8, 8))
    ds.compute_embeddings(model, progress=False)  # grayscale files fix one channel
    scenes = el.Dataset()
    scenes.add_samples([el.Sample(str(p), gt=el.Detections(detections=[el.Detection("d", [0.1, 0.1, 0.6, 0.6])]))
                        for p in paths[:4]])
    crops = scenes.compute_patch_embeddings(model, "gt", progress=False)
    assert crops.shape == (4, 64) and np.isfinite(crops).all()
    colour = PixelsModel(size=(8, 8))
    out = colour.embed([photos["chelsea"], paths[0]])
    assert out.shape == (2, 192) and colour.channels == 3
    np.testing.assert_array_equal(out[1][0::3], out[1][1::3])
