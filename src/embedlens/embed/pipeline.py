"""Decode and preprocess in threads while the model runs: the loop every embedding job shares.

A job is a list of work units; each unit is one image file that yields one or more preprocessed arrays
(one for a sample, one per object for patches), each with a key. Units are prepared by a thread pool a
few batches ahead of the model, so the model never waits on decoding and memory stays bounded.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..images import load_image
from ..utils import default_workers
from ..core.errors import EmbedlensError, InvalidInputError, MediaError

if TYPE_CHECKING:
    from ..models import Model


@dataclass
class Unit:
    """One image to read. Without ``boxes`` it yields one array (key ``keys[0]``); with relative
    ``[x, y, w, h]`` boxes, one array per box, cropped with ``alpha`` padding, square if ``force_square``."""

    keys: list[str]
    filepath: str
    boxes: list[list[float]] | None = None
    alpha: float = 0.1
    force_square: bool = True


def crop_box(img, box: Sequence[float], alpha: float, force_square: bool):
    """The image region of a relative ``[x, y, w, h]`` box, padded by ``alpha`` of its size per side."""
    W, H = img.size
    x, y, w, h = box[0] * W, box[1] * H, box[2] * W, box[3] * H
    cx, cy = x + w / 2, y + h / 2
    w, h = w * (1 + 2 * alpha), h * (1 + 2 * alpha)
    if force_square:
        w = h = max(w, h)
    left, top = max(0, round(cx - w / 2)), max(0, round(cy - h / 2))
    right, bottom = min(W, round(cx + w / 2)), min(H, round(cy + h / 2))
    if right <= left or bottom <= top:  # a degenerate box still gives a pixel, not a crash
        right, bottom = min(W, left + 1), min(H, top + 1)
    return img.crop((left, top, right, bottom))


def prepare_unit(model: "Model", unit: Unit) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Decode the unit's image once and preprocess it (or each of its crops); thread-safe."""
    if unit.boxes is None:
        out = [model.prepare(unit.filepath)]
    else:
        img = load_image(unit.filepath)
        out = [model.preprocess(crop_box(img, b, unit.alpha, unit.force_square)) for b in unit.boxes]
    # stamped after reading, so a missing file fails with the image reader's message
    return out, file_stamp(unit.filepath)


def skippable(error: Exception) -> bool:
    """Whether ``skip_failures`` skips the image that raised ``error``: an unreadable file is that sample's
    failure; anything else (a model that cannot take the image: another size, colour among grayscale ones)
    stops the job, since leaving such images out would silently drop part of the dataset."""
    return isinstance(error, (MediaError, OSError))


def naming(error: Exception, filepath: str) -> Exception:
    """``error`` naming the image it came from: an embedlens error is re-raised as one of its own type
    with the path in its message (the CLI prints only the message); any other gets the path as a note."""
    if filepath in str(error):
        return error
    if isinstance(error, EmbedlensError):
        try:
            return type(error)(f"{error} (image: {filepath})")
        except TypeError:  # a subclass with another constructor
            pass
    error.add_note(f"while preparing the image {filepath}")
    return error


@dataclass
class Batch:
    keys: list[str]
    arrays: np.ndarray
    stamps: np.ndarray  # (mtime_ns, size) of each key's file, to notice changed files later


@dataclass
class Failures:
    """Units that could not be read, by key: message naming the file."""

    by_key: dict[str, str] = field(default_factory=dict)


def file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def batches(model: "Model", units: Sequence[Unit], batch_size: int, num_workers: int | None, skip_failures: bool,
            failures: Failures, desc: str = "embedding", progress: bool = True) -> Iterator[Batch]:
    """Yield stacked batches of prepared arrays in unit order; failed units are recorded or raised."""
    workers = num_workers or default_workers()
    ahead = max(2 * batch_size, 4 * workers)  # units in flight: enough to hide decoding, bounded memory
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embedlens-decode")
    pending: deque[tuple[Unit, Future]] = deque()
    todo = iter(units)

    def fill() -> None:
        while len(pending) < ahead:
            unit = next(todo, None)
            if unit is None:
                return
            pending.append((unit, pool.submit(prepare_unit, model, unit)))

    keys: list[str] = []
    arrays: list[np.ndarray] = []
    stamps: list[tuple[int, int]] = []
    n_keys = sum(len(u.keys) for u in units)
    bar = tqdm(total=n_keys, desc=desc, unit="img", disable=not progress or n_keys == 0, smoothing=0.1)
    started = time.perf_counter()
    try:
        fill()
        while pending:
            unit, fut = pending.popleft()
            fill()
            try:
                out, stamp = fut.result()
                if len(out) != len(unit.keys):
                    raise InvalidInputError(f"{unit.filepath}: prepared {len(out)} arrays for {len(unit.keys)} keys")
            except Exception as e:
                if not (skip_failures and skippable(e)):
                    named = naming(e, unit.filepath)
                    if named is e:
                        raise
                    raise named from e
                for k in unit.keys:
                    failures.by_key[k] = str(e)
                bar.update(len(unit.keys))
                continue
            keys += unit.keys
            arrays += out
            stamps += [stamp] * len(out)
            while len(keys) >= batch_size:
                yield Batch(keys[:batch_size], np.stack(arrays[:batch_size]), np.asarray(stamps[:batch_size]))
                bar.update(batch_size)
                del keys[:batch_size], arrays[:batch_size], stamps[:batch_size]
                bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - started, 1e-9):.0f} img/s", refresh=False)
        if keys:
            yield Batch(keys, np.stack(arrays), np.asarray(stamps))
            bar.update(len(keys))
    finally:
        bar.close()
        pool.shutdown(wait=False, cancel_futures=True)
