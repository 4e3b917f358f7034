"""Any ``torch.nn.Module`` (or plain callable) as an embedding model, and the cut-off-the-head helper."""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .base import Model, hash_state_dict, pool_activations
from .base import num_threads as resolve_threads
from ..core.errors import InvalidInputError, WrongTypeError


@dataclass(frozen=True)
class Head:
    """A linear classification head: ``logits = embedding @ weights.T + bias``.

    Row ``c`` of ``weights`` is class ``c``'s prototype: the direction in embedding space the classifier
    scores class ``c`` by (the dot product of an embedding with it, plus ``bias[c]``).
    """

    weights: np.ndarray  # [n_classes, D]
    bias: np.ndarray  # [n_classes]; zeros for a head without bias
    classes: list[str]

    def __post_init__(self) -> None:
        w, b = np.asarray(self.weights), np.asarray(self.bias)
        if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating) or not np.isfinite(w).all():
            raise InvalidInputError(f"a head's weights must be a finite float [n_classes, D] matrix, got "
                                    f"{w.dtype} {w.shape}")
        if b.shape != (w.shape[0],) or not np.isfinite(b).all():
            raise InvalidInputError(f"a head's bias must be finite with one value per class ({w.shape[0]}), got "
                                    f"shape {b.shape}")
        if len(self.classes) != w.shape[0] or len(set(self.classes)) != len(self.classes):
            raise InvalidInputError(f"a head needs {w.shape[0]} distinct class names, got {list(self.classes)!r}")

    @property
    def prototypes(self) -> np.ndarray:
        """The class prototypes: the rows of ``weights``."""
        return self.weights

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return np.asarray(embeddings) @ self.weights.T + self.bias


def head_of_linear(linear: Any, classes: Sequence[str] | None = None) -> Head:
    """The :class:`Head` of a ``torch.nn.Linear`` (weights and bias copied to numpy, float32)."""
    w = linear.weight.detach().float().cpu().numpy().copy()
    b = (linear.bias.detach().float().cpu().numpy().copy() if linear.bias is not None
         else np.zeros(w.shape[0], np.float32))
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(w.shape[0])]
    return Head(w, b, names)


class ResizeTransform:
    """Default transform: resize to ``size x size`` (bicubic, aspect ratio not kept), /255, CHW float32.

    Squashing instead of cropping keeps every pixel and gives one shape for the whole batch.
    """

    def __init__(self, size: int = 224) -> None:
        self.size = int(size)

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = img.convert("RGB").resize((self.size, self.size), Image.BICUBIC)
        return np.ascontiguousarray(np.asarray(img, np.float32).transpose(2, 0, 1)) / np.float32(255.0)

    def __repr__(self) -> str:
        return f"ResizeTransform(size={self.size})"

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "resize", "size": self.size, "resize": "bicubic", "scale": "1/255", "layout": "CHW RGB"}


def _describe_callable(fn: Any) -> str:
    """A stable description of a callable, so a changed transform or function changes the fingerprint."""
    parts = [f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"]
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
    if code is not None:
        parts.append(hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16])
    else:
        # Object reprs often hold the settings (e.g. sizes); memory addresses would make it unstable.
        parts.append(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(fn)))
    return " ".join(parts)


def _modules_in(fn: Any) -> list[Any]:
    """torch modules a plain callable uses: its ``__self__`` and closure cells (for the weights hash)."""
    import torch

    found = []
    for obj in [getattr(fn, "__self__", None),
                *[c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if _cell_ok(c)]]:
        if isinstance(obj, torch.nn.Module):
            found.append(obj)
    return found


