"""App benchmark: a million points in the WebGL plot, in headless Chromium (software GL).

Run: ``.venv/bin/python bench/bench_app.py [--quick] [--points N]``. Needs /usr/bin/chromium and the built
page (``make install``); without them it says so and exits 0.

Setup (untimed): a dataset of N samples (default 1,000,000; ``--quick`` 200,000) whose images do not exist
(the grid shows placeholders), a ``cluster`` label field, and a ``method="manual"`` visualization run of
N random points in 10 Gaussian clusters.

Measured, in the page with ``performance.now()`` (test hooks on ``window.__embedlens``):

* open: from asking for the panel (``openRun``) to the first frame drawn with the points; cold (the page's
  first load, server cache empty) and warm (second time), with the fetch / draw / first-frame split;
* colour: colouring by the 10-category field (codes fetched as uint8 bytes);
* lasso: a lasso drawn with the mouse around one cluster (~N/10 points) -> the grid showing its samples:
  mouse-up -> first grid rows in the DOM (``ms``), and mouse-up -> the server's answer to the lasso
  (``answered_ms``; the page shows the rows before that answer, from the points it holds);
* pan and zoom: frames drawn per second (regl-scatterplot's ``draw`` events) and animation frames per
  second (requestAnimationFrame) while the mouse drags / the wheel turns for ~3 s;
* the grid on the MNIST set: from navigation start to the first screen of thumbnails all decoded, with
  the thumbnails made on the way (cold) and cached (warm).

``--compare REV`` measures only the selection, in the page as it was at git revision REV (built into a
temporary folder) and in this one, on the same points and the same server (this checkout's) in one run,
the pages taking turns ``--runs`` times: first frame, a lasso and a 30-move box drag, each from mouse-up to
the animation frame that shows the grid's first row and the selection's count, with the marks on the way
where the page has them (point-in-polygon test, selection counted, rows asked for, the request's resource
timing, the server's own time for the rows, rows in the DOM, the selection sent to the server).

``--cases thumbnails``: MNIST-5000 (real PNGs) at their UMAP positions, zoomed in until the plot draws
images; the same back-and-forth pan with images in the plot and with dots only, alternated three times:
drawn frames per second, frame times (requestAnimationFrame intervals) and the image layer's own ms a
frame (results/app-thumbnails.json).

``--cases atlas``: Apple's Embedding Atlas 0.22 (installed by bench/atlas_env.sh in its own virtualenv)
and embedlens on the same points (``--sizes``, default 100k and 1M), one after the other in one headless
Chromium: first frame with all points (from navigation, by screenshots of the plot: the same method for
both), the same 30-move box drag around one cluster (wall), and mouse-up -> the selection count and the
first linked row at their final text (results/app-atlas-side-by-side.json).

Baseline in the same run: the points route as binary float32 against the same points as a JSON array
(what the app never sends), server side and transfer size. Software GL on a shared 2-core machine: the
in-page figures are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import save, table

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def points(n: int):
    """N random points in 10 Gaussian clusters on a circle of radius 10, and their cluster numbers."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    angles = labels * (2 * np.pi / 10)
    centers = np.stack([np.cos(angles), np.sin(angles)], 1) * 10
    pts = (centers + rng.normal(0, 1.2, (n, 2))).astype(np.float32)
    return n, pts, labels


def build(n: int):
    _, pts, labels = points(n)
    return build_dataset(n, pts, labels), pts, labels


def build_dataset(n: int, pts: np.ndarray, labels: np.ndarray):
    import embedlens as el
    from embedlens.brain.visualization import compute_visualization

    t = time.perf_counter()
    ds = el.Dataset("bench-app", overwrite=True)
    ds.add_samples([el.Sample(f"/nonexistent/bench/{i:07d}.png", cluster=f"c{labels[i]}") for i in range(n)])
    compute_visualization(ds, points=pts, brain_key="points", progress=False)
    print(f"setup: {n:,} samples and points in {time.perf_counter() - t:.1f} s", flush=True)
    return ds


def baseline_transfer(session, pts: np.ndarray) -> list[dict]:
    import httpx

    url = f"http://127.0.0.1:{session.port}/api/points/points"
    httpx.get(url, timeout=120)  # load the run into the server's cache
    t = time.perf_counter()
    r = httpx.get(url, timeout=120)
    binary_s = time.perf_counter() - t
    arr = np.frombuffer(r.content, dtype="<f4")
    t = time.perf_counter()
    text = json.dumps(pts.tolist())
    json_encode_s = time.perf_counter() - t
    t = time.perf_counter()
    json.loads(text)
    json_decode_s = time.perf_counter() - t
    assert arr.size == pts.size
    return [
        {"case": "points route: binary float32", "seconds": binary_s, "MB": len(r.content) / 1e6},
        {"case": "baseline: same points as JSON (encode + decode)", "seconds": json_encode_s + json_decode_s,
         "MB": len(text) / 1e6},
        {"case": "ratio JSON / binary", "seconds": (json_encode_s + json_decode_s) / binary_s,
         "MB": len(text) / len(r.content)},
    ]


