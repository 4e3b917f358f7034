"""The embedlens app: a FastAPI server and a web page (image grid <-> WebGL embeddings plot <-> tags).

>>> import embedlens as el
>>> session = el.launch_app(el.load_sample_dataset("digits"))
>>> session.url

The page is built from ``frontend/`` (TypeScript, Vite) into ``embedlens/app/static`` by ``make install``;
the API under ``/api`` works without it. FastAPI and uvicorn are imported only when an app starts.
"""

from __future__ import annotations

from typing import Any

from .session import DEFAULT_PORT, Session, launch_app
from .state import AppState


def STATIC_BUILT() -> bool:
    """Whether the page has been built into ``embedlens/app/static`` (``make install`` does it)."""
    from pathlib import Path

    return (Path(__file__).with_name("static") / "index.html").is_file()


def create_app(*args: Any, **kwargs: Any):
    """The FastAPI application of an :class:`AppState` (see :func:`embedlens.app.server.create_app`)."""
    from .server import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["DEFAULT_PORT", "STATIC_BUILT", "AppState", "Session", "create_app", "launch_app"]
