"""The app in a real browser (headless Chromium): lasso in the WebGL plot -> grid -> tags in SQLite,
the legend, grid clicks lighting up points, and Python's session.view reaching the page.

Needs /usr/bin/chromium (Debian package ``chromium``; ``make test`` installs it) and the built page
(``make install`` runs ``npm ci && npm run build`` in frontend/).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import embedlens as el

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
              pytest.mark.usefixtures("in_module_home")]  # datasets built once per module, shared by its tests

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1400, "height": 860}


@pytest.fixture(scope="module")
def digits(module_home):
    from embedlens.brain.visualization import compute_visualization

    ds = el.load_sample_dataset("digits", progress=False)
    compute_visualization(ds, model="pixels", method="umap", brain_key="umap", seed=51, progress=False)
    # the scores the page's "show" buttons and numeric filters work on
    x = ds.compute_embeddings("pixels", progress=False)
    el.compute_uniqueness(ds, embeddings=x, progress=False)
    el.compute_predictions(ds, embeddings=x, progress=False)
    el.compute_mistakenness(ds, "predictions", progress=False)
    return ds


@pytest.fixture(scope="module")
def scenes(module_home, digits):
    """A detection dataset of real images: 40 scenes of three digits each, boxed and labelled, plus 12
    boxes drawn around empty background and labelled as digits (the planted mistakes), and a UMAP of
    every object's pixels under brain key "objects"."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from embedlens.brain.visualization import compute_visualization
    from embedlens.models import PixelsModel

    rng = np.random.default_rng(7)
    bunch = load_digits()
    images, labels = (bunch.images * (255 / 16)).astype(np.uint8), bunch.target
    folder = module_home / "scene-images"
    folder.mkdir(exist_ok=True)
    samples, planted = [], []
    for i in range(40):
        canvas = rng.integers(0, 48, (96, 96)).astype(np.uint8)  # a noisy background, as photos have
        dets = []
        for j, (x, y) in enumerate([(4, 8), (36, 40), (66, 6)]):
            k = int(rng.integers(len(images)))
            digit = Image.fromarray(images[k]).resize((24, 24), Image.NEAREST)
            canvas[y:y + 24, x:x + 24] = np.maximum(canvas[y:y + 24, x:x + 24], np.asarray(digit))
            dets.append(el.Detection(label=str(labels[k]), bounding_box=[x / 96, y / 96, 24 / 96, 24 / 96]))
        if i % 10 < 3:  # a box around nothing
            d = el.Detection(label=str(rng.integers(10)), bounding_box=[8 / 96, 64 / 96, 24 / 96, 24 / 96])
            planted.append(d.id)
            dets.append(d)
        path = folder / f"scene{i:02d}.png"
        Image.fromarray(canvas).save(path)
        samples.append(el.Sample(str(path), ground_truth=el.Detections(detections=dets)))
    ds = el.Dataset("scenes", overwrite=True)
    ds.add_samples(samples)
    x = ds.compute_patch_embeddings(PixelsModel(size=(16, 16), grayscale=True), "ground_truth",
                                    progress=False)
    compute_visualization(ds, embeddings=x, patches_field="ground_truth", method="umap", brain_key="objects",
                          seed=51, progress=False)
    return ds, planted


@pytest.fixture(scope="module")
def session(digits):
    from embedlens.app import STATIC_BUILT, launch_app

    assert STATIC_BUILT(), "the page is not built: run `make install` (or `cd frontend && npm ci && npm run build`)"
    s = launch_app(digits, port=0, auto=False)
    yield s
    s.close()


def collect_errors(pg) -> list[str]:
    """Page errors and console errors of `pg`, as they happen (the list fills while the test runs)."""
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    # which request failed (the console names only its status)
    pg.on("response", lambda r: errors.append(f"response: {r.status} {r.request.method} {r.url}")
          if r.status >= 400 else None)
    return errors


@pytest.fixture
def page(browser, session, digits):
    session.view = None
    session.clear_selection()
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    errors = collect_errors(pg)
    open_page(pg, session)
    yield pg
    ctx.close()
    assert not errors, errors


def open_page(pg, session) -> None:
    pg.goto(session.url)
    wait_ready(pg)


def wait_ready(pg) -> None:
    """Wait until the page has loaded its state, its plot and the plot's colours (after a goto or reload)."""
    pg.wait_for_function("window.__embedlens && window.__embedlens.ready", timeout=60_000)
    pg.wait_for_function("window.__embedlens.plot.timings.firstFrame > 0 && window.__embedlens.plot.header !== null",
                         timeout=60_000)


