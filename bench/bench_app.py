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
  mouse-up -> server answered -> first grid rows in the DOM;
* pan and zoom: frames drawn per second (regl-scatterplot's ``draw`` events) and animation frames per
  second (requestAnimationFrame) while the mouse drags / the wheel turns for ~3 s;
* the grid on the MNIST set: from navigation start to the first screen of thumbnails all decoded, with
  the thumbnails made on the way (cold) and cached (warm).

``--compare REV`` measures only the selection, in the page as it was at git revision REV (built into a
temporary folder) and in this one, on the same points in one run: first frame, a lasso and a 30-move box
drag, each from mouse-up to the grid's first rows (and to the selection counted in the page).

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

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import save, table

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


def build(n: int):
    import embedlens as el
    from embedlens.brain.visualization import compute_visualization

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 10
    angles = labels * (2 * np.pi / 10)
    centers = np.stack([np.cos(angles), np.sin(angles)], 1) * 10
    pts = (centers + rng.normal(0, 1.2, (n, 2))).astype(np.float32)
    t = time.perf_counter()
    ds = el.Dataset("bench-app", overwrite=True)
    ds.add_samples([el.Sample(f"/nonexistent/bench/{i:07d}.png", cluster=f"c{labels[i]}") for i in range(n)])
    compute_visualization(ds, points=pts, brain_key="points", progress=False)
    print(f"setup: {n:,} samples and points in {time.perf_counter() - t:.1f} s", flush=True)
    return ds, pts, labels


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


def selection_timings(browser, url: str, pts: np.ndarray, labels: np.ndarray) -> list[dict]:
    """In one page: first frame, a lasso around cluster 0 and a 30-move box drag, each from mouse-up to
    the grid's first rows (and, where the page has it, to the selection counted in the page)."""
    page = browser.new_page(viewport={"width": 1400, "height": 860})
    page.goto(url)
    page.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=600_000)
    page.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0 && window.__embedlens.plot.header",
                           timeout=600_000)
    t = page.evaluate("window.__embedlens.plot.timings")
    rows = [{"step": "first frame (open panel)", "ms": t["firstFrame"] - t["openStart"]}]

    def after_drag(step: str, wall_s: float) -> None:
        page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before}", timeout=600_000)
        page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')", timeout=600_000)
        t = page.evaluate("({...window.__embedlens.timings, up: window.__embedlens.plot.timings.pointerUp, "
                          "counted: window.__embedlens.plot.timings.selected || null, "
                          "sel: window.__embedlens.selectedPoints().length})")
        rows.append({"step": f"{step}: {t['sel']:,} points, mouse-up -> grid rows", "ms": t["gridUpdated"] - t["up"],
                     "counts_ms": (t["counted"] - t["up"]) if t["counted"] else None,
                     "server_ms": t["lassoAnswered"] - t["lassoSent"], "drag_wall_s": wall_s})

    before = page.evaluate("window.__embedlens.timings.gridUpdated")
    poly = lasso_polygon_around(page, pts[labels == 0].mean(0), 3.0)
    t0 = time.perf_counter()
    draw_lasso(page, poly)
    after_drag("lasso", time.perf_counter() - t0)
    page.click("#mode-box")
    corners = lasso_polygon_around(page, pts[labels == 3].mean(0), 3.0)
    (x0, y0), (x1, y1) = corners[0], corners[2]
    before = page.evaluate("window.__embedlens.timings.gridUpdated")
    t0 = time.perf_counter()
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 1, y0 + 1)
    page.mouse.move(x1, y1, steps=30)
    page.mouse.up()
    after_drag("box, 30 moves", time.perf_counter() - t0)
    page.close()
    return rows


def compare(n: int, rev: str) -> None:
    """The selection figures of the page at ``rev`` and of this one, in one run on the same points."""
    import embedlens.app.server as server
    from playwright.sync_api import sync_playwright

    from embedlens.app import launch_app

    old_static = build_old_page(rev)
    ds, pts, labels = build(n)
    rows: list[dict] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        for name, static in ((f"old page ({rev})", old_static), ("this page", None)):
            default = server.STATIC_DIR
            if static is not None:
                server.STATIC_DIR = static  # read by create_app when the session starts
            try:
                session = launch_app(ds, port=0, auto=False)
            finally:
                server.STATIC_DIR = default
            try:
                rows += [{"page": name, **r} for r in selection_timings(browser, session.url, pts, labels)]
            finally:
                session.close()
        browser.close()
    ds.delete()
    print(f"\n{n:,} points, headless Chromium (software GL), old and new page in one run\n")
    print(table(rows, ["page", "step", "ms", "counts_ms", "server_ms", "drag_wall_s"]))
    path = save(f"app-selection-{n}", [{"points": n, **r} for r in rows])
    print(f"\nsaved {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--compare", metavar="REV", default=None,
                    help="only the selection figures, of the page at git revision REV and of this one")
    args = ap.parse_args()
    if args.compare:
        os.environ["EMBEDLENS_HOME"] = tempfile.mkdtemp(prefix="bench_app_")
        compare(args.points or 100_000, args.compare)
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
                         "ms": t["gridUpdated"] - t["up"], "select_event_ms": t["lassoSent"] - t["up"],
                         "server_ms": t["lassoAnswered"] - t["lassoSent"],
                         "grid_ms": t["gridUpdated"] - t["lassoAnswered"]})
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "bench_app.png"))
            page.mouse.dblclick(*poly[0])  # clear
            page.wait_for_timeout(1000)

            # pan and zoom
            page.click("#mode-pan")
            box = page.locator("#plot-canvas").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            state = {"dx": 1}

            def pan() -> None:
                page.mouse.move(cx, cy)
                page.mouse.down()
                page.mouse.move(cx + 120 * state["dx"], cy + 60, steps=15)
                page.mouse.up()
                state["dx"] *= -1

            rows.append({"step": "pan (mouse drags)", **frames_during(page, pan, 3.0)})
            page.mouse.move(cx, cy)

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
    print(table(rows, ["step", "ms", "fetch_ms", "draw_ms", "frame_ms", "select_event_ms", "server_ms", "grid_ms",
                       "rows_ms", "draw_fps", "raf_fps"]))
    print()
    print(table(transfer, ["case", "seconds", "MB"]))
    name = f"app-{n}" if args.points else ("app-quick" if args.quick else "app")
    path = save(name, [{"points": n, **r} for r in rows + transfer])
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
