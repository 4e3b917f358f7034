"""A perceptual descriptor of an image's pixels: what stays the same when a copy is re-encoded, resized,
slightly cropped or brightened. The near-duplicate finder's second channel, beside the semantic embedding.

The descriptor is the low-frequency block of the 2-D DCT of the grey image shrunk to
``SIZE x SIZE`` pixels (the block a pHash binarises), kept as real numbers:

* ``KEEP x KEEP`` lowest frequencies without the DC term, scaled to unit length: a change of brightness or
  contrast (``a * x + b``) leaves it as it was, and re-encoding or resizing only touches frequencies it
  drops;
* computed for the whole image and for the image without a border of 2.5% and 5% of each side
  (``BORDERS``), the parts stored one after the other: a copy whose border was cropped by 0-5% of a side
  matches the original's whole image or one of its inner parts (see :func:`pair_distance`);
* an image with (almost) no detail (AC energy under ``MIN_DETAIL`` grey levels) gets zeros: it has nothing a
  copy could be recognised by, and a zero row is never near anything.

Why not the bits of pHash (``imagehash``)? On the same 128-px tiles of scikit-image's photos
(``bench/bench_duplicates.py``), 64-bit pHash within 8 bits finds JPEG, resized and brightened copies
but only 72% of 3%-border crops and 70% of combined edits (a crop moves 8-24 of the 64 bits, as many as
separate two different tiles), and on MNIST digits it pairs different digits by the thousand (their
pHashes differ in a few bits). Here a 0-5% border crop stays within cosine distance 0.035 of its
original (95th percentile 0.008-0.016 over the tiles), natural nearest neighbours sit at a median of 0.29.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from .base import Model
from ..core.errors import InvalidInputError

#: Side of the grey image the DCT is taken of (pHash's 32).
SIZE = 32
#: Lowest frequencies kept per axis (pHash's 8): ``KEEP * KEEP - 1`` values per half.
KEEP = 8
#: Fractions of each side cut off for the extra parts: a copy whose border was cropped by 0-5% of a side
#: matches the original's whole image or one of its inner parts within cosine distance ~0.03.
BORDERS = (0.025, 0.05)
#: Images whose low-frequency AC energy is below this many grey levels get a zero descriptor.
MIN_DETAIL = 0.5


@lru_cache(maxsize=4)
def _dct_basis(keep: int, size: int) -> np.ndarray:
    """The first ``keep`` rows of the orthonormal DCT-II matrix of length ``size``."""
    n = np.arange(size)
    k = np.arange(keep)[:, None]
    basis = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    basis[0] /= np.sqrt(2.0)
    return basis


def describe(img: Image.Image, borders: tuple[float, ...] = BORDERS, size: int = SIZE, keep: int = KEEP) -> np.ndarray:
    """The descriptor of one image: float32 ``[(1 + len(borders)) * (keep**2 - 1)]``, unit-length parts (or zeros)."""
    grey = img.convert("L")
    w, h = grey.size
    basis = _dct_basis(keep, size)
    halves = []
    for b in (0.0, *borders):
        box = (b * w, b * h, (1 - b) * w, (1 - b) * h)
        # a box resize filters the pixels it shrinks (no aliasing); the box may cut pixels in parts
        x = np.asarray(grey.resize((size, size), Image.BILINEAR, box=box), np.float64)
        c = (basis @ x @ basis.T).ravel()[1:]
        norm = float(np.linalg.norm(c))
        halves.append(c / norm if norm >= MIN_DETAIL else np.zeros_like(c))
    return np.concatenate(halves).astype(np.float32)


def pair_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Perceptual distance of rows ``a[i]`` and ``b[i]``: ``1 - max_v max(cos(A0, B0), cos(Av, B0), cos(A0, Bv))``.

    ``A0`` is a row's whole-image part and ``Av`` its inner parts: the best of comparing the two whole
    images and comparing each one's inside with the other whole, so a copy whose border was cropped by up
    to ``max(BORDERS)`` matches. A zero part (no detail) gives distance 1.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    m = KEEP * KEEP - 1
    parts = a.shape[1] // m
    a0, b0 = a[:, :m], b[:, :m]
    best = np.einsum("ij,ij->i", a0, b0)
    for v in range(1, parts):
        av, bv = a[:, v * m:(v + 1) * m], b[:, v * m:(v + 1) * m]
        best = np.maximum(best, np.maximum(np.einsum("ij,ij->i", av, b0), np.einsum("ij,ij->i", a0, bv)))
    return np.clip(1.0 - best, 0.0, 2.0)


class PerceptualModel(Model):
    """The perceptual descriptor as a model, so it is computed, stored and reused like any embedding set
    (once per sample or object, resumable, objects cropped by their boxes). See the module docstring.

    Parameters
    ----------
    borders : tuple of float
        Fractions of each side cut off for the descriptor's inner parts, each in ``(0, 0.25]``.

    Examples
    --------
    >>> m = PerceptualModel()
    >>> m.embed([Image.linear_gradient("L").convert("RGB")]).shape
    (1, 189)
    """

    name = "perceptual"
    draft_size = 4 * SIZE  # a JPEG may be decoded at 1/2..1/8 scale: the descriptor needs 32 px

    def __init__(self, borders: tuple[float, ...] = BORDERS) -> None:
        super().__init__()
        try:
            borders = tuple(float(b) for b in borders)
        except (TypeError, ValueError):
            raise InvalidInputError(f"borders must be fractions in (0, 0.25], got {borders!r}") from None
        if not all(0 < b <= 0.25 for b in borders):
            raise InvalidInputError(f"borders must be fractions in (0, 0.25], got {borders!r}")
        self.borders = borders
        self.embedding_dim = (1 + len(borders)) * (KEEP * KEEP - 1)
        self._init_kwargs = {"borders": self.borders}

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "perceptual-dct", "size": SIZE, "keep": KEEP, "borders": list(self.borders),
                "min_detail": MIN_DETAIL, "grey": "ITU-R 601 luma", "resize": "bilinear (box filter)"}

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return describe(img, self.borders)

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(arrays, np.float32).reshape(len(arrays), -1))