def lasso_polygon_around(page, center: np.ndarray, half: float) -> list[tuple[int, int]]:
    corners = [center + np.array(d) * half for d in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    px = [page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(c[0]), float(c[1])]) for c in corners]
    return [(round(x), round(y)) for x, y in px]


def draw_lasso(page, vertices) -> None:
    page.mouse.move(*vertices[0])
    page.mouse.down()
    for x, y in [*vertices[1:], vertices[0]]:
        page.mouse.move(x, y, steps=8)
        page.wait_for_timeout(60)
    page.mouse.up()


def frames_during(page, action, seconds: float) -> dict:
    page.evaluate("""() => { window.__raf = 0; window.__rafOn = true;
        const f = () => { if (!window.__rafOn) return; window.__raf++; requestAnimationFrame(f); };
        requestAnimationFrame(f); window.__draw0 = window.__embedlens.plot.frames;
        window.__t0 = performance.now(); }""")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        action()
    out = page.evaluate("""() => { window.__rafOn = false; const ms = performance.now() - window.__t0;
        return {ms, raf: window.__raf, draws: window.__embedlens.plot.frames - window.__draw0}; }""")
    return {"draw_fps": out["draws"] / out["ms"] * 1000, "raf_fps": out["raf"] / out["ms"] * 1000,
            "seconds": out["ms"] / 1000}


