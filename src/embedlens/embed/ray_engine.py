"""The same embedding job as a Ray Data pipeline: model actors read files, embed, and return rows by key.

``ray.init(address=...)`` (or ``RAY_ADDRESS``) picks a real cluster; without one, Ray starts locally with
this machine's cores. Files must be readable at the same paths on every node (shared storage).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from .pipeline import Failures, Unit, naming, prepare_unit, skippable
from ..core.errors import InvalidInputError


class _EmbedActor:
    """One model per actor, built once; ``__call__`` embeds a batch of units."""

    def __init__(self, spec: Any, threads: int) -> None:
        from .compute import resolve_model

        from ..models import DEFAULT_MODEL

        spec = DEFAULT_MODEL if spec is None else spec
        # each actor gets its share of the cores, not all of them
        kwargs = {"num_threads": threads} if isinstance(spec, str) and spec.startswith("efficientnet") else {}
        self.model = resolve_model(spec, **kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys, arrays, stamps, errors = [], [], [], []
        failed: list[tuple[list[str], str, bool]] = []
        for k, path, boxes, alpha, square in zip(batch["keys"], batch["filepath"], batch["boxes"], batch["alpha"],
                                                 batch["force_square"]):
            unit = Unit(json.loads(k), str(path), json.loads(boxes), float(alpha), bool(square))
            try:
                out, stamp = prepare_unit(self.model, unit)
            except Exception as e:  # reported per key to the driver, which skips or raises
                failed.append((unit.keys, str(naming(e, unit.filepath)), not skippable(e)))
                continue
            keys += unit.keys
            arrays += out
            stamps += [stamp] * len(out)
        rows = self.model.embed_batch(np.stack(arrays)) if arrays else None
        dim = rows.shape[1] if rows is not None else (self.model.embedding_dim or 1)
        emb = rows if rows is not None else np.zeros((0, dim), np.float32)
        errors, fatal = [""] * len(keys), [False] * len(keys)
        for fkeys, msg, stop in failed:
            keys += fkeys
            errors += [msg] * len(fkeys)
            fatal += [stop] * len(fkeys)
        n_failed = len(keys) - len(emb)
        return {
            "key": np.asarray(keys, dtype=object),
            "embedding": np.concatenate([emb, np.full((n_failed, dim), np.nan, np.float32)]).astype(np.float32),
            "stamp": np.concatenate([np.asarray(stamps, np.int64).reshape(-1, 2),
                                     np.zeros((n_failed, 2), np.int64)]),
            "error": np.asarray(errors, dtype=object),
            "fatal": np.asarray(fatal, bool),
        }


def run_ray(spec: Any, units: Sequence[Unit], batch_size: int, skip_failures: bool,
            keep: Callable[[list[str], np.ndarray, np.ndarray], None], progress: bool = True,
            address: str | None = None, num_actors: int | None = None, num_cpus_per_actor: float = 1,
            num_gpus_per_actor: float = 0) -> Failures:
    """Run the units through a pool of model actors on Ray; rows come back to ``keep`` by key."""
    try:
        import ray
    except ImportError:
        raise ImportError("engine='ray' needs Ray: pip install 'embedlens[ray]'") from None
    failures = Failures()
    if not units:
        return failures
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    if num_actors is None:
        cpus = ray.cluster_resources().get("CPU", 1)
        num_actors = max(1, int(cpus // max(num_cpus_per_actor, 1)))
    rows = [{"keys": json.dumps(u.keys), "filepath": u.filepath, "boxes": json.dumps(u.boxes), "alpha": u.alpha,
             "force_square": u.force_square} for u in units]
    out = ray.data.from_items(rows).map_batches(
        _EmbedActor, fn_constructor_kwargs={"spec": spec, "threads": max(1, int(num_cpus_per_actor))},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor,
        batch_format="numpy")
    for b in out.iter_batches(batch_size=None, batch_format="numpy"):
        ok = np.asarray([e == "" for e in b["error"]], bool)
        for k, e, fatal in zip(b["key"][~ok], b["error"][~ok], b["fatal"][~ok]):
            if fatal or not skip_failures:
                raise InvalidInputError(e)
            failures.by_key[str(k)] = str(e)
        if ok.any():
            keep([str(k) for k in b["key"][ok]], b["embedding"][ok], b["stamp"][ok])
    return failures
