"""Optional hub-backed models (open_clip, transformers): imported lazily, used only with cached weights.

embedlens never downloads weights. These loaders run with the Hugging Face hub forced offline, so a
model whose weights are not already in the local cache fails with a clear error instead of fetching.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

import numpy as np

from .torch_model import TorchModel
from ..core.errors import InvalidInputError


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    # huggingface_hub reads HF_HUB_OFFLINE when first imported; patch its constant too if already loaded.
    old_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    consts = sys.modules.get("huggingface_hub.constants")
    old_const = getattr(consts, "HF_HUB_OFFLINE", None)
    if consts is not None:
        consts.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if consts is not None:
            consts.HF_HUB_OFFLINE = old_const


def load_open_clip(arch: str, pretrained: str | None = None, **kwargs: Any) -> TorchModel:
    """``open_clip:<arch>``: the image tower of an open_clip model; ``pretrained`` is a tag or a file.

    Raises
    ------
    ImportError
        open_clip is not installed.
    RuntimeError
        The weights are not in the local cache (embedlens does not download them).
    """
    try:
        import open_clip
    except ImportError:
        raise ImportError(f"model 'open_clip:{arch}' needs open_clip: pip install open_clip_torch "
                          "(optional; embedlens' default model needs nothing extra)") from None
    if pretrained is None:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not tags:
            raise InvalidInputError(f"open_clip has no pretrained weights for {arch!r}")
        pretrained = tags[0]
    try:
        with _hub_offline():
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
    except Exception as e:
        raise RuntimeError(f"open_clip:{arch} ({pretrained}): weights not available offline ({e}); embedlens "
                           "does not download weights: put them in the Hugging Face cache, or pass "
                           "pretrained='/path/to/weights'") from None
    model.eval()
    return TorchModel(model.encode_image, transform=preprocess, name=f"open_clip:{arch}:{pretrained}", **kwargs)


def load_hf(repo: str, **kwargs: Any) -> TorchModel:
    """``hf:<repo>``: a transformers vision model from the local cache; pooled output as embedding.

    CLIP-like models use ``get_image_features``; others ``pooler_output`` or the mean of the tokens.
    """
    try:
        from transformers import AutoImageProcessor, AutoModel
    except ImportError:
        raise ImportError(f"model 'hf:{repo}' needs transformers: pip install transformers "
                          "(optional; embedlens' default model needs nothing extra)") from None
    try:
        with _hub_offline():
            processor = AutoImageProcessor.from_pretrained(repo, local_files_only=True)
            model = AutoModel.from_pretrained(repo, local_files_only=True).eval()
    except Exception as e:
        raise RuntimeError(f"hf:{repo}: model not in the local Hugging Face cache ({e}); embedlens does not "
                           "download weights") from None

    def transform(img: Any) -> np.ndarray:
        return processor(images=img.convert("RGB"), return_tensors="np")["pixel_values"][0]

    def image_features(x: Any) -> Any:
        if hasattr(model, "get_image_features"):
            return model.get_image_features(pixel_values=x)
        out = model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(1)

    return TorchModel(image_features, transform=transform, name=f"hf:{repo}", **kwargs)