def _cell_ok(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True


def _first_tensor(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def _to_numpy(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


class TorchModel(Model):
    """Wraps a torch module or callable; see :func:`from_torch` and :func:`feature_extractor`."""

    def __init__(self, module: Any, transform: Callable[[Image.Image], Any] | None = None,
                 layer: str | None = None, name: str | None = None, capture: str = "output",
                 classes: Sequence[str] | None = None, has_logits: bool | None = None,
                 num_threads: int | None = None) -> None:
        import torch

        super().__init__()
        if not callable(module):
            raise WrongTypeError(f"from_torch needs a torch.nn.Module or a callable, got {type(module).__name__}")
        if capture not in ("output", "input"):
            raise InvalidInputError(f"capture must be 'output' or 'input', got {capture!r}")
        self.module = module
        self.is_module = isinstance(module, torch.nn.Module)
        if self.is_module:
            module.eval()  # dropout off, batch-norm on running statistics: embeddings must be deterministic
        self.transform = transform if transform is not None else ResizeTransform(224)
        self.layer = layer
        self.capture = capture
        self.name = name or (type(module).__name__ if self.is_module else getattr(module, "__name__", "callable"))
        self.classes = list(classes) if classes is not None else None
        self.has_logits = bool(has_logits) if has_logits is not None else classes is not None
        self._target = self._find_layer(layer) if layer is not None else None
        self.embedding_dim = self._known_dim()
        torch.set_num_threads(resolve_threads(num_threads))
        params = list(module.parameters()) if self.is_module else []
        self._device = params[0].device if params else torch.device("cpu")

    def _find_layer(self, layer: str) -> Any:
        if not self.is_module:
            raise WrongTypeError(f"layer={layer!r} needs a torch.nn.Module (named submodules); got a plain callable")
        modules = dict(self.module.named_modules())
        if layer not in modules or layer == "":
            names = [n for n in modules if n]
            close = difflib.get_close_matches(layer, names, n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            shown = ", ".join(map(repr, names[:12])) + (", ..." if len(names) > 12 else "")
            raise InvalidInputError(f"no layer named {layer!r} in {type(self.module).__name__}; {hint}"
                             f"layers are: {shown} (see module.named_modules())")
        return modules[layer]

    def _known_dim(self) -> int | None:
        import torch

        t = self._target
        if t is None:
            return None
        if self.capture == "input" and isinstance(t, torch.nn.Linear):
            return int(t.in_features)
        if self.capture == "output":
            if isinstance(t, torch.nn.Linear):
                return int(t.out_features)
            if isinstance(t, torch.nn.Conv2d):
                return int(t.out_channels)  # pooled over H, W
        return None

    @property
    def head(self) -> Head:
        """The classification head this model's embeddings feed: weights, bias and class names.

        For :func:`feature_extractor` models: the cut-off ``nn.Linear`` (the embedding is its input, so
        ``embedding @ head.weights.T + head.bias`` are the classifier's logits). Class names are
        ``classes`` if given, else ``"0"``, ``"1"``, ...
        """
        import torch

        if self.capture != "input" or not isinstance(self._target, torch.nn.Linear):
            raise InvalidInputError(f"model {self.name!r} has no head: its embeddings are not the input of a "
                                    "linear layer (use el.feature_extractor(classifier))")
        if self.classes is not None and len(self.classes) != self._target.out_features:
            raise InvalidInputError(f"the head has {self._target.out_features} outputs but {len(self.classes)} class "
                                    "names were given")
        return head_of_linear(self._target, self.classes)

    # ---- description -------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        tconf = getattr(self.transform, "config", None)
        return {"type": "torch", "module": type(self.module).__qualname__ if self.is_module
                else _describe_callable(self.module),
                "layer": self.layer, "capture": self.capture,
                "pool": "global average if 4-D, else flatten",
                "transform": tconf if isinstance(tconf, dict) else _describe_callable(self.transform)}

    def _weights_hash(self) -> str:
        mods = [self.module] if self.is_module else _modules_in(self.module)
        return "+".join(hash_state_dict(m.state_dict()) for m in mods)

    # ---- inference ---------------------------------------------------------------------------------

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return _to_numpy(self.transform(img))

    def _forward(self, arrays: np.ndarray) -> tuple[Any, Any]:
        """One forward pass: ``(module output, captured activation or None)``."""
        import torch

        captured: list[Any] = []
        handle = None
        if self._target is not None:
            if self.capture == "output":
                handle = self._target.register_forward_hook(lambda m, i, o: captured.append(_first_tensor(o)))
            else:
                handle = self._target.register_forward_hook(lambda m, i, o: captured.append(i[0]))
        try:
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32)).to(self._device)
                out = _first_tensor(self.module(x))
        finally:
            if handle is not None:
                handle.remove()  # never leave hooks on the caller's module
        if self._target is not None and not captured:
            raise RuntimeError(f"layer {self.layer!r} was not called during the forward pass")
        # A layer called more than once per pass (shared weights): its last call is the one nearest the head.
        return out, (captured[-1] if captured else None)

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        out, act = self._forward(arrays)
        emb = pool_activations(_to_numpy(act if act is not None else out))
        self.embedding_dim = emb.shape[1]
        return emb

    def predict_batch(self, arrays: np.ndarray) -> np.ndarray:
        if not self.has_logits:
            return super().predict_batch(arrays)
        out, _ = self._forward(arrays)
        return _to_numpy(out).reshape(len(arrays), -1)

    def embed_and_predict_batch(self, arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.has_logits:
            return super().embed_and_predict_batch(arrays)
        out, act = self._forward(arrays)
        emb = pool_activations(_to_numpy(act if act is not None else out))
        self.embedding_dim = emb.shape[1]
        return emb, _to_numpy(out).reshape(len(arrays), -1)


def from_torch(module: Any, transform: Callable[[Image.Image], Any] | None = None, layer: str | None = None,
               name: str | None = None, classes: Sequence[str] | None = None,
               num_threads: int | None = None) -> TorchModel:
    """Use any torch module or callable as an embedding model.

    Parameters
    ----------
    module : torch.nn.Module or callable
        Called on a float32 tensor batch ``(N, ...)`` stacked from ``transform``'s outputs. Modules are
        put in eval mode. Tuple/list outputs use their first element.
    transform : callable, optional
        PIL image -> array or tensor (one image). Default: :class:`ResizeTransform` (224 x 224, /255, CHW).
    layer : str, optional
        Name of a submodule (from ``module.named_modules()``) whose output is the embedding; 4-D
        activations are average-pooled to ``(N, C)``, others flattened. Default: the module's output.
    name : str, optional
        Model name; the module's class name by default.
    classes : list of str, optional
        When given, the module's output are logits over these classes (``predict`` works).
    num_threads : int, optional
        torch threads; all usable cores by default.

    Returns
    -------
    TorchModel

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> from_torch(net, layer="0").embed([Image.new("RGB", (32, 32))]).shape
    (1, 8)
    """
    return TorchModel(module, transform=transform, layer=layer, name=name, classes=classes,
                      num_threads=num_threads)


def feature_extractor(classifier: Any, transform: Callable[[Image.Image], Any] | None = None,
                      name: str | None = None, classes: Sequence[str] | None = None,
                      num_threads: int | None = None) -> TorchModel:
    """Cut the head off a classifier: embeddings are the input of its last ``nn.Linear``.

    Works for any model whose last ``nn.Linear`` (in ``named_modules()`` order) is the classification
    head. The input of that layer is captured with a hook, so the caller's module is neither copied
    nor changed, and one forward pass gives both the embedding and the logits (``predict``). The cut-off
    layer is ``model.head`` (:class:`Head`: weights, bias, class names), whose rows are the class
    prototypes ``el.compute_prototypes(samples, head=model)`` scores samples by.

    Raises
    ------
    ValueError
        When the module has no ``nn.Linear``.
    """
    import torch

    if not isinstance(classifier, torch.nn.Module):
        raise WrongTypeError(f"feature_extractor needs a torch.nn.Module, got {type(classifier).__name__}")
    linears = [n for n, m in classifier.named_modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InvalidInputError(f"{type(classifier).__name__} has no nn.Linear layer to cut off; "
                         "use from_torch(module, layer=...) to pick the embedding layer")
    return TorchModel(classifier, transform=transform, layer=linears[-1], capture="input",
                      name=name or f"{type(classifier).__name__}-features", classes=classes,
                      has_logits=True, num_threads=num_threads)