def grid_first_screen(browser) -> list[dict]:
    """The MNIST set (5,000 PNGs): from opening the page to the grid's first screen of thumbnails, all
    images decoded; cold (thumbnails made on the way) and warm (cached on disk)."""
    import shutil

    import embedlens as el
    from embedlens.app import launch_app

    ds = el.load_sample_dataset("mnist", progress=False)
    shutil.rmtree(ds.thumbnails_dir, ignore_errors=True)
    session = launch_app(ds, port=0, auto=False)
    rows = []
    try:
        for case in ("cold: thumbnails made", "warm: thumbnails cached"):
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(session.url)
            page.wait_for_function("""() => { const imgs = [...document.querySelectorAll('#grid-spacer .tile img')];
                return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=120_000)
            t = page.evaluate("""() => ({rows: window.__embedlens.grid.renderedAt, done: performance.now(),
                tiles: document.querySelectorAll('#grid-spacer .tile img').length})""")
            rows.append({"step": f"MNIST grid, first screen ({t['tiles']} tiles), {case}",
                         "ms": t["done"], "rows_ms": t["rows"]})
            page.close()
    finally:
        session.close()
    return rows


def build_old_page(rev: str) -> Path:
    """The page as it was at git revision ``rev``, built into a temporary folder (the same node_modules)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="bench_app_old_"))
    archive = subprocess.run(["git", "archive", rev, "frontend"], cwd=root, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    (work / "frontend" / "node_modules").symlink_to(root / "frontend" / "node_modules")
    out = work / "static"
    subprocess.run(["npx", "vite", "build", "--outDir", str(out), "--emptyOutDir"], cwd=work / "frontend",
                   check=True, capture_output=True)
    return out


# The frame that shows the grid's first row: the first animation frame (a frame about to be painted) whose
# first tile is a new element, with the time; and the selection count's text, likewise. Installed once a page.
ROW_PROBE = """() => { const P = window.__rowProbe = {tile: null, rowAt: 0, count: null, countAt: 0};
    P.reset = () => { P.tile = document.querySelector('#grid-spacer .tile'); P.rowAt = 0; P.countAt = 0;
        P.count = document.querySelector('#selection-count').textContent; };
    const tick = () => { const t = performance.now(); const e = document.querySelector('#grid-spacer .tile');
        if (!P.rowAt && e && e !== P.tile && e.dataset.id) P.rowAt = t;
        const c = document.querySelector('#selection-count').textContent;
        if (!P.countAt && c !== P.count && !c.includes('lasso')) P.countAt = t;
        requestAnimationFrame(tick); };
    P.reset(); requestAnimationFrame(tick); }"""

# Marks of the page, from mouse-up, where it has them (an older page lacks some: None).
MARKS = {"inside_ms": "plot.inside", "counted_ms": "plot.selected", "rows_asked_ms": "rowsAsked",
         "rows_fetched_ms": "rowsFetched", "grid_dom_ms": "gridUpdated", "lasso_sent_ms": "lassoSent"}


def timed_point_rows() -> list[float]:
    """Time the server's answers to the grid's rows by point (AppState.point_rows, in this process): the
    list that each answer's milliseconds are appended to."""
    from embedlens.app.state import AppState

    calls: list[float] = []
    inner = AppState.point_rows

    def point_rows(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(self, *args, **kwargs)
        finally:
            calls.append((time.perf_counter() - t) * 1000)

    AppState.point_rows = point_rows
    return calls


def selection_timings(browser, url: str, pts: np.ndarray, labels: np.ndarray, runs: int = 1,
                      server_calls: list[float] | None = None) -> list[dict]:
    """In one page: first frame, then `runs` times a lasso around cluster 0 and a 30-move box drag around
    cluster 3, each from mouse-up to the frame showing the grid's first rows (``ms``), with the page's own
    marks on the way (pointsInside done, selection counted, rows asked for and answered, rows in the DOM)."""
    page = browser.new_page(viewport={"width": 1400, "height": 860})
    page.goto(url)
    page.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=600_000)
    page.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0 && window.__embedlens.plot.header",
                           timeout=600_000)
    t = page.evaluate("window.__embedlens.plot.timings")
    rows = [{"step": "first frame (open panel)", "ms": t["firstFrame"] - t["openStart"]}]
    page.evaluate(ROW_PROBE)
    if server_calls is not None:
        server_calls.clear()

    def settle() -> None:
        # the points redrawn and the server told, so that one selection does not slow the next
        page.wait_for_timeout(1500)
        page.wait_for_function("window.__embedlens.timings.lassoAnswered > window.__embedlens.plot.timings.pointerUp",
                               timeout=600_000)
        page.wait_for_timeout(1500)
        page.evaluate("window.__rowProbe.reset()")
        if server_calls is not None:
            server_calls.clear()

    def after_drag(step: str, wall_s: float, run: int) -> None:
        page.wait_for_function("window.__rowProbe.rowAt > 0 && window.__rowProbe.countAt > 0", timeout=600_000)
        page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')", timeout=600_000)
        t = page.evaluate("""({e: window.__embedlens.timings, p: window.__embedlens.plot.timings,
            probe: window.__rowProbe, sel: window.__embedlens.selectedPoints().length,
            rows: performance.getEntriesByType('resource').filter((r) => r.name.endsWith('/rows')).pop() || null})""")
        up = t["p"]["pointerUp"]
        marks = {}
        for name, where in MARKS.items():
            obj, key = (t["p"], where[5:]) if where.startswith("plot.") else (t["e"], where)
            v = obj.get(key)
            marks[name] = v - up if v and v >= up else None
        r = t["rows"]  # the rows' request as the browser's resource timing saw it (the newer page's only)
        if r and r["startTime"] >= up:
            marks.update(rows_sent_ms=r["requestStart"] - up, rows_response_ms=r["responseStart"] - up,
                         rows_received_ms=r["responseEnd"] - up)
        if server_calls:
            marks["rows_server_ms"] = server_calls[0]  # the first page of rows since the last settle()
        rows.append({"step": f"{step}: {t['sel']:,} points", "run": run, "ms": t["probe"]["rowAt"] - up,
                     "count_frame_ms": t["probe"]["countAt"] - up, **marks, "drag_wall_s": wall_s})
        settle()

    for run in range(runs):
        page.click("#mode-lasso")
        poly = lasso_polygon_around(page, pts[labels == 0].mean(0), 3.0)
        t0 = time.perf_counter()
        draw_lasso(page, poly)
        after_drag("lasso", time.perf_counter() - t0, run)
        page.click("#mode-box")
        corners = lasso_polygon_around(page, pts[labels == 3].mean(0), 3.0)
        (x0, y0), (x1, y1) = corners[0], corners[2]
        t0 = time.perf_counter()
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 1, y0 + 1)
        page.mouse.move(x1, y1, steps=30)
        page.mouse.up()
        after_drag("box, 30 moves", time.perf_counter() - t0, run)
    page.close()
    return rows


SELECTION_COLUMNS = ["page", "step", "runs", "ms", "count_frame_ms", "inside_ms", "counted_ms", "rows_asked_ms",
                     "rows_sent_ms", "rows_server_ms", "rows_response_ms", "rows_received_ms", "rows_fetched_ms",
                     "grid_dom_ms", "lasso_sent_ms"]


