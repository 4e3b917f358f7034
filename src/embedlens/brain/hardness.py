"""How hard each sample is for the model: the entropy of its predicted class distribution."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .classify import entropy, softmax
from .labels import check_new_field, require_type
from .contract import brain_method
from ..core.runs import BrainResults, check_new_key, register_type
from ..core.errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.collection import SampleCollection


@register_type
class HardnessResults(BrainResults):
    run_type = "hardness"

    @property
    def scores(self) -> np.ndarray:
        return self._arrays["scores"]


@brain_method(key_param="hardness_field")
def compute_hardness(samples: "SampleCollection", label_field: str, hardness_field: str = "hardness",
                     overwrite: bool = False) -> HardnessResults:
    """Hardness in [0, 1]: the entropy of ``softmax(logits)`` of the predictions in ``label_field``,
    divided by ``log(n_classes)``. 0 = one class certain, 1 = all classes equally likely.

    ``label_field`` holds ``Classification`` predictions with logits (``apply_model(store_logits=True)``
    or ``compute_predictions``); samples without a prediction get None. The brain key is ``hardness_field``.
    """
    check_new_key(samples, hardness_field, overwrite)
    check_new_field(samples, hardness_field, overwrite)
    require_type(samples, label_field, ("Classification",), "label_field")
    ids = samples.values("id")
    preds = samples.values(label_field)
    rows = [(i, p.logits) for i, p in enumerate(preds) if p is not None]
    if not rows:
        raise InvalidInputError(f"no sample has a prediction in {label_field!r}")
    bad = [ids[i] for i, lg in rows if lg is None]
    if bad:
        raise InvalidInputError(f"sample {bad[0]!r}: {label_field!r} has no logits ({len(bad)} samples); hardness needs "
                         "them: apply_model(store_logits=True) or compute_predictions()")
    n = len(rows[0][1])
    if any(len(lg) != n for _, lg in rows):
        raise InvalidInputError(f"the predictions in {label_field!r} have different numbers of logits")
    h = entropy(softmax(np.array([lg for _, lg in rows], float)))
    scores = np.full(len(ids), np.nan)
    scores[[i for i, _ in rows]] = h
    results = HardnessResults(samples, {"method": "entropy", "label_field": label_field,
                                        "hardness_field": hardness_field}, ids, ids, {"scores": scores},
                              hardness_field)
    results.stage_field(hardness_field, ids, [None if np.isnan(s) else float(s) for s in scores])
    results.save(hardness_field, overwrite=True, fields=[hardness_field])
    return results
