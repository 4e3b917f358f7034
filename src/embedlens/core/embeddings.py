"""Embedding sets on disk: one float32 matrix per set, rows keyed by sample (or label) id.

Layout of ``<dataset>/arrays/embeddings/<name>/``::

    meta.json              model name, fingerprint, preprocessing, dim, kind ("samples" | "patches"), count
    embeddings.npy         float32 [N, D], memory-mapped on read and used in place
    ids.npy                <U24 [N], the row keys
    stamps.npy             int64 [N, 2], (mtime_ns, size) of the file each row was computed from
    part-<k>.{emb,ids,stamps}.npy   rows appended by a run in progress
    commit-<t>.json        a write being committed (see below)

A running job appends parts, each written to a temporary name and renamed, so a kill loses at most
the batch in flight; :meth:`EmbeddingSet.consolidate` folds parts into the main files (later rows win).

The main files change together or not at all. A write streams each new file once, in row blocks, to a
temporary name (``<file>.<pid>-<token>.new``), fsyncs it, then writes a small commit record naming the
renames (and the parts they replace) and fsyncs it; only then are the files renamed over the old ones.
A process killed before the commit record exists leaves the old set as it was (its temporary files are
removed by the next write); one killed after it leaves a record that the next reader finishes. Nothing
is gathered, concatenated or checked as a whole matrix in memory: every pass works on blocks of
``_BLOCK_BYTES``.

Reading the whole set in its stored order gives the memory map itself (read-only, no copy); other
orders or subsets are gathered block by block. Nothing here is pickled: ``allow_pickle=False`` throughout.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
from .errors import InvalidInputError, NotFoundError, WrongTypeError

if TYPE_CHECKING:
    from .collection import SampleCollection
    from .dataset import Dataset

ID_DTYPE = "<U24"
#: Bytes of rows handled at a time by the checks, writes and gathers of this module.
_BLOCK_BYTES = 8 << 20
_MAIN = ("embeddings.npy", "stamps.npy", "ids.npy")


class EmbeddingMismatchError(InvalidInputError):
    """Embeddings from another model, or with another dimension, cannot join an existing set."""


# ---------------------------------------------------------------------------------------------- checks


def block_rows(dim: int, itemsize: int = 4) -> int:
    """Rows per block of ``_BLOCK_BYTES``."""
    return max(1, _BLOCK_BYTES // max(1, itemsize * max(dim, 1)))


def iter_blocks(n: int, dim: int, itemsize: int = 4) -> Iterator[tuple[int, int]]:
    step = block_rows(dim, itemsize)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def check_array(array: Any, n_rows: int | None = None, dim: int | None = None,
                what: str = "embeddings") -> np.ndarray:
    """``array`` as a real numeric 2-D ndarray of the expected shape, not converted and not copied."""
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
    return a


class _Finite:
    """Counts rows with NaN or inf over the blocks of a matrix, and remembers the first."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None

    def check(self, block: np.ndarray, start: int) -> bool:
        """Whether ``block`` (float32 rows ``start...``) is all finite."""
        # one reduction, no temporary: a finite sum means every value is finite (NaN and inf propagate);
        # only a sum that overflowed or met a bad value needs the exact element-wise look
        if block.size == 0 or np.isfinite(np.add.reduce(block, axis=None)):
            return True
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if len(bad):
            self.count += len(bad)
            self.first = int(start + bad[0]) if self.first is None else self.first
            return False
        return True

    def raise_if_bad(self, what: str) -> None:
        if self.count:
            raise InvalidInputError(f"{what} has NaN or inf in {self.count} rows (first: row {self.first})")


