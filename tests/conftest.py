"""Shared fixtures: every test gets its own EMBEDLENS_HOME, and real image files made from real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One ONNX export per test session instead of one per test (an export takes ~15 s here)."""
    return tmp_path_factory.mktemp("model_cache")


@pytest.fixture(autouse=True)
def embedlens_home(tmp_path_factory, monkeypatch, model_cache) -> Path:
    home = tmp_path_factory.mktemp("embedlens_home")
    monkeypatch.setenv("EMBEDLENS_HOME", str(home))
    monkeypatch.setenv("EMBEDLENS_MODEL_CACHE", str(model_cache))
    return home


@pytest.fixture(scope="module")
def module_home(tmp_path_factory) -> Path:
    """One EMBEDLENS_HOME for a test module whose datasets are built once and shared by its tests: it is
    set while the module's fixtures build them, and for each test by ``in_module_home``."""
    home = tmp_path_factory.mktemp("module_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        yield home


@pytest.fixture
def in_module_home(module_home, embedlens_home, monkeypatch) -> Path:
    """Use with ``pytestmark = pytest.mark.usefixtures("in_module_home")``: the test sees the module's home."""
    monkeypatch.setenv("EMBEDLENS_HOME", str(module_home))
    return module_home


@pytest.fixture(scope="session")
def digits_tree(tmp_path_factory) -> Path:
    """A class-per-folder tree of 100 real handwritten digits (sklearn's, 8x8 scaled to 32x32 PNGs)."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits_tree")
    d = load_digits()
    for i in range(100):
        img = (d.images[i] * (255 / 16)).astype(np.uint8)
        folder = root / str(d.target[i])
        folder.mkdir(exist_ok=True)
        Image.fromarray(img).resize((32, 32), Image.NEAREST).save(folder / f"digit_{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos that ship inside scikit-image, written as JPEG/PNG files."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("chelsea", "coffee", "astronaut", "camera", "rocket"):
        arr = getattr(data, name)()
        path = root / f"{name}.jpg"
        Image.fromarray(arr).save(path, quality=92)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def digits_px(tmp_path_factory):
    """The digits sample dataset with pixel embeddings stored as "px", built once per test module
    in a home of its own; returns ``(dataset, embeddings)``."""
    import embedlens as el

    home = tmp_path_factory.mktemp("digits_px_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        ds = el.load_sample_dataset("digits", progress=False)
        x = ds.compute_embeddings("pixels", embeddings_field="px", progress=False)
    return ds, x


@pytest.fixture
def digits_px_clean(digits_px):
    """``digits_px``'s dataset, with the brain runs and fields a test adds removed afterwards."""
    ds = digits_px[0]
    fields = set(ds.get_field_schema())
    yield ds
    ds.delete_brain_runs()
    for f in set(ds.get_field_schema()) - fields:
        ds.delete_sample_field(f)


# ---- the browser tests' Chromium: Debian's, headless, never a downloaded one ------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (the modules skip themselves when it is absent)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
