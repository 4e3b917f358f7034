"""Reading images the same way everywhere: EXIF orientation applied, any mode turned into 8-bit RGB."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .core.errors import MediaError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
THUMBNAIL_SIZE = 256


class ImageError(MediaError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read image {path}: {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: 16-bit and float grayscale are rescaled, alpha is put on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if img.mode.startswith("I;16") and hi > 255:
            a = a / 257.0
        elif hi > 255 or lo < 0:
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image.

    ``draft_size`` lets JPEG decoding skip detail a later resize would drop (decoding at 1/2..1/8 scale).
    """
    img = _open(path)
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"corrupt image {path}: {e}") from None


_JPEG_EOI = b"\xff\xd9"
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Width and height (after EXIF rotation), channels, size in bytes and MIME type of a whole image.

    Also the integrity check every importer relies on. Pillow's ``verify()`` does nothing for JPEG (a
    file cut off half way passes), and since Pillow 11 ``getexif()`` decodes a PNG, after which
    ``verify()`` refuses to run. So a JPEG ending in its end-of-image marker is taken as whole, and any
    other file is decoded once.

    Raises
    ------
    ImageError
        The file is missing, unreadable or corrupt; the message names it.
    """
    img = _open(path)
    try:
        with img:
            width, height = img.size
            channels = len(img.getbands())
            mime = Image.MIME.get(img.format or "", "application/octet-stream")
            if not (img.format == "JPEG" and _ends_with_eoi(path)):
                img.load()
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"corrupt image {path}: {e}") from None
    if orientation in _ROTATED:
        width, height = height, width
    return {"width": width, "height": height, "channels": channels,
            "size_bytes": os.stat(path).st_size, "mime_type": mime}


def _ends_with_eoi(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read()
    # some writers pad the file with zeros or a newline after the marker
    return tail.rstrip(b"\x00\r\n ").endswith(_JPEG_EOI)


def make_thumbnail(path: str | os.PathLike, dest: str | os.PathLike, size: int = THUMBNAIL_SIZE) -> Path:
    """Write a JPEG whose longest side is ``size`` (never upscaled) and return its path."""
    dest = Path(dest)
    img = load_image(path, draft_size=size)
    img.thumbnail((size, size), Image.BICUBIC)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    img.save(tmp, "JPEG", quality=88)
    os.replace(tmp, dest)  # readers never see a half-written thumbnail
    return dest


def cached_thumbnails(root: str | os.PathLike, items: Sequence[tuple[str, str]], size: int = THUMBNAIL_SIZE,
                      num_workers: int | None = None, progress: bool = False) -> list[str | None]:
    """Paths of the thumbnails of ``(sample_id, filepath)`` items under ``root/size``, making the missing
    ones in parallel; None where the image is unreadable."""
    from .utils import parallel_map

    base = Path(root) / str(size)
    out: list[str | None] = [None] * len(items)
    todo = []
    for k, (sid, fp) in enumerate(items):
        dest = base / sid[-2:] / f"{sid}.jpg"
        if dest.exists():
            out[k] = str(dest)
        else:
            todo.append((k, fp, dest))
    results = parallel_map(lambda t: make_thumbnail(t[1], t[2], size), todo, num_workers, "thumbnails", progress)
    for (k, _, dest), (_, err) in zip(todo, results):
        out[k] = None if err else str(dest)
    return out


def is_image_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(IMAGE_EXTENSIONS)
