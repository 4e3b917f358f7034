"""The errors embedlens raises for input a user can fix.

Every one of them derives from :class:`EmbedlensError`, and also from the builtin a Python user would
expect (``ValueError``, ``TypeError``, ``KeyError``), so ``except ValueError`` keeps working. The CLI
turns only these into one-line messages and the app server only these into 4xx answers: any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class EmbedlensError(Exception):
    """Base of every error caused by bad input (an argument, a file, a request)."""


class InvalidInputError(EmbedlensError, ValueError):
    """An argument or value is wrong: out of range, malformed, inconsistent with the data."""


class WrongTypeError(EmbedlensError, TypeError):
    """An argument has the wrong type."""


class NotFoundError(EmbedlensError, KeyError):
    """A dataset, sample, field, run or file that is named does not exist."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; the message reads better bare.
        return str(self.args[0]) if self.args else "not found"


class UnknownFieldError(InvalidInputError):
    """A field path names a field the collection does not have."""


class MediaError(InvalidInputError):
    """An image (or other media file) cannot be read, or lies outside what may be imported."""


def with_context(e: BaseException, context: str) -> EmbedlensError:
    """``e`` (a ValueError or TypeError from checking a value) as a typed error whose message starts with
    ``context``, e.g. the sample and field the value belongs to."""
    cls = WrongTypeError if isinstance(e, TypeError) else InvalidInputError
    if isinstance(e, EmbedlensError):
        cls = type(e)
    return cls(f"{context}: {e}")
