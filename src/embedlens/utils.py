"""Small shared helpers: parallel maps with progress bars."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int | None = None,
                 desc: str = "", progress: bool = True) -> list[tuple[Any, BaseException | None]]:
    """Run ``fn`` over ``items`` in threads, in order; each result is ``(value, None)`` or ``(None, error)``.

    Threads suit the work here (image decoding, file I/O): Pillow and the OS release the GIL.
    Ctrl-C stops the pool without waiting for the queued items.
    """

    def safe(x: Any) -> tuple[Any, BaseException | None]:
        try:
            return fn(x), None
        except Exception as e:  # reported per item to the caller, which decides to skip or raise
            return None, e

    workers = num_workers or default_workers()
    out: list = []
    with tqdm(total=len(items), desc=desc, disable=not progress, unit="img") as bar:
        if workers <= 1:
            for x in items:
                out.append(safe(x))
                bar.update()
            return out
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for r in pool.map(safe, items, chunksize=1):
                out.append(r)
                bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return out


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
