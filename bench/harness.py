"""Measure a function in a fresh process: wall time, CPU time, and peak memory above the start.

Each case runs in a spawned interpreter so its peak RSS is its own. Figures are reported as ratios
against a named baseline measured in the same run, because this machine is shared and noisy.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).parent / "results"


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _child(fn: Callable[..., Any], args: tuple, setup: Callable[..., Any] | None, queue: Any) -> None:
    try:
        state = setup(*args) if setup else args
        base = _rss_kib("VmRSS")
        t0, c0 = time.perf_counter(), time.process_time()
        extra = fn(*state) if setup else fn(*args)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        queue.put({"wall_s": wall, "cpu_s": cpu, "peak_mib": (_rss_kib("VmHWM") - base) / 1024,
                   "extra": extra})
    except BaseException as e:  # report, never hang the parent
        queue.put({"error": repr(e)})


def measure(fn: Callable[..., Any], *args: Any, setup: Callable[..., Any] | None = None,
            repeat: int = 1) -> dict[str, Any]:
    """Best-of-``repeat`` timing of ``fn(*setup(*args))`` (or ``fn(*args)``) in fresh processes."""
    ctx = mp.get_context("spawn")
    runs = []
    for _ in range(repeat):
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(fn, args, setup, q))
        p.start()
        out = q.get()
        p.join()
        if "error" in out:
            raise RuntimeError(f"benchmark {fn.__name__} failed: {out['error']}")
        runs.append(out)
    best = min(runs, key=lambda r: r["wall_s"])
    best["peak_mib"] = max(r["peak_mib"] for r in runs)
    return best


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0]}


def save(name: str, rows: list[dict[str, Any]]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows},
                               indent=2))
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(x.ljust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Make VmHWM the current RSS, so the peak measured next is the timed call's own (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
