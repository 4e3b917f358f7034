"""Scatter plots of brain results: plotly (interactive) or matplotlib (static), one shape of plot object.

:class:`ScatterPlot` is what ``results.visualize()`` returns. It holds the figure (``plot.figure``: a
plotly ``Figure`` or a matplotlib ``Figure``) and the point ids in plot order (``plot.ids``; per trace:
``plot.trace_ids``), which is all a linked view needs to map a selection of points back to samples
(``trace_ids[curve][point]`` for a plotly selection event). ``plot.show(height=...)`` displays it as
FiftyOne's plots do; any other attribute is the figure's (``plot.data``, ``plot.write_html(...)``,
``plot.savefig(...)``).

Thumbnails at their positions (``visualize(thumbnails=n)``) are chosen by :func:`spread_sample`: a
Poisson-disc pick in a seeded random order, so that no two drawn images overlap.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any, Sequence

import numpy as np

from ..core.errors import InvalidInputError, WrongTypeError

#: A thumbnail's side, as a fraction of the plot's extent on each axis, is ``THUMBNAIL_SPACING / sqrt(n)``
#: for ``thumbnails=n``: ``n`` such boxes cover at most 1 / 2.25 (44%) of the plot, so on spread-out
#: layouts all ``n`` fit; on clustered ones fewer do (the clusters fill up first).
THUMBNAIL_SPACING = 1 / 1.5
#: Pixels of the longest side of a thumbnail as embedded in a plotly figure (kept small: they travel in the HTML).
THUMBNAIL_PIXELS = 96
NONE_COLOUR = "#9e9e9e"


class ScatterPlot:
    """A scatter plot of points, with the ids of its points in plot order.

    Attributes
    ----------
    figure : plotly.graph_objects.Figure or matplotlib.figure.Figure
    backend : "plotly" or "matplotlib"
    ids : list of str
        The id of every drawn point (sample ids; label ids for object-level runs), trace by trace, in the
        order the points were drawn.
    trace_ids : list of list of str
        The ids of each trace's points (``[]`` for traces that are not points: centroids, arrows); a
        plotly selection's ``(curveNumber, pointIndex)`` is ``trace_ids[curveNumber][pointIndex]``.
    link_type : "samples" or "labels"
        What the ids are.
    samples : SampleCollection
        The collection the points belong to.
    selected_ids : list of str
        The points selected, as ids: ``session.plots.attach(plot)`` keeps it in step with the app (and
        draws the selection in a plotly figure); set it and call ``session.plots.sync()`` to select in
        the app.
    """

    def __init__(self, figure: Any, backend: str, trace_ids: list[list[str]], link_type: str, samples: Any,
                 patches_field: str | None = None) -> None:
        self.figure = figure
        self.backend = backend
        self.trace_ids = trace_ids
        self.ids = [i for t in trace_ids for i in t]
        self.link_type = link_type
        self.samples = samples
        self.patches_field = patches_field
        self.selected_ids: list[str] = []

    def show(self, height: int | None = None, width: int | None = None, **layout: Any) -> None:
        """Display the plot (in a notebook: inline). ``height``/``width`` in pixels; for plotly, other
        keywords update the layout (e.g. ``yaxis_scaleanchor="x"``), as FiftyOne's ``plot.show`` does."""
        if self.backend == "plotly":
            size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
            self.figure.update_layout(**size, **layout)
            self.figure.show()
            return
        if layout:
            raise WrongTypeError(f"show() of a matplotlib plot takes height= and width= only, got "
                                 f"{', '.join(sorted(layout))}")
        dpi = self.figure.dpi
        w, h = self.figure.get_size_inches()
        self.figure.set_size_inches(width / dpi if width else w, height / dpi if height else h)
        _display(self)

    def save(self, path: str) -> None:
        """Write the plot: ``.html`` for plotly (self-contained), an image file for matplotlib."""
        if self.backend == "plotly":
            self.figure.write_html(str(path))
        else:
            self.figure.savefig(str(path), bbox_inches="tight")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        if self.backend == "plotly":
            return self.figure._repr_mimebundle_(include, exclude, **kwargs)
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", bbox_inches="tight")
        return {"image/png": buf.getvalue()}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("figure", "backend"):
            raise AttributeError(name)
        return getattr(self.figure, name)

    def __repr__(self) -> str:
        return f"<ScatterPlot {self.backend} points={len(self.ids)} link_type={self.link_type!r}>"