def compare(n: int, rev: str, runs: int) -> None:
    """The selection figures of the page at ``rev`` and of this one, on the same points in one run: the
    pages take turns (old, new, new, old, ...), each in a fresh server, so that the shared machine's load
    hits both alike; medians over the runs."""
    import embedlens.app.server as server
    from playwright.sync_api import sync_playwright

    from embedlens.app import launch_app

    old_static = build_old_page(rev)
    ds, pts, labels = build(n)
    server_calls = timed_point_rows()
    pages = [(f"old page ({rev})", old_static), ("this page", None)]
    rows: list[dict] = []
    load = [os.getloadavg()[0]]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for run in range(runs):
            for name, static in (pages if run % 2 == 0 else pages[::-1]):
                default = server.STATIC_DIR
                if static is not None:
                    server.STATIC_DIR = static  # read by create_app when the session starts
                try:
                    session = launch_app(ds, port=0, auto=False)
                finally:
                    server.STATIC_DIR = default
                try:
                    rows += [{"page": name, **r, "run": run}
                             for r in selection_timings(browser, session.url, pts, labels, server_calls=server_calls)]
                finally:
                    session.close()
                load.append(os.getloadavg()[0])
        browser.close()
    ds.delete()
    summary = []
    for name, _ in pages:
        for kind in ("first frame", "lasso", "box"):
            rs = [r for r in rows if r["page"] == name and r["step"].startswith(kind)]
            med = {c: float(np.median([r[c] for r in rs])) for c in SELECTION_COLUMNS[3:]
                   if all(r.get(c) is not None for r in rs)}
            summary.append({"summary": True, "page": name, "step": rs[-1]["step"].split(":")[0], "runs": len(rs),
                            **med})
    print(f"\n{n:,} points, headless Chromium (software GL), old and new page taking turns; "
          f"load (1 min) {min(load):.1f}-{max(load):.1f}\n")
    print("ms: mouse-up -> the frame showing the grid's first row; the other columns: mouse-up -> that mark\n")
    print(table(rows, ["page", "run", *SELECTION_COLUMNS[1:]]))
    print(f"\nmedians of {runs} runs\n")
    print(table(summary, SELECTION_COLUMNS))
    path = save(f"app-selection-{n}", [{"points": n, "load_1m": [min(load), max(load)], **r} for r in summary + rows])
    print(f"\nsaved {path}")


def back_and_forth_pan(page) -> tuple[Callable[[], None], tuple[float, float]]:
    """The plot in pan mode, and a pan: a 15-step mouse drag of (120, 60) px from the plot's centre, the
    next one back, so that repeated pans stay over the same points. Also returns the centre."""
    page.click("#mode-pan")
    box = page.locator("#plot-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    sign = [1]

    def pan() -> None:
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + 120 * sign[0], cy + 60 * sign[0], steps=15)
        page.mouse.up()
        sign[0] *= -1

    return pan, (cx, cy)


# ------------------------------------------------------------------ images in the plot vs dots (issue 13)

def pan_frames(page, pan, seconds: float) -> dict:
    """While `pan` runs for `seconds`: the scatterplot's frames per second, and the page's frame times
    (requestAnimationFrame intervals: median and 90th percentile), with the thumbnail layer's own time."""
    page.evaluate("""() => { window.__ts = []; window.__rafOn = true;
        const f = (t) => { if (!window.__rafOn) return; window.__ts.push(t); requestAnimationFrame(f); };
        requestAnimationFrame(f); window.__draw0 = window.__embedlens.plot.frames;
        window.__embedlens.plot.thumbs.resetTimings(); window.__t0 = performance.now(); }""")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pan()
    out = page.evaluate("""() => { window.__rafOn = false; const ms = performance.now() - window.__t0;
        const ts = window.__ts; const dt = ts.slice(1).map((t, k) => t - ts[k]).sort((a, b) => a - b);
        const s = window.__embedlens.plot.thumbs.stats;
        return {ms, draws: window.__embedlens.plot.frames - window.__draw0,
                median: dt.length ? dt[dt.length >> 1] : null, p90: dt.length ? dt[Math.floor(dt.length * 0.9)] : null,
                layer_ms: s.frames ? s.drawMs / s.frames : 0, drawn: s.drawn}; }""")
    return {"draw_fps": out["draws"] / out["ms"] * 1000, "median_frame_ms": out["median"],
            "p90_frame_ms": out["p90"], "layer_ms_per_frame": out["layer_ms"], "images_drawn": out["drawn"],
            "seconds": out["ms"] / 1000}


