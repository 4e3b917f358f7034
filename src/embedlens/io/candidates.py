"""What a format reader hands to the importer: samples to be, and the problems found while parsing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple


class Problem(NamedTuple):
    """One bad input item: ``item`` names it (a path, ``"file:line"``, ``"annotation 7"``)."""

    item: str
    message: str
    image: bool = False  # an unreadable image (raised as ImageError) rather than bad labels or rows


# Builds the fields that need the image's size (COCO boxes); returns them and any problems found.
Finisher = Callable[[dict], "tuple[dict[str, Any], list[Problem]]"]


@dataclass
class Candidate:
    """A sample that will be imported if its image and labels check out."""

    item: str
    filepath: str
    fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    finish: Finisher | None = None


@dataclass
class Parsed:
    """A reader's result. ``problems`` holds the ones that belong to no sample (an orphan annotation).
    ``root``: the folder every image must lie in (after following links), unless the user allows others;
    None where the user listed the files themselves."""

    candidates: list[Candidate]
    problems: list[Problem] = field(default_factory=list)
    classes: list[str] | None = None
    root: str | None = None