def _display(obj: Any) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebook extra only
        return
    if get_ipython() is not None:
        display(obj)


# ---------------------------------------------------------------------------------------------- thumbnails


def spread_sample(xy: np.ndarray, n: int, seed: int = 51) -> tuple[np.ndarray, float]:
    """At most ``n`` rows of ``xy`` whose thumbnails do not overlap, and the thumbnails' side.

    Coordinates are scaled to [0, 1] on each axis; the side is ``s = THUMBNAIL_SPACING / sqrt(n)``. Rows
    are visited in a random order (seeded, so the same plot twice shows the same images) and kept when
    every kept row is at least ``s`` away on some axis (Chebyshev distance >= s: the boxes do not
    overlap), until ``n`` are kept. A grid of cells of side ``s`` makes each check O(1).
    """
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    side = THUMBNAIL_SPACING / math.sqrt(n)
    lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
    u = (xy - lo) / np.where(span > 0, span, 1.0)
    cells = np.floor(u / side).astype(np.int64)
    taken: dict[tuple[int, int], int] = {}
    kept: list[int] = []
    for i in np.random.default_rng(seed).permutation(len(xy)):
        cx, cy = int(cells[i, 0]), int(cells[i, 1])
        clash = False
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                j = taken.get((cx + dx, cy + dy))
                if j is not None and np.abs(u[i] - u[j]).max() < side:
                    clash = True
                    break
            if clash:
                break
        if not clash:
            taken[(cx, cy)] = int(i)
            kept.append(int(i))
            if len(kept) == n:
                break
    return np.array(kept, dtype=np.int64), side


def _load_thumbnail(path: str | None, pixels: int) -> Any:
    from PIL import Image

    if path is None:
        return None
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((pixels, pixels))
        return img