def shot(pg, name: str, docs: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    # the README's screenshot is refreshed on request only, so a test run leaves the work tree clean
    if docs and os.environ.get("EMBEDLENS_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


STEPS = 8


def lasso_polygon(box: dict, fractions: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """Page pixels of a polygon given as fractions of the plot's size around its centre. Mouse events
    carry whole pixels, so every vertex, and every step between two (edges are multiples of STEPS
    pixels long), is a whole pixel: the lasso the page records is exactly this polygon."""
    cx, cy = int(box["x"] + box["width"] / 2), int(box["y"] + box["height"] / 2)

    def snap(v: float, size: float) -> int:
        return STEPS * round(v * size / STEPS)

    return [(cx + snap(fx, box["width"]), cy + snap(fy, box["height"])) for fx, fy in fractions]


def draw_lasso(pg, vertices: list[tuple[int, int]]) -> None:
    """Drag the mouse along a closed polygon in straight steps, pausing at each corner so it is recorded."""
    x0, y0 = vertices[0]
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    for x, y in [*vertices[1:], vertices[0]]:
        pg.mouse.move(x, y, steps=STEPS)
        pg.wait_for_timeout(60)
    pg.mouse.up()


def grid_ids(pg) -> set[str]:
    """Every sample id the grid shows, scrolling it from top to bottom (only visible rows are in the DOM)."""
    seen: set[str] = set()
    pg.evaluate("document.getElementById('grid-scroll').scrollTop = 0")
    for _ in range(200):
        pg.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')", timeout=20_000)
        seen.update(pg.evaluate("window.__embedlens.gridIds()"))
        done = pg.evaluate("""() => { const g = document.getElementById('grid-scroll');
            const atEnd = g.scrollTop + g.clientHeight >= g.scrollHeight - 2;
            g.scrollTop += g.clientHeight * 0.8; return atEnd; }""")
        if done:
            break
        pg.wait_for_timeout(50)
    pg.evaluate("document.getElementById('grid-scroll').scrollTop = 0")
    return seen


def stored_tags(ds, tag: str) -> set[str]:
    con = sqlite3.connect(ds.path / "dataset.db")
    try:
        rows = con.execute("SELECT id, tags FROM samples").fetchall()
    finally:
        con.close()
    return {i for i, t in rows if tag in json.loads(t)}


def test_lasso_selects_exactly_the_points_inside_and_tags_them(page, session, digits):
    from matplotlib.path import Path as PolyPath

    results = digits.load_brain_results("umap")
    pts = results.points
    box = page.locator("#plot-canvas").bounding_box()
    # an irregular pentagon around the middle of the plot
    poly_px = lasso_polygon(box, [(-0.3, -0.05), (-0.02, -0.28), (0.3, -0.1), (0.15, 0.25), (-0.2, 0.2)])
    poly_data = [page.evaluate("([x, y]) => window.__embedlens.toData(x, y)", list(v)) for v in poly_px]
    # the mapping is exact: data -> page -> data
    back = page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", poly_data[0])
    assert back == pytest.approx(list(poly_px[0]), abs=1e-3)

    before = page.evaluate("window.__embedlens.timings.gridUpdated")
    draw_lasso(page, poly_px)
    page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before} && "
                           "window.__embedlens.state().lasso !== null", timeout=30_000)

    inside = np.flatnonzero(PolyPath(poly_data).contains_points(pts))
    assert 20 < len(inside) < len(pts) - 20, "the polygon should cut the layout"
    lasso_poly = page.evaluate("window.__embedlens.lassoData()")
    assert np.flatnonzero(PolyPath(lasso_poly).contains_points(pts)).tolist() == inside.tolist()
    assert sorted(page.evaluate("window.__embedlens.selectedPoints()")) == inside.tolist()

    expected = {results.keys[i] for i in inside}
    assert set(session.selected) == expected
    assert page.evaluate("window.__embedlens.gridTotal()") == len(expected)
    assert grid_ids(page) == expected
    page.wait_for_timeout(200)  # let the grid settle after scrolling back to the top
    page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
    n_selected, n_tiles = page.evaluate("""[document.querySelectorAll('#grid-spacer .tile.selected').length,
                                           document.querySelectorAll('#grid-spacer .tile').length]""")
    assert n_selected == n_tiles > 0
    shot(page, "app", docs=True)

    page.fill("#tag-input", "lassoed")
    page.click("#tag-btn")
    page.wait_for_function("document.getElementById('status').textContent.includes('tagged')", timeout=30_000)
    assert f"tagged {len(expected)} samples" in page.locator("#status").text_content()

    page.reload()  # the tab's address keeps its plot, colour and selection
    wait_ready(page)
    assert stored_tags(digits, "lassoed") == expected
    assert set(el.load_dataset("digits").match_tags("lassoed").values("id")) == expected
    page.wait_for_function("document.querySelectorAll('#grid-spacer .chip.tag').length > 0")
    assert page.locator("#grid-spacer .chip.tag", has_text="lassoed").count() > 0
    assert page.locator(".check[data-kind='tag'][data-value='lassoed'] .count").text_content() == str(len(expected))
    # after the reload the plot still shows the lasso
    assert sorted(page.evaluate("window.__embedlens.selectedPoints()")) == inside.tolist()

    # double-click on an empty corner of the plot clears the selection and the lasso
    page.mouse.dblclick(box["x"] + 6, box["y"] + 6)
    page.wait_for_function("window.__embedlens.state().lasso === null && window.__embedlens.gridTotal() === 1797",
                           timeout=30_000)
    assert session.selected == []
    digits.untag_samples("lassoed")


def test_legend_click_hides_a_class_and_double_click_isolates(page, digits):
    labels = np.array(digits.load_brain_results("umap").values("ground_truth.label"))
    n = len(labels)
    assert len(page.evaluate("window.__embedlens.visiblePoints()")) == n
    page.click(".legend-item[data-name='3']")
    page.wait_for_function("window.__embedlens.hiddenCategories().includes('3')")
    visible = np.array(page.evaluate("window.__embedlens.visiblePoints()"))
    assert len(visible) == n - (labels == "3").sum() and not (labels[visible] == "3").any()
    assert "off" in page.get_attribute(".legend-item[data-name='3']", "class")
    shot(page, "legend-hidden")
    page.click(".legend-item[data-name='3']")
    page.wait_for_function("window.__embedlens.hiddenCategories().length === 0")
    assert len(page.evaluate("window.__embedlens.visiblePoints()")) == n
    page.dblclick(".legend-item[data-name='5']")
    page.wait_for_function("window.__embedlens.hiddenCategories().length === 9")
    visible = np.array(page.evaluate("window.__embedlens.visiblePoints()"))
    assert set(labels[visible]) == {"5"} and len(visible) == (labels == "5").sum()
    page.dblclick(".legend-item[data-name='5']")
    page.wait_for_function("window.__embedlens.hiddenCategories().length === 0")


def test_session_view_from_python_reaches_the_page(page, session, digits):
    assert page.evaluate("window.__embedlens.gridTotal()") == 1797
    session.view = digits.match_tags("test")
    page.wait_for_function("window.__embedlens.gridTotal() === 360", timeout=30_000)
    assert "360 shown" in page.locator("#counts").text_content()
    # points outside the view are hidden in the plot
    page.wait_for_function("window.__embedlens.visiblePoints().length === 360", timeout=30_000)
    assert grid_ids(page) == set(digits.match_tags("test").values("id"))
    shot(page, "session-view")
    session.view = digits.match(el.F("ground_truth.label") == "7")
    page.wait_for_function(f"window.__embedlens.gridTotal() === {digits.count_values('ground_truth.label')['7']}")
    session.view = None
    page.wait_for_function("window.__embedlens.gridTotal() === 1797", timeout=30_000)


def test_sidebar_filters_and_sort_build_view_stages(page, session, digits):
    page.check(".check[data-kind='tag'][data-value='test'] input")
    page.wait_for_function("window.__embedlens.gridTotal() === 360", timeout=30_000)
    page.check(".check[data-kind='label-ground_truth'][data-value='4'] input")
    want = digits.match_tags("test").match(el.F("ground_truth.label").is_in(["4"]))
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(want)}", timeout=30_000)
    assert session.view.count() == len(want)
    page.select_option("#sort-field", "index")
    page.check("#sort-reverse")
    page.wait_for_function("window.__embedlens.state().view.stages.length === 3", timeout=30_000)
    order = want.sort_by("index", reverse=True).values("id")
    page.wait_for_function(f"window.__embedlens.gridIds()[0] === '{order[0]}'", timeout=30_000)
    assert page.evaluate("window.__embedlens.gridIds()") == order[:len(page.evaluate("window.__embedlens.gridIds()"))]
    page.click("#reset-view")
    page.wait_for_function("window.__embedlens.gridTotal() === 1797", timeout=30_000)


