"""``embedlens demo``: the main job on a built-in dataset, as a list of small steps.

Each step prints the Python it ran and what came back, so the demo doubles as a tutorial. Later
features add a step to ``DEMO_STEPS``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import embedlens as el

from .config import home
from .zoo import load_sample_dataset, sample_data_dir
from .core.errors import InvalidInputError


def _q(text: str) -> str:
    """``text`` as a double-quoted Python string literal, for the code lines the demo prints."""
    return json.dumps(text)


@dataclass
class DemoContext:
    """What the demo steps share: the dataset they work on and what earlier steps produced."""

    sample_name: str
    progress: bool
    echo: Callable[[str], None] = print
    dataset: Optional[el.Dataset] = None
    results: dict[str, Any] = field(default_factory=dict)

    def show(self, code: str, result: Any = None) -> None:
        """Print a line of Python the step ran, then what it returned (indented)."""
        self.echo(f"  >>> {code}")
        if result is not None:
            for line in str(result).splitlines():
                self.echo(f"  {line}")

    @property
    def ds(self) -> el.Dataset:
        if self.dataset is None:
            raise InvalidInputError("the demo's first step must load a dataset")
        return self.dataset


DemoStep = Callable[[DemoContext], None]
DEMO_VIEW = "test-threes"
DEMO_TAG = "demo-pick"


def _demo_load(ctx: DemoContext) -> None:
    existed = el.dataset_exists(ctx.sample_name)
    ctx.dataset = load_sample_dataset(ctx.sample_name, progress=ctx.progress)
    ctx.show(f"ds = el.load_sample_dataset({_q(ctx.sample_name)})", ctx.ds)
    ctx.echo(f"  ({'reused the stored dataset' if existed else 'built it now; later runs reuse it'})")


def _demo_class_counts(ctx: DemoContext) -> None:
    counts = ctx.ds.count_values("ground_truth.label")
    ctx.results["class_counts"] = counts
    ctx.show('ds.count_values("ground_truth.label")',
             "  ".join(f"{k}: {counts[k]}" for k in sorted(counts, key=str)))


def _demo_view(ctx: DemoContext) -> None:
    view = ctx.ds.match_tags("test").match(el.F("ground_truth.label") == "3").sort_by("index")
    ctx.results["view"] = view
    ctx.show('view = ds.match_tags("test").match(el.F("ground_truth.label") == "3").sort_by("index")')
    ctx.show("len(view)", len(view))
    ctx.show('view.values("index")[:5]', view.limit(5).values("index"))


def _demo_tag(ctx: DemoContext) -> None:
    picked = ctx.results["view"].take(5, seed=51)
    picked.tag_samples(DEMO_TAG)
    ctx.show(f"view.take(5, seed=51).tag_samples({_q(DEMO_TAG)})")
    ctx.show("ds.count_sample_tags()", ctx.ds.count_sample_tags())


def _demo_save_view(ctx: DemoContext) -> None:
    ctx.ds.save_view(DEMO_VIEW, ctx.results["view"], overwrite=True)
    ctx.show(f"ds.save_view({_q(DEMO_VIEW)}, view)")
    ctx.show(f"ds.load_saved_view({_q(DEMO_VIEW)}).count()", ctx.ds.load_saved_view(DEMO_VIEW).count())


def _demo_export(ctx: DemoContext) -> None:
    out = home() / "exports" / f"{ctx.sample_name}-test"
    result = ctx.ds.match_tags("test").export(out, "classification-tree", label_field="ground_truth",
                                              export_media="copy", overwrite=True, progress=ctx.progress)
    files = len(result["paths"])
    ctx.results["export_dir"], ctx.results["export_files"] = out, files
    ctx.show(f'ds.match_tags("test").export({_q(str(out))}, "classification-tree")')
    ctx.echo(f"  wrote {files} files: one folder per class")


def _demo_embed(ctx: DemoContext) -> None:
    field = "efficientnet"
    stored = field in ctx.ds.list_embeddings() and ctx.ds.get_embeddings_info(field).get("count", 0)
    start = time.perf_counter()
    emb = ctx.ds.compute_embeddings(el.DEFAULT_MODEL, embeddings_field=field, progress=ctx.progress)
    seconds = time.perf_counter() - start
    ctx.results["embeddings_field"] = field
    ctx.show(f"emb = ds.compute_embeddings({_q(el.DEFAULT_MODEL)}, embeddings_field={_q(field)})")
    ctx.show("emb.shape, emb.dtype", f"{emb.shape}, {emb.dtype}")
    if stored:
        ctx.echo(f"  reused {stored} stored rows; computed only what was missing ({seconds:.1f} s)")
    else:
        ctx.echo(f"  {len(emb) / seconds:.0f} images/s on this machine ({seconds:.1f} s, incl. model load)")


def _demo_visualize(ctx: DemoContext) -> None:
    field = ctx.results["embeddings_field"]
    viz = el.compute_visualization(ctx.ds, embeddings=field, brain_key="umap", seed=51, overwrite=True,
                                   progress=ctx.progress)
    ctx.show(f'viz = el.compute_visualization(ds, embeddings={_q(field)}, brain_key="umap", seed=51)')
    ctx.show("viz.points.shape", viz.points.shape)
    ctx.echo('  viz.visualize(labels="ground_truth.label") draws it; `embedlens app` shows it linked to the images')


def _demo_similar(ctx: DemoContext) -> None:
    field = ctx.results["embeddings_field"]
    index = el.compute_similarity(ctx.ds, embeddings=field, brain_key="sim", overwrite=True, progress=ctx.progress)
    ctx.results["index"] = index
    query = ctx.ds.match_tags("test").first()
    near = ctx.ds.sort_by_similarity(query.id, k=6, brain_key="sim", dist_field="dist")
    ctx.show(f'index = el.compute_similarity(ds, embeddings={_q(field)}, brain_key="sim")')
    ctx.show(f"ds.sort_by_similarity({_q(query.id)}, k=6).values('ground_truth.label')",
             near.values("ground_truth.label"))
    ctx.echo(f"  the query is a {query.ground_truth.label!r}; distances {[round(d, 3) for d in near.values('dist')]}")


def _demo_duplicates_unique(ctx: DemoContext) -> None:
    index = ctx.results["index"]
    index.find_duplicates()
    ctx.show("index.find_duplicates(); len(index.duplicate_ids)", len(index.duplicate_ids))
    index.find_unique(10)
    labels = ctx.ds.select(index.unique_ids, ordered=True).values("ground_truth.label")
    ctx.show("index.find_unique(10); labels of the 10 most unique", labels)
    field = ctx.results["embeddings_field"]
    el.compute_uniqueness(ctx.ds, embeddings=field, overwrite=True, progress=ctx.progress)
    lo, hi = ctx.ds.bounds("uniqueness")
    ctx.show(f'el.compute_uniqueness(ds, embeddings={_q(field)}); ds.bounds("uniqueness")', (round(lo, 3), round(hi, 3)))


def _demo_mistakes(ctx: DemoContext) -> None:
    field = ctx.results["embeddings_field"]
    res = el.compute_predictions(ctx.ds, embeddings=field, overwrite=True, progress=ctx.progress)
    ctx.show(f"el.compute_predictions(ds, embeddings={_q(field)}).accuracy  # out of fold", round(res.accuracy, 3))
    el.compute_mistakenness(ctx.ds, "predictions", overwrite=True, progress=ctx.progress)
    top = ctx.ds.sort_by("mistakenness", reverse=True).limit(5)
    ctx.show('el.compute_mistakenness(ds, "predictions"); ds.sort_by("mistakenness", reverse=True).limit(5)')
    for i, lab, pred, score in zip(top.values("id"), top.values("ground_truth.label"),
                                   top.values("predictions.label"), top.values("mistakenness")):
        ctx.echo(f"  {score:.3f}  {i}  labelled {lab!r}, looks like {pred!r}")


def _demo_propose(ctx: DemoContext) -> None:
    field = ctx.results["embeddings_field"]
    res = el.propose_labels(ctx.ds, embeddings=field, unlabeled=ctx.ds.match_tags("train"), pred_field="hypothesis",
                            overwrite=True, progress=ctx.progress)
    got = ctx.ds.match_tags("train").exists("hypothesis")
    right = sum(a == b for a, b in zip(got.values("hypothesis.label"), got.values("ground_truth.label")))
    ctx.show(f'el.propose_labels(ds, embeddings={_q(field)}, unlabeled=ds.match_tags("train"))')
    ctx.echo(f"  proposed {res.num_labeled} labels ({right / max(res.num_labeled, 1):.1%} agree with the hidden "
             f"ground truth), left {res.num_left} for a person")


def _demo_where(ctx: DemoContext) -> None:
    ctx.echo(f"  dataset:  {ctx.ds.path}")
    ctx.echo(f"  images:   {sample_data_dir(ctx.sample_name)}")
    ctx.echo(f"  export:   {ctx.results['export_dir']}")
    ctx.echo(f"  Python:   ds = el.load_dataset({_q(ctx.ds.name)})")
    ctx.echo(f"  Next:     embedlens app {ctx.ds.name}   (the embeddings plot linked to the images)")


#: What ``embedlens demo --app`` prints before serving the app on the demo's dataset.
APP_TOUR = """
A tour of the app (the plot on the right is linked both ways to the image grid in the middle):
  1. The plot is coloured by ground_truth.label. Drag a lasso around the 0s: the grid shows exactly them.
  2. Click a legend entry to hide that class; double-click one to see it alone (again: all back).
  3. Colour by predictions.label: points whose colour differs from their neighbours' are the confusions.
  4. Show > Top mistakes: the likeliest wrong labels. Double-click an image for it in full with every field.
  5. Type a tag (say "fix") and press Tag: it is saved at once; in Python: ds.match_tags("fix").
  6. Tags > train, then colour by hypothesis.label: the labels proposed for the train split (pre-annotation).
  7. Colour or size by uniqueness, or Show > Most unique, for the outliers; Show > Duplicates for near-copies.
  Each filter and button adds a stage to the view (sidebar, top); x removes it.