def _data_uri(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------------------------------- colours


def palette(n: int) -> list[str]:
    from plotly import colors

    if n <= 10:
        return list(colors.qualitative.Plotly[:n])
    if n <= 24:
        return list(colors.qualitative.Dark24[:n])
    return list(colors.sample_colorscale("Turbo", [i / max(n - 1, 1) for i in range(n)]))


def _mpl_colours(groups: list[tuple[str, np.ndarray]]) -> list[Any]:
    from matplotlib import colormaps

    n = len(groups)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [NONE_COLOUR if name == "(none)" else cmap(i if n <= 20 else i / max(n - 1, 1))
            for i, (name, _) in enumerate(groups)]


def _colour_of(spec: dict[str, Any], colours: list[Any]) -> dict[str, Any]:
    if spec["kind"] != "categorical":
        return {}
    return {name: c for (name, _), c in zip(spec["groups"], colours)}


# ---------------------------------------------------------------------------------------------- plotly


def _hover(spec: dict[str, Any], rows: np.ndarray) -> tuple[np.ndarray, str]:
    cols = [spec["keys"][rows]]
    lines = ["id: %{customdata[0]}"]
    if spec["sample_ids"] is not None:
        cols.append(spec["sample_ids"][rows])
        lines.append(f"sample: %{{customdata[{len(cols) - 1}]}}")
    if "text" in spec:
        cols.append(spec["text"][rows])
        lines.append(f"{spec['labels_title']}: %{{customdata[{len(cols) - 1}]}}")
    if "size_values" in spec:
        cols.append(spec["size_values"][rows])
        lines.append(f"{spec['sizes_title']}: %{{customdata[{len(cols) - 1}]}}")
    return np.stack(cols, axis=1), "<br>".join(lines) + "<extra></extra>"


def plotly_figure(spec: dict[str, Any], kwargs: dict[str, Any]) -> ScatterPlot:
    import plotly.graph_objects as go

    pts, n, three = spec["points"], len(spec["points"]), spec["points"].shape[1] == 3
    base_size = kwargs.pop("marker_size", 5 if n <= 10_000 else 3)
    opacity = kwargs.pop("opacity", 0.8 if n <= 10_000 else 0.6)
    colorscale = kwargs.pop("colorscale", "Viridis")
    axis_equal = kwargs.pop("axis_equal", False)
    layout_extra = kwargs.pop("layout", None) or {}
    Trace = go.Scatter3d if three else go.Scattergl
    trace_ids: list[list[str]] = []

    def trace(rows: np.ndarray, name: str, marker: dict[str, Any], showlegend: bool = True):
        custom, template = _hover(spec, rows)
        size = spec["sizes"][rows] if "sizes" in spec else base_size
        coords = {"x": pts[rows, 0], "y": pts[rows, 1]}
        if three:
            coords["z"] = pts[rows, 2]
        trace_ids.append(spec["keys"][rows].tolist())
        return Trace(mode="markers", name=name, customdata=custom, hovertemplate=template,
                     marker={"size": size, "opacity": opacity, **marker}, showlegend=showlegend, **coords)

    traces = []
    colours: list[Any] = []
    if spec["kind"] == "categorical":
        colours = palette(len(spec["groups"]))
        colours = [NONE_COLOUR if name == "(none)" else c for (name, _), c in zip(spec["groups"], colours)]
        for (name, rows), colour in zip(spec["groups"], colours):
            traces.append(trace(rows, name, {"color": colour}))
    elif spec["kind"] == "numeric":
        v = spec["values"]
        ok = np.isfinite(v)
        rows = np.flatnonzero(ok)
        bar = {"title": {"text": spec["labels_title"]}} if spec["show_colorbar_title"] else {}
        traces.append(trace(rows, spec["labels_title"], {"color": v[rows], "colorscale": colorscale,
                                                         "showscale": True, "colorbar": bar}, showlegend=False))
        if not ok.all():
            traces.append(trace(np.flatnonzero(~ok), "(none)", {"color": NONE_COLOUR}))
    else:
        traces.append(trace(np.arange(n), "points", {}, showlegend=False))
    fig = go.Figure(traces)
    by_name = _colour_of(spec, colours)
    for ov in spec["overlays"]:
        if ov["type"] == "markers":
            xy = np.asarray(ov["xy"])
            fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers+text", name=ov["title"],
                                     text=ov["names"], textposition="top center", hoverinfo="text",
                                     marker={"size": 16, "symbol": "diamond", "line": {"width": 2, "color": "black"},
                                             "color": [by_name.get(c, "black") for c in ov["names"]]}))
            trace_ids.append([])
        else:  # arrows from the origin: the origin drawn, the ends as unseen points, so the autorange spans both
            xy = np.asarray(ov["xy"], dtype=float).reshape(-1, 2)
            fig.add_trace(go.Scatter(x=np.r_[0.0, xy[:, 0]], y=np.r_[0.0, xy[:, 1]], mode="markers", name="origin",
                                     showlegend=False, hoverinfo="skip",
                                     marker={"size": [6] + [0] * len(xy), "color": "black"}))
            trace_ids.append([])
            for name, (x, y) in zip(ov["names"], ov["xy"]):
                colour = by_name.get(name, "black")
                fig.add_annotation(x=float(x), y=float(y), ax=0.0, ay=0.0, xref="x", yref="y", axref="x",
                                   ayref="y", showarrow=True, arrowhead=2, arrowwidth=2.5, arrowcolor=colour,
                                   text=f"<b>{name}</b>", font={"color": colour}, xanchor="left")
    if spec.get("thumbnails"):
        side, rows, images = spec["thumbnails"]
        span = np.ptp(pts[:, :2], axis=0)
        span = np.where(span > 0, span, 1.0)
        for r, img in zip(rows, images):
            if img is None:
                continue
            fig.add_layout_image(source=_data_uri(img), xref="x", yref="y", x=float(pts[r, 0]), y=float(pts[r, 1]),
                                 sizex=side * span[0], sizey=side * span[1], xanchor="center", yanchor="middle",
                                 sizing="contain", layer="above")
    layout: dict[str, Any] = {"title": {"text": spec["title"]}, "template": "plotly_white", "hovermode": "closest",
                              "legend": {"itemsizing": "constant", "title": {"text": spec["labels_title"] or ""}}}
    for k in ("width", "height"):
        if k in kwargs:
            layout[k] = kwargs.pop(k)
    for k, axis in (("xlabel", "xaxis"), ("ylabel", "yaxis")):
        if k in kwargs:
            layout[axis] = {"title": {"text": kwargs.pop(k)}}
    fig.update_layout(**layout)
    if axis_equal and not three:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    if layout_extra:
        fig.update_layout(**layout_extra)
    _no_more(kwargs)
    return ScatterPlot(fig, "plotly", trace_ids, spec["link_type"], spec["samples"], spec["patches_field"])


