"""Where embedlens keeps its data."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$EMBEDLENS_HOME``, or ``~/.embedlens``: one folder per dataset lives here."""
    return Path(os.environ.get("EMBEDLENS_HOME") or "~/.embedlens").expanduser()


def model_cache() -> Path:
    """Where exported model files (ONNX) are cached: ``$EMBEDLENS_MODEL_CACHE``, else ``<home>/models``.

    Several homes (e.g. one per project) can share one cache through the variable.
    """
    return Path(os.environ.get("EMBEDLENS_MODEL_CACHE") or home() / "models").expanduser()
