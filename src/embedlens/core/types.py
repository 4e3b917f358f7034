"""Dataset types by class, as FiftyOne names them: ``el.types.ImageClassificationDirectoryTree``.

Each class stands for one of the format strings that ``add_dir``, ``from_dir`` and ``export`` take
(``"classification-tree"``, ``"image-folder"``, ``"coco"``, ``"csv"``, ``"filepaths"``); either spelling
works everywhere.

>>> ds.export("out/", dataset_type=el.types.ImageClassificationDirectoryTree, label_field="hypothesis")
>>> el.Dataset.from_dir("coco/", el.types.COCODetectionDataset)
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidInputError


class DatasetType:
    """Base of the dataset type classes; ``name`` is the format string it stands for."""

    name: str = ""


class ImageClassificationDirectoryTree(DatasetType):
    """One sub-folder per class, named after the class, holding that class's images."""

    name = "classification-tree"


class ImageDirectory(DatasetType):
    """A folder of images (searched recursively), without labels."""

    name = "image-folder"


class COCODetectionDataset(DatasetType):
    """COCO detection JSON (``labels.json``) with its images in ``data/``; boxes as ``Detections``."""

    name = "coco"


class CSVDataset(DatasetType):
    """A CSV or Parquet table with a filepath column and label/value columns."""

    name = "csv"


class ImageFilepaths(DatasetType):
    """A list of image paths (embedlens only; FiftyOne adds these with ``add_images``)."""

    name = "filepaths"


#: Every dataset type class, by the format string it stands for.
BY_NAME = {t.name: t for t in (ImageClassificationDirectoryTree, ImageDirectory, COCODetectionDataset, CSVDataset,
                               ImageFilepaths)}


def type_name(dataset_type: Any) -> Any:
    """The format string of ``dataset_type``: a class (or instance) of this module, or the string itself.

    Anything else is returned unchanged, for the reader's or writer's own "unknown dataset_type" error.
    """
    if isinstance(dataset_type, type) and issubclass(dataset_type, DatasetType):
        cls = dataset_type
    elif isinstance(dataset_type, DatasetType):
        cls = type(dataset_type)
    else:
        return dataset_type
    if not cls.name:
        raise InvalidInputError(f"{cls.__name__} is not a concrete dataset type; one of {', '.join(c.__name__ for c in BY_NAME.values())}")
    return cls.name