# ---------------------------------------------------------------------------------------------- matplotlib


def matplotlib_figure(spec: dict[str, Any], kwargs: dict[str, Any]) -> ScatterPlot:
    from ..display import new_figure

    pts, n, three = spec["points"], len(spec["points"]), spec["points"].shape[1] == 3
    base_size = kwargs.pop("marker_size", 5 if n <= 10_000 else 3)
    opacity = kwargs.pop("opacity", 0.8 if n <= 10_000 else 0.6)
    cmap = kwargs.pop("cmap", "viridis")
    axis_equal = kwargs.pop("axis_equal", False)
    ax = kwargs.pop("ax", None)
    figsize = kwargs.pop("figsize", (8, 6.5))
    for k in ("width", "height"):
        kwargs.pop(k, None)  # plotly-only sizes in pixels
    if ax is None:
        fig = new_figure(figsize=figsize)
        ax = fig.add_subplot(projection="3d") if three else fig.add_subplot()
    else:
        fig = ax.figure
    trace_ids: list[list[str]] = []

    def scatter(rows: np.ndarray, **kw):
        size = spec["sizes"][rows] ** 2 / 4 if "sizes" in spec else base_size ** 2 / 4
        coords = [pts[rows, d] for d in range(pts.shape[1])]
        trace_ids.append(spec["keys"][rows].tolist())
        return ax.scatter(*coords, s=size, alpha=opacity, linewidths=0, **kw)

    colours: list[Any] = []
    if spec["kind"] == "categorical":
        colours = _mpl_colours(spec["groups"])
        for (name, rows), colour in zip(spec["groups"], colours):
            scatter(rows, color=colour, label=name)
    elif spec["kind"] == "numeric":
        v = spec["values"]
        ok = np.isfinite(v)
        if not ok.all():
            scatter(np.flatnonzero(~ok), color=NONE_COLOUR, label="(none)")
        sc = scatter(np.flatnonzero(ok), c=v[ok], cmap=cmap)
        fig.colorbar(sc, ax=ax, label=spec["labels_title"] if spec["show_colorbar_title"] else None)
    else:
        scatter(np.arange(n))
    by_name = _colour_of(spec, colours)
    for ov in spec["overlays"]:
        xy = np.asarray(ov["xy"])
        if ov["type"] == "markers":
            ax.scatter(xy[:, 0], xy[:, 1], s=220, marker="D", edgecolors="black", linewidths=2,
                       c=[by_name.get(c, "black") for c in ov["names"]], zorder=5)
            for name, (x, y) in zip(ov["names"], xy):
                ax.annotate(name, (x, y), fontsize=11, fontweight="bold", ha="center", va="bottom",
                            xytext=(0, 8), textcoords="offset points", zorder=6)
        else:
            for name, (x, y) in zip(ov["names"], xy):
                colour = by_name.get(name, "black")
                ax.annotate("", xy=(x, y), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": colour, "lw": 2.5},
                            zorder=6)
                ax.text(x, y, f" {name}", color=colour, fontsize=10, fontweight="bold", zorder=6)
            ax.scatter([0], [0], color="black", s=25, zorder=7)
            ax.update_datalim(np.r_[[[0.0, 0.0]], xy.reshape(-1, 2)])  # the autoscaled axes span every arrow
            ax.autoscale_view()
    if spec.get("thumbnails"):
        _mpl_thumbnails(ax, pts, spec, colours)
        for ov in spec["overlays"]:  # the limits it set must span the arrows: from the origin to their ends
            if ov["type"] == "arrows":
                xy = np.r_[[[0.0, 0.0]], np.asarray(ov["xy"], dtype=float).reshape(-1, 2)]
                (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
                ax.set_xlim(min(x0, xy[:, 0].min()), max(x1, xy[:, 0].max()))
                ax.set_ylim(min(y0, xy[:, 1].min()), max(y1, xy[:, 1].max()))
    if spec["kind"] == "categorical":
        ax.legend(title=spec["labels_title"], markerscale=2, loc="best", fontsize="small")
    ax.set_title(kwargs.pop("title", spec["title"]))
    if "xlabel" in kwargs:
        ax.set_xlabel(kwargs.pop("xlabel"))
    if "ylabel" in kwargs:
        ax.set_ylabel(kwargs.pop("ylabel"))
    if axis_equal:
        ax.set_aspect("equal", adjustable="datalim")
    _no_more(kwargs)
    return ScatterPlot(fig, "matplotlib", trace_ids, spec["link_type"], spec["samples"], spec["patches_field"])


def _mpl_thumbnails(ax: Any, pts: np.ndarray, spec: dict[str, Any], colours: list[Any]) -> None:
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    side, rows, images = spec["thumbnails"]
    lo, span = pts[:, :2].min(axis=0), np.ptp(pts[:, :2], axis=0)
    span = np.where(span > 0, span, 1.0)
    margin = side * span / 2  # room for the images of the points on the edges
    ax.set_xlim(lo[0] - margin[0], lo[0] + span[0] + margin[0])
    ax.set_ylim(lo[1] - margin[1], lo[1] + span[1] + margin[1])
    # One normalised unit is bbox / (1 + side) pixels on each axis; a box of side*that on the shorter axis
    # keeps boxes of points >= side apart (on some axis) from overlapping.
    box_px = 0.95 * side * min(ax.bbox.width, ax.bbox.height) / (1 + side)
    row_colour = {}
    if spec["kind"] == "categorical":
        for (name, grows), colour in zip(spec["groups"], colours):
            row_colour.update(dict.fromkeys(grows.tolist(), colour))
    for r, img in zip(rows, images):
        if img is None:
            continue
        zoom = box_px / max(img.size)
        ab = AnnotationBbox(OffsetImage(np.asarray(img), zoom=zoom), (pts[r, 0], pts[r, 1]), frameon=True, pad=0.1,
                            bboxprops={"edgecolor": row_colour.get(int(r), "#555555"), "linewidth": 1.2})
        ax.add_artist(ab)


def _no_more(kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise WrongTypeError(f"visualize() got unexpected arguments: {', '.join(sorted(kwargs))}")


def check_dims(dims: Any, num_dims: int) -> list[int]:
    """The columns of the points to plot: ``dims`` (0-based, 2 or 3 of them) or the first 2/3."""
    if dims is None:
        return list(range(min(num_dims, 3)))
    if (not isinstance(dims, Sequence) or isinstance(dims, str) or len(dims) not in (2, 3)
            or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and 0 <= d < num_dims
                       for d in dims) or len(set(dims)) != len(dims)):
        raise InvalidInputError(f"dims must be 2 or 3 distinct column indices in [0, {num_dims}), got {dims!r}")
    return [int(d) for d in dims]


__all__ = ["ScatterPlot", "THUMBNAIL_SPACING", "matplotlib_figure", "plotly_figure", "spread_sample"]
