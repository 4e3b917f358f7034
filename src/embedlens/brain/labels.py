"""Reading label fields for the label-quality methods: types checked, classes mapped to indices."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.query import UnknownFieldError
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection


def field_type(samples: "SampleCollection", field: str, what: str) -> str:
    schema = samples.get_field_schema()
    if field not in schema:
        raise UnknownFieldError(f"{what} {field!r} is not a field of {samples._describe()}; "
                                f"fields: {', '.join(schema)}")
    return schema[field]


def require_type(samples: "SampleCollection", field: str, types: tuple[str, ...], what: str) -> str:
    t = field_type(samples, field, what)
    if t not in types:
        raise InvalidInputError(f"{what} {field!r} holds {t}; this needs {' or '.join(types)}")
    return t


def check_new_field(samples: "SampleCollection", field: str, overwrite: bool) -> None:
    """A method's output field must not clobber an existing field unless asked to."""
    if field in samples.get_field_schema() and not overwrite:
        raise InvalidInputError(f"field {field!r} exists; pass overwrite=True to replace it, or choose another name")


def prediction_classes(samples: "SampleCollection", pred_field: str, n_logits: int | None) -> list[str] | None:
    """The class of each logit column of ``pred_field``: recorded by compute_predictions / apply_model."""
    classes = samples._dataset.info.get("classes", {}).get(pred_field)
    if classes is not None and n_logits is not None and len(classes) != n_logits:
        raise InvalidInputError(f"{pred_field!r} has {n_logits} logits but its class list has {len(classes)} classes")
    return classes


def label_indices(labels: list[Any], classes: list[str], ids: list[str], field: str) -> np.ndarray:
    """Class index of each label (-1 for None); a label outside ``classes`` is an error naming the sample."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.full(len(labels), -1, dtype=np.int64)
    for i, lab in enumerate(labels):
        if lab is None:
            continue
        j = index.get(lab)
        if j is None:
            raise InvalidInputError(f"sample {ids[i]!r}: label {lab!r} of {field!r} is not among the prediction's "
                             f"classes ({', '.join(map(repr, classes[:10]))}{', ...' if len(classes) > 10 else ''})")
        out[i] = j
    return out
