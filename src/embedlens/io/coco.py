"""COCO detection JSON: ``labels.json`` + ``data/``, the layout of FiftyOne's ``COCODetectionDataset``.

COCO boxes are ``[x, y, w, h]`` in pixels; embedlens boxes are the same divided by the image's width and
height. Boxes are written as unrounded floats so that import -> export -> import keeps them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.labels import Detection, Detections
from .candidates import Candidate, Parsed, Problem
from .media import check_sources, prepare_dir, transfer, unique_names
from ..core.errors import InvalidInputError, WrongTypeError

BOX_TOLERANCE = 1.0  # pixels a box may overshoot the image (rounding in other tools); clipped on import


@dataclass
class _Image:
    id: Any
    item: str
    filepath: str
    width: float | None
    height: float | None
    annotations: list[dict] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- import


def read_coco(source: Any, *, label_field: str, schema: dict[str, str], labels_path: str | os.PathLike | None = None,
              data_path: str | os.PathLike | None = None) -> Parsed:
    """Parse a COCO detection file into candidates holding ``Detections`` in ``label_field``.

    ``labels_path`` defaults to ``<source>/labels.json`` and ``data_path`` to ``<source>/data``; relative
    ones are taken relative to ``source``. An image's ``file_name`` is relative to ``data_path`` unless
    absolute.
    """
    labels, data = _locate(source, labels_path, data_path)
    doc = _load_json(labels)
    categories = _categories(doc, labels)
    images, problems = _images(doc, labels, data)
    problems += _attach_annotations(doc, labels, images, categories)
    candidates = [Candidate(im.item, im.filepath, problems=im.problems, finish=_finisher(im, categories, label_field))
                  for im in images.values()]
    return Parsed(candidates, problems, [categories[k] for k in sorted(categories, key=_sort_key)], root=str(data))


def _locate(source: Any, labels_path: Any, data_path: Any) -> tuple[Path, Path]:
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise WrongTypeError(f"'coco' import takes a folder path, got {type(source).__name__}")
    root = Path(source) if source is not None else None
    if root is None and (labels_path is None or data_path is None):
        raise InvalidInputError("'coco' import needs a folder holding labels.json and data/, or labels_path= and data_path=")

    def under_root(p: Any, default: str) -> Path:
        p = Path(p) if p is not None else Path(default)
        return p if p.is_absolute() or root is None else root / p

    labels, data = under_root(labels_path, "labels.json"), under_root(data_path, "data")
    if not labels.is_file():
        raise InvalidInputError(f"'coco' import: labels file {labels} does not exist")
    return labels, data


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise InvalidInputError(f"{path}: not a COCO file: expected a JSON object with an 'images' list")
    for key in ("annotations", "categories"):
        if not isinstance(doc.get(key, []), list):
            raise InvalidInputError(f"{path}: '{key}' must be a list")
    return doc


def _categories(doc: dict, path: Path) -> dict[Any, str]:
    out: dict[Any, str] = {}
    for i, c in enumerate(doc.get("categories", [])):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise InvalidInputError(f"{path}: categories[{i}] needs an 'id' and a string 'name', got {c!r:.80}")
        if c["id"] in out:
            raise InvalidInputError(f"{path}: category id {c['id']!r} appears twice in 'categories'")
        out[c["id"]] = c["name"]
    return out


def _images(doc: dict, path: Path, data: Path) -> tuple[dict[Any, _Image], list[Problem]]:
    images: dict[Any, _Image] = {}
    problems = []
    for i, entry in enumerate(doc["images"]):
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            problems.append(Problem(f"{path.name} images[{i}]", "an image needs an 'id' and a string 'file_name'"))
            continue
        iid = entry["id"]
        if iid in images:
            problems.append(Problem(f"image {iid}", f"image id {iid!r} appears twice in 'images' of {path}"))
            continue
        filepath = os.path.abspath(os.path.join(data, entry["file_name"]))
        width, height = entry.get("width"), entry.get("height")
        im = _Image(iid, filepath, filepath, None, None)
        if width is not None or height is not None:
            if not (_positive(width) and _positive(height)):
                im.problems.append(Problem(f"image {iid}", f"width/height must be positive numbers, got "
                                                           f"{width!r}x{height!r}"))
            else:
                im.width, im.height = float(width), float(height)
        images[iid] = im
    return images, problems


def _attach_annotations(doc: dict, path: Path, images: dict[Any, _Image], categories: dict[Any, str]) -> list[Problem]:
    """Give each image its annotations; problems with an annotation reject its image (its labels would be
    incomplete), except an annotation of an unknown image, which belongs to no sample."""
    orphans = []
    for i, ann in enumerate(doc.get("annotations", [])):
        if not isinstance(ann, dict):
            orphans.append(Problem(f"annotations[{i}]", f"an annotation must be a JSON object, got {ann!r:.60}"))
            continue
        item = f"annotation {ann['id']}" if "id" in ann else f"annotations[{i}]"
        im = _lookup(images, ann.get("image_id"))
        if im is None:
            orphans.append(Problem(item, f"image_id {ann.get('image_id')!r} is not in 'images' of {path}"))
            continue
        if _lookup(categories, ann.get("category_id")) is None:
            known = ", ".join(map(str, sorted(categories, key=_sort_key))) or "none"
            im.problems.append(Problem(item, f"category_id {ann.get('category_id')!r} is not in 'categories' of "
                                             f"{path} (ids: {known})"))
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            im.problems.append(Problem(item, f"bbox must be 4 finite numbers [x, y, w, h], got {bbox!r:.80}"))
            continue
        im.annotations.append({**ann, "_item": item})
    return orphans


def _finisher(im: _Image, categories: dict[Any, str], label_field: str):
    def finish(meta: dict) -> tuple[dict[str, Any], list[Problem]]:
        width = im.width or float(meta["width"])
        height = im.height or float(meta["height"])
        dets, problems = [], []
        for ann in im.annotations:
            try:
                box = relative_box(ann["bbox"], width, height)
            except ValueError as e:
                problems.append(Problem(ann["_item"], f"{e} ({im.filepath})"))
                continue
            dets.append(Detection(categories[ann["category_id"]], box, **_attributes(ann)))
        return {label_field: Detections(dets)}, problems

    return finish


def relative_box(bbox: list[float], width: float, height: float, tolerance: float = BOX_TOLERANCE) -> list[float]:
    """``[x, y, w, h]`` in pixels -> relative to the image; a box overshooting by <= ``tolerance`` pixels is clipped."""
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0 or x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
        raise InvalidInputError(f"bbox {bbox} is outside the {width:g}x{height:g} image")
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        x, y, w, h = x0, y0, x1 - x0, y1 - y0
    return [x / width, y / height, w / width, h / height]


def _attributes(ann: dict) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if "id" in ann:
        attrs["coco_id"] = ann["id"]
    for key in ("iscrowd", "area"):
        if key in ann:
            attrs[key] = ann[key]
    if _number(ann.get("score")):  # results files (predictions) carry a score per box
        attrs["confidence"] = float(ann["score"])
    return attrs


def _lookup(table: dict, key: Any) -> Any:
    try:
        return table.get(key)
    except TypeError:  # a list or object where an id belongs
        return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _number(v) and v > 0


def _sort_key(v: Any) -> tuple:
    return (0, v, "") if _number(v) else (1, 0, str(v))


# ---------------------------------------------------------------------------------------------- export


def write_coco(collection: Any, export_dir: Path, *, label_field: str, media: str | None, overwrite: bool,
               progress: bool) -> dict[str, Any]:
    """Write ``<export_dir>/labels.json`` (+ ``data/`` with the images unless ``media`` is None).

    Categories are the sorted label names with ids from 1; images and annotations are numbered from 1
    in view order. Objects without a label or a box are left out and counted in ``skipped_objects``.
    """
    filepaths = collection.values("filepath")
    ids = collection.values("id")
    metas = _metadata(collection, progress)
    dets = collection.values(label_field)
    if media is not None:
        check_sources(filepaths)
    names = unique_names(filepaths, ids) if media is not None else list(filepaths)
    labels = sorted({d.label for ds in dets if ds is not None for d in ds.detections if d.label is not None})
    cat_ids = {name: k for k, name in enumerate(labels, 1)}
    images, annotations, skipped_objects = [], [], 0
    for image_id, (name, meta, ds) in enumerate(zip(names, metas, dets), 1):
        width, height = meta["width"], meta["height"]
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for d in ds.detections if ds is not None else []:
            if d.label is None or d.bounding_box is None:
                skipped_objects += 1
                continue
            annotations.append(_annotation(len(annotations) + 1, image_id, cat_ids[d.label], d, width, height))
    doc = {"info": {"description": f"exported by embedlens from dataset {collection.dataset_name!r}"},
           "licenses": [], "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in cat_ids.items()],
           "images": images, "annotations": annotations}
    prepare_dir(export_dir, overwrite, filepaths, keep=[collection._dataset.path])
    written = []
    if media is not None:
        dests = [export_dir / "data" / n for n in names]
        transfer(list(zip(filepaths, dests)), media, progress)
        written = [str(d) for d in dests]
    labels_path = export_dir / "labels.json"
    tmp = labels_path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, labels_path)  # readers never see half a labels file
    return {"exported": len(images), "skipped": 0, "skipped_objects": skipped_objects,
            "annotations": len(annotations), "export_dir": str(export_dir), "labels_path": str(labels_path),
            "paths": [str(labels_path), *written]}


def _metadata(collection: Any, progress: bool) -> list[dict]:
    """Every sample's metadata, computing what is missing; an image that cannot be read is an error."""
    metas = collection.values("metadata")
    if any(m is None for m in metas):
        collection.compute_metadata(progress=progress)
        metas = collection.values("metadata")
    missing = [p for p, m in zip(collection.values("filepath"), metas) if m is None]
    if missing:
        raise InvalidInputError(f"cannot export to COCO: cannot read the size of {missing[0]} "
                         f"({len(missing)} unreadable images); pixel boxes need it")
    return metas


def _annotation(ann_id: int, image_id: int, cat_id: int, d: Detection, width: float, height: float) -> dict:
    x, y, w, h = d.bounding_box
    bbox = [x * width, y * height, w * width, h * height]
    ann = {"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": bbox,
           "area": d.get("area", bbox[2] * bbox[3]), "iscrowd": d.get("iscrowd", 0)}
    if d.confidence is not None:
        ann["score"] = d.confidence
    return ann
