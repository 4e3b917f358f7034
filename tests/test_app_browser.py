"""The app in a real browser (headless Chromium): lasso in the WebGL plot -> grid -> tags in SQLite,
the legend, grid clicks lighting up points, and Python's session.view reaching the page.

Needs /usr/bin/chromium (Debian package ``chromium``; ``make test`` installs it) and the built page
(``make install`` runs ``npm ci && npm run build`` in frontend/).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import embedlens as el

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (apt-get install -y chromium)")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 860}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser_home")


@pytest.fixture(autouse=True)
def _use_module_home(home, embedlens_home, monkeypatch):
    monkeypatch.setenv("EMBEDLENS_HOME", str(home))


@pytest.fixture(scope="module")
def digits(home):
    from embedlens.brain.visualization import compute_visualization

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(home))
        ds = el.load_sample_dataset("digits", progress=False)
        compute_visualization(ds, model="pixels", method="umap", brain_key="umap", seed=51, progress=False)
    return ds


@pytest.fixture(scope="module")
def session(digits):
    from embedlens.app import STATIC_BUILT, launch_app

    assert STATIC_BUILT(), "the page is not built: run `make install` (or `cd frontend && npm ci && npm run build`)"
    s = launch_app(digits, port=0, auto=False)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, session, digits):
    session.view = None
    session.clear_selection()
    ctx = browser.new_context(viewport=VIEWPORT)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    open_page(pg, session)
    yield pg
    ctx.close()
    assert not errors, errors


def open_page(pg, session) -> None:
    pg.goto(session.url)
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

    page.reload()
    open_page(page, session)
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