def test_grid_clicks_select_and_light_up_points(page, session, digits):
    keys = digits.load_brain_results("umap").keys
    tiles = page.locator("#grid-spacer .tile")
    first, second = tiles.nth(0).get_attribute("data-id"), tiles.nth(1).get_attribute("data-id")
    tiles.nth(0).click()
    page.wait_for_function("window.__embedlens.selectedPoints().length === 1", timeout=30_000)
    assert session.selected == [first]
    assert [keys[i] for i in page.evaluate("window.__embedlens.selectedPoints()")] == [first]
    tiles.nth(1).click(modifiers=["Shift"])
    page.wait_for_function("window.__embedlens.selectedPoints().length === 2", timeout=30_000)
    assert session.selected == [first, second]
    assert "selected" in tiles.nth(1).get_attribute("class")
    # Python -> page selection
    ids = digits.values("id")[100:103]
    session.selected = ids
    page.wait_for_function("window.__embedlens.selectedPoints().length === 3", timeout=30_000)
    assert sorted(keys[i] for i in page.evaluate("window.__embedlens.selectedPoints()")) == sorted(ids)
    assert "3 selected" in page.locator("#selection-count").text_content()
    # the grid is virtualised: a few rows of tiles in the DOM, not 1,797
    assert 0 < page.locator("#grid-spacer .tile").count() < 200


def test_refresh_shows_new_runs(page, session, digits):
    from embedlens.brain.visualization import compute_visualization

    compute_visualization(digits, model="pixels", method="pca", brain_key="pca_new", seed=0, progress=False)
    try:
        session.refresh()
        page.wait_for_function("[...document.querySelectorAll('#run-select option')].some(o => o.value === 'pca_new')",
                               timeout=30_000)
        page.select_option("#run-select", "pca_new")
        page.wait_for_function("window.__embedlens.plot.key === 'pca_new' && window.__embedlens.plot.header !== null",
                               timeout=30_000)
        assert page.evaluate("window.__embedlens.plot.count") == 1797
    finally:
        digits.delete_brain_run("pca_new")


# ---------------------------------------------------------------------------------------------- workflows


def drag_box(pg, corner_a: tuple[float, float], corner_b: tuple[float, float]) -> None:
    pg.mouse.move(*corner_a)
    pg.mouse.down()
    # with shift held the box starts at the first move, not at the press: make that move one pixel
    pg.mouse.move(corner_a[0] + 1, corner_a[1] + 1)
    pg.wait_for_timeout(30)
    pg.mouse.move(*corner_b, steps=12)
    pg.wait_for_timeout(60)
    pg.mouse.up()


