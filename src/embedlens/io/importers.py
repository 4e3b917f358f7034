"""Importing samples: parse a source, check every image and label, then write all samples in one transaction.

Nothing is written until everything has been checked, so a failed import leaves the dataset as it was.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..core.fields import BUILTIN_FIELDS, check_name
from ..core.sample import Sample
from ..core.types import type_name
from ..images import ImageError, read_metadata
from ..utils import parallel_map
from .candidates import Candidate, Parsed, Problem
from .coco import read_coco
from .folders import read_filepaths, read_image_folder, read_tree
from .tables import read_table
from ..core.errors import InvalidInputError, WrongTypeError

if TYPE_CHECKING:
    from ..core.dataset import Dataset

Reader = Callable[..., Parsed]

READERS: dict[str, Reader] = {
    "classification-tree": read_tree,
    "image-folder": read_image_folder,
    "filepaths": read_filepaths,
    "coco": read_coco,
    "csv": read_table,
}
# the type of label each format writes into label_field
LABEL_TYPES = {"classification-tree": "Classification", "coco": "Detections"}
_SHOWN_ERRORS = 10  # problems listed in an exception or a summary; the rest are counted


@dataclass
class ImportSummary:
    """What an import did.

    Attributes
    ----------
    imported : int
        Samples added.
    skipped : int
        Input items left out because of problems (images, table rows, annotations that belong to no
        image); only non-zero with ``skip_failures=True``.
    errors : list of (item, message)
        Every problem found; ``item`` names the file, ``"file:line"`` or ``"annotation <id>"``. One
        image can have several.
    sample_ids : list of str
        Ids of the added samples, in import order.
    """

    imported: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"imported {self.imported} samples, skipped {self.skipped}"
        if not self.errors:
            return head
        return f"{head}; {len(self.errors)} problems:\n{format_problems(self.errors)}"


def import_samples(dataset: "Dataset", source: Any, dataset_type: str, *, label_field: str = "ground_truth",
                   tags: str | Sequence[str] | None = None, skip_failures: bool = False, progress: bool = True,
                   num_workers: int | None = None, allow_outside_root: bool = False,
                   **format_kwargs: Any) -> ImportSummary:
    """Import samples from ``source`` into ``dataset`` in one transaction.

    Parameters
    ----------
    dataset : Dataset
        Where the samples go.
    source : path or list of paths
        A folder (``"classification-tree"``, ``"image-folder"``, ``"coco"``), a ``.csv``/``.parquet``
        file (``"csv"``) or a list of image paths (``"filepaths"``).
    dataset_type : str
        ``"classification-tree"``: one sub-folder per class, labels as ``Classification``;
        ``"image-folder"``: every image under the folder, unlabeled; ``"filepaths"``: a list of paths;
        ``"coco"``: COCO detection JSON, boxes as ``Detections`` (options ``labels_path``, ``data_path``);
        ``"csv"``: a table with a filepath column (options ``filepath_column``, ``label_columns``,
        ``delimiter``).
    label_field : str
        The field that receives the labels of tree and COCO imports.
    tags : str or list of str, optional
        Tags added to every imported sample.
    skip_failures : bool
        False (default): any bad item raises before anything is written. True: bad items are left out
        and listed in ``ImportSummary.errors``.
    progress : bool
        Show a progress bar while images are checked.
    num_workers : int, optional
        Threads that read image headers.
    allow_outside_root : bool
        False (default): every image of a folder or COCO import must lie inside its folder (the tree or
        image folder, the COCO ``data_path``) after following symbolic links; a file outside, named by an
        absolute or ``../`` path or reached through a link, is a problem that names the file, so an
        untrusted labels file cannot pull other local images into a dataset. True: files anywhere.
        ``"filepaths"`` and ``"csv"`` imports are lists of files the user chose and have no folder.

    Returns
    -------
    ImportSummary

    Raises
    ------
    embedlens.ImageError
        An image is missing, unreadable or corrupt (and ``skip_failures`` is False).
    ValueError
        Bad labels, rows or annotations (and ``skip_failures`` is False), or a source that cannot be
        read at all (always).

    Examples
    --------
    >>> ds = el.Dataset("digits")
    >>> el.io.import_samples(ds, "digits/", "classification-tree")
    >>> ds.add_dir("coco/", "coco", label_field="detections", skip_failures=True)
    """
    dataset_type = type_name(dataset_type)  # el.types.ImageClassificationDirectoryTree -> "classification-tree"
    reader = _reader(dataset_type, format_kwargs)
    schema = dataset.get_field_schema()
    _check_label_field(label_field, LABEL_TYPES.get(dataset_type), schema)
    extra_tags = _as_tags(tags)
    if not isinstance(allow_outside_root, bool):
        raise WrongTypeError(f"allow_outside_root must be True or False, got {allow_outside_root!r}")
    parsed = reader(source, label_field=label_field, schema=schema, **format_kwargs)
    if parsed.root is not None and not allow_outside_root:
        _confine(parsed)
    samples, problems, skipped = _validate(parsed, extra_tags, num_workers, progress)
    if problems and not skip_failures:
        raise _failure(source, dataset_type, problems)
    ids = dataset.add_samples(samples, progress=progress)
    if parsed.classes is not None and ids:
        _remember_classes(dataset, label_field, parsed.classes)
    return ImportSummary(len(ids), skipped, [(p.item, p.message) for p in problems], ids)


def _reader(dataset_type: str, options: dict[str, Any]) -> Reader:
    try:
        reader = READERS[dataset_type]
    except (KeyError, TypeError):
        raise InvalidInputError(f"unknown dataset_type {dataset_type!r}; one of {', '.join(READERS)}") from None
    allowed = [n for n, p in inspect.signature(reader).parameters.items()
               if p.kind is p.KEYWORD_ONLY and n not in ("label_field", "schema")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        takes = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
        raise WrongTypeError(f"{dataset_type!r} import got an unknown option {unknown[0]!r}; {takes}")
    return reader


def _check_label_field(name: str, label_type: str | None, schema: dict[str, str]) -> None:
    check_name(name)
    if name in BUILTIN_FIELDS:
        raise InvalidInputError(f"label_field {name!r} is a built-in field; choose another name")
    if label_type is not None and schema.get(name, label_type) != label_type:
        raise InvalidInputError(f"label_field {name!r} holds {schema[name]} labels in this dataset; this import writes "
                         f"{label_type} labels: pass another label_field=")


def _as_tags(tags: str | Sequence[str] | None) -> list[str]:
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    for t in tags:
        if not isinstance(t, str):
            raise WrongTypeError(f"tags must be strings, got {t!r}")
    return tags


def _confine(parsed: Parsed) -> None:
    """Give every candidate whose file resolves outside ``parsed.root`` a problem that names it."""
    root = os.path.realpath(parsed.root)
    inside = root.rstrip(os.sep) + os.sep
    for cand in parsed.candidates:
        real = os.path.realpath(cand.filepath)
        if not real.startswith(inside):
            via = "" if real == os.path.abspath(cand.filepath) else f" (it resolves to {real})"
            cand.problems.append(Problem(cand.item, f"{cand.filepath} lies outside the import's folder {parsed.root}"
                                                    f"{via}; pass allow_outside_root=True to import it"))


def _validate(parsed: Parsed, extra_tags: list[str], num_workers: int | None,
              progress: bool) -> tuple[list[Sample], list[Problem], int]:
    """Check every candidate's image (in threads) and labels; return the good samples and the problems."""
    todo = list(dict.fromkeys(c.filepath for c in parsed.candidates if not c.problems))
    results = parallel_map(read_metadata, todo, num_workers, "checking images", progress)
    checked = dict(zip(todo, results))
    samples: list[Sample] = []
    problems = list(parsed.problems)
    skipped = len(parsed.problems)
    for cand in parsed.candidates:
        bad = list(cand.problems)
        fields = cand.fields
        meta = None
        if not bad:
            meta, err = checked[cand.filepath]
            if err is not None:
                bad.append(Problem(cand.item, str(err), image=isinstance(err, (ImageError, OSError))))
            elif cand.finish is not None:
                more, finish_problems = cand.finish(meta)
                fields = {**fields, **more}
                bad += finish_problems
        if bad:
            problems += bad
            skipped += 1
            continue
        samples.append(_sample(cand, fields, meta, extra_tags))
    return samples, problems, skipped