"""

# Later features append steps here (embed -> visualize -> duplicates -> mistakes -> app).
DEMO_STEPS: list[tuple[str, DemoStep]] = [
    ("Load the built-in sample dataset", _demo_load),
    ("Count the classes", _demo_class_counts),
    ("Make a view: test-split 3s, sorted", _demo_view),
    ("Tag a few samples", _demo_tag),
    ("Save the view", _demo_save_view),
    ("Export the test split as a class tree", _demo_export),
    ("Embed every image with EfficientNet-Lite0", _demo_embed),
    ("Lay the embeddings out in 2-D (UMAP)", _demo_visualize),
    ("Find similar images", _demo_similar),
    ("Near-duplicates and the most unique images", _demo_duplicates_unique),
    ("Find label mistakes", _demo_mistakes),
    ("Pre-annotate the train split from the test split", _demo_propose),
    ("Where the data lives", _demo_where),
]


def run_demo(ctx: DemoContext, steps: list[tuple[str, DemoStep]] = DEMO_STEPS) -> DemoContext:
    """Run ``steps`` in order, numbering each; returns the context with what they produced."""
    for k, (title, step) in enumerate(steps, 1):
        ctx.echo(f"\n[{k}/{len(steps)}] {title}")
        step(ctx)
    return ctx