def test_mistakes_workflow_actions_stages_ranges_and_modal(page, session, digits):
    """The MNIST tutorial's path: top mistakes, their stages, a numeric range, colour and size by a score,
    and one sample in the modal."""
    # every field with how many samples have it
    assert page.locator(".field-row[data-field='mistakenness'] .count").text_content() == "1,797"
    assert page.locator(".field-row[data-field='predictions'] .muted").text_content() == "Classification"
    page.fill("#action-count", "20")
    page.click("#action-mistakes")
    page.wait_for_function("window.__embedlens.gridTotal() === 20", timeout=30_000)
    top = digits.sort_by("mistakenness", reverse=True).limit(20).values("id")
    page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
    assert page.evaluate("window.__embedlens.gridIds()") == top
    stages = page.locator("#view-stages .stage")
    page.wait_for_function("document.querySelectorAll('#view-stages .stage').length === 2", timeout=30_000)
    assert stages.nth(0).text_content().startswith("sort by mistakenness ↓")
    assert "first 20" in stages.nth(1).text_content()
    # the plot shows only the 20 samples of the view
    page.wait_for_function("window.__embedlens.visiblePoints().length === 20", timeout=30_000)
    shot(page, "top-mistakes", docs=True)

    # the modal: the full image and every field, with the label and what the model thinks
    page.dblclick(f"#grid-spacer .tile[data-id='{top[0]}']")
    page.wait_for_selector("#modal:not([hidden]) #modal-image img")
    s = digits[top[0]]
    fields = page.locator("#modal-fields")
    assert fields.locator("tr[data-field='ground_truth'] td").nth(1).text_content() == s.ground_truth.label
    assert fields.locator("tr[data-field='predictions'] td").nth(1).text_content().startswith(s.predictions.label)
    assert fields.locator("tr[data-field='mistakenness'] td").nth(1).text_content() == f"{s.mistakenness:.4g}"
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"window.__embedlens.modal.detail.id === '{top[1]}'")
    page.keyboard.press("Escape")
    assert page.locator("#modal").is_hidden()

    # removing "first 20" keeps the sort: every sample, likeliest mistakes first
    stages.nth(1).locator("button").click()
    page.wait_for_function("window.__embedlens.gridTotal() === 1797", timeout=30_000)
    assert session.view.count() == 1797 and [type(st).__name__ for st in session.view._stages] == ["SortBy"]

    # a numeric range from the sidebar: mistakenness >= 0.5
    page.fill(".range[data-field='mistakenness'] input[data-bound='min']", "0.5")
    page.press(".range[data-field='mistakenness'] input[data-bound='min']", "Enter")
    want = digits.match(el.F("mistakenness") >= 0.5).sort_by("mistakenness", reverse=True)
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(want)}", timeout=30_000)
    assert 0 < len(want) < 1797 and set(session.view.values("id")) == set(want.values("id"))

    # colour by a numeric score: a colour bar with its range; size by uniqueness
    page.select_option("#color-select", "mistakenness")
    page.wait_for_selector("#legend .legend-gradient")
    lo, hi = digits.bounds("mistakenness")
    assert f"{hi:.3g}" in page.locator("#legend").text_content()
    page.select_option("#size-select", "uniqueness")
    page.wait_for_function("window.__embedlens.plot.sizeField === 'uniqueness'")
    page.wait_for_function("window.__embedlens.plot.sp.get('sizeBy') === 'valueW'", timeout=30_000)
    page.click("#reset-view")
    page.wait_for_function("window.__embedlens.gridTotal() === 1797", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('#view-stages .stage').length === 0", timeout=30_000)


def test_box_select_zoom_and_autoscale(page, session, digits):
    pts = digits.load_brain_results("umap").points
    keys = digits.load_brain_results("umap").keys
    page.click("#mode-box")
    box = page.locator("#plot-canvas").bounding_box()
    a = (int(box["x"] + box["width"] * 0.3), int(box["y"] + box["height"] * 0.25))
    b = (int(box["x"] + box["width"] * 0.6), int(box["y"] + box["height"] * 0.55))
    (x0, y1), (x1, y0) = [page.evaluate("([x, y]) => window.__embedlens.toData(x, y)", list(c)) for c in (a, b)]
    before, answered = page.evaluate("window.__embedlens.timings.gridUpdated"), answered_since(page)
    drag_box(page, a, b)
    page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before}", timeout=30_000)
    wait_answered(page, answered)
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    got = sorted(page.evaluate("window.__embedlens.selectedPoints()"))
    # the rectangle is drawn in whole pixels: only points within a pixel of its edges may differ
    px = (x1 - x0) / (b[0] - a[0])
    near_edge = ((np.abs(pts[:, 0] - x0) < px) | (np.abs(pts[:, 0] - x1) < px) |
                 (np.abs(pts[:, 1] - y0) < px) | (np.abs(pts[:, 1] - y1) < px))
    assert set(np.flatnonzero(inside & ~near_edge)) <= set(got) <= set(np.flatnonzero(inside | near_edge))
    assert inside.sum() > 20 and set(session.selected) == {keys[i] for i in got}
    # shift adds a second region to the selection: a box around a point outside the first one (the
    # layout differs between umap-learn builds, so the region is found from the points, not fixed)
    px_pos = [page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(x), float(y)])
              for x, y in pts[~(inside | near_edge)][:400]]
    centre = next((x, y) for x, y in px_pos if box["x"] + 30 < x < box["x"] + box["width"] - 30
                  and box["y"] + 30 < y < box["y"] + box["height"] - 30
                  and not (a[0] - 25 < x < b[0] + 25 and a[1] - 25 < y < b[1] + 25))
    c = (int(centre[0] - 20), int(centre[1] - 20))
    d = (int(centre[0] + 20), int(centre[1] + 20))
    page.mouse.move(*c)
    page.keyboard.down("Shift")
    drag_box(page, c, d)
    page.keyboard.up("Shift")
    (u0, v1), (u1, v0) = [page.evaluate("([x, y]) => window.__embedlens.toData(x, y)", list(p)) for p in (c, d)]
    second = (pts[:, 0] >= u0 + px) & (pts[:, 0] <= u1 - px) & (pts[:, 1] >= v0 + px) & (pts[:, 1] <= v1 - px)
    assert second.sum() > 0
    page.wait_for_function(f"window.__embedlens.selectedPoints().length > {len(got)}", timeout=30_000)
    both = set(page.evaluate("window.__embedlens.selectedPoints()"))
    assert set(got) | set(np.flatnonzero(second)) <= both
    page.wait_for_function(f"window.__embedlens.state().lasso.points === {len(both)}", timeout=30_000)
    assert set(session.selected) == {keys[i] for i in both}
    # zoom buttons change the camera; autoscale fits the points shown; reset restores the axes
    d0 = page.evaluate("window.__embedlens.plot.sp.get('cameraDistance')")
    page.click("#zoom-in")
    assert page.evaluate("window.__embedlens.plot.sp.get('cameraDistance')") == pytest.approx(d0 / 1.5)
    page.click("#zoom-out")
    page.click("#zoom-out")
    assert page.evaluate("window.__embedlens.plot.sp.get('cameraDistance')") == pytest.approx(d0 * 1.5)
    # autoscale fits the points shown: isolate the 0s, and they fill the panel
    labels = np.array(digits.load_brain_results("umap").values("ground_truth.label"))
    page.dblclick(".legend-item[data-name='0']")
    page.wait_for_function("window.__embedlens.hiddenCategories().length === 9")
    page.click("#zoom-auto")
    assert_fills_panel(page, pts[labels == "0"], box)
    page.click("#zoom-reset")
    assert_fills_panel(page, pts, box)


def assert_fills_panel(pg, pts: np.ndarray, box: dict) -> None:
    """Wait for the camera to settle, then check the points' bounding box spans most of the plot and
    lies within it."""
    pg.wait_for_timeout(800)  # the zoom is animated
    corners = [pg.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(x), float(y)])
               for x, y in (pts.min(0), pts.max(0))]
    (px0, py1), (px1, py0) = corners
    assert box["x"] - 1 <= px0 < px1 <= box["x"] + box["width"] + 1
    assert box["y"] - 1 <= py0 < py1 <= box["y"] + box["height"] + 1
    assert max((px1 - px0) / box["width"], (py1 - py0) / box["height"]) > 0.75