def thumbnails_vs_dots(browser, rounds: int = 3) -> list[dict]:
    """MNIST-5000 (real PNGs) at their UMAP positions, zoomed in until at most THUMB_BUDGET points are on
    screen: the same back-and-forth pan with images in the plot and with dots only, alternated ``rounds``
    times (the shared machine's load hits both alike); medians over the rounds."""
    import embedlens as el
    from embedlens.app import launch_app
    from embedlens.brain.visualization import compute_visualization

    ds = el.load_sample_dataset("mnist", progress=False)
    if "umap" not in ds.list_brain_runs():
        compute_visualization(ds, model="pixels", method="umap", brain_key="umap", seed=51, progress=False)
    session = launch_app(ds, port=0, auto=False)
    stats = "window.__embedlens.plot.thumbs.stats"
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 860})
        page.goto(session.url)
        page.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=600_000)
        page.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0 && window.__embedlens.plot.count > 0",
                               timeout=600_000)
        if page.evaluate("window.__embedlens.plot.key") != "umap":
            page.evaluate("window.__embedlens.openRun('umap')")
        page.evaluate("window.__embedlens.plot.setImagesInPlot(true)")
        # zoom in over point 0 as a user does, until the layer draws images
        for _ in range(80):
            x, y = page.evaluate("() => { const [a, b] = window.__embedlens.plot.dataPoint(0);"
                                 " return window.__embedlens.toPage(a, b); }")
            page.mouse.move(x, y)
            page.mouse.wheel(0, -200)
            page.wait_for_timeout(150)
            if page.evaluate(f"{stats}.mode") == "images":
                break
        pan, _ = back_and_forth_pan(page)
        # warm: every image along the pan loaded and cached
        for _ in range(4):
            pan()
            page.wait_for_function(f"{stats}.inFlight === 0 && {stats}.drawn === {stats}.onScreen", timeout=120_000)
        on_screen = page.evaluate(f"{stats}.onScreen")
        runs: dict[str, list[dict]] = {"images": [], "dots": []}
        for _ in range(rounds):
            for mode in ("images", "dots"):
                page.evaluate(f"window.__embedlens.plot.setImagesInPlot({'true' if mode == 'images' else 'false'})")
                page.wait_for_timeout(300)
                runs[mode].append(pan_frames(page, pan, 3.0))
        page.evaluate("window.__embedlens.plot.setImagesInPlot(true)")
        page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench_app_thumbnails.png"))
        page.close()
    finally:
        session.close()
    rows = []
    for mode, rs in runs.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in rs[0] if rs[0][k] is not None}
        rows.append({"step": f"MNIST-5000 pan zoomed in ({on_screen} points on screen), {mode}"
                             f" (median of {rounds})", **med})
    # the page idles at 60 Hz between the pointer's moves, so the median frame is the idle one: the drawn
    # frames per second and the slow frames (90th percentile) are where a cost would show
    rows.append({"step": "ratio images / dots", "draw_fps": rows[0]["draw_fps"] / rows[1]["draw_fps"],
                 "p90_frame_ms": rows[0]["p90_frame_ms"] / rows[1]["p90_frame_ms"],
                 "median_frame_ms": rows[0]["median_frame_ms"] / rows[1]["median_frame_ms"]})
    return rows


# ------------------------------------------------------------------ Embedding Atlas 0.22 side by side (issue 15)

# In-page probes, the same for both apps: every animation frame, the text of the selection count and of the
# first linked row, with the time each last changed; the mouse-up time (capture phase: before the app).
PROBE = """(sel) => { const P = window.__probe = {count: null, row: null, countAt: 0, rowAt: 0, up: 0, on: true};
    window.addEventListener('pointerup', () => { P.up = performance.now(); }, true);
    window.addEventListener('mouseup', () => { if (!P.up) P.up = performance.now(); }, true);
    const read = (q) => { if (q === 'atlas-count') { const d = [...document.querySelectorAll('div')].filter(
          (e) => /^[\\d,]+ \\/ [\\d,]+ points$/.test(e.innerText.trim()))[0]; return d ? d.innerText : null; }
        if (q === 'atlas-row') { const r = document.querySelectorAll('tr')[1]; return r ? r.innerText : null; }
        const e = document.querySelector(q); return e ? (e.dataset.id || e.textContent) : null; };
    const tick = () => { if (!P.on) return; const t = performance.now();
        const c = read(sel.count); if (c !== P.count) { P.count = c; P.countAt = t; }
        const r = read(sel.row); if (r !== P.row) { P.row = r; P.rowAt = t; }
        requestAnimationFrame(tick); };
    requestAnimationFrame(tick); }"""
APPS = {
    "embedlens": {"count": "#selection-count", "row": "#grid-spacer .tile"},
    "atlas": {"count": "atlas-count", "row": "atlas-row"},
}


def plot_ink(page, clip: dict, background: tuple[int, int, int]) -> int:
    """Pixels of the plot's area (a screenshot) that differ from its background: how much is drawn."""
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(np.int16)
    return int((np.abs(img - np.array(background)).sum(-1) > 40).sum())


