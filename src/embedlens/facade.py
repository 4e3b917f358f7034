"""The FiftyOne-style methods of datasets and views that reach above storage: importing, exporting,
embedding, thumbnails and similarity. They are installed on the core classes when ``embedlens`` is
imported.

Core stores and queries and never imports io, embed or brain (``tests/test_layers.py`` checks it); this
module is the one place where ``ds.add_dir(...)`` or ``view.compute_embeddings(...)`` calls up into
them, so the layers stay one-way and the methods stay where FiftyOne users look for them.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from .core.collection import SampleCollection
from .core.dataset import Dataset
from .core.errors import InvalidInputError
from .core.view import DatasetView

# ---------------------------------------------------------------------------------------------- datasets


def add_dir(self: Dataset, dataset_dir: str | os.PathLike, dataset_type: str, **kwargs: Any):
    """Import samples from disk in one transaction and return an ``ImportSummary``.

    ``dataset_type``: ``"classification-tree"`` (one folder per class), ``"image-folder"`` (unlabeled,
    recursive), ``"coco"`` (COCO detection JSON), ``"csv"`` (CSV or Parquet table with a filepath
    column). See :func:`embedlens.io.import_samples` for the options (``skip_failures``,
    ``allow_outside_root``, ...).
    """
    from .io import import_samples

    return import_samples(self, dataset_dir, dataset_type, **kwargs)


def add_images(self: Dataset, paths: Sequence[str | os.PathLike], **kwargs: Any):
    """Import a list of image paths (unlabeled); returns an ``ImportSummary``."""
    from .io import import_samples

    return import_samples(self, list(paths), "filepaths", **kwargs)


# ---------------------------------------------------------------------------------------------- collections


def sort_by_similarity(self: SampleCollection, query: Any, k: int | None = None, reverse: bool = False,
                       dist_field: str | None = None, brain_key: str | None = None) -> DatasetView:
    """The samples most similar to ``query`` first (``reverse``: least similar first), as in FiftyOne.

    ``query`` is a sample or label id, a list of ids (their mean embedding), an embedding vector, or an
    image path (embedded with the index's model). ``k`` keeps the best ``k``; ``dist_field`` adds each
    match's distance as a field of the view. Only this collection's members are returned.
    ``brain_key`` names the similarity index (optional when the dataset has exactly one).
    """
    from .brain.similarity import sort_by_similarity as sort

    return sort(self, query, k=k, reverse=reverse, dist_field=dist_field, brain_key=brain_key)


def export(self: SampleCollection, export_dir: str | os.PathLike, dataset_type: str, label_field: str | None = None,
           **kwargs: Any) -> dict[str, Any]:
    """Write this collection to disk: ``"classification-tree"``, ``"coco"`` or ``"csv"``.

    See :func:`embedlens.io.export_samples` for the options (e.g. ``export_media="copy"|"symlink"``).
    """
    from .io import export_samples

    return export_samples(self, export_dir, dataset_type, label_field=label_field, **kwargs)


def compute_embeddings(self: SampleCollection, model: Any = None, embeddings_field: str | None = None, **kwargs: Any):
    """Embed every sample with ``model`` (default EfficientNet-Lite0): float32 ``[N, D]`` in view order.

    With ``embeddings_field`` the rows are stored and reused; see :func:`embedlens.embed.compute_embeddings`
    for ``batch_size``, ``num_workers``, ``skip_failures``, ``overwrite``, ``engine="local"|"ray"``.
    """
    from .embed import compute_embeddings as compute

    return compute(self, model, embeddings_field, **kwargs)


def compute_patch_embeddings(self: SampleCollection, model: Any, patches_field: str,
                             embeddings_field: str | None = None, **kwargs: Any):
    """Embed every object of ``patches_field``: ``[num_objects, D]`` in ``to_patches`` order.

    See :func:`embedlens.embed.compute_patch_embeddings` (``alpha`` padding, ``force_square``, ...).
    """
    from .embed import compute_patch_embeddings as compute

    return compute(self, model, patches_field, embeddings_field, **kwargs)


def apply_model(self: SampleCollection, model: Any = None, label_field: str = "predictions",
                store_logits: bool = True, **kwargs: Any) -> int:
    """Write the model's ``Classification`` predictions (confidence, logits) into ``label_field``."""
    from .embed import apply_model as apply

    return apply(self, model, label_field, store_logits, **kwargs)


def compute_metadata(self: SampleCollection, overwrite: bool = False, num_workers: int | None = None,
                     skip_failures: bool = True, progress: bool = True) -> dict[str, Any]:
    """Read width, height, channels, size and MIME type of every image (in parallel threads).

    Only samples without metadata are read unless ``overwrite``. Returns ``{"computed": n, "errors":
    {filepath: message}}``; with ``skip_failures=False`` the first error is raised and nothing is written.
    """
    from .images import read_metadata
    from .utils import parallel_map

    view = self if overwrite else self.exists("metadata", False)
    if view._is_patches:
        raise InvalidInputError("compute_metadata() works on sample views")
    ids, paths = view.values("id"), view.values("filepath")
    results = parallel_map(read_metadata, paths, num_workers, "metadata", progress)
    errors = {p: str(e) for p, (_, e) in zip(paths, results) if e is not None}
    if errors and not skip_failures:
        raise next(e for _, e in results if e is not None)
    ok = [(i, m) for i, (m, e) in zip(ids, results) if e is None]
    if ok:
        self._dataset._set_values_by_id("metadata", [i for i, _ in ok], [m for _, m in ok])
    return {"computed": len(ok), "errors": errors}


def thumbnail_paths(self: SampleCollection, size: int | None = None, num_workers: int | None = None,
                    progress: bool = False) -> list[str | None]:
    """Paths of cached thumbnails (longest side 256), made on first use; None where the image is unreadable."""
    from .images import THUMBNAIL_SIZE, cached_thumbnails

    ids = self.values("sample_id" if self._query().patches_field else "id")
    return cached_thumbnails(self._dataset.thumbnails_dir, list(zip(ids, self.values("filepath"))),
                             size or THUMBNAIL_SIZE, num_workers, progress)


DATASET_METHODS = (add_dir, add_images)
COLLECTION_METHODS = (sort_by_similarity, export, compute_embeddings, compute_patch_embeddings, apply_model,
                      compute_metadata, thumbnail_paths)


def install() -> None:
    """Put the methods above on ``Dataset`` and every collection (idempotent)."""
    for cls, methods in ((Dataset, DATASET_METHODS), (SampleCollection, COLLECTION_METHODS)):
        for method in methods:
            setattr(cls, method.__name__, method)


install()