def test_objects_workflow_outlier_cluster_to_tagged_labels(page, session, digits, scenes):
    """The BDD-style path: a plot of objects, the outlier cluster boxed, the grid switching to those
    objects with their boxes, and the objects tagged as mistakes."""
    ds, planted = scenes
    session.view = ds
    try:
        page.wait_for_function("window.__embedlens.plot.key === 'objects' && window.__embedlens.plot.header",
                               timeout=60_000)
        results = ds.load_brain_results("objects")
        pts, keys = results.points, list(results.keys)
        out = np.array([keys.index(i) for i in planted])
        lo, hi = pts[out].min(0), pts[out].max(0)
        pad = 0.25 * max(hi - lo) + 1e-3
        inside = np.flatnonzero(((pts >= lo - pad) & (pts <= hi + pad)).all(1))
        assert sorted(inside) == sorted(out), "the planted boxes should form their own cluster"
        page.click("#mode-box")
        a = page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(lo[0] - pad), float(hi[1] + pad)])
        b = page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(hi[0] + pad), float(lo[1] - pad)])
        before = page.evaluate("window.__embedlens.timings.gridUpdated")
        drag_box(page, a, b)
        page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before} && "
                               f"window.__embedlens.gridTotal() === {len(planted)}", timeout=30_000)
        # the grid shows the objects from the page's point indices; the server's state follows once the
        # selection posted in the background is in
        page.wait_for_function("window.__embedlens.state().grid_patches", timeout=30_000)
        page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
        assert set(page.evaluate("window.__embedlens.gridIds()")) == set(planted)
        # each tile is one object: its own box over its image
        page.wait_for_function("[...document.querySelectorAll('#grid-spacer .tile')].every("
                               "t => t.querySelectorAll('svg.boxes rect').length === 1)")
        assert {s["label_id"] for s in session.selected_labels} == set(planted)
        assert f"{len(planted)} objects selected" in page.locator("#selection-count").text_content()
        shot(page, "objects", docs=True)
        page.fill("#tag-input", "mistake")
        page.click("#tag-btn")
        page.wait_for_function("document.getElementById('status').textContent.includes('tagged')", timeout=30_000)
        assert f"tagged {len(planted)} objects" in page.locator("#status").text_content()
        assert set(ds.to_patches("ground_truth").match_tags("mistake").values("id")) == set(planted)
        # click one object, shift-click another: those two are selected, lit in the plot, and tagged alone
        page.click(f"#grid-spacer .tile[data-id='{planted[0]}']")
        page.click(f"#grid-spacer .tile[data-id='{planted[1]}']", modifiers=["Shift"])
        page.wait_for_function("window.__embedlens.selectedPoints().length === 2", timeout=30_000)
        assert {keys[i] for i in page.evaluate("window.__embedlens.selectedPoints()")} == set(planted[:2])
        assert [d["label_id"] for d in session.selected_labels] == planted[:2]
        assert page.locator("#grid-spacer .tile.selected").count() == 2
        page.fill("#tag-input", "checked")
        page.click("#tag-btn")
        page.wait_for_function("document.getElementById('status').textContent.includes('checked')", timeout=30_000)
        assert set(ds.to_patches("ground_truth").match_tags("checked").values("id")) == set(planted[:2])
        # the modal of an object draws that object's box with its label
        page.dblclick(f"#grid-spacer .tile[data-id='{planted[0]}']")
        page.wait_for_selector("#modal:not([hidden]) #modal-image svg rect")
        assert page.locator("#modal-image svg rect").count() == 1
        row = page.locator("#modal-fields tr[data-field='ground_truth']")
        assert row.locator("td").nth(0).text_content() == "ground_truth (1 of 4)"
        label = next(d.label for s in ds for d in s.ground_truth.detections if d.id == planted[0])
        assert row.locator(".box-row").text_content().startswith(f"{label} · ")
        shot(page, "object-modal", docs=True)
        page.keyboard.press("Escape")
    finally:
        session.view = digits


# ---------------------------------------------------------------------------------------------- issue 15


@pytest.fixture(scope="module")
def copies(module_home, digits):
    """60 digit images and 6 near-copies of the first six (noise of 1/255), a pixel similarity index
    "sim" and a PCA layout "pca": the duplicates action has groups to show."""
    from PIL import Image

    from embedlens.brain.visualization import compute_visualization

    folder = module_home / "copy-images"
    folder.mkdir(exist_ok=True)
    paths = digits.values("filepath")[:60]
    rng = np.random.default_rng(3)
    samples = [el.Sample(fp, ground_truth=el.Classification(label=lab))
               for fp, lab in zip(paths, digits.values("ground_truth.label")[:60])]
    for k, fp in enumerate(paths[:6]):
        img = np.asarray(Image.open(fp).convert("L")).astype(int)
        noisy = np.clip(img + rng.integers(0, 2, img.shape), 0, 255).astype(np.uint8)
        out = folder / f"copy{k}.png"
        Image.fromarray(noisy).save(out)
        samples.append(el.Sample(str(out), ground_truth=el.Classification(label=samples[k].ground_truth.label)))
    ds = el.Dataset("copies", overwrite=True)
    ds.add_samples(samples)
    x = ds.compute_embeddings("pixels", progress=False)
    el.compute_similarity(ds, embeddings=x, brain_key="sim", progress=False)
    compute_visualization(ds, embeddings=x, method="pca", brain_key="pca", seed=0, progress=False)
    return ds


def test_duplicates_show_groups_in_context_without_page_errors(page, session, digits, copies):
    """Show > Duplicates: no page error, its stage in the sidebar, each kept sample then its copies with
    their distances, and the other points kept, dimmed, around them."""
    session.view = copies
    try:
        page.wait_for_function("window.__embedlens.plot.key === 'pca' && window.__embedlens.plot.count === 66"
                               " && window.__embedlens.plot.header", timeout=60_000)
        page.click("#action-duplicates")
        index = copies.load_brain_results("sim")  # the groups the page's action found, kept with the run
        page.wait_for_function("window.__embedlens.state().action !== null", timeout=30_000)
        index = copies.load_brain_results("sim")
        want = [i for kept, lst in index.neighbors_map.items() for i in [kept, *(d for d, _ in lst)]]
        assert len(want) >= 12, "the six copies and their originals form groups"
        page.wait_for_function(f"window.__embedlens.gridTotal() === {len(want)}", timeout=30_000)
        page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
        assert page.evaluate("window.__embedlens.gridIds()") == want
        stage = page.locator("#view-stages .stage")
        assert stage.count() == 1 and stage.text_content().startswith(f"duplicate groups (sim): {len(want)} samples")
        chips = page.locator("#grid-spacer .chip.group")
        roles = [chips.nth(k).get_attribute("data-role") for k in range(chips.count())]
        kept = [chips.nth(k).get_attribute("data-kept") for k in range(chips.count())]
        assert roles[0] == "kept" and "copy" in roles and kept[0] == want[0]
        groups = {k: [(d, dist) for d, dist in lst] for k, lst in index.neighbors_map.items()}
        first_copy = page.locator(f"#grid-spacer .tile[data-id='{groups[want[0]][0][0]}'] .chip.group")
        text = first_copy.text_content()
        assert text.startswith("copy · d ") and float(text.split()[3]) == pytest.approx(groups[want[0]][0][1], rel=1e-2)
        # the plot keeps every point, the others dimmed as context, and fits the view's points
        assert page.evaluate("window.__embedlens.plot.context")
        assert len(page.evaluate("window.__embedlens.drawnPoints()")) == 66
        assert len(page.evaluate("window.__embedlens.visiblePoints()")) == len(want)
        shot(page, "duplicates", docs=True)
        stage.locator("button").click()  # removable
        page.wait_for_function("window.__embedlens.gridTotal() === 66", timeout=30_000)
    finally:
        session.view = digits


