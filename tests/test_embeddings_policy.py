"""Which embeddings a brain method uses: one policy for Python, the CLI and the app, and arrays that keep
their identity from one method to the next."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import embedlens as el
from embedlens.brain.source import resolve_embeddings


@pytest.fixture
def noisy(digits_px_clean):
    """Digits with 5% of their labels flipped into a "noisy" field (a fixed seed)."""
    ds = digits_px_clean
    labels = ds.values("ground_truth.label")
    rng = np.random.default_rng(3)
    flip = rng.random(len(labels)) < 0.05
    noisy = [str((int(y) + 1 + rng.integers(9)) % 10) if f else y for y, f in zip(labels, flip)]
    ds.set_values("noisy", [el.Classification(label=y) for y in noisy])
    return ds


def test_an_array_keeps_its_identity_from_predictions_to_mistakenness(noisy, digits_px):
    """FiftyOne users pass the array they computed: mistakenness must still use the neighbours' vote,
    and give exactly what the stored set gives."""
    ds, _ = digits_px
    emb = ds.get_embeddings("px")  # the same rows, as a plain array
    el.compute_predictions(noisy, embeddings=np.array(emb), label_field="noisy", pred_field="p_arr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "scored without neighbours" warning
        by_array = el.compute_mistakenness(noisy, "p_arr", label_field="noisy", mistakenness_field="m_arr")
    el.compute_predictions(noisy, embeddings="px", label_field="noisy", pred_field="p_set")
    by_name = el.compute_mistakenness(noisy, "p_set", label_field="noisy", mistakenness_field="m_set")
    assert noisy.get_brain_info("m_arr")["config"]["method"] == "confident-learning+neighbours"
    np.testing.assert_allclose(noisy.values("m_arr"), noisy.values("m_set"), atol=1e-6)
    assert by_array.config["embeddings_fingerprint"].startswith("array-")
    assert by_name.config["embeddings_field"] == "px"


def test_a_forgotten_array_is_said_and_recorded_not_silently_dropped(noisy, monkeypatch):
    from embedlens.brain import source

    monkeypatch.setattr(source, "KEEP_ARRAY_BYTES", 0)  # keep none: as in a fresh process
    emb = np.array(noisy.get_embeddings("px"))
    el.compute_predictions(noisy, embeddings=emb, label_field="noisy", pred_field="p_gone")
    del emb
    gc.collect()
    with pytest.warns(UserWarning, match="without the neighbours' vote.*not stored"):
        el.compute_mistakenness(noisy, "p_gone", label_field="noisy", mistakenness_field="m_gone")
    cfg = noisy.get_brain_info("m_gone")["config"]
    assert cfg["method"] == "confident-learning" and "neighbours' vote" in cfg["skipped"][0]


def test_a_model_reuses_its_stored_set_and_computes_only_missing_rows(digits_px_clean):
    ds = digits_px_clean
    first = ds.limit(50)
    src = resolve_embeddings(first, model="pixels", progress=False)
    # the "px" set was made by the same model: found by fingerprint, not recomputed under another name
    assert src.embeddings_field == "px" and "pixels" not in ds.list_embeddings()
    fresh = el.Dataset("policy-fresh")
    fresh.add_samples([el.Sample(fp) for fp in ds.limit(30).values("filepath")])
    src = resolve_embeddings(fresh.limit(20), model="pixels", progress=False)
    assert src.embeddings_field == "pixels" and len(fresh.limit(20).get_embeddings("pixels")) == 20
    stamp = (fresh.path / "arrays" / "embeddings" / "pixels" / "ids.npy").stat().st_mtime_ns
    resolve_embeddings(fresh.limit(20), model="pixels", progress=False)  # nothing missing: nothing written
    assert (fresh.path / "arrays" / "embeddings" / "pixels" / "ids.npy").stat().st_mtime_ns == stamp
    src = resolve_embeddings(fresh, model="pixels", progress=False)  # 10 more rows, computed and added
    assert len(src) == 30 and len(fresh.get_embeddings("pixels")) == 30


def test_no_embeddings_given_means_the_default_models_stored_set(tmp_path, module_home, model_cache):
    """Python and the CLI take the same set: the default model's, computed and stored once."""
    ds = el.load_sample_dataset("digits", progress=False).take(12, seed=1)
    small = el.Dataset("policy-default")
    small.add_samples([el.Sample(fp) for fp in ds.values("filepath")])
    el.compute_uniqueness(small, progress=False)
    assert small.list_embeddings() == ["efficientnet_lite0"]
    assert small.get_brain_info("uniqueness")["config"]["embeddings_field"] == "efficientnet_lite0"
    stamp = (small.path / "arrays" / "embeddings" / "efficientnet_lite0" / "embeddings.npy").stat().st_mtime_ns
    exe = Path(sys.executable).with_name("embedlens")
    out = subprocess.run([str(exe), "visualize", "policy-default", "--method", "pca", "--brain-key", "cli_pca",
                          "--no-progress"], capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert out.returncode == 0, out.stderr
    assert small.get_brain_info("cli_pca")["config"]["embeddings_field"] == "efficientnet_lite0"
    assert (small.path / "arrays" / "embeddings" / "efficientnet_lite0" / "embeddings.npy").stat().st_mtime_ns == stamp


def test_the_set_a_model_goes_to_is_named_after_it():
    from embedlens.embed.compute import set_name_for

    assert set_name_for("efficientnet-lite0") == "efficientnet_lite0"
    assert set_name_for("/models/my-net.onnx") == "my_net"
    assert set_name_for("3d-net") == "emb_3d_net"
