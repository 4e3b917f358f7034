"""Putting image files into an export: the target folder, clash-free file names, copies or links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from ..utils import parallel_map
from ..core.errors import InvalidInputError

MEDIA_MODES = ("copy", "symlink")


def media_mode(export_media: str | bool, allow_none: bool) -> str | None:
    """Normalise ``export_media``: ``"copy"``/``True``, ``"symlink"``, or ``False`` (no files) where allowed."""
    if export_media is True:
        return "copy"
    if export_media is False or export_media is None:
        if allow_none:
            return None
        raise InvalidInputError("this format needs the images: export_media must be 'copy' or 'symlink'")
    if export_media not in MEDIA_MODES:
        raise InvalidInputError(f"export_media must be 'copy', 'symlink' or False, got {export_media!r}")
    return export_media


def check_sources(filepaths: Sequence[str]) -> None:
    """Fail before writing anything if an image to export is missing."""
    missing = [p for p in filepaths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InvalidInputError(f"cannot export: image file not found: {missing[0]}{more}")


def prepare_dir(export_dir: Path, overwrite: bool, sources: Sequence[str], keep: Sequence[Path] = ()) -> None:
    """Create ``export_dir``; a non-empty one is replaced only with ``overwrite``.

    Replacing deletes the folder, so it refuses when the folder is a file-system root or the home
    folder, or holds any of the images being exported or a folder in ``keep`` (the dataset's own).
    """
    if export_dir.exists() and not export_dir.is_dir():
        raise InvalidInputError(f"cannot export to {export_dir}: it is a file, not a folder")
    if export_dir.is_dir() and any(export_dir.iterdir()):
        if not overwrite:
            raise InvalidInputError(f"export folder {export_dir} is not empty; pass overwrite=True to replace it")
        _check_deletable(export_dir, sources, keep)
        shutil.rmtree(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)


def _check_deletable(folder: Path, sources: Sequence[str], keep: Sequence[Path]) -> None:
    root = os.path.realpath(folder)
    if root in (os.path.realpath(Path.home()), os.path.realpath(Path(root).anchor)):
        raise InvalidInputError(f"refusing to overwrite {folder}: it is the home folder or a file-system root")
    prefix = root.rstrip(os.sep) + os.sep
    inside = next((str(p) for p in [*keep, *sources] if os.path.realpath(p).startswith(prefix)), None)
    if inside is not None:
        raise InvalidInputError(f"refusing to overwrite {folder}: it holds {inside}, which the export reads")


def unique_names(filepaths: Sequence[str], ids: Sequence[str], groups: Sequence[str] | None = None) -> list[str]:
    """A file name for each image, unique within its group (its label folder).

    The first image keeps its own name; a later one with a name already taken gets its sample id
    appended, so the result depends only on the order of the collection. Names are compared
    case-insensitively because macOS and Windows file systems are.
    """
    taken: set[tuple[str, str]] = set()
    out = []
    for k, (path, sid) in enumerate(zip(filepaths, ids)):
        group = groups[k] if groups is not None else ""
        name = os.path.basename(path)
        if (group, name.casefold()) in taken:
            stem, ext = os.path.splitext(name)
            name = f"{stem}-{sid}{ext}"
            n = 1
            while (group, name.casefold()) in taken:
                name = f"{stem}-{sid}-{n}{ext}"
                n += 1
        taken.add((group, name.casefold()))
        out.append(name)
    return out


def transfer(pairs: Sequence[tuple[str, Path]], mode: str, progress: bool,
             num_workers: int | None = None) -> None:
    """Copy (or symlink) ``src -> dest`` for every pair, in threads, with a progress bar."""

    def one(pair: tuple[str, Path]) -> None:
        src, dest = pair
        dest.parent.mkdir(parents=True, exist_ok=True)
        if mode == "symlink":
            os.symlink(os.path.abspath(src), dest)
        else:
            shutil.copy2(src, dest)

    results = parallel_map(one, pairs, num_workers, "export", progress)
    failed = [(p, e) for p, (_, e) in zip(pairs, results) if e is not None]
    if failed:
        (src, dest), err = failed[0]
        raise OSError(f"cannot {mode} {src} to {dest}: {err} ({len(failed)} files failed)") from err