def answered_since(page):
    """The page's clock for "the server has answered a selection post"; wait for a later value with
    ``wait_answered`` before reading ``session.selected``: the grid shows a selection before the server has it."""
    return page.evaluate("window.__embedlens.timings.lassoAnswered")


def wait_answered(page, before):
    page.wait_for_function(f"window.__embedlens.timings.lassoAnswered > {before}", timeout=30_000)


def lasso_zeros_region(page, digits):
    """A lasso around the plot's middle (as the first test draws); the points inside and their labels."""
    from matplotlib.path import Path as PolyPath

    pts = digits.load_brain_results("umap").points
    box = page.locator("#plot-canvas").bounding_box()
    poly_px = lasso_polygon(box, [(-0.3, -0.05), (-0.02, -0.28), (0.3, -0.1), (0.15, 0.25), (-0.2, 0.2)])
    poly_data = [page.evaluate("([x, y]) => window.__embedlens.toData(x, y)", list(v)) for v in poly_px]
    before, answered = page.evaluate("window.__embedlens.timings.gridUpdated"), answered_since(page)
    draw_lasso(page, poly_px)
    page.wait_for_function(f"window.__embedlens.timings.gridUpdated > {before}", timeout=30_000)
    wait_answered(page, answered)  # callers read session.selected
    return np.flatnonzero(PolyPath(poly_data).contains_points(pts))


def test_legend_counts_follow_the_lasso_and_isolating_filters_the_grid(page, session, digits):
    labels = np.array(digits.load_brain_results("umap").values("ground_truth.label"))
    keys = np.array(digits.load_brain_results("umap").keys)
    inside = lasso_zeros_region(page, digits)
    # selected / in view per class: what Python counts of the selected samples
    want = digits.select(session.selected).count_values("ground_truth.label")
    counts = page.evaluate("window.__embedlens.legendCounts()")
    assert {k: v[0] for k, v in counts.items() if v[0]} == want
    assert {k: v[1] for k, v in counts.items()} == digits.count_values("ground_truth.label")
    top = max(want, key=want.get)
    item = page.locator(f".legend-item[data-name='{top}'] .count")
    assert item.text_content() == f"{want[top]:,} / {int((labels == top).sum()):,}"
    # isolate the class with most selected points: the grid keeps to it, the lasso stays drawn
    page.dblclick(f".legend-item[data-name='{top}']")
    page.wait_for_function(f"window.__embedlens.gridTotal() === {want[top]}", timeout=30_000)
    page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
    assert set(page.evaluate("window.__embedlens.gridIds()")) <= set(keys[inside][labels[inside] == top])
    assert len(page.evaluate("window.__embedlens.lassoData()")) > 3
    assert len(session.selected) == len(inside)  # the selection itself is unchanged
    # isolate a class with nothing selected: an empty grid, not the old selection
    absent = next(c for c in sorted(set(labels)) if c not in want)
    page.dblclick(f".legend-item[data-name='{absent}']")
    page.wait_for_function("window.__embedlens.gridTotal() === 0", timeout=30_000)
    page.dblclick(f".legend-item[data-name='{absent}']")  # every class again
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(inside)}", timeout=30_000)
    # in a view, the counts are the view's
    session.view = digits.match_tags("test")
    page.wait_for_function("window.__embedlens.gridTotal() === 360", timeout=30_000)
    page.wait_for_function("Object.values(window.__embedlens.legendCounts()).reduce((a, v) => a + v[1], 0) === 360",
                           timeout=30_000)
    assert {k: v[1] for k, v in page.evaluate("window.__embedlens.legendCounts()").items() if v[1]} == \
        digits.match_tags("test").count_values("ground_truth.label")


def test_hover_shows_a_card_click_selects_double_click_opens(page, session, digits):
    results = digits.load_brain_results("umap")
    pts, keys = results.points, results.keys
    labels = results.values("ground_truth.label")
    box = page.locator("#plot-canvas").bounding_box()
    # the point nearest the plot's centre
    centre = page.evaluate("([x, y]) => window.__embedlens.toData(x, y)", [box["x"] + box["width"] / 2,
                                                                           box["y"] + box["height"] / 2])
    i = int(np.argmin(((pts - centre) ** 2).sum(1)))
    x, y = page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)", [float(pts[i, 0]), float(pts[i, 1])])
    page.mouse.move(x, y)
    page.wait_for_function("!document.getElementById('plot-tip').hidden && "
                           "document.querySelector('#plot-tip img')", timeout=10_000)
    j = int(page.get_attribute("#plot-tip", "data-index"))
    assert np.hypot(*(np.array(page.evaluate("([x, y]) => window.__embedlens.toPage(x, y)",
                                             [float(pts[j, 0]), float(pts[j, 1])])) - [x, y])) <= 8
    tip = page.locator("#plot-tip").text_content()
    assert keys[j] in tip and f"ground_truth.label: {labels[j]}" in tip
    answered = answered_since(page)
    page.mouse.click(x, y)
    page.wait_for_function(f"window.__embedlens.gridTotal() === 1", timeout=30_000)
    wait_answered(page, answered)
    assert page.evaluate("window.__embedlens.selectedPoints()") == [j] and session.selected == [keys[j]]
    page.mouse.dblclick(x, y)  # its clicks select the point, and it opens the point they selected
    page.wait_for_function(f"window.__embedlens.modal.detail && window.__embedlens.modal.detail.id === '{keys[j]}'",
                           timeout=30_000)
    page.keyboard.press("Escape")
    assert page.locator("#modal").is_hidden()


