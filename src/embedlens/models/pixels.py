"""Raw pixels as the embedding: the baseline, and what small images such as MNIST digits need."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

from .base import Model
from ..core.errors import InvalidInputError


class PixelsModel(Model):
    """Flattened pixels in [0, 1] (row-major, channels interleaved: ``H x W x C``).

    Parameters
    ----------
    size : (int, int), optional
        ``(width, height)`` every image is resized to (bilinear). ``None`` keeps native size; it is
        fixed by the first image seen, and any later image of another size is an error.
    grayscale : bool
        One channel (ITU-R 601 luma) instead of RGB.

    Examples
    --------
    >>> m = PixelsModel(size=(2, 1), grayscale=True)
    >>> m.embed([Image.new("L", (2, 1), 255)])
    array([[1., 1.]], dtype=float32)
    """

    name = "pixels"

    def __init__(self, size: tuple[int, int] | None = None, grayscale: bool = False) -> None:
        super().__init__()
        if size is not None:
            if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
                raise InvalidInputError(f"size must be (width, height) with positive ints, got {size!r}")
            size = (int(size[0]), int(size[1]))
        self.size = size
        self.grayscale = bool(grayscale)
        self.channels = 1 if self.grayscale else 3
        self._native_size: tuple[int, int] | None = None
        # preprocess runs in several decoding threads; the first image decides the native size.
        self._lock = threading.Lock()
        if size is not None:
            self.embedding_dim = size[0] * size[1] * self.channels

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks do not pickle; the native size (if fixed) travels with the model
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "pixels", "size": list(self.size) if self.size else "native",
                "grayscale": self.grayscale, "resize": "bilinear", "scale": "1/255", "layout": "HWC flat"}

    @property
    def native_size(self) -> tuple[int, int] | None:
        """``(width, height)`` fixed by the first image when ``size`` is ``None``."""
        return self._native_size

    def preprocess(self, img: Image.Image) -> np.ndarray:
        img = img.convert("L" if self.grayscale else "RGB")
        if self.size is not None:
            if img.size != self.size:
                img = img.resize(self.size, Image.BILINEAR)
        else:
            self._check_native(img.size)
        # Divide, not multiply by 1/255: values are then exactly pixel / 255 (what users compare with).
        return np.asarray(img, np.float32).reshape(-1) / np.float32(255.0)

    def _check_native(self, size: tuple[int, int]) -> None:
        if self._native_size is None:
            with self._lock:
                if self._native_size is None:
                    self._native_size = size
                    self.embedding_dim = size[0] * size[1] * self.channels
        if size != self._native_size:
            w, h = size
            nw, nh = self._native_size
            raise InvalidInputError(f"pixels model: image is {w}x{h} but earlier images were {nw}x{nh}; "
                             f"raw-pixel embeddings need one size: pass size=(width, height) to resize")

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        x = np.asarray(arrays, np.float32)
        x = x.reshape(len(x), -1)
        if self.embedding_dim is not None and x.shape[1] != self.embedding_dim:
            raise InvalidInputError(f"pixels model: batch rows have {x.shape[1]} values, expected "
                             f"{self.embedding_dim}; were they made by this model's preprocess()?")
        return np.ascontiguousarray(x)