def _sample(cand: Candidate, fields: dict[str, Any], meta: dict | None, extra_tags: list[str]) -> Sample:
    tags = list(dict.fromkeys([*cand.tags, *extra_tags]))
    return Sample(cand.filepath, tags=tags, metadata=meta, **fields)


def _failure(source: Any, dataset_type: str, problems: list[Problem]) -> InvalidInputError:
    where = source if isinstance(source, (str, os.PathLike)) else f"{len(source)} paths"
    cls = ImageError if problems[0].image else InvalidInputError
    return cls(f"{dataset_type!r} import from {where} found {len(problems)} problem(s); nothing was imported "
               f"(pass skip_failures=True to import the rest):\n"
               f"{format_problems([(p.item, p.message) for p in problems])}")


def format_problems(problems: Sequence[tuple[str, str]], limit: int = _SHOWN_ERRORS) -> str:
    """One problem per line, ``item: message`` (just the message when it names the item already)."""
    lines = [f"  {msg}" if item in msg else f"  {item}: {msg}" for item, msg in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def _remember_classes(dataset: "Dataset", label_field: str, classes: list[str]) -> None:
    """Record the class list in ``dataset.info["classes"][label_field]``, after the ones known already."""
    info_classes = dataset.info.setdefault("classes", {})
    if not isinstance(info_classes, dict):  # a user's own use of the key; leave it alone
        return
    known = list(info_classes.get(label_field) or [])
    info_classes[label_field] = known + [c for c in classes if c not in known]
    dataset.save()