def first_frame_polled(page, clip: dict, background, t0: float, until_s: float = 600) -> tuple[float, int]:
    """Seconds from navigation (t0) to the first screenshot of the plot with at least 95% of the ink it
    ends with (stable for 3 polls), and that ink. The same for both apps; ~0.2-0.5 s resolution."""
    series = []
    while time.perf_counter() - t0 < until_s:
        series.append((time.perf_counter() - t0, plot_ink(page, clip, background)))
        last = [s[1] for s in series[-4:]]
        if len(last) == 4 and last[-1] > 1000 and max(last) - min(last) <= 0.01 * last[-1]:
            break
        page.wait_for_timeout(100)
    final = series[-1][1]
    return next(t for t, ink in series if ink >= 0.95 * final), final


def box_drag(page, x0: float, y0: float, x1: float, y1: float, modifiers: list[str] = ()) -> float:
    """The same 30-move box drag in either app; wall seconds from mouse-down to mouse-up returning."""
    t0 = time.perf_counter()
    for k in modifiers:
        page.keyboard.down(k)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 1, y0 + 1)
    page.mouse.move(x1, y1, steps=30)
    page.mouse.up()
    for k in modifiers:
        page.keyboard.up(k)
    return time.perf_counter() - t0


def after_box(page, settle_ms: int = 3000) -> dict:
    """Mouse-up -> the selection count and the first linked row at their final text (0 if they were already
    final at mouse-up: the app updated them during the drag)."""
    page.wait_for_timeout(settle_ms)
    p = page.evaluate("window.__probe")
    while True:  # wait until neither has changed for settle_ms
        page.wait_for_timeout(500)
        now = page.evaluate("[window.__probe, performance.now()]")
        q, t = now
        if t - max(q["countAt"], q["rowAt"]) > settle_ms or t - p["up"] > 600_000:
            break
    return {"counts_ms": max(0.0, q["countAt"] - q["up"]), "rows_ms": max(0.0, q["rowAt"] - q["up"]),
            "count_text": (q["count"] or "").strip().replace("\n", " ")[:60]}


