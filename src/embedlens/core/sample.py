"""A sample: one image file with its tags, metadata and fields."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .fields import check_name
from .errors import InvalidInputError

if TYPE_CHECKING:
    from .dataset import Dataset


class Metadata(dict):
    """Image metadata (``width``, ``height``, ``channels``, ``size_bytes``, ``mime_type``) with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Sample:
    """An image and its fields: ``el.Sample("cat.jpg", ground_truth=el.Classification("cat"))``.

    Fields read and write as attributes or items. A sample that belongs to a dataset writes its changes
    back with :meth:`save`; for many samples, use the collection's bulk methods (``set_values``) instead.
    """

    def __init__(self, filepath: str | os.PathLike, tags: list[str] | None = None,
                 metadata: dict | None = None, **fields: Any) -> None:
        data: dict[str, Any] = {"id": None, "filepath": os.path.abspath(os.fspath(filepath)),
                                "tags": list(tags or []), "metadata": None if metadata is None else Metadata(metadata)}
        for name, value in fields.items():
            check_name(name)
            data[name] = value
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_dataset", None)

    @classmethod
    def _from_stored(cls, data: dict[str, Any], dataset: "Dataset | None") -> "Sample":
        obj = cls.__new__(cls)
        if data.get("metadata") is not None:
            data["metadata"] = Metadata(data["metadata"])
        object.__setattr__(obj, "_data", data)
        object.__setattr__(obj, "_dataset", dataset)
        return obj

    @property
    def dataset(self) -> "Dataset | None":
        return self._dataset

    @property
    def in_dataset(self) -> bool:
        return self._dataset is not None

    def __getattr__(self, name: str) -> Any:
        data = object.__getattribute__(self, "_data")
        try:
            return data[name]
        except KeyError:
            raise AttributeError(f"sample has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "id":
            raise AttributeError("a sample's id cannot be changed")
        check_name(name)
        if name == "metadata" and value is not None:
            value = Metadata(value)
        self._data[name] = value

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def has_field(self, name: str) -> bool:
        return name in self._data

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self._data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def save(self) -> None:
        """Write this sample's fields to its dataset (one row, one transaction)."""
        if self._dataset is None:
            raise InvalidInputError("this sample is not in a dataset; add it with dataset.add_sample(sample)")
        self._dataset._save_sample(self)

    def __repr__(self) -> str:
        lines = [f"<Sample: id={self._data['id']!r}, filepath={self._data['filepath']!r}"]
        for k, v in self._data.items():
            if k not in ("id", "filepath"):
                lines.append(f"    {k}: {v!r:.100}")
        return "\n".join(lines) + ">"
