"""Exporting a dataset or view: class trees, COCO detection JSON, CSV/Parquet tables.

Exports read the collection with bulk ``values()`` calls, so a view exports what it shows: its samples,
in its order, with its filtered labels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .coco import write_coco
from .folders import write_tree
from .media import media_mode
from .tables import write_table
from ..core.errors import InvalidInputError
from ..core.types import type_name

Writer = Callable[..., dict[str, Any]]

# dataset_type -> (writer, label field types it exports, label field required, export_media=False allowed)
WRITERS: dict[str, tuple[Writer, tuple[str, ...], bool, bool]] = {
    "classification-tree": (write_tree, ("Classification",), True, False),
    "coco": (write_coco, ("Detections",), True, True),
    "csv": (write_table, ("Classification", "Detection", "Detections"), False, True),
}


def export_samples(collection: Any, export_dir: str | os.PathLike, dataset_type: str, *,
                   label_field: str | None = None, export_media: str | bool = "copy", overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Write ``collection`` (a dataset or any sample view) to disk.

    Parameters
    ----------
    collection : Dataset or DatasetView
        What to export; a view exports its samples and its filtered labels.
    export_dir : path
        The folder to write (``"classification-tree"``, ``"coco"``), or the ``.csv``/``.parquet`` file
        (``"csv"``).
    dataset_type : str
        ``"classification-tree"``: ``<export_dir>/<label>/<file>``, samples without a label skipped;
        ``"coco"``: ``<export_dir>/labels.json`` + ``data/``; ``"csv"``: one row per sample with
        id, filepath, tags, each label field's label(s) and each scalar field (the columns of
        :func:`embedlens.io.tables.table_columns`, which a ``"csv"`` import reads back).
    label_field : str, optional
        The field to export; defaults to the only field of the right type (Classification for trees,
        Detections for COCO). For CSV it keeps only that label field's column.
    export_media : "copy", "symlink" or False
        How images get into the export. ``False`` (COCO only) writes no images and puts the originals'
        absolute paths in ``file_name``. Not used by CSV.
    overwrite : bool
        Replace an existing non-empty export folder (or table file).
    progress : bool
        Show progress bars.

    Returns
    -------
    dict
        ``exported`` and ``skipped`` sample counts, ``export_dir`` and ``paths`` (files written), plus
        format details (``labels_path``, ``annotations``, ``skipped_objects`` for COCO; ``columns`` for CSV).

    Examples
    --------
    >>> ds.match(el.F("ground_truth.label") == "cat").export("/tmp/cats", "classification-tree")
    >>> ds.export("/tmp/coco", "coco", label_field="detections", export_media="symlink")
    """
    dataset_type = type_name(dataset_type)  # el.types.COCODetectionDataset -> "coco"
    try:
        writer, types, required, media_optional = WRITERS[dataset_type]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown dataset_type {dataset_type!r}; one of {', '.join(WRITERS)}") from None
    if collection._is_patches:
        raise InvalidInputError("export works on sample views; this is a patches view of objects")
    media = media_mode(export_media, allow_none=media_optional)
    field = resolve_label_field(collection, label_field, types, dataset_type, required)
    return writer(collection, Path(export_dir), label_field=field, media=media, overwrite=overwrite,
                  progress=progress)


def resolve_label_field(collection: Any, label_field: str | None, types: tuple[str, ...], dataset_type: str,
                        required: bool) -> str | None:
    """``label_field`` checked against ``types``, or the collection's only field of those types."""
    schema = collection.get_field_schema()
    wanted = " or ".join(types)
    if label_field is not None:
        if label_field not in schema:
            raise InvalidInputError(f"{dataset_type!r} export: unknown label_field {label_field!r}; fields: "
                             f"{', '.join(schema)}")
        if schema[label_field] not in types:
            raise InvalidInputError(f"{dataset_type!r} export needs a {wanted} field; {label_field!r} is "
                             f"{schema[label_field]}")
        return label_field
    if not required:
        return None
    found = [name for name, ftype in schema.items() if ftype in types]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidInputError(f"{dataset_type!r} export needs a {wanted} field; the collection has none "
                         f"(fields: {', '.join(schema)})")
    raise InvalidInputError(f"{dataset_type!r} export: several {wanted} fields ({', '.join(found)}); "
                     "pass label_field= to choose one")
