"""A lazy view: a dataset plus a list of stages, compiled to SQL each time it is read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collection import SampleCollection
from .query import Stage

if TYPE_CHECKING:
    from .dataset import Dataset


class DatasetView(SampleCollection):
    """Samples of a dataset selected, filtered and ordered by stages; nothing is copied."""

    def __init__(self, dataset: "Dataset", stages: list[Stage]) -> None:
        self._dataset = dataset
        self._stages = list(stages)
        self._query()  # fail now, at the stage that is wrong, not later when the view is read

    @property
    def name(self) -> str | None:
        return None

    def to_dicts(self) -> list[dict]:
        """The stages as JSON-able dicts (what saved views and brain runs store)."""
        return [s.to_dict() for s in self._stages]

    def __repr__(self) -> str:
        return self._dataset._summary(self)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DatasetView) and other._dataset.name == self._dataset.name
                and other.to_dicts() == self.to_dicts())

    __hash__ = None  # type: ignore[assignment]
