"""Label types: what users already know from FiftyOne.

A label is stored as one JSON object in its sample's row, ``{"_cls": "Classification", "id": ..., ...}``;
boxes are ``[x, y, w, h]`` relative to the image size, each in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from .ids import new_id
from .errors import InvalidInputError, WrongTypeError


class Label:
    """Base class of every label; holds its id and free-form attributes."""

    _cls: str = "Label"
    _core: tuple[str, ...] = ()

    def __init__(self, id: str | None = None, tags: Sequence[str] | None = None, **attributes: Any) -> None:
        object.__setattr__(self, "_attrs", {"id": id or new_id(), "tags": list(tags) if tags else []})
        for k, v in attributes.items():
            setattr(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._attrs[name] = _plain(value)

    def __getattr__(self, name: str) -> Any:
        attrs = object.__getattribute__(self, "_attrs")
        if name in attrs:
            return attrs[name]
        if name in type(self)._core:
            return None
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def has_attribute(self, name: str) -> bool:
        return name in self._attrs

    def get(self, name: str, default: Any = None) -> Any:
        return self._attrs.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        d = {"_cls": self._cls}
        d.update((k, v) for k, v in self._attrs.items() if not (k == "tags" and not v))
        return d

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Label":
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_attrs", {k: v for k, v in d.items() if k != "_cls"})
        obj._attrs.setdefault("tags", [])
        return obj

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self._attrs.items() if k not in ("logits",) and v != [])
        return f"<{type(self).__name__}: {body}>"


class Classification(Label):
    """A class label for a whole image: ``label``, optional ``confidence`` and ``logits``."""

    _cls = "Classification"
    _core = ("label", "confidence", "logits")

    def __init__(self, label: str | None = None, confidence: float | None = None,
                 logits: Sequence[float] | np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        attrs = self._attrs
        attrs["label"] = None if label is None else str(label)
        if confidence is not None:
            attrs["confidence"] = _finite(confidence, "confidence")
        if logits is not None:
            attrs["logits"] = np.asarray(logits, dtype=float).ravel().tolist()


class Detection(Label):
    """One object: ``label`` and ``bounding_box = [x, y, w, h]`` relative to the image, each in [0, 1]."""

    _cls = "Detection"
    _core = ("label", "bounding_box", "confidence")

    def __init__(self, label: str | None = None, bounding_box: Sequence[float] | None = None,
                 confidence: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        attrs = self._attrs
        attrs["label"] = None if label is None else str(label)
        if bounding_box is not None:
            attrs["bounding_box"] = validate_box(bounding_box)
        if confidence is not None:
            attrs["confidence"] = _finite(confidence, "confidence")


class Detections(Label):
    """The objects of one image."""

    _cls = "Detections"
    _core = ("detections",)

    def __init__(self, detections: Iterable[Detection] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dets = list(detections or [])
        for d in dets:
            if not isinstance(d, Detection):
                raise WrongTypeError(f"Detections holds Detection objects, got {type(d).__name__}")
        self._attrs["detections"] = dets

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["detections"] = [x.to_dict() for x in self.detections]
        return d

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Detections":
        obj = super()._from_dict(d)
        obj._attrs["detections"] = [Detection._from_dict(x) for x in d.get("detections") or []]
        return obj  # type: ignore[return-value]


LABEL_TYPES: dict[str, type[Label]] = {c._cls: c for c in (Classification, Detection, Detections)}


def label_from_dict(d: dict[str, Any] | None) -> Label | None:
    """Rebuild a label from its stored JSON object."""
    if d is None:
        return None
    try:
        cls = LABEL_TYPES[d["_cls"]]
    except KeyError:
        raise InvalidInputError(f"not a stored label: {d!r:.80}") from None
    return cls._from_dict(d)


def validate_box(box: Sequence[float]) -> list[float]:
    """Check a relative ``[x, y, w, h]`` box and return it as floats."""
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise InvalidInputError(f"bounding_box must be 4 finite numbers [x, y, w, h], got {list(box)!r}")
    x, y, w, h = vals
    eps = 1e-6
    if w < 0 or h < 0 or x < -eps or y < -eps or x + w > 1 + eps or y + h > 1 + eps:
        raise InvalidInputError(f"bounding_box {vals} is not inside the image: [x, y, w, h] must be relative, in [0, 1]")
    return vals


def _finite(v: Any, name: str) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise InvalidInputError(f"{name} must be finite, got {v!r}")
    return f


def _plain(v: Any) -> Any:
    """Numpy scalars and arrays become Python values so labels serialise as JSON."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def check_label_attr(attr: str, value: Any) -> Any:
    """Validate a value written into a label attribute; returns its stored (JSON-able) form."""
    value = _plain(value)
    if value is None:
        return None
    if attr == "label" and not isinstance(value, str):
        raise WrongTypeError(f"label must be a str, got {type(value).__name__} {value!r:.40}")
    if attr == "confidence":
        return _finite(value, "confidence")
    if attr == "bounding_box":
        return validate_box(value)
    if attr == "tags" and not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
        raise WrongTypeError(f"tags must be a list of str, got {value!r:.60}")
    if attr in ("id", "_cls"):
        raise InvalidInputError(f"a label's {attr!r} cannot be set")
    return value
