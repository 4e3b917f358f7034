"""Folders of images: class-per-folder trees, plain (recursive) image folders, and lists of paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..core.labels import Classification
from ..images import is_image_file
from .candidates import Candidate, Parsed, Problem
from .media import check_sources, prepare_dir, transfer, unique_names
from ..core.errors import InvalidInputError, WrongTypeError


def existing_dir(source: Any, dataset_type: str) -> Path:
    """``source`` as a folder that exists, or a clear error."""
    if not isinstance(source, (str, os.PathLike)):
        raise WrongTypeError(f"{dataset_type!r} import takes a folder path, got {type(source).__name__}")
    root = Path(source)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise InvalidInputError(f"{dataset_type!r} import: {root} {what}")
    return root


def image_files(root: str | os.PathLike) -> list[str]:
    """Absolute paths of the image files under ``root`` (recursive, hidden files and folders left out), sorted."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        # "._x.jpg" files are macOS resource forks, not images
        out += [os.path.join(folder, f) for f in files if not f.startswith(".") and is_image_file(f)]
    return sorted(os.path.abspath(p) for p in out)


def read_tree(source: Any, *, label_field: str, schema: dict[str, str]) -> Parsed:
    """``<source>/<class>/<image>``: each image labelled with the name of its top-level folder.

    Images in nested folders take the top-level folder's name; an image directly in ``source`` has no
    class and is reported as a problem.
    """
    root = existing_dir(source, "classification-tree")
    candidates, problems, classes = [], [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            classes.append(entry.name)
            for path in image_files(entry.path):
                candidates.append(Candidate(path, path, {label_field: Classification(entry.name)}))
        elif is_image_file(entry.name):
            path = os.path.abspath(entry.path)
            problems.append(Problem(path, f"image {path} is not inside a class folder of {root}"))
    if not candidates and not problems:
        raise InvalidInputError(f"'classification-tree' import: no image files in class folders under {root}")
    return Parsed(candidates, problems, classes, root=str(root))


def read_image_folder(source: Any, *, label_field: str, schema: dict[str, str]) -> Parsed:
    """Every image file under ``source``, recursively, unlabeled."""
    root = existing_dir(source, "image-folder")
    paths = image_files(root)
    if not paths:
        raise InvalidInputError(f"'image-folder' import: no image files under {root}")
    return Parsed([Candidate(p, p) for p in paths], root=str(root))


def read_filepaths(source: Any, *, label_field: str, schema: dict[str, str]) -> Parsed:
    """A list of image paths, unlabeled, in the order given."""
    if isinstance(source, (str, bytes, os.PathLike)) or not isinstance(source, Sequence):
        raise WrongTypeError(f"'filepaths' import takes a list of paths, got {type(source).__name__}")
    candidates = []
    for i, p in enumerate(source):
        if not isinstance(p, (str, os.PathLike)):
            raise WrongTypeError(f"'filepaths' import: item {i} is {type(p).__name__}, not a path")
        path = os.path.abspath(os.fspath(p))
        candidates.append(Candidate(path, path))
    return Parsed(candidates)


def check_folder_name(label: str) -> str | None:
    """Why ``label`` cannot be a folder name, or None if it can."""
    if label in ("", ".", ".."):
        return f"label {label!r} cannot be a folder name"
    bad = [c for c in ("/", "\\", "\0") if c in label]
    if bad:
        return f"label {label!r} contains {bad[0]!r}, which cannot be in a folder name"
    return None



def write_tree(collection: Any, export_dir: Path, *, label_field: str, media: str, overwrite: bool,
               progress: bool) -> dict[str, Any]:
    """Write ``<export_dir>/<label>/<file>``; samples without a label are skipped and counted."""
    all_paths = collection.values("filepath")
    all_ids = collection.values("id")
    labels_all = collection.values(f"{label_field}.label")
    keep = [k for k, lab in enumerate(labels_all) if lab is not None]
    filepaths = [all_paths[k] for k in keep]
    ids = [all_ids[k] for k in keep]
    labels = [labels_all[k] for k in keep]
    for lab, sid in zip(labels, ids):
        why = check_folder_name(lab)
        if why:
            raise InvalidInputError(f"cannot export sample {sid!r} into a classification tree: {why}")
    check_sources(filepaths)
    prepare_dir(export_dir, overwrite, filepaths, keep=[collection._dataset.path])
    names = unique_names(filepaths, ids, labels)
    dests = [export_dir / lab / name for lab, name in zip(labels, names)]
    transfer(list(zip(filepaths, dests)), media, progress)
    return {"exported": len(dests), "skipped": len(all_ids) - len(keep), "export_dir": str(export_dir),
            "paths": [str(d) for d in dests]}