def _f32_block(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(a[start:stop], dtype=np.float32)


def check_finite(a: np.ndarray, what: str = "embeddings") -> None:
    """Raise naming the first row with NaN or inf (float32 values), reading ``a`` block by block."""
    fin = _Finite()
    for start, stop in iter_blocks(len(a), a.shape[1] if a.ndim == 2 else 1, 4):
        fin.check(_f32_block(a, start, stop), start)
    fin.raise_if_bad(what)


def check_matrix(array: Any, n_rows: int | None = None, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """A finite float32 2-D matrix with the expected shape, or a clear error naming the first bad row.

    A float32 C-contiguous input (a memory map too) is returned as is, never copied; finiteness is
    checked block by block, so no ``[N, D]`` temporary is made.
    """
    a = check_array(array, n_rows, dim, what)
    a = a.astype(np.float32, copy=False)
    check_finite(a, what)
    return a


def release(array: Any) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set (they stay in the OS page
    cache and come back on the next read at the cost of a minor page fault). A no-op for other arrays."""
    base = array
    while base is not None:
        mm = getattr(base, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (AttributeError, OSError, ValueError):
                pass
            return
        base = getattr(base, "base", None)


def is_mapped(array: Any) -> bool:
    """Whether ``array`` reads a stored file in place (a memory map, or a view of one)."""
    base = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


# ---------------------------------------------------------------------------------------------- files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(final: str) -> str:
    return f"{final}.{os.getpid()}-{secrets.token_hex(4)}.new"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _NpyWriter:
    """Streams the rows of one ``.npy`` file of known shape to a temporary name in ``root``."""

    def __init__(self, root: Path, final: str, shape: tuple[int, ...], dtype: Any) -> None:
        self.final = final
        self.tmp = _tmp_name(final)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.path = root / self.tmp
        self.f = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(self.f, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": self.shape})

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.size:
            self.f.write(memoryview(block).cast("B"))
        self.rows += len(block)

    def finish(self) -> None:
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.final}: wrote {self.rows} rows of {self.shape[0]}")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            self.path.unlink(missing_ok=True)


def _write_whole(root: Path, final: str, array: np.ndarray) -> _NpyWriter:
    w = _NpyWriter(root, final, array.shape, array.dtype)
    try:
        w.write(array)
        w.finish()
    except BaseException:
        w.abort()
        raise
    return w


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _roll_forward(root: Path) -> None:
    """Finish the renames of any committed write (one killed between its commit record and its renames)."""
    try:
        records = sorted(p for p in root.iterdir() if p.name.startswith("commit-") and p.name.endswith(".json"))
    except FileNotFoundError:
        return
    for record in records:
        try:
            plan = json.loads(record.read_text())
        except FileNotFoundError:
            continue  # finished by another process meanwhile
        except ValueError:
            record.unlink(missing_ok=True)  # cannot happen (written whole, then renamed); never blocks reads
            continue
        for final, tmp in plan.get("renames", []):
            try:
                os.replace(root / tmp, root / final)
            except FileNotFoundError:
                pass  # already renamed
        for name in plan.get("delete", []):
            (root / name).unlink(missing_ok=True)
        _fsync_dir(root)
        record.unlink(missing_ok=True)


def _clean_stale(root: Path) -> None:
    """Remove temporary files of writes whose process died before committing them."""
    for p in root.glob("*.new"):
        try:
            pid = int(p.name.rsplit(".", 2)[-2].split("-")[0])
        except (ValueError, IndexError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            p.unlink(missing_ok=True)


def _commit(root: Path, writers: list[_NpyWriter], meta: dict[str, Any] | None, delete: Sequence[str] = ()) -> None:
    """Make the written files (and ``meta``) the set's, all together: see the module's docstring."""
    renames = [(w.final, w.tmp) for w in writers]
    if meta is not None:
        tmp = _tmp_name("meta.json")
        with open(root / tmp, "w") as f:
            f.write(json.dumps({**meta, "updated_at": time.time()}, indent=1))
            f.flush()
            os.fsync(f.fileno())
        # ids.npy last: a reader that does not roll forward sees either the old ids or all new files
        renames = [r for r in renames if r[0] != "ids.npy"] + [("meta.json", tmp)] + \
            [r for r in renames if r[0] == "ids.npy"]
    _fsync_dir(root)
    record = root / f"commit-{time.time_ns():020d}-{secrets.token_hex(4)}.json"
    tmp_record = root / _tmp_name(record.name)
    with open(tmp_record, "w") as f:
        f.write(json.dumps({"renames": renames, "delete": list(delete)}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_record, record)
    _fsync_dir(root)
    _roll_forward(root)


def _load_matrix(path: Path) -> np.ndarray:
    """The stored matrix, memory-mapped read-only (an empty one is read: there is nothing to map)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        return np.load(path, allow_pickle=False)


# ---------------------------------------------------------------------------------------------- the set


class EmbeddingSet:
    """One named set of embeddings of a dataset."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------------ metadata

    @property
    def exists(self) -> bool:
        if not (self.root / "meta.json").exists():
            _roll_forward(self.root)
        return (self.root / "meta.json").exists()

    @property
    def meta(self) -> dict[str, Any]:
        _roll_forward(self.root)
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

    def _main(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ids, matrix)`` of the main files (matrix memory-mapped), or None before the first write."""
        _roll_forward(self.root)
        if not (self.root / "ids.npy").exists():
            return None
        ids = np.load(self.root / "ids.npy", allow_pickle=False)
        matrix = _load_matrix(self.root / "embeddings.npy")
        if matrix.ndim != 2 or len(matrix) != len(ids):
            raise InvalidInputError(f"embeddings {self.root.name!r} are damaged: {len(ids)} ids for a matrix of "
                                    f"shape {matrix.shape}; delete the set and compute it again")
        return ids, matrix

    def _sources(self) -> tuple[list[np.ndarray], list[np.ndarray], list[Any], list[int]]:
        """The main rows and every whole part: ids, matrices, stamp loaders, and the parts' numbers."""
        ids, embs, stamps, parts = [], [], [], []
        main = self._main()
        if main is not None:
            ids.append(main[0])
            embs.append(main[1])
            stamps.append(self.root / "stamps.npy")
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
            parts.append(k)
        return ids, embs, stamps, parts

    def append(self, ids: Sequence[str], rows: np.ndarray, stamps: np.ndarray) -> None:
        """Add rows (a batch of a running job): written as a part, ids last, so a part is whole or ignored."""
        parts = self._parts()
        k = (parts[-1] + 1) if parts else 1
        base = self.root / f"part-{k:06d}"
        _save_atomic(Path(f"{base}.emb.npy"), np.ascontiguousarray(rows, dtype=np.float32))
        _save_atomic(Path(f"{base}.stamps.npy"), np.asarray(stamps, dtype=np.int64).reshape(-1, 2))
        _save_atomic(Path(f"{base}.ids.npy"), np.asarray(ids, dtype=ID_DTYPE))

    def _part_files(self, parts: Sequence[int]) -> list[str]:
        return [f"part-{k:06d}.{s}.npy" for k in parts for s in ("emb", "stamps", "ids")]

    def consolidate(self, keep_ids: set[str] | None = None) -> None:
        """Fold parts into the main files (later rows win; ``keep_ids`` drops rows of deleted samples).

        The new matrix is streamed once to its final file; no concatenated copy is made in memory.
        """
        _roll_forward(self.root)
        if not self._parts() and keep_ids is None:
            return
        ids, embs, stamps, parts = self._sources()
        if not ids:
            return
        all_ids = np.concatenate(ids)
        # the last occurrence of each id wins: reverse, take first unique, restore order
        _, first = np.unique(all_ids[::-1], return_index=True)
        pick = np.sort(len(all_ids) - 1 - first)
        if keep_ids is not None:
            pick = pick[np.isin(all_ids[pick], np.asarray(sorted(keep_ids), dtype=ID_DTYPE))]
        if not parts and len(pick) == len(all_ids):
            return  # nothing to drop, nothing to fold
        stamp_arrays = [np.load(s, allow_pickle=False) if isinstance(s, Path) else s for s in stamps]
        dim = int(next((e.shape[1] for e in embs if e.ndim == 2), self.meta.get("dim") or 0))
        offsets = np.cumsum([0] + [len(i) for i in ids])
        writers: list[_NpyWriter] = []
        try:
            w = _NpyWriter(self.root, "embeddings.npy", (len(pick), dim), np.float32)
            writers.append(w)
            for start, stop in iter_blocks(len(pick), dim):
                gp = pick[start:stop]
                src = np.searchsorted(offsets, gp, side="right") - 1
                block = np.empty((len(gp), dim), np.float32)
                for s in np.unique(src).tolist():
                    m = src == s
                    block[m] = embs[s][gp[m] - offsets[s]]
                w.write(block)
            w.finish()
            writers.append(_write_whole(self.root, "stamps.npy",
                                        np.concatenate(stamp_arrays).astype(np.int64).reshape(-1, 2)[pick]))
            writers.append(_write_whole(self.root, "ids.npy", all_ids[pick]))
        except BaseException:
            for w in writers:
                w.abort()
            raise
        meta = self.meta
        meta["count"] = int(len(pick))
        meta["dim"] = meta.get("dim") or (dim or None)
        _commit(self.root, writers, meta, self._part_files(parts))
        for e in embs:
            release(e)

    def put(self, ids: Sequence[str], matrix: Any, stamps: np.ndarray | None = None,
            meta: dict[str, Any] | None = None, what: str = "embeddings") -> None:
        """Store ``matrix``'s rows under ``ids`` with one write of the set's files.

        Rows of ids already stored are replaced; stored rows of other ids are kept (after the old rows,
        new ids follow in the given order). When the new ids cover the stored ones, the matrix is
        streamed straight to the new file in the given order, so reading the same rows back in that order
        maps the file with no copy. Rows are converted to float32 and checked block by block while they
        are written; a row with NaN or inf (or any error) leaves the stored set exactly as it was.
        ``meta`` creates the set (written in the same commit, so a failed first write leaves no set).
        """
        a = check_array(matrix, len(ids), None, what)
        new_ids = np.asarray(ids, dtype=ID_DTYPE)
        n, dim = a.shape
        stamps = np.zeros((n, 2), np.int64) if stamps is None else np.asarray(stamps, np.int64).reshape(n, 2)
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            _roll_forward(self.root)
            _clean_stale(self.root)
            if meta is None:
                meta = self.meta
                if self._parts():
                    self.consolidate()  # rows of an interrupted job are older than these
                    meta = self.meta
            else:
                meta = {**meta, "created_at": time.time()}
            main = self._main()
            if main is not None and main[1].shape[1] != dim:
                raise EmbeddingMismatchError(f"{what} has dimension {dim}, the stored set has {main[1].shape[1]}")
            full = main is None or len(main[0]) == 0 or (len(main[0]) == n and np.array_equal(main[0], new_ids)) \
                or bool(np.isin(main[0], new_ids).all())
            if full:
                writers = self._write_full(new_ids, a, stamps, what)
            else:
                writers = self._write_merged(main, new_ids, a, stamps, what)
            count = writers[0].shape[0]
            _commit(self.root, writers, {**meta, "count": int(count), "dim": int(dim)})
        except BaseException:
            if created and not (self.root / "meta.json").exists():
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        if main is not None:
            release(main[1])

    def _write_full(self, ids: np.ndarray, a: np.ndarray, stamps: np.ndarray, what: str) -> list[_NpyWriter]:
        n, dim = a.shape
        fin = _Finite()
        w = _NpyWriter(self.root, "embeddings.npy", (n, dim), np.float32)
        writers = [w]
        try:
            for start, stop in iter_blocks(n, dim):
                block = _f32_block(a, start, stop)
                if fin.check(block, start) and not fin.count:
                    w.write(block)
            fin.raise_if_bad(what)
            w.finish()
            writers.append(_write_whole(self.root, "stamps.npy", stamps))
            writers.append(_write_whole(self.root, "ids.npy", ids))
        except BaseException:
            for x in writers:
                x.abort()
            raise
        return writers

    def _write_merged(self, main: tuple[np.ndarray, np.ndarray], ids: np.ndarray, a: np.ndarray,
                      stamps: np.ndarray, what: str) -> list[_NpyWriter]:
        old_ids, old = main
        check_finite(a, what)  # before anything is written: the new rows are scattered over the file
        dim = a.shape[1]
        order = np.argsort(old_ids)
        pos = np.clip(np.searchsorted(old_ids, ids, sorter=order), 0, len(old_ids) - 1)
        at = order[pos]
        found = old_ids[at] == ids
        # new row j replaces old row at[j]; the rest of the new rows are appended
        repl_old, repl_new = at[found], np.flatnonzero(found)
        srt = np.argsort(repl_old)
        repl_old, repl_new = repl_old[srt], repl_new[srt]
        added = np.flatnonzero(~found)
        total = len(old_ids) + len(added)
        old_stamps = np.load(self.root / "stamps.npy", allow_pickle=False) if (self.root / "stamps.npy").exists() \
            else np.zeros((len(old_ids), 2), np.int64)
        w = _NpyWriter(self.root, "embeddings.npy", (total, dim), np.float32)
        writers = [w]
        try:
            for start, stop in iter_blocks(len(old_ids), dim):
                block = np.array(old[start:stop], dtype=np.float32)
                lo, hi = np.searchsorted(repl_old, [start, stop])
                if hi > lo:
                    block[repl_old[lo:hi] - start] = a[repl_new[lo:hi]]
                w.write(block)
            for start in range(0, len(added), block_rows(dim)):
                w.write(a[added[start:start + block_rows(dim)]])
            w.finish()
            new_stamps = old_stamps.astype(np.int64).reshape(-1, 2).copy()
            new_stamps[repl_old] = stamps[repl_new]
            writers.append(_write_whole(self.root, "stamps.npy", np.concatenate([new_stamps, stamps[added]])))
            writers.append(_write_whole(self.root, "ids.npy", np.concatenate([old_ids, ids[added]])))
        except BaseException:
            for x in writers:
                x.abort()
            raise
        return writers

    def ids(self) -> np.ndarray:
        self.consolidate()
        main = self._main()
        return main[0] if main is not None else np.empty(0, ID_DTYPE)

    def stamps(self) -> dict[str, tuple[int, int]]:
        self.consolidate()
        main = self._main()
        if main is None:
            return {}
        st = np.load(self.root / "stamps.npy", allow_pickle=False)
        return {i: (int(a), int(b)) for i, (a, b) in zip(main[0].tolist(), st.tolist())}

    def read(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``ids`` in that order, and a boolean mask of which ids have a row (missing rows are 0).

        When ``ids`` are the stored rows in their stored order, the matrix is the read-only memory map of
        the file itself (no copy). Otherwise the rows are gathered block by block into a new array.
        """
        self.consolidate()
        dim = self.meta.get("dim") or 0
        want = np.asarray(ids, dtype=ID_DTYPE)
        main = self._main()
        if main is None:
            return np.zeros((len(want), dim), np.float32), np.zeros(len(want), bool)
        have, matrix = main
        if len(have) == len(want) and np.array_equal(have, want):
            return matrix, np.ones(len(want), bool)
        dim = matrix.shape[1]
        out = np.zeros((len(want), dim), np.float32)
        if not len(have):
            return out, np.zeros(len(want), bool)
        order = np.argsort(have)
        pos = np.clip(np.searchsorted(have, want, sorter=order), 0, len(have) - 1)
        rows = order[pos]
        found = have[rows] == want
        dst = np.flatnonzero(found)
        sel = rows[found]
        # a memory-mapped gather in sorted order reads the file front to back, one block at a time
        srt = np.argsort(sel, kind="stable")
        sel, dst = sel[srt], dst[srt]
        step = block_rows(dim)
        for start in range(0, len(sel), step):
            out[dst[start:start + step]] = matrix[sel[start:start + step]]
        release(matrix)
        return out, found

    def get(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`read`, but the matrix is always a new, writable array."""
        matrix, found = self.read(ids)
        if is_mapped(matrix):
            out = np.empty(matrix.shape, np.float32)
            for start, stop in iter_blocks(len(matrix), matrix.shape[1]):
                out[start:stop] = matrix[start:stop]
            release(matrix)
            matrix = out
        return matrix, found

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- collections


def embedding_set(dataset: "Dataset", name: str) -> EmbeddingSet:
    """The stored set ``name`` of ``dataset`` (which may not exist yet)."""
    from .fields import check_name

    return EmbeddingSet(dataset.arrays_dir / "embeddings" / check_name(name))


def read_rows(samples: "SampleCollection", embeddings_field: str) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, found)``: the stored set's rows of ``samples`` in view order (objects, for a patches set)
    and which of them are stored; missing rows are NaN.

    Every stored row was checked finite when it was written, so ``found`` tells which rows are usable
    without reading the matrix (a check of every value would bring the whole file into memory). The
    whole set in its stored order is the read-only memory map of the file (no copy); any other view
    gets a new array.
    """
    store = embedding_set(samples._dataset, embeddings_field)
    meta = store.meta
    keys = samples.to_patches(meta["patches_field"]).values("id") if meta.get("kind") == "patches" \
        and not samples._is_patches else samples.values("id")
    matrix, found = store.read(keys)
    if not found.all():
        matrix[~found] = np.nan  # a gathered copy: only the stored order in whole is the map itself
    return matrix, found


def read_embeddings(samples: "SampleCollection", embeddings_field: str) -> np.ndarray:
    """The stored set's rows of ``samples`` in view order; missing rows NaN (see :func:`read_rows`)."""
    return read_rows(samples, embeddings_field)[0]


def write_embeddings(samples: "SampleCollection", embeddings_field: str, embeddings: Any,
                     model_name: str = "user") -> None:
    """Store a user-supplied ``[N, D]`` array (view order) as embeddings, written once to its final file.

    Checked before the set changes: a bad array leaves the stored set (or its absence) as it was.
    """
    ids = samples.values("id")
    store = embedding_set(samples._dataset, embeddings_field)
    exists = store.exists
    dim = store.meta.get("dim") if exists else None
    a = check_array(embeddings, len(ids), dim)
    fingerprint = f"user:{model_name}"
    meta = None
    if exists:
        store.check_compatible(fingerprint, a.shape[1])
    else:
        meta = {"model": model_name, "fingerprint": fingerprint, "config": {}, "dim": int(a.shape[1]),
                "kind": "patches" if samples._is_patches else "samples",
                "patches_field": samples._query().patches_field, "count": 0}
    store.put(ids, a, None, meta)