def test_reload_restores_the_tab_and_tabs_keep_their_own_selection(page, session, digits):
    page.check(".check[data-kind='tag'][data-value='test'] input")
    page.wait_for_function("window.__embedlens.gridTotal() === 360", timeout=30_000)
    page.select_option("#color-select", "predictions.label")
    page.wait_for_function("window.__embedlens.plot.field === 'predictions.label'")
    inside = lasso_zeros_region(page, digits)
    test_ids = set(digits.match_tags("test").values("id"))
    keys = digits.load_brain_results("umap").keys
    chosen = sorted(int(i) for i in inside if keys[i] in test_ids)
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(chosen)}", timeout=30_000)
    page.wait_for_function("location.search.includes('sel=')", timeout=30_000)
    assert "view=" in page.url and "sel=" in page.url and "color=predictions.label" in page.url
    page.reload()
    wait_ready(page)
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(chosen)}", timeout=30_000)
    assert page.evaluate("window.__embedlens.plot.field") == "predictions.label"
    assert page.locator("#color-select").input_value() == "predictions.label"
    assert sorted(page.evaluate("window.__embedlens.selectedPoints()")) == chosen
    assert page.evaluate("window.__embedlens.state().view.count") == 360
    # a second tab starts from Python's view, with nothing selected, and keeps its own lasso
    other = page.context.new_page()
    errors = collect_errors(other)
    open_page(other, session)
    assert other.evaluate("window.__embedlens.gridTotal()") == 1797
    assert other.evaluate("window.__embedlens.selectedPoints()") == []
    other.click("#mode-box")
    box = other.locator("#plot-canvas").bounding_box()
    drag_box(other, (box["x"] + 20, box["y"] + 20), (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2))
    # the grid shows the box at once; the server (and Python) have it once the page's post is answered
    other.wait_for_function("window.__embedlens.selectedPoints().length > 0 && window.__embedlens.state().lasso && "
                            "window.__embedlens.state().lasso.points === window.__embedlens.selectedPoints().length && "
                            "window.__embedlens.gridTotal() === window.__embedlens.state().grid_count", timeout=30_000)
    theirs = set(other.evaluate("window.__embedlens.selectedPoints()"))
    assert set(session.selected) == {keys[i] for i in theirs}  # Python reads the tab that changed last
    assert session.selected_by == other.evaluate("window.__embedlens.state().client")
    # the first tab is untouched
    assert sorted(page.evaluate("window.__embedlens.selectedPoints()")) == chosen
    page.evaluate("window.__embedlens.grid.reset(false)")
    page.wait_for_function(f"window.__embedlens.gridTotal() === {len(chosen)}", timeout=30_000)
    other.close()
    assert not errors, errors


def test_chips_scores_disabled_reasons_modal_tagging_and_keys(page, session, digits):
    # tiles: each chip names its field; a prediction that differs from the truth is marked
    chip = page.locator("#grid-spacer .tile").first.locator(".chip.label").first
    assert chip.locator("b").text_content() == "gt" and chip.get_attribute("data-field") == "ground_truth"
    wrong = digits.match(el.F("predictions.label") != el.F("ground_truth.label")).values("id")
    # disabled buttons say why
    assert page.locator("#tag-btn").is_disabled()
    assert "select samples first" in page.get_attribute("#tag-btn", "title")
    assert page.locator("#action-hardness").is_disabled()
    assert "compute_hardness" in page.get_attribute("#action-hardness", "title")
    # the top mistakes show the score that ranked them
    page.fill("#action-count", "5")
    page.click("#action-mistakes")
    page.wait_for_function("window.__embedlens.gridTotal() === 5", timeout=30_000)
    page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
    top = digits.sort_by("mistakenness", reverse=True).limit(5)
    first = page.locator(f"#grid-spacer .tile[data-id='{top.first().id}']")
    assert first.locator(".chip.score").text_content() == f"mistake {top.first().mistakenness:.3g}"
    if top.first().id in wrong:
        assert first.locator(".chip.label.differs").count() == 1
    # the modal tags its sample (t, type, Enter) and toggles its selection (f)
    page.dblclick(f"#grid-spacer .tile[data-id='{top.first().id}']")
    page.wait_for_selector("#modal:not([hidden]) #modal-image img")
    page.keyboard.press("t")
    page.keyboard.type("t-modal")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('t-modal')", timeout=30_000)
    assert el.load_dataset("digits").match_tags("t-modal").values("id") == [top.first().id]
    # the double-click's first click selected the tile; f unselects it, f again selects it
    assert session.selected == [top.first().id]
    page.keyboard.press("f")
    page.wait_for_function("window.__embedlens.state().selected_count === 0", timeout=30_000)
    assert session.selected == []
    page.wait_for_function("document.getElementById('modal-selected').textContent === ''")
    page.keyboard.press("f")
    page.wait_for_function("window.__embedlens.state().selected_count === 1", timeout=30_000)
    assert session.selected == [top.first().id]
    page.wait_for_function("document.getElementById('modal-selected').textContent === 'selected'")
    page.keyboard.press("Escape")
    assert page.locator("#modal").is_hidden()
    # the selection's export (the columns of io.tables.table_columns), and a named view
    with page.expect_download() as dl:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [(r["id"], r["filepath"], r["ground_truth"]) for r in rows] == \
        [(top.first().id, top.first().filepath, top.first().ground_truth.label)]
    page.fill("#save-view-name", "from-the-page")
    page.click("#save-view-btn")
    page.wait_for_function("document.getElementById('status').textContent.includes('saved view')", timeout=30_000)
    assert el.load_dataset("digits").load_saved_view("from-the-page").values("id") == [top.first().id]
    digits.delete_saved_view("from-the-page")
    digits.untag_samples("t-modal")


