"""The contract every embedding model keeps, and the small helpers the models share."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
from PIL import Image

from ..images import load_image
from ..core.errors import InvalidInputError, WrongTypeError

#: What ``embed``/``predict`` accept for one image: a decoded image, a file path, or an HWC/HW uint8 array.
ImageLike = Union[Image.Image, str, os.PathLike, np.ndarray]

# Bump when the meaning of an embedding changes in a way a config cannot show (e.g. a bug fix in
# preprocessing): every fingerprint changes with it, so old stored embeddings are never mixed with new ones.
FINGERPRINT_VERSION = 1


class Model(ABC):
    """An image model that turns images into float32 vectors (and, for classifiers, into logits).

    The split into :meth:`preprocess` (one image, thread-safe, runs in decoding threads) and
    :meth:`embed_batch` (a stacked batch, runs in the main thread) lets a pipeline decode the next
    batch while the model works on this one.

    Attributes
    ----------
    name : str
        Short name of the model (the registry name where there is one).
    has_embeddings : bool
        Whether :meth:`embed_batch` is available.
    embedding_dim : int or None
        Length of an embedding; ``None`` until known (e.g. raw pixels at native size).
    has_logits : bool
        Whether :meth:`predict_batch` is available.
    classes : list of str or None
        Class names for the logits' columns, where known.
    draft_size : int or None
        Passed to :func:`embedlens.images.load_image` when a file path is given: JPEG decoding may skip
        detail that preprocessing would throw away anyway. ``None`` decodes at full size.
    """

    name: str = "model"
    has_embeddings: bool = True
    has_logits: bool = False
    classes: list[str] | None = None
    draft_size: int | None = None

    def __init__(self) -> None:
        self.embedding_dim: int | None = None
        self._fingerprint: str | None = None

    # ---- description -------------------------------------------------------------------------------

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able description of the model: what it is, how it preprocesses, which output it embeds."""

    def _weights_hash(self) -> str:
        """Digest of the weights; models without weights return ``""``."""
        return ""

    @property
    def fingerprint(self) -> str:
        """Identifies what the embeddings mean: model name, weights and preprocessing.

        Two models with the same fingerprint produce interchangeable embeddings (e.g. the ONNX and
        torch backends of one model); anything that changes the numbers changes the fingerprint.
        """
        if self._fingerprint is None:
            self._fingerprint = make_fingerprint(self.name, self._weights_hash(), self.config)
        return self._fingerprint

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Models holding native handles (onnxruntime sessions) pickle as "rebuild me with these
        # settings", so a model can be shipped to worker processes (e.g. Ray) and rebuilt there.
        kwargs = getattr(self, "_init_kwargs", None)
        if kwargs is None:
            return super().__reduce_ex__(protocol)
        return (_rebuild, (type(self), kwargs))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dim={self.embedding_dim} logits={self.has_logits}>"

    # ---- one image ---------------------------------------------------------------------------------

    @abstractmethod
    def preprocess(self, img: Image.Image) -> np.ndarray:
        """Turn one RGB image into the float32 array :meth:`embed_batch` takes. Thread-safe."""

    def load(self, item: ImageLike) -> Image.Image:
        """Decode a path (EXIF applied, RGB) or wrap an array; images pass through unchanged."""
        if isinstance(item, Image.Image):
            return item
        if isinstance(item, np.ndarray):
            return Image.fromarray(_as_uint8(item))
        if isinstance(item, (str, os.PathLike)):
            return load_image(item, draft_size=self.draft_size)
        raise WrongTypeError(f"expected a PIL image, a file path or a numpy array, got {type(item).__name__}")

    def prepare(self, item: ImageLike) -> np.ndarray:
        """:meth:`load` then :meth:`preprocess`: what a decoding thread calls for one file. Thread-safe."""
        return self.preprocess(self.load(item))

    def prepare_batch(self, items: Sequence[ImageLike]) -> np.ndarray:
        """Prepare images and stack them into one float32 batch."""
        if len(items) == 0:
            raise InvalidInputError("no images given")
        return np.stack([self.prepare(x) for x in items]).astype(np.float32, copy=False)

    # ---- batches -----------------------------------------------------------------------------------

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        """Embeddings of a preprocessed batch.

        Parameters
        ----------
        arrays : np.ndarray
            Outputs of :meth:`preprocess` stacked on a new first axis.

        Returns
        -------
        np.ndarray
            float32, shape ``(B, embedding_dim)``.
        """
        raise NotImplementedError(f"model {self.name!r} has no embeddings")

    def predict_batch(self, arrays: np.ndarray) -> np.ndarray:
        """Logits of a preprocessed batch: float32, shape ``(B, num_classes)``."""
        raise NotImplementedError(f"model {self.name!r} is not a classifier (has_logits is False)")

    def embed_and_predict_batch(self, arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and logits of a preprocessed batch; one forward pass where the model allows it."""
        return self.embed_batch(arrays), self.predict_batch(arrays)

    # ---- conveniences ------------------------------------------------------------------------------

    def embed(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Embed images, file paths or arrays (a single one, or a list): float32 ``(B, embedding_dim)``.

        Examples
        --------
        >>> from embedlens.models import load_model
        >>> model = load_model("pixels", size=(8, 8))
        >>> model.embed([Image.new("RGB", (20, 10))]).shape
        (1, 192)
        """
        if not self.has_embeddings:
            raise NotImplementedError(f"model {self.name!r} has no embeddings")
        return self._batched(self.embed_batch, _as_list(images), batch_size)

    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Logits of images, file paths or arrays: float32 ``(B, num_classes)``."""
        if not self.has_logits:
            raise NotImplementedError(f"model {self.name!r} is not a classifier (has_logits is False)")
        return self._batched(self.predict_batch, _as_list(images), batch_size)

    def _batched(self, fn: Any, items: list[ImageLike], batch_size: int) -> np.ndarray:
        if not items:
            raise InvalidInputError("no images given")
        # Batches bound memory: one stacked batch of 224-px images is 600 KB per image.
        outs = [fn(self.prepare_batch(items[i:i + batch_size])) for i in range(0, len(items), batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)


# ---- helpers shared by the models ---------------------------------------------------------------------


def _rebuild(cls: type, kwargs: dict[str, Any]) -> Model:
    return cls(**kwargs)


def _as_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    if isinstance(images, (Image.Image, str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8:
        return [images]
    return list(images)


def _as_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating) and a.size and float(np.nanmax(a)) <= 1.0:
        a = a * 255.0  # float images in [0, 1] (skimage's convention)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def num_threads(requested: int | None = None) -> int:
    """Threads for one model: ``requested``, else the cores this process may run on."""
    if requested:
        return max(1, int(requested))
    try:
        # Affinity masks (containers, taskset) can allow fewer cores than the machine has.
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_FILE_HASHES: dict[tuple[str, int, int], str] = {}
_FILE_HASHES_LOCK = threading.Lock()


def hash_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) so reloading a model does not re-read it."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _FILE_HASHES_LOCK:
        if key in _FILE_HASHES:
            return _FILE_HASHES[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _FILE_HASHES_LOCK:
        _FILE_HASHES[key] = digest
    return digest


def hash_state_dict(state: dict[str, Any]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor in a torch ``state_dict``."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k]
        if not isinstance(t, torch.Tensor):
            h.update(f"{k}={t!r};".encode())
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        # Viewing as bytes works for every dtype, bfloat16 included (numpy has no bfloat16).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_fingerprint(name: str, weights_hash: str, config: dict[str, Any]) -> str:
    """``<name>-<16 hex>``: readable prefix, digest of weights + config + format version."""
    payload = json.dumps({"v": FINGERPRINT_VERSION, "name": name, "weights": weights_hash, "config": config},
                         sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{safe}-{digest}"


def pool_activations(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C) by global average pooling; any other shape -> (N, -1)."""
    a = np.asarray(a)
    if a.ndim == 4:
        a = a.mean(axis=(2, 3))
    return np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)


def atomic_target(path: Path) -> Path:
    """A temp path beside ``path`` to write first and ``os.replace`` later (unique per process/thread)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")

