"""The contract every brain method follows, in the spirit of scikit-learn's estimators.

A method is registered with :func:`brain_method`, which gives it the same behaviour as every other one:

- **arguments first**: the call is bound to the method's signature and the run's key is checked (a
  valid name, not taken unless ``overwrite``) before any work;
- **a complete record**: every argument (but the collection and ``progress``) is stored in the run's
  ``config["call"]``, in JSON: an array as its fingerprint, a model as its name, a view as its stages;
  with the view the run is stored with, that is enough to run it again (:func:`rerun`);
- **one write**: the fields a method stages on its results (``results.stage_field``) are written in the
  same transaction as the run's record (:func:`~embedlens.core.runs.save_run`), so a failure leaves
  neither;
- **one shape of results**: :class:`~embedlens.core.runs.BrainResults` (``ids``, ``scores`` where they
  apply, ``summary()``, ``top(n)``, ``save``, ``load_brain_results``).

``METHODS`` lists the registered methods; one shared battery of tests (``tests/test_brain_contract.py``)
runs over all of them.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..core.collection import SampleCollection
from ..core.dataset import load_dataset
from ..core.errors import InvalidInputError
from ..core.expressions import ViewExpression
from ..core.runs import CURRENT_CALL, check_new_key, get_brain_info, load_brain_view

if TYPE_CHECKING:
    from ..core.dataset import Dataset

NOT_RECORDED = ("samples", "progress")


@dataclass(frozen=True)
class BrainMethod:
    """A registered method: its function and the argument that names its run."""

    name: str
    function: Callable[..., Any]
    key_param: str

    @property
    def parameters(self) -> list[str]:
        """The arguments a run records (all but the collection and ``progress``)."""
        return [n for n, p in inspect.signature(self.function).parameters.items()
                if n not in NOT_RECORDED and p.kind is not p.VAR_KEYWORD]


METHODS: dict[str, BrainMethod] = {}


def brain_method(key_param: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a brain method whose run is stored under the value of its argument ``key_param``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as e:
                raise InvalidInputError(f"{fn.__name__}(): {e}") from None
            bound.apply_defaults()
            samples = bound.arguments["samples"]
            if not isinstance(samples, SampleCollection):
                raise InvalidInputError(f"{fn.__name__}() runs on a dataset or view, got {type(samples).__name__}")
            check_new_key(samples, bound.arguments.get(key_param), bool(bound.arguments.get("overwrite", False)))
            call = {"brain_method": fn.__name__}
            for name, value in bound.arguments.items():
                if name in NOT_RECORDED:
                    continue
                if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                    call.update({k: recordable(v) for k, v in value.items()})
                else:
                    call[name] = recordable(value)
            token = CURRENT_CALL.set(call)
            try:
                return fn(*bound.args, **bound.kwargs)
            finally:
                CURRENT_CALL.reset(token)

        METHODS[fn.__name__] = BrainMethod(fn.__name__, run, key_param)
        return run

    return register


def recordable(value: Any) -> Any:
    """An argument as JSON that says what it was: arrays by fingerprint, models by name, views by stages."""
    from .source import _digest, _remember

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fiub" and value.ndim == 2:
            fingerprint = "array-" + _digest(np.ascontiguousarray(value, dtype=np.float32))
            _remember(fingerprint, value)
            return {"$array": fingerprint, "shape": list(value.shape)}
        return {"$array": None, "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [recordable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): recordable(v) for k, v in value.items()}
    if isinstance(value, SampleCollection):
        return {"$view": value.dataset_name, "stages": [s.to_dict() for s in value._stages]}
    if isinstance(value, ViewExpression):
        return {"$expr": value.to_dict()}
    name = getattr(value, "name", None)  # a Model
    if isinstance(name, str):
        return {"$model": name, "fingerprint": getattr(value, "fingerprint", None)}
    return {"$repr": repr(value)[:200]}


def rerun(dataset: "Dataset", key: str, **overrides: Any) -> Any:
    """Run brain run ``key`` again from its record alone (its view and every argument), replacing it.

    Arrays come back from their fingerprint while this process still holds them; a model recorded by
    name is loaded by name. ``overrides`` change arguments (e.g. a new ``seed``).
    """
    info = get_brain_info(dataset, key)
    call = dict(info["config"].get("call") or {})
    name = call.pop("brain_method", None)
    if name not in METHODS:
        raise InvalidInputError(f"brain run {key!r} has no record of its call (made by an older version?)")
    method = METHODS[name]
    args = {k: _restore(dataset, v) for k, v in call.items()}
    args.update(overrides, overwrite=True)
    samples = load_brain_view(dataset, key) if info["view"] else dataset
    return method.function(samples, **args)


def _restore(dataset: "Dataset", value: Any) -> Any:
    from .source import _recall

    if isinstance(value, list):
        return [_restore(dataset, v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$array" in value:
        array = _recall(value["$array"]) if value["$array"] else None
        if array is None:
            raise InvalidInputError("the run was given an array that is no longer in memory: pass it again")
        return array
    if "$view" in value:
        # a view of another dataset (compare_to_reference's reference) is rebuilt on that dataset
        owner = dataset if value["$view"] == dataset.name else load_dataset(value["$view"])
        return owner.view_from_dicts(value["stages"])
    if "$expr" in value:
        from ..core.expressions import from_dict

        return from_dict(value["$expr"])
    if "$model" in value:
        return value["$model"]
    if "$repr" in value:
        raise InvalidInputError(f"the run was given {value['$repr']}, which cannot be recorded: pass it again")
    return {k: _restore(dataset, v) for k, v in value.items()}
