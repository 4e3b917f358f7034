"""Embedding sets on disk: one float32 matrix per set, rows keyed by sample (or label) id.

Layout of ``<dataset>/arrays/embeddings/<name>/``::

    meta.json              model name, fingerprint, preprocessing, dim, kind ("samples" | "patches")
    embeddings.npy         float32 [N, D], memory-mapped on read
    ids.npy                <U24 [N], the row keys
    stamps.npy             int64 [N, 2], (mtime_ns, size) of the file each row was computed from
    part-<k>.{emb,ids,stamps}.npy   rows appended by a run in progress

A running job appends parts, each written to a temporary name and renamed, so a kill loses at most
the batch in flight; :meth:`EmbeddingSet.consolidate` folds parts into the main files (later rows win).
Nothing here is pickled: ``np.load(..., allow_pickle=False)`` throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ..core.errors import InvalidInputError, NotFoundError, WrongTypeError

ID_DTYPE = "<U24"


class EmbeddingMismatchError(InvalidInputError):
    """Embeddings from another model, or with another dimension, cannot join an existing set."""


def check_matrix(array: Any, n_rows: int | None = None, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """A finite float32 2-D matrix with the expected shape, or a clear error naming the first bad row."""
    a = np.asarray(array)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        # complex values would lose their imaginary part without a word in the float32 conversion
        raise WrongTypeError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D [n_samples, dim], got shape {a.shape}")
    if n_rows is not None and a.shape[0] != n_rows:
        raise InvalidInputError(f"{what} has {a.shape[0]} rows but the collection has {n_rows} samples")
    if dim is not None and a.shape[1] != dim:
        raise EmbeddingMismatchError(f"{what} has dimension {a.shape[1]}, the stored set has {dim}")
    a = a.astype(np.float32, copy=False)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InvalidInputError(f"{what} has NaN or inf in {len(rows)} rows (first: row {rows[0]})")
    return a


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EmbeddingSet:
    """One named set of embeddings of a dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------------ metadata

    @property
    def exists(self) -> bool:
        return (self.root / "meta.json").exists()

    @property
    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "meta.json").read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no embeddings named {self.root.name!r}") from None

    def create(self, meta: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_meta({**meta, "created_at": time.time()})

    def write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.root / "meta.json.tmp"
        tmp.write_text(json.dumps({**meta, "updated_at": time.time()}, indent=1))
        os.replace(tmp, self.root / "meta.json")

    def check_compatible(self, fingerprint: str, dim: int | None) -> None:
        meta = self.meta
        if meta.get("fingerprint") != fingerprint:
            raise EmbeddingMismatchError(
                f"embeddings {self.root.name!r} were computed with {meta.get('model')!r} "
                f"(fingerprint {meta.get('fingerprint')}); they cannot be mixed with {fingerprint}. "
                "Use another embeddings_field, or delete these first")
        if dim is not None and meta.get("dim") not in (None, dim):
            raise EmbeddingMismatchError(f"embeddings {self.root.name!r} have dimension {meta['dim']}, not {dim}")

    # ------------------------------------------------------------------ rows

    def _parts(self) -> list[int]:
        return sorted(int(p.name.split(".")[0][5:]) for p in self.root.glob("part-*.ids.npy"))

    def _load(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        embs, ids, stamps = [], [], []
        if (self.root / "ids.npy").exists():
            ids.append(np.load(self.root / "ids.npy", allow_pickle=False))
            embs.append(np.load(self.root / "embeddings.npy", mmap_mode="r", allow_pickle=False))
            stamps.append(np.load(self.root / "stamps.npy", allow_pickle=False))
        for k in self._parts():
            base = self.root / f"part-{k:06d}"
            try:
                part_ids = np.load(f"{base}.ids.npy", allow_pickle=False)
                part_emb = np.load(f"{base}.emb.npy", allow_pickle=False)
                part_stamps = np.load(f"{base}.stamps.npy", allow_pickle=False)
            except (FileNotFoundError, ValueError):
                continue  # a part whose files were not all renamed yet: its batch is recomputed
            ids.append(part_ids)
            embs.append(part_emb)
            stamps.append(part_stamps)
        return embs, ids, stamps

    def append(self, ids: Sequence[str], rows: np.ndarray, stamps: np.ndarray) -> None:
        """Add rows (a batch of a running job): written as a part, ids last, so a part is whole or ignored."""
        parts = self._parts()
        k = (parts[-1] + 1) if parts else 1
        base = self.root / f"part-{k:06d}"
        _save_atomic(Path(f"{base}.emb.npy"), np.ascontiguousarray(rows, dtype=np.float32))
        _save_atomic(Path(f"{base}.stamps.npy"), np.asarray(stamps, dtype=np.int64).reshape(-1, 2))
        _save_atomic(Path(f"{base}.ids.npy"), np.asarray(ids, dtype=ID_DTYPE))

    def consolidate(self, keep_ids: set[str] | None = None) -> None:
        """Fold parts into the main files (later rows win; ``keep_ids`` drops rows of deleted samples)."""
        parts = self._parts()
        if not parts and keep_ids is None:
            return
        embs, ids, stamps = self._load()
        if not ids:
            return
        all_ids = np.concatenate(ids)
        # the last occurrence of each id wins: reverse, take first unique, restore order
        rev = all_ids[::-1]
        _, first = np.unique(rev, return_index=True)
        pick = np.sort(len(all_ids) - 1 - first)
        if keep_ids is not None:
            pick = pick[np.isin(all_ids[pick], np.asarray(sorted(keep_ids), dtype=ID_DTYPE))]
        matrix = np.concatenate([np.asarray(e) for e in embs])[pick]
        _save_atomic(self.root / "embeddings.npy", matrix)
        _save_atomic(self.root / "stamps.npy", np.concatenate(stamps)[pick])
        _save_atomic(self.root / "ids.npy", all_ids[pick])
        for k in parts:
            for suffix in ("ids", "emb", "stamps"):
                Path(self.root / f"part-{k:06d}.{suffix}.npy").unlink(missing_ok=True)
        meta = self.meta
        meta["count"] = int(len(pick))
        self.write_meta(meta)

    def ids(self) -> np.ndarray:
        self.consolidate()
        path = self.root / "ids.npy"
        return np.load(path, allow_pickle=False) if path.exists() else np.empty(0, ID_DTYPE)

    def stamps(self) -> dict[str, tuple[int, int]]:
        self.consolidate()
        if not (self.root / "ids.npy").exists():
            return {}
        ids = np.load(self.root / "ids.npy", allow_pickle=False)
        st = np.load(self.root / "stamps.npy", allow_pickle=False)
        return {i: (int(a), int(b)) for i, (a, b) in zip(ids.tolist(), st.tolist())}

    def get(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``ids`` in that order, and a boolean mask of which ids have a row (missing rows are 0)."""
        self.consolidate()
        dim = self.meta.get("dim") or 0
        want = np.asarray(ids, dtype=ID_DTYPE)
        if not (self.root / "ids.npy").exists():
            return np.zeros((len(want), dim), np.float32), np.zeros(len(want), bool)
        have = np.load(self.root / "ids.npy", allow_pickle=False)
        matrix = np.load(self.root / "embeddings.npy", mmap_mode="r", allow_pickle=False)
        order = np.argsort(have)
        pos = np.searchsorted(have, want, sorter=order)
        pos = np.clip(pos, 0, max(len(have) - 1, 0))
        rows = order[pos] if len(have) else pos
        found = (have[rows] == want) if len(have) else np.zeros(len(want), bool)
        out = np.zeros((len(want), matrix.shape[1] if matrix.ndim == 2 else dim), np.float32)
        if found.any():
            sel = rows[found]
            # memory-mapped gather in sorted order reads the file sequentially
            srt = np.argsort(sel)
            out[np.flatnonzero(found)[srt]] = matrix[sel[srt]]
        return out, found

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
