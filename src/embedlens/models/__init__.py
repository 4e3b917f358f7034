"""Embedding models: turn images into float32 vectors (and, for classifiers, logits).

>>> from embedlens.models import load_model
>>> model = load_model()                      # doctest: +SKIP
>>> emb = model.embed(["cat.jpg", "dog.jpg"])  # doctest: +SKIP
>>> emb.shape                                  # doctest: +SKIP
(2, 1280)

Every model keeps the :class:`Model` contract: ``preprocess`` one image (thread-safe), ``embed_batch``
a stacked batch, ``fingerprint`` to tell stored embeddings of different models apart.
"""

from .base import ImageLike, Model
from .efficientnet import EfficientNetLite
from .onnx_model import OnnxModel
from .pixels import PixelsModel
from .registry import DEFAULT_MODEL, export_onnx, list_models, load_model, model_info, register_model
from .torch_model import ResizeTransform, TorchModel, feature_extractor, from_torch

__all__ = [
    "DEFAULT_MODEL", "EfficientNetLite", "ImageLike", "Model", "OnnxModel", "PixelsModel", "ResizeTransform",
    "TorchModel", "export_onnx", "feature_extractor", "from_torch", "list_models", "load_model", "model_info",
    "register_model",
]
