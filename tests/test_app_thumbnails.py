"""Images in the plot (issue 13): zoomed in, each visible point's thumbnail is drawn at its position on a
2-D layer over the WebGL points; zoomed out, dots only. Real digits PNGs, a real server with a token, Debian's
Chromium.

Needs /usr/bin/chromium and the built page (``cd frontend && npm run build``).
"""

from __future__ import annotations

import os

import pytest

import embedlens as el

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
              pytest.mark.usefixtures("in_module_home")]

VIEWPORT = {"width": 1400, "height": 860}
TOKEN = "thumbs-test-token-0123456789"

# the thumbnail layer's numbers, read in the page
STATS = "window.__embedlens.plot.thumbs.stats"
# pixels of the thumbnail layer that are not transparent, and how many grey levels they take
INKED = """() => { const c = document.getElementById('plot-thumbs');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; const levels = new Set();
    for (let k = 0; k < d.length; k += 4) if (d[k + 3] > 0) { n++; levels.add(d[k]); }
    return {n, levels: levels.size}; }"""
ALPHA_AT = """([x, y]) => { const c = document.getElementById('plot-thumbs'); const r = c.getBoundingClientRect();
    const s = c.width / r.width;
    return c.getContext('2d').getImageData(Math.round((x - r.left) * s), Math.round((y - r.top) * s), 1, 1).data[3]; }"""


@pytest.fixture(scope="module")
def digits(module_home):
    from embedlens.brain.visualization import compute_visualization

    ds = el.load_sample_dataset("digits", progress=False)  # 1,797 PNG files on disk
    compute_visualization(ds, model="pixels", method="pca", brain_key="pca", progress=False)
    return ds


@pytest.fixture(scope="module")
def session(digits):
    from embedlens.app import STATIC_BUILT, launch_app

    assert STATIC_BUILT(), "the page is not built: cd frontend && npm run build"
    s = launch_app(digits, port=0, auto=False, auth_token=TOKEN)
    yield s
    s.close()


@pytest.fixture
def page(browser, session):
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    thumbs: list[str] = []
    # the plot's thumbnails are fetched (the grid's are <img> loads)
    pg.on("request", lambda r: thumbs.append(r.url)
          if "/media/thumb/" in r.url and r.resource_type == "fetch" else None)
    pg.thumb_requests = thumbs
    pg.goto(session.url)
    pg.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=60_000)
    pg.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0 && window.__embedlens.plot.count > 0",
                         timeout=60_000)
    yield pg
    ctx.close()
    assert not errors, errors


def zoom_in_on(pg, index: int) -> None:
    """Turn the wheel over point `index` until the layer draws images (as a user zooms in)."""
    for _ in range(60):
        x, y = pg.evaluate("(i) => { const [a, b] = window.__embedlens.plot.dataPoint(i);"
                           " return window.__embedlens.toPage(a, b); }", index)
        pg.mouse.move(x, y)
        pg.mouse.wheel(0, -200)
        pg.wait_for_timeout(150)
        if pg.evaluate(f"{STATS}.mode") == "images":
            return
    raise AssertionError(f"never zoomed in far enough: {pg.evaluate(STATS)}")


def test_zoomed_out_dots_only(page):
    stats = page.evaluate(STATS)
    assert stats["mode"] == "dots" and stats["onScreen"] is None and stats["drawn"] == 0
    assert page.evaluate(INKED)["n"] == 0
    assert page.is_checked("#plot-images input")
    assert page.thumb_requests == []  # the plot loads no image while its points are dots


