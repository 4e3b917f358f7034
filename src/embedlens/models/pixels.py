"""Raw pixels as the embedding: the baseline, and what small images such as MNIST digits need."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .base import Model
from ..core.errors import InvalidInputError
from ..images import ImageError, _open, to_rgb

# Pillow modes of one-channel files (8/16/32-bit, 1-bit, with alpha): embedded as one channel by default
_GRAY_MODES = ("L", "LA", "La", "1", "I", "I;16", "I;16B", "I;16L", "F")


class PixelsModel(Model):
    """Flattened pixels in [0, 1] (row-major, channels interleaved: ``H x W x C``).

    Parameters
    ----------
    size : (int, int), optional
        ``(width, height)`` every image is resized to (bilinear). ``None`` keeps native size; it is
        fixed by the first image seen, and any later image of another size is an error.
    grayscale : bool or None
        ``None`` (default): the images' own channels -- grayscale content (a one-channel file: PNG/JPEG
        mode ``L``, 16-bit, 1-bit; or an RGB image whose three channels are equal, such as a crop of
        one) gives one value per pixel, colour three, so a 28x28 MNIST digit is 784 values as in the
        FiftyOne tutorial. The first image fixes the count: later grayscale images among colour ones
        are repeated into R, G and B, and a colour image among grayscale ones is an error that says to
        pass ``grayscale=True`` or ``False``. ``True``: one channel (ITU-R 601 luma) for every image;
        ``False``: RGB for every image. The choice is part of the fingerprint, so stored sets made with
        different settings never mix.

    Examples
    --------
    >>> m = PixelsModel(size=(2, 1), grayscale=True)
    >>> m.embed([Image.new("L", (2, 1), 255)])
    array([[1., 1.]], dtype=float32)
    >>> PixelsModel().embed([Image.new("L", (28, 28))]).shape   # grayscale stays grayscale
    (1, 784)
    """

    name = "pixels"

    def __init__(self, size: tuple[int, int] | None = None, grayscale: bool | None = None) -> None:
        super().__init__()
        if size is not None:
            if len(size) != 2 or min(int(size[0]), int(size[1])) < 1:
                raise InvalidInputError(f"size must be (width, height) with positive ints, got {size!r}")
            size = (int(size[0]), int(size[1]))
        self.size = size
        if grayscale is not None and not isinstance(grayscale, (bool, np.bool_)):
            raise InvalidInputError(f"grayscale must be True, False or None (the images' own), got {grayscale!r:.40}")
        self.grayscale = None if grayscale is None else bool(grayscale)
        #: values per pixel: 1 or 3; with ``grayscale=None``, None until the first image fixes it
        self.channels: int | None = None if self.grayscale is None else 1 if self.grayscale else 3
        self._native_size: tuple[int, int] | None = None
        # preprocess runs in several decoding threads; the first image decides the native size and channels.
        self._lock = threading.Lock()
        self._set_dim()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]  # locks do not pickle; the native size (if fixed) travels with the model
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _set_dim(self) -> None:
        size = self.size or self._native_size
        if size is not None and self.channels is not None:
            self.embedding_dim = size[0] * size[1] * self.channels

    @property
    def config(self) -> dict[str, Any]:
        # "auto" differs from False, so sets stored by the old RGB-always default are not reused for it
        return {"type": "pixels", "size": list(self.size) if self.size else "native",
                "grayscale": "auto" if self.grayscale is None else self.grayscale, "resize": "bilinear",
                "scale": "1/255", "layout": "HWC flat"}

    def load(self, item: Any) -> Image.Image:
        """Decode a path keeping grayscale files grayscale, as 8-bit ``L`` (EXIF applied); other inputs as
        for any model."""
        if self.grayscale is not None or not isinstance(item, (str, os.PathLike)):
            return super().load(item)
        img = _open(item)
        try:
            img = ImageOps.exif_transpose(img)
            return to_rgb(img).convert("L") if img.mode in _GRAY_MODES else to_rgb(img)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"corrupt image {item}: {e}") from None

    @property
    def native_size(self) -> tuple[int, int] | None:
        """``(width, height)`` fixed by the first image when ``size`` is ``None``."""
        return self._native_size

    def preprocess(self, img: Image.Image) -> np.ndarray:
        if self.grayscale is None:
            if img.mode not in ("L", "RGB"):  # 8-bit L or RGB, from any mode (16-bit, alpha, palette ...)
                img = to_rgb(img).convert("L") if img.mode in _GRAY_MODES else to_rgb(img)
        else:
            img = img.convert("L" if self.grayscale else "RGB")
        if self.size is not None:
            if img.size != self.size:
                img = img.resize(self.size, Image.BILINEAR)
        else:
            self._check_native(img.size)
        x = np.asarray(img)
        if self.grayscale is None:
            x = self._auto_channels(x)
        # Divide, not multiply by 1/255: values are then exactly pixel / 255 (what users compare with).
        return x.astype(np.float32).reshape(-1) / np.float32(255.0)

    def _auto_channels(self, x: np.ndarray) -> np.ndarray:
        """``grayscale=None``: one channel for grayscale content (a one-channel file, or an RGB image whose
        channels are equal, such as a crop of a grayscale file), three for colour; the first image fixes
        the count. A grayscale image among colour ones is repeated into R, G and B (nothing is lost); a
        colour image among grayscale ones is an error, since dropping its colour would change its meaning."""
        gray = x.ndim == 2 or bool((x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all())
        if self.channels is None:
            with self._lock:
                if self.channels is None:
                    self.channels = 1 if gray else 3
                    self._set_dim()
        if self.channels == 1:
            if not gray:
                raise InvalidInputError("pixels model: a colour image among grayscale ones; raw-pixel embeddings "
                                        "need one channel count: pass grayscale=True (luma) or grayscale=False (RGB)")
            return x if x.ndim == 2 else x[..., 0]
        return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x

    def _check_native(self, size: tuple[int, int]) -> None:
        if self._native_size is None:
            with self._lock:
                if self._native_size is None:
                    self._native_size = size
                    self._set_dim()
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