def test_keyboard_moves_the_grid_focus_opens_selects_and_tags(page, session, digits):
    """Arrows move the grid's focus by a tile or a row; Enter opens the focused tile, arrows step in the
    modal and the grid's focus follows, Esc closes it; f selects and unselects the focused tile; t goes
    to the tag box; Esc clears the selection."""
    ids = digits.values("id")
    page.mouse.move(5, 5)  # away from the plot: f acts on the grid's focus, not on a hovered point
    cols = page.evaluate("""() => { const tops = [...document.querySelectorAll('#grid-spacer .tile')]
        .map(t => t.style.top); return tops.filter(t => t === tops[0]).length; }""")
    assert cols > 1
    page.keyboard.press("ArrowRight")  # the first tile in sight takes the focus
    assert page.evaluate("window.__embedlens.grid.focused") == 0
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowLeft")
    want = 2 + cols - 1
    assert page.evaluate("window.__embedlens.grid.focused") == want
    assert page.locator("#grid-spacer .tile.focused").get_attribute("data-id") == ids[want]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # stays on the first row
    assert page.evaluate("window.__embedlens.grid.focused") == 1
    page.keyboard.press("Enter")
    page.wait_for_selector("#modal:not([hidden])")
    page.wait_for_function(f"window.__embedlens.modal.detail && window.__embedlens.modal.detail.id === '{ids[1]}'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"window.__embedlens.modal.detail.id === '{ids[2]}'")
    assert page.evaluate("window.__embedlens.grid.focused") == 2
    page.keyboard.press("Escape")
    assert page.locator("#modal").is_hidden() and session.selected == []
    page.keyboard.press("f")
    page.wait_for_function("window.__embedlens.selectedPoints().length === 1", timeout=30_000)
    assert session.selected == [ids[2]]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("f")
    page.wait_for_function("window.__embedlens.selectedPoints().length === 2", timeout=30_000)
    assert session.selected == [ids[2], ids[3]]
    page.keyboard.press("f")  # again: unselected
    page.wait_for_function("window.__embedlens.selectedPoints().length === 1", timeout=30_000)
    assert session.selected == [ids[2]]
    page.keyboard.press("t")
    assert page.evaluate("document.activeElement.id") == "tag-input"
    page.keyboard.type("kbd")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#status').textContent.includes('tagged 1')", timeout=30_000)
    assert digits.select([ids[2]]).values("tags")[0].count("kbd") == 1
    page.locator("#tag-input").blur()
    page.keyboard.press("Escape")
    page.wait_for_function("window.__embedlens.selectedPoints().length === 0", timeout=30_000)
    assert session.selected == []
    digits.untag_samples("kbd")


def test_each_tab_keeps_its_own_dataset_and_a_reload_restores_it(page, browser, session, digits, scenes):
    """Two tabs on two datasets: switching one leaves the other where it was; the dataset is in each
    tab's address, so a reload brings the tab back to its own; Python sees the tab that changed last."""
    ds, _ = scenes
    other = browser.new_context(viewport=VIEWPORT).new_page()
    errors = collect_errors(other)
    try:
        open_page(other, session)
        other.select_option("#dataset-select", ds.name)
        other.wait_for_function(f"window.__embedlens.state().dataset === '{ds.name}' && "
                                "window.__embedlens.plot.key === 'objects' && window.__embedlens.plot.header",
                                timeout=60_000)
        other.wait_for_function(f"window.__embedlens.gridTotal() === {len(ds)}", timeout=30_000)
        other.wait_for_function(f"location.search.includes('dataset={ds.name}') && "
                                "location.search.includes('run=objects')", timeout=30_000)
        assert session.dataset.name == ds.name  # the tab that changed last
        # the first tab still shows the digits, its grid, its plot and its dataset menu
        assert page.evaluate("window.__embedlens.state().dataset") == "digits"
        assert page.evaluate("window.__embedlens.gridTotal()") == 1797
        assert page.evaluate("window.__embedlens.plot.key") == "umap"
        assert page.input_value("#dataset-select") == "digits"
        page.reload()
        wait_ready(page)
        assert page.evaluate("window.__embedlens.state().dataset") == "digits" and "dataset=digits" in page.url
        other.reload()
        wait_ready(other)
        other.wait_for_function(f"window.__embedlens.state().dataset === '{ds.name}' && "
                                "window.__embedlens.plot.key === 'objects'", timeout=60_000)
        other.wait_for_function(f"window.__embedlens.gridTotal() === {len(ds)}", timeout=30_000)
        assert other.input_value("#dataset-select") == ds.name
        assert page.evaluate("window.__embedlens.gridTotal()") == 1797
    finally:
        other.context.close()
        session.dataset = digits  # every tab back on the digits for the next tests
    assert not errors, errors


@pytest.fixture(scope="module")
def split(module_home, digits):
    """A copy of the digits, its "test" samples compared with its "train" samples (brain key "cmp")."""
    from embedlens.brain.visualization import compute_visualization

    ds = digits.clone("digits-split")
    compute_visualization(ds, model="pixels", method="pca", brain_key="pca", seed=0, progress=False)
    res = el.compare_datasets(ds.match_tags("train"), ds.match_tags("test"), model="pixels", brain_key="cmp",
                              progress=False)
    return ds, res


def test_train_vs_production_colours_and_most_novel(page, session, digits, split):
    """Issue 14 in the page: colour by split (tags), by novelty (the reference missing) and by the
    comparison's clusters with their reference/target shares in the legend; Show > Most novel lists the
    comparison's top samples with their novelty, its stage removable."""
    ds, res = split
    session.dataset = ds
    try:
        page.wait_for_function(f"window.__embedlens.state().dataset === '{ds.name}' && "
                               "window.__embedlens.plot.key === 'pca' && window.__embedlens.plot.header",
                               timeout=60_000)
        page.select_option("#color-select", "tags")
        page.wait_for_function("'train' in window.__embedlens.legendCounts()")
        assert page.evaluate("window.__embedlens.legendCounts()") == {"test": [0, 360], "train": [0, 1437]}
        page.select_option("#color-select", "cmp_novelty")
        page.wait_for_function("document.querySelector('#legend').textContent.includes('missing')")
        assert "1,437 missing" in page.locator("#legend").text_content()
        page.select_option("#color-select", "cmp cluster")
        page.wait_for_function("Object.keys(window.__embedlens.legendCounts()).some(n => n.startsWith('cluster 00'))")
        names = list(page.evaluate("window.__embedlens.legendCounts()"))
        assert len(names) == len(res.clusters)
        for cl in res.clusters:
            want = f"cluster {cl['cluster']:02d} · ref {cl['reference_share']:.1%} · target {cl['target_share']:.1%}"
            assert any(n.startswith(want) for n in names), (want, names)
        shot(page, "compare-clusters")
        page.fill("#action-count", "25")
        page.click("#action-novelty")
        page.wait_for_function("window.__embedlens.gridTotal() === 25", timeout=30_000)
        page.wait_for_function("!document.querySelector('#grid-spacer .tile.loading')")
        top = res.top(25).values("id")
        ids = page.evaluate("window.__embedlens.gridIds()")
        assert ids == top[:len(ids)]
        stage = page.locator("#view-stages .stage")
        assert stage.last.text_content().startswith("most novel (cmp): 25 samples")
        novelty = dict(zip(res.keys, np.asarray(res.novelty, float).tolist()))
        chip = page.locator(f"#grid-spacer .tile[data-id='{top[0]}'] .chip.score")
        assert chip.text_content().startswith("novel ")
        assert chip.get_attribute("title").startswith(f"cmp_novelty = {novelty[top[0]]}")
        stage.last.locator("button").click()
        page.wait_for_function("window.__embedlens.gridTotal() !== 25", timeout=30_000)
    finally:
        session.dataset = digits
