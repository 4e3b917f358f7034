"""Where embedlens keeps its data."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$EMBEDLENS_HOME``, or ``~/.embedlens``: one folder per dataset lives here."""
    return Path(os.environ.get("EMBEDLENS_HOME") or "~/.embedlens").expanduser()