def atlas_scale(page, clip: dict, pts: np.ndarray, background) -> tuple[float, float, float]:
    """Atlas's data -> page mapping, measured from its drawing (it exposes no camera): the ink's centroid is
    the points' centroid, and its mean distance from it is the points' mean distance from theirs."""
    from io import BytesIO

    from PIL import Image

    img = np.asarray(Image.open(BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(np.int16)
    ink = np.abs(img - np.array(background)).sum(-1).astype(np.float64)
    ink[ink <= 40] = 0
    ys, xs = np.nonzero(ink)
    w = ink[ys, xs]
    mx, my = np.average(xs, weights=w), np.average(ys, weights=w)
    r_px = np.average(np.hypot(xs - mx, ys - my), weights=w)
    c = pts.mean(0)
    r_data = np.hypot(*(pts - c).T).mean()
    return clip["x"] + mx, clip["y"] + my, r_px / r_data


def side_by_side(n: int, pts: np.ndarray, labels: np.ndarray, browser, runs: int) -> list[dict]:
    """Embedlens and Embedding Atlas 0.22 on the same N points, one after the other in one Chromium: first
    frame with all points (from navigation), a 30-move box drag around cluster 3 (wall), mouse-up -> the
    selection count and the first linked row."""
    import socket
    import subprocess

    import pandas as pd

    from embedlens.app import launch_app

    root = Path(__file__).resolve().parents[1]
    exe = subprocess.run(["bash", str(root / "bench" / "atlas_env.sh")], check=True, capture_output=True,
                         text=True).stdout.strip().splitlines()[-1]
    work = Path(tempfile.mkdtemp(prefix="bench_atlas_"))
    parquet = work / "points.parquet"
    pd.DataFrame({"x": pts[:, 0], "y": pts[:, 1], "cluster": [f"c{v}" for v in labels]}).to_parquet(parquet)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    atlas = subprocess.Popen([exe, str(parquet), "--x", "x", "--y", "y", "--host", "127.0.0.1", "--port", str(port),
                              "--no-auto-port"], cwd=work, stdout=open(work / "atlas.log", "w"), stderr=subprocess.STDOUT)
    ds = build_dataset(n, pts, labels)
    session = launch_app(ds, port=0, auto=False)
    rows = []
    try:
        import httpx

        for _ in range(600):  # Atlas reads the parquet before it listens
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(1)
        c3 = pts[labels == 3].mean(0)
        for run in range(runs):
            for app in ("embedlens", "atlas"):
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                t0 = time.perf_counter()
                if app == "embedlens":
                    page.goto(session.url)
                    page.wait_for_selector("#plot-canvas")  # images in the plot stay on, as a user has them
                    clip = page.locator("#plot-box").bounding_box()
                    background = (0x16, 0x18, 0x1d)
                else:
                    page.goto(f"http://127.0.0.1:{port}/")
                    page.wait_for_selector("canvas", timeout=600_000)
                    clip = page.locator("canvas").first.bounding_box()
                    background = (255, 255, 255)
                first_s, ink = first_frame_polled(page, clip, background, t0)
                if app == "embedlens":
                    page.wait_for_function("window.__embedlens.ready && window.__embedlens.plot.timings.firstFrame > 0",
                                           timeout=600_000)
                    own = page.evaluate("window.__embedlens.plot.timings")
                    page.click("#mode-box")
                    corners = lasso_polygon_around(page, c3, 3.0)
                    (x0, y0), (x1, y1) = corners[0], corners[2]
                else:
                    own = None
                    page.wait_for_function("document.body.innerText.includes(' points')", timeout=600_000)
                    page.click("button[title^='Toggle rectangle selection mode']")
                    cx, cy, scale = atlas_scale(page, clip, pts, background)
                    c = pts.mean(0)
                    x0, y0 = cx + (c3[0] - 3 - c[0]) * scale, cy - (c3[1] - 3 - c[1]) * scale
                    x1, y1 = cx + (c3[0] + 3 - c[0]) * scale, cy - (c3[1] + 3 - c[1]) * scale
                page.evaluate(PROBE, APPS[app])
                page.wait_for_timeout(500)
                wall = box_drag(page, x0, y0, x1, y1)
                linked = after_box(page)
                page.screenshot(path=str(work / f"{app}-{n}-{run}.png"))
                rows.append({"app": app, "points": n, "run": run, "first_frame_s": first_s,
                             "own_first_frame_s": own["firstFrame"] / 1000 if own else None,
                             "box_drag_wall_s": wall, **linked, "page_errors": errors[:3]})
                page.close()
    finally:
        atlas.terminate()
        atlas.wait(30)
        session.close()
        ds.delete()
    print(f"(Atlas log and screenshots: {work})")
    return rows


def atlas_cases(sizes: list[int], runs: int) -> None:
    from playwright.sync_api import sync_playwright

    rows: list[dict] = []
    load = os.getloadavg()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for n in sizes:
            _, pts, labels = points(n)
            rows += side_by_side(n, pts, labels, browser, runs)
        browser.close()
    summary = []
    for n in sizes:
        for app in ("embedlens", "atlas"):
            rs = [r for r in rows if r["points"] == n and r["app"] == app]
            summary.append({"app": app, "points": n, "runs": len(rs),
                            **{k: float(np.median([r[k] for r in rs]))
                               for k in ("first_frame_s", "box_drag_wall_s", "counts_ms", "rows_ms")},
                            "count_text": rs[-1]["count_text"]})
    print(f"\nEmbedding Atlas 0.22 and embedlens side by side, headless Chromium (software GL); load {load}\n")
    print(table(summary, ["app", "points", "runs", "first_frame_s", "box_drag_wall_s", "counts_ms", "rows_ms",
                          "count_text"]))
    path = save("app-atlas-side-by-side", [{"summary": True, **r} for r in summary] + rows)
    print(f"\nsaved {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--compare", metavar="REV", default=None,
                    help="only the selection figures, of the page at git revision REV and of this one")
    ap.add_argument("--cases", default="main",
                    help="comma-separated: main (the figures above), thumbnails (MNIST-5000 images in the plot vs "
                         "dots while panning), atlas (Embedding Atlas 0.22 side by side at --sizes)")
    ap.add_argument("--sizes", default="100000,1000000", help="points for the atlas case")
    ap.add_argument("--runs", type=int, default=1,
                    help="runs per app and size in the atlas case, per page with --compare (medians)")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    if cases - {"main", "thumbnails", "atlas"}:
        ap.error(f"unknown cases: {sorted(cases - {'main', 'thumbnails', 'atlas'})}")
    if "thumbnails" in cases or "atlas" in cases:
        from embedlens.app import STATIC_BUILT

        if not os.path.exists(CHROMIUM) or not STATIC_BUILT():
            print(f"bench_app: skipped ({CHROMIUM} or the built page is missing)")
            return
        os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="bench_app_")
    if "thumbnails" in cases:
        from playwright.sync_api import sync_playwright

        load = os.getloadavg()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            rows = thumbnails_vs_dots(browser)
            browser.close()
        print(f"\nImages in the plot vs dots, MNIST-5000, headless Chromium (software GL); load {load}\n")
        print(table(rows, ["step", "median_frame_ms", "p90_frame_ms", "draw_fps", "layer_ms_per_frame",
                           "images_drawn"]))
        print(f"\nsaved {save('app-thumbnails', rows)}")
    if "atlas" in cases:
        atlas_cases([int(v) for v in args.sizes.split(",")], args.runs)
    if "main" not in cases:
        return
    if args.compare:
        os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="bench_app_")
        compare(args.points or 100_000, args.compare, args.runs)
        return
    n = args.points or (200_000 if args.quick else 1_000_000)
    from embedlens.app import STATIC_BUILT

    if not os.path.exists(CHROMIUM) or not STATIC_BUILT():
        print(f"bench_app: skipped ({CHROMIUM} or the built page is missing: apt-get install chromium; make install)")
        return
    os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="bench_app_")
    from playwright.sync_api import sync_playwright

    from embedlens.app import launch_app

    ds, pts, labels = build(n)
    session = launch_app(ds, port=0, auto=False)
    rows: list[dict] = []
    try:
        transfer = baseline_transfer(session, pts)
        session.refresh()  # forget the cached run: the page's first open is cold
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(session.url)
            page.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=600_000)
            page.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0", timeout=600_000)
            t = page.evaluate("window.__embedlens.plot.timings")
            rows.append({"step": "open panel, cold (page load)", "ms": t["firstFrame"] - t["openStart"],
                         "fetch_ms": t["pointsLoaded"] - t["openStart"], "draw_ms": t["drawn"] - t["pointsLoaded"],
                         "frame_ms": t["firstFrame"] - t["drawn"]})
            page.wait_for_function("window.__embedlens.plot.header !== null", timeout=600_000)
            t0 = page.evaluate("performance.now()")
            page.evaluate("window.__embedlens.openRun('points')")
            t = page.evaluate("window.__embedlens.plot.timings")
            rows.append({"step": "open panel, warm", "ms": t["firstFrame"] - t["openStart"],
                         "fetch_ms": t["pointsLoaded"] - t["openStart"], "draw_ms": t["drawn"] - t["pointsLoaded"],
                         "frame_ms": t["firstFrame"] - t["drawn"]})
            t1 = page.evaluate("performance.now()")
            rows.append({"step": "open + colour by 10 classes + view mask (openRun total)", "ms": t1 - t0})
            ms = page.evaluate("""async () => { const t = performance.now();
                await window.__embedlens.plot.colorBy(''); const t1 = performance.now();
                await window.__embedlens.plot.colorBy('cluster'); return [t1 - t, performance.now() - t1]; }""")
            rows.append({"step": "colour by 'cluster' (10 categories, uint8 codes)", "ms": ms[1]})

            # lasso around cluster 0 (~n/10 points)
            center = pts[labels == 0].mean(0)
            poly = lasso_polygon_around(page, center, 3.0)
            before = page.evaluate("window.__embedlens.timings.gridUpdated")
            draw_lasso(page, poly)
            page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before}", timeout=600_000)
            page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')", timeout=600_000)
            t = page.evaluate("({...window.__embedlens.timings, up: window.__embedlens.plot.timings.pointerUp, "
                              "sel: window.__embedlens.selectedPoints().length})")
            rows.append({"step": f"lasso {t['sel']:,} points -> grid (mouse-up to first rows)",
                         "ms": t["gridUpdated"] - t["up"], "answered_ms": t["lassoAnswered"] - t["up"],
                         "select_event_ms": t["lassoSent"] - t["up"],
                         "server_ms": t["lassoAnswered"] - t["lassoSent"]})
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench_app.png"))
            # clear (a double-click on a point now opens it in the modal)
            page.evaluate("window.__embedlens.plot.clearSelection(true)")
            page.wait_for_timeout(1000)

            # pan and zoom
            pan, (cx, cy) = back_and_forth_pan(page)
            rows.append({"step": "pan (mouse drags)", **frames_during(page, pan, 3.0)})
            page.mouse.move(cx, cy)
            state = {"dx": 1}

            def zoom() -> None:
                for _ in range(5):
                    page.mouse.wheel(0, -120 * state["dx"])
                state["dx"] *= -1

            rows.append({"step": "zoom (wheel)", **frames_during(page, zoom, 3.0)})
            rows.append({"step": "idle", **frames_during(page, lambda: page.wait_for_timeout(100), 1.5)})
            page.close()
            rows += grid_first_screen(browser)
            browser.close()
    finally:
        session.close()
        ds.delete()
    print(f"\n{n:,} points, headless Chromium (software GL)\n")
    print(table(rows, ["step", "ms", "fetch_ms", "draw_ms", "frame_ms", "answered_ms", "select_event_ms", "server_ms",
                       "rows_ms", "draw_fps", "raf_fps"]))
    print()
    print(table(transfer, ["case", "seconds", "MB"]))
    name = f"app-{n}" if args.points else ("app-quick" if args.quick else "app")
    path = save(name, [{"points": n, **r} for r in rows + transfer])
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