def test_zoom_in_draws_thumbnails_zoom_out_removes_them(page, digits):
    zoom_in_on(page, 0)
    # every point on screen gets its image (loaded lazily, a few at a time)
    page.wait_for_function(f"{STATS}.onScreen > 0 && {STATS}.drawn === {STATS}.onScreen && {STATS}.inFlight === 0",
                           timeout=60_000)
    stats = page.evaluate(STATS)
    assert 0 < stats["onScreen"] <= 300, stats
    assert stats["maxInFlight"] <= 4, stats
    assert stats["missing"] == 0, stats
    inked = page.evaluate(INKED)
    # images, not dots: at least half of each image's square is painted, in many grey levels (digits' strokes)
    assert inked["n"] >= stats["drawn"] * (stats["side"] ** 2) * 0.25, (inked, stats)
    assert inked["levels"] > 20, inked
    # the thumbnails came from the server's route, with the page's token
    assert page.thumb_requests and all(f"token={TOKEN}" in u for u in page.thumb_requests)
    ids = set(digits.values("id"))
    assert {u.split("/media/thumb/")[1].split("?")[0] for u in page.thumb_requests} <= ids

    # the images follow the camera: point 0's image is under point 0 before and after a pan
    def alpha_at_point0() -> int:
        xy = page.evaluate("() => { const [a, b] = window.__embedlens.plot.dataPoint(0);"
                           " return window.__embedlens.toPage(a, b); }")
        return page.evaluate(ALPHA_AT, xy)

    assert alpha_at_point0() > 0
    page.click("#mode-pan")
    box = page.locator("#plot-canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 90, cy + 40, steps=6)
    page.mouse.up()
    page.wait_for_timeout(400)
    assert page.evaluate(f"{STATS}.mode") == "images"
    assert alpha_at_point0() > 0

    # the toggle: off -> no images and nothing drawn; on -> images again (from the cache: no new requests)
    page.wait_for_function(f"{STATS}.drawn === {STATS}.onScreen && {STATS}.inFlight === 0", timeout=60_000)
    page.click("#plot-images input")
    page.wait_for_function(f"{STATS}.mode === 'off'")
    page.wait_for_timeout(200)
    assert page.evaluate(INKED)["n"] == 0
    n_requests = len(page.thumb_requests)
    page.click("#plot-images input")
    page.wait_for_function(f"{STATS}.mode === 'images' && {STATS}.drawn === {STATS}.onScreen", timeout=30_000)
    assert len(page.thumb_requests) == n_requests

    # zoomed out again: dots only
    page.click("#zoom-reset")
    page.wait_for_function(f"{STATS}.mode === 'dots'", timeout=30_000)
    page.wait_for_timeout(300)
    assert page.evaluate(INKED)["n"] == 0
    assert page.evaluate(f"{STATS}.drawn") == 0


def test_legend_hidden_classes_get_no_images(page, digits):
    """Images only for the points drawn: a class hidden in the legend loses its images with its dots."""
    page.select_option("#color-select", "ground_truth.label")
    page.wait_for_function("window.__embedlens.plot.header && document.querySelectorAll('.legend-item').length >= 10")
    zoom_in_on(page, 0)
    page.wait_for_function(f"{STATS}.drawn === {STATS}.onScreen && {STATS}.inFlight === 0", timeout=60_000)
    label0 = page.evaluate("window.__embedlens.plot.valueOf(0)")
    page.evaluate("(name) => document.querySelector(`.legend-item[data-name=\"${name}\"]`).click()", label0)
    page.wait_for_function(f"window.__embedlens.hiddenCategories().includes('{label0}')")
    page.wait_for_timeout(400)
    xy = page.evaluate("() => { const [a, b] = window.__embedlens.plot.dataPoint(0);"
                       " return window.__embedlens.toPage(a, b); }")
    shown = page.evaluate(f"{STATS}.onScreen")
    assert shown is not None
    # none of the images drawn is of the hidden class, and point 0's place is empty
    drawn = page.evaluate(f"{STATS}.drawnIndices.map((i) => window.__embedlens.plot.valueOf(i))")
    assert drawn and label0 not in drawn
    assert page.evaluate(f"{STATS}.drawnIndices.includes(0)") is False
    assert page.evaluate(ALPHA_AT, xy) == 0 or len(drawn) > 1  # a neighbour's image may overlap the spot


# the colour of the thumbnail layer's pixel under a page position
RGB_AT = """([x, y]) => { const c = document.getElementById('plot-thumbs'); const r = c.getBoundingClientRect();
    const s = c.width / r.width;
    return Array.from(c.getContext('2d').getImageData(Math.round((x - r.left) * s), Math.round((y - r.top) * s), 1, 1).data); }"""


@pytest.fixture(scope="module")
def halves(module_home):
    """Six images, red on the left half and blue on the right, with one object on each half, and an
    object-level run whose 12 points sit on a grid (few points: images from the first frame, none overlap)."""
    import numpy as np
    from PIL import Image

    from embedlens.brain.visualization import compute_visualization

    samples = []
    for k in range(6):
        img = np.zeros((60, 80, 3), dtype=np.uint8)
        img[:, :40] = (255, 0, 0)
        img[:, 40:] = (0, 0, 255)
        path = module_home / f"halves-{k}.png"
        Image.fromarray(img).save(path)
        dets = [el.Detection(label="red", bounding_box=[0.0, 0.0, 0.5, 1.0]),
                el.Detection(label="blue", bounding_box=[0.5, 0.0, 0.5, 1.0])]
        samples.append(el.Sample(str(path), boxes=el.Detections(detections=dets)))
    ds = el.Dataset("halves")
    ds.add_samples(samples)
    pts = np.array([[x, y] for y in range(3) for x in range(4)], dtype=np.float32)
    compute_visualization(ds, patches_field="boxes", points=pts, brain_key="objects", progress=False)
    return ds


def test_an_object_point_is_drawn_as_its_crop(browser, halves):
    """In an object-level run a point is an object: its image is its box's crop of the sample's image (all
    red for the left object, all blue for the right one), not the whole two-coloured image."""
    from embedlens.app import launch_app

    s = launch_app(halves, port=0, auto=False, auth_token=TOKEN)
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        pg.goto(s.url)
        pg.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=60_000)
        pg.wait_for_function(f"{STATS}.mode === 'images' && {STATS}.onScreen === 12 && {STATS}.drawn === 12",
                             timeout=60_000)
        side = pg.evaluate(f"{STATS}.side")
        labels = halves.load_brain_results("objects").values("boxes.label")
        canvas = pg.locator("#plot-thumbs").bounding_box()
        checked = []
        for i, label in enumerate(labels):
            x, y = pg.evaluate("(i) => { const [a, b] = window.__embedlens.plot.dataPoint(i);"
                               " return window.__embedlens.toPage(a, b); }", i)
            if not (canvas["x"] + side < x < canvas["x"] + canvas["width"] - side
                    and canvas["y"] + side < y < canvas["y"] + canvas["height"] - side):
                continue  # a point on the panel's edge: its image is partly outside the layer
            checked.append(label)
            # a quarter of an image left and right of the point's centre: both inside the drawn image
            for dx in (-side / 4, side / 4):
                r, _, b, a = pg.evaluate(RGB_AT, [x + dx, y])
                assert a == 255, (i, dx)
                assert (r > 200 and b < 60) if label == "red" else (b > 200 and r < 60), (i, label, dx, r, b)
        assert checked.count("red") >= 2 and checked.count("blue") >= 2, checked
        assert not errors, errors
    finally:
        ctx.close()
        s.close()
