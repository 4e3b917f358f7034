"""show_grid: a grid of real images with captions, headless (a matplotlib Figure)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import embedlens as el


def test_grid_of_a_view_with_captions(digits_px):
    ds = digits_px[0]
    threes = ds.match(el.F("ground_truth.label") == "3").sort_by("index")
    fig = el.show_grid(threes, 6, labels="ground_truth")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes] == ["3"] * 6
    # The image drawn is the sample's (its thumbnail: the same picture, scaled).
    first = np.asarray(Image.open(threes.first().filepath).convert("L"), dtype=float)
    drawn = fig.axes[0].get_images()[0].get_array().astype(float)
    drawn = drawn.mean(axis=2) if drawn.ndim == 3 else drawn  # the thumbnail cache keeps JPEGs in RGB
    small = np.asarray(Image.fromarray(drawn.astype(np.uint8)).resize(first.shape[::-1], Image.BILINEAR), float)
    assert np.corrcoef(small.ravel(), first.ravel())[0, 1] > 0.9
    fig.savefig(fig_path := digits_px[0].path.parent / "grid.png")
    assert fig_path.stat().st_size > 1000
    # 10 images: 4 columns; float captions with 3 decimals; explicit captions.
    ds.set_values("score", [i / 7 for i in range(len(ds))])
    try:
        g = el.show_grid(ds, 10, labels="score")
        assert len([a for a in g.axes if a.get_images()]) == 10 and g.axes[1].get_title() == "0.143"
    finally:
        ds.delete_sample_field("score")
    g2 = el.show_grid(ds, 3, labels=["a", "b", "c"], cols=1, title="three")
    assert [a.get_title() for a in g2.axes] == ["a", "b", "c"] and g2._suptitle.get_text() == "three"


def test_grid_of_photo_files_and_arrays(photos):
    paths = list(photos.values())
    fig = el.show_grid(paths, 5, labels=[p.stem for p in paths])
    assert len([a for a in fig.axes if a.get_images()]) == 5
    shape = fig.axes[0].get_images()[0].get_array().shape
    assert max(shape[:2]) == 256 and shape[2] == 3  # a colour photo, scaled to the grid's 256 px
    arr = np.asarray(Image.open(paths[0]))
    assert len(el.show_grid([arr, Image.open(paths[1])]).axes) == 2


@pytest.mark.parametrize("args, match", [
    (("not a list",), "dataset, a view or a list"),
    (([], 3), "no images"),
    (([np.zeros((4, 4))], 0), "n must be"),
    (([np.zeros((4, 4))] * 2, 2, ["one"]), "1 captions for 2 images"),
])
def test_bad_input(args, match):
    with pytest.raises(el.EmbedlensError, match=match):
        el.show_grid(*args)


def test_a_fresh_notebook_shows_the_figure_inline(tmp_path):
    """A figure that is a cell's value is drawn as a PNG in a kernel that never ran ``%matplotlib inline``
    nor imported pyplot (it printed ``<Figure size ... with 4 Axes>`` before)."""
    import sys
    from pathlib import Path

    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "tutorials"))
    import run as tutorials  # docs/tutorials/run.py: how the tutorials run

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys, numpy as np, embedlens as el\n"
                                          "el.show_grid([np.full((8, 8), 40 * i, np.uint8) for i in range(4)], 4)"),
                nbformat.v4.new_code_cell("'matplotlib.pyplot' in sys.modules")]
    path = tmp_path / "fresh.ipynb"
    nbformat.write(nb, path)
    out = tutorials.execute(path, write=False)
    shown = [o for o in out.cells[0].outputs if o.get("output_type") == "execute_result"]
    assert shown and "image/png" in shown[0]["data"], out.cells[0].outputs
    assert out.cells[1].outputs[0]["data"]["text/plain"] == "False"  # still no pyplot: no figure manager holds it
