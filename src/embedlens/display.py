"""Images in a notebook: :func:`show_grid` draws a grid of images with captions.

The figure is a matplotlib ``Figure`` made without pyplot (:func:`new_figure`, as every figure embedlens
draws), so it works headless (save it with ``fig.savefig``) and a notebook shows it inline when it is a
cell's value.

>>> import embedlens as el
>>> ds = el.load_sample_dataset("digits")
>>> el.show_grid(ds.match(el.F("ground_truth.label") == "3"), 9, labels="ground_truth")   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .core.collection import SampleCollection
from .core.errors import InvalidInputError, WrongTypeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Pixels of the longest side of each image drawn (read from the dataset's thumbnail cache, 256 px).
GRID_PIXELS = 256


def new_figure(**kwargs: Any) -> "Figure":
    """A matplotlib ``Figure`` made without pyplot, shown inline when it is a notebook cell's value.

    Without pyplot no figure manager holds it (no leak, no second copy drawn at the cell's end), but then
    IPython has no PNG formatter for it until ``%matplotlib inline`` runs, and a fresh notebook printed
    ``<Figure size 600x420 with 2 Axes>``. Under IPython this registers that formatter (as
    ``%matplotlib inline`` does, keeping formats a user chose) the first time a figure is made.
    """
    from matplotlib.figure import Figure

    _register_inline_figures()
    return Figure(**kwargs)


def _register_inline_figures() -> None:
    import sys

    if "IPython" not in sys.modules:  # not in a notebook or IPython shell: nothing to do
        return
    from IPython import get_ipython
    from matplotlib.figure import Figure

    shell = get_ipython()
    formatter = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("image/png")
    if formatter is None:
        return
    try:
        formatter.lookup_by_type(Figure)  # already registered (%matplotlib inline, or by us)
    except KeyError:
        from IPython.core.pylabtools import select_figure_formats

        select_figure_formats(shell, {"png"})


def show_grid(images: Any, n: int = 9, labels: Any = None, cols: int | None = None,
              title_fontsize: int = 8, figsize: tuple[float, float] | None = None,
              title: str | None = None) -> "Figure":
    """A grid of the first ``n`` images with captions, as a matplotlib ``Figure``.

    Parameters
    ----------
    images:
        A dataset or sample view (its first ``n`` samples, in view order: ``sort_by``,
        ``sort_by_similarity`` and ``match`` decide what is shown), or a list of image paths, PIL
        images or arrays.
    n:
        How many images (fewer when there are fewer).
    labels:
        Captions: a field path of the view (``"ground_truth"`` means its label, ``"uniqueness"`` is
        printed with 3 decimals), or a list of strings, one per image shown.
    cols:
        Columns; default ``min(n, 3)`` for up to 9 images, else ``ceil(sqrt(n))``.
    title_fontsize, figsize, title:
        Caption size, figure size in inches (default 2.2 inches a cell), a title over the grid.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    pictures, captions = _pictures(images, int(n), labels)
    count = len(pictures)
    if count == 0:
        raise InvalidInputError("there are no images to show")
    if cols is None:
        cols = min(count, 3) if count <= 9 else math.ceil(math.sqrt(count))
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise InvalidInputError(f"cols must be a positive integer, got {cols!r}")
    cols = min(int(cols), count)
    rows = math.ceil(count / cols)
    fig = new_figure(figsize=figsize or (2.2 * cols, 2.2 * rows + (0.3 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pic, cap in zip(axes.flat, pictures, captions):
        if pic is None:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=title_fontsize)
        else:
            arr = np.asarray(pic)
            ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0 if arr.ndim == 2 else None,
                      vmax=255 if arr.ndim == 2 and arr.dtype == np.uint8 else None)
        if cap:
            ax.set_title(cap, fontsize=title_fontsize)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _pictures(images: Any, n: int, labels: Any) -> tuple[list[Any], list[str]]:
    if isinstance(images, SampleCollection):
        return _from_collection(images, n, labels)
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        raise WrongTypeError(f"images must be a dataset, a view or a list of images, got {type(images).__name__}")
    items = list(images)[:n]
    pictures = [_open(i) for i in items]
    return pictures, _captions(labels, len(items))


def _from_collection(coll: SampleCollection, n: int, labels: Any) -> tuple[list[Any], list[str]]:
    from .images import cached_thumbnails

    if coll._query().patches_field:
        raise InvalidInputError("show_grid() shows samples: pass a sample view (e.g. the patches' source images)")
    view = coll.limit(n)
    ids, paths = view.values("id"), view.values("filepath")
    thumbs = cached_thumbnails(coll._dataset.thumbnails_dir, list(zip(ids, paths)))
    pictures = [None if t is None else _open(t) for t in thumbs]
    if isinstance(labels, str):
        path = labels
        if view.get_field_schema().get(labels) in ("Classification", "Detection"):
            path += ".label"
        captions = [_caption(v) for v in view.values(path)]
    else:
        captions = _captions(labels, len(ids))
    return pictures, captions


def _captions(labels: Any, count: int) -> list[str]:
    if labels is None:
        return [""] * count
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise WrongTypeError("labels must be a field path (for a dataset or view) or a list of captions")
    caps = [_caption(v) for v in labels]
    if len(caps) < count:
        raise InvalidInputError(f"got {len(caps)} captions for {count} images")
    return caps[:count]


def _caption(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(getattr(v, "label", v))


def _open(item: Any) -> Any:
    from PIL import Image

    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, (str, os.PathLike)):
        try:
            with Image.open(item) as im:
                img = im.copy()
        except OSError:
            return None
    else:
        raise WrongTypeError(f"an image must be a path, a PIL image or an array, got {type(item).__name__}")
    img.thumbnail((GRID_PIXELS, GRID_PIXELS))
    if img.mode in ("L", "I;16", "I", "F", "1"):
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


__all__ = ["show_grid"]
