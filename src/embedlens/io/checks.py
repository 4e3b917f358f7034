"""Checking that an image file is whole before it enters a dataset."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image

from ..images import ImageError, read_metadata

_JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 64


def check_image(path: str | os.PathLike) -> dict[str, Any]:
    """Read the metadata of ``path`` and make sure the file is not truncated or corrupt.

    ``read_metadata`` verifies PNG checksums, but Pillow's ``verify()`` does nothing for JPEG, so a
    JPEG cut off half way would pass it. A JPEG whose last bytes are the end-of-image marker is whole;
    any other JPEG (truncated, or with bytes appended after the image) and every other format that
    ``verify()`` does not check is decoded once to decide.

    Raises
    ------
    embedlens.ImageError
        The file is missing, unreadable or corrupt; the message names it.
    """
    meta = read_metadata(path)
    mime = meta.get("mime_type")
    if mime == "image/png":
        return meta
    if mime == "image/jpeg" and _ends_with_eoi(path):
        return meta
    _decode(path)
    return meta


def _ends_with_eoi(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        tail = f.read()
    # some writers pad the file with zeros or a newline after the marker
    return tail.rstrip(b"\x00\r\n ").endswith(_JPEG_EOI)


def _decode(path: str | os.PathLike) -> None:
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"corrupt image {path}: {e}") from None
