"""The `embedlens` command, run in-process with Typer's CliRunner against real datasets and files."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import embedlens as el
from embedlens.cli import app
from embedlens.demo import DEMO_STEPS, DemoContext, run_demo
from embedlens.zoo import load_sample_dataset


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], input=input, prog_name="embedlens")


def ok(*args: str, input: str | None = None):
    result = run(*args, input=input)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def fails(*args: str, mentions: str) -> str:
    """Run a command that must fail: exit status 1 and one line on stderr naming the culprit."""
    result = run(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("Error: ") and "\n" not in err, err
    assert mentions in err, err
    assert "Traceback" not in result.output
    return err


@pytest.fixture(scope="module")
def prebuilt_digits(tmp_path_factory) -> el.Dataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDLENS_HOME", str(tmp_path_factory.mktemp("digits_home")))
        return load_sample_dataset("digits", progress=False)


@pytest.fixture
def digits(prebuilt_digits: el.Dataset, embedlens_home: Path) -> el.Dataset:
    """The digits sample dataset, built once per module and cloned into each test's home (images shared)."""
    return prebuilt_digits.clone("digits")


def _tree_counts(root: Path) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.png"))) for d in root.iterdir() if d.is_dir()}


# ---------------------------------------------------------------------------------------------- datasets


def test_datasets_list(digits) -> None:
    el.Dataset("empty-one")
    rows = json.loads(ok("datasets", "list", "--json").stdout)
    assert rows == [{"name": "digits", "count": 1797, "persistent": True},
                    {"name": "empty-one", "count": 0, "persistent": True}]
    lines = ok("datasets", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SAMPLES", "PERSISTENT"]
    assert lines[1].split() == ["digits", "1797", "yes"]
    assert lines[2].split() == ["empty-one", "0", "yes"]


def test_datasets_list_when_empty() -> None:
    assert json.loads(ok("datasets", "list", "--json").stdout) == []
    assert "No datasets" in ok("datasets", "list").stdout


def test_datasets_info(digits) -> None:
    digits.save_view("test-threes", digits.match_tags("test").match(el.F("ground_truth.label") == "3"))
    info = json.loads(ok("datasets", "info", "digits", "--json").stdout)
    assert info["name"] == "digits" and info["count"] == 1797 and info["persistent"] is True
    assert info["fields"]["ground_truth"] == "Classification" and info["fields"]["index"] == "int"
    assert info["tags"] == {"test": 360, "train": 1437}
    assert info["saved_views"] == ["test-threes"]
    assert info["info"]["classes"]["ground_truth"] == [str(d) for d in range(10)]

    text = ok("datasets", "info", "digits").stdout
    assert "Num samples: 1797" in text and "ground_truth: Classification" in text
    assert "Saved views: test-threes" in text
    fails("datasets", "info", "nope", mentions="'nope' not found")


def test_datasets_rename(digits) -> None:
    ids = digits.values("id")
    assert "'digits' to 'handwriting'" in ok("datasets", "rename", "digits", "handwriting").stdout
    assert el.list_datasets() == ["handwriting"]
    assert el.load_dataset("handwriting").values("id") == ids
    el.Dataset("other")
    fails("datasets", "rename", "handwriting", "other", mentions="'other'")
    fails("datasets", "rename", "handwriting", "bad name", mentions="invalid dataset name 'bad name'")
    fails("datasets", "rename", "missing", "x", mentions="'missing' not found")
    assert el.list_datasets() == ["handwriting", "other"]


def test_datasets_delete(digits, prebuilt_digits) -> None:
    declined = run("datasets", "delete", "digits", input="n\n")
    assert declined.exit_code == 1 and el.list_datasets() == ["digits"]
    paths = digits.values("filepath")
    ok("datasets", "delete", "digits", input="y\n")
    assert el.list_datasets() == []
    assert all(Path(p).exists() for p in paths)  # the images are not the dataset's to delete
    prebuilt_digits.clone("digits")
    assert "Deleted dataset 'digits' (1797 samples)" in ok("datasets", "delete", "digits", "--yes").stdout
    assert el.list_datasets() == []
    fails("datasets", "delete", "digits", "--yes", mentions="'digits' not found")


# ---------------------------------------------------------------------------------------------- import


def test_import_classification_tree(digits_tree: Path) -> None:
    out = json.loads(ok("import", "tree", digits_tree, "--type", "classification-tree", "--tags", "a, b",
                        "--no-progress", "--json").stdout)
    assert out == {"dataset": "tree", "imported": 100, "skipped": 0, "errors": [], "count": 100}
    ds = el.load_dataset("tree")
    assert ds.count_values("ground_truth.label") == _tree_counts(digits_tree)
    assert ds.count_sample_tags() == {"a": 100, "b": 100}
    assert el.list_datasets() == ["tree"]  # no scratch dataset left behind


def test_import_append_and_overwrite(digits_tree: Path) -> None:
    text = ok("import", "tree", digits_tree, "-t", "classification-tree", "--no-progress").stdout
    assert "Imported 100 samples into 'tree'" in text
    fails("import", "tree", digits_tree, "-t", "classification-tree", mentions="--append")
    ok("import", "tree", digits_tree, "-t", "classification-tree", "--append", "--tags", "second", "--no-progress")
    ds = el.load_dataset("tree")
    assert len(ds) == 200 and ds.count_sample_tags() == {"second": 100}
    ok("import", "tree", digits_tree, "-t", "classification-tree", "--overwrite", "--label-field", "truth",
       "--no-progress")
    ds = el.load_dataset("tree")
    assert len(ds) == 100 and ds.count_values("truth.label") == _tree_counts(digits_tree)
    assert el.list_datasets() == ["tree"]


def test_import_errors_name_the_culprit(digits_tree: Path, tmp_path: Path) -> None:
    fails("import", "x", tmp_path / "missing", "--type", "classification-tree", mentions=str(tmp_path / "missing"))
    fails("import", "x", digits_tree, "--type", "bogus", mentions="'bogus'")
    fails("import", "x", digits_tree, "--type", "classification-tree", "--label-columns", "a",
          mentions="--label-columns applies to --type csv")
    fails("import", "x", digits_tree, "--type", "coco", mentions="labels.json")
    fails("import", "x", digits_tree, "-t", "classification-tree", "--append", mentions="'x' not found")
    fails("import", "bad name", digits_tree, "-t", "classification-tree", mentions="'bad name'")
    assert el.list_datasets() == []


def test_import_corrupt_image(digits_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(digits_tree, tree)
    bad = tree / "3" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")

    ok("import", "tree", digits_tree, "-t", "classification-tree", "--no-progress")
    ids = el.load_dataset("tree").values("id")
    # A failed replacement leaves the old dataset exactly as it was.
    fails("import", "tree", tree, "-t", "classification-tree", "--overwrite", "--no-progress",
          mentions="broken.png")
    assert el.load_dataset("tree").values("id") == ids
    assert el.list_datasets() == ["tree"]

    out = json.loads(ok("import", "skipping", tree, "-t", "classification-tree", "--skip-failures", "--json",
                        "--no-progress").stdout)
    assert (out["imported"], out["skipped"], out["count"]) == (100, 1, 100)
    assert any("broken.png" in e["item"] for e in out["errors"])


# ---------------------------------------------------------------------------------------------- export


def test_export_classification_tree_of_tagged_samples(digits, tmp_path: Path) -> None:
    out = tmp_path / "test-split"
    text = ok("export", "digits", out, "--type", "classification-tree", "--tags", "test", "--no-progress").stdout
    assert "Exported 360 samples of 'digits'" in text and "360 files written" in text
    expected = Counter(digits.match_tags("test").values("ground_truth.label"))
    assert _tree_counts(out) == dict(expected)

    fails("export", "digits", out, "--type", "classification-tree", mentions="--overwrite")
    report = json.loads(ok("export", "digits", out, "-t", "classification-tree", "--tags", "train", "--overwrite",
                           "--media", "symlink", "--no-progress", "--json").stdout)
    assert report["samples"] == report["files"] == 1437
    assert sum(_tree_counts(out).values()) == 1437
    assert all(p.is_symlink() for p in out.glob("*/*.png"))


def test_export_csv(digits, tmp_path: Path) -> None:
    table = tmp_path / "digits.csv"
    report = json.loads(ok("export", "digits", table, "--type", "csv", "--media", "none", "--json",
                           "--no-progress").stdout)
    assert report["samples"] == 1797 and table.exists()
    lines = table.read_text().splitlines()
    assert len(lines) == 1798 and "filepath" in lines[0]

    # The table imports back: same labels, tags and index values.
    out = json.loads(ok("import", "again", table, "--type", "csv", "--label-columns", "ground_truth", "--json",
                        "--no-progress").stdout)
    assert out["imported"] == 1797
    again = el.load_dataset("again")
    assert again.count_values("ground_truth.label") == digits.count_values("ground_truth.label")
    assert again.count_sample_tags() == digits.count_sample_tags()
    assert sorted(again.values("index")) == list(range(1797))


def test_export_errors(digits, tmp_path: Path) -> None:
    fails("export", "nope", tmp_path / "a", "--type", "csv", mentions="'nope' not found")
    fails("export", "digits", tmp_path / "a", "--type", "parquet", mentions="'parquet'")
    fails("export", "digits", tmp_path / "a", "-t", "classification-tree", "--media", "hardlink",
          mentions="'hardlink'")
    fails("export", "digits", tmp_path / "a", "-t", "classification-tree", "--tags", "nope", mentions="nope")
    fails("export", "digits", tmp_path / "a", "-t", "coco", mentions="Detections")
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------------------------- sample data, help


def test_sample_data(digits) -> None:
    assert ok("sample-data").stdout.split() == ["digits", "mnist"]
    # Building is tested in test_zoo.py and by the demo; here the command opens the existing dataset.
    text = ok("sample-data", "digits", "--no-progress").stdout
    assert "Name:        digits" in text and "Num samples: 1797" in text
    assert el.list_datasets() == ["digits"]
    fails("sample-data", "cifar", mentions="'cifar'")


def _command_paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(cmd, "commands", {}).items():  # Typer's groups are not always click.Group
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_every_command_has_help_with_examples() -> None:
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert {" ".join(p) for p in paths} >= {"", "datasets", "datasets list", "datasets info", "datasets delete",
                                              "datasets rename", "import", "export", "sample-data", "demo"}
    for path in paths:
        result = ok(*path, "--help")
        assert "Usage: embedlens" in result.stdout
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        if not hasattr(cmd, "commands"):
            assert "Examples:" in result.stdout, path
            assert f"embedlens {' '.join(path)}" in result.stdout, path


def test_version() -> None:
    assert ok("--version").stdout.strip() == f"embedlens {el.__version__}"


# ---------------------------------------------------------------------------------------------- demo


def test_demo_steps_can_be_extended(digits) -> None:
    lines: list[str] = []
    extra = ("Count the samples", lambda ctx: ctx.echo(f"  {len(ctx.ds)} samples"))
    ctx = run_demo(DemoContext("digits", progress=False, echo=lines.append), [DEMO_STEPS[0], extra])
    assert ctx.ds.name == "digits"
    assert "[2/2] Count the samples" in "\n".join(lines) and "  1797 samples" in lines


def test_demo_end_to_end(embedlens_home: Path) -> None:
    # digits, not the README's mnist: the same steps on 1,797 images keep the suite fast
    first = ok("demo", "--dataset", "digits", "--no-progress").stdout
    for k, (title, _) in enumerate(DEMO_STEPS, 1):
        assert f"[{k}/{len(DEMO_STEPS)}] {title}" in first
    assert "Num samples: 1797" in first and "built it now" in first
    ds = el.load_dataset("digits")
    counts = ds.count_values("ground_truth.label")
    assert "  ".join(f"{k}: {counts[k]}" for k in sorted(counts)) in first
    n_test = ds.match_tags("test").count()
    assert f"wrote {n_test} files" in first
    assert "(1797, 1280), float32" in first
    assert ds.get_embeddings_info("efficientnet")["count"] == 1797

    export = embedlens_home / "exports" / "digits-test"
    assert sum(_tree_counts(export).values()) == n_test
    assert ds.count_sample_tags() == {"train": 1797 - n_test, "test": n_test, "demo-pick": 5}
    assert ds.load_saved_view("test-threes").count() == ds.match_tags("test").match(
        el.F("ground_truth.label") == "3").count()

    # A second run reuses everything and changes nothing it did not own.
    second = ok("demo", "--dataset", "digits", "--no-progress").stdout
    assert "reused the stored dataset" in second and f"wrote {n_test} files" in second
    assert "reused 1797 stored rows" in second
    assert el.load_dataset("digits").count_sample_tags()["demo-pick"] == 5
    assert el.list_datasets() == ["digits"]


# ---------------------------------------------------------------------------------------------- reading a space


@pytest.fixture
def digits_px_cli(digits) -> el.Dataset:
    """The digits with pixel embeddings ("pixels") and a predictions run, made through the CLI."""
    ok("embed", "digits", "--model", "pixels", "--no-progress")
    ok("predictions", "digits", "--embeddings", "pixels", "--folds", "3", "--no-progress")
    return el.load_dataset("digits")


def test_prototypes_command(digits_px_cli, tmp_path: Path) -> None:
    import numpy as np

    ds = digits_px_cli
    report = json.loads(ok("prototypes", "digits", "--predictions-run", "predictions", "--top", "4", "--json",
                           "--no-progress").stdout)
    res = ds.load_brain_results("prototypes")
    assert report["classes"] == res.classes == [str(i) for i in range(10)] and report["samples"] == len(ds)
    assert report["scores_field"] == "prototype_scores" and report["embeddings_field"] == "pixels"
    for c in res.classes:  # the printed top samples are the library's ranking, with their scores
        rows = report["top"][c]
        assert [r["id"] for r in rows] == ds.sort_by_prototype("prototypes", c).limit(4).values("id")
        assert [r["score"] for r in rows] == [ds[r["id"]]["prototype_scores"][c] for r in rows]
    assert all(ds[r["id"]].ground_truth.label == "3" for r in report["top"]["3"])
    text = ok("prototypes", "digits", "--predictions-run", "predictions", "--overwrite", "--no-progress").stdout
    assert "Scored 1,797 samples of 'digits' against 10 class prototypes" in text and "\n7:\n" in text
    # a head saved with numpy
    x = np.asarray(ds.get_embeddings("pixels"), dtype=np.float64)
    w = np.random.default_rng(0).normal(size=(2, x.shape[1]))
    np.savez(tmp_path / "head.npz", weights=w, bias=np.array([1.0, -1.0]), classes=np.array(["ink", "blank"]))
    ok("prototypes", "digits", "--head", tmp_path / "head.npz", "--embeddings", "pixels", "--brain-key", "mine",
       "--scores-field", "mine", "--top", "0", "--no-progress")
    got = np.array([[d["ink"], d["blank"]] for d in ds.values("mine")])
    np.testing.assert_allclose(got, x @ w.T + [1.0, -1.0], rtol=1e-5, atol=1e-5)
    fails("prototypes", "digits", mentions="pass --predictions-run KEY or --head FILE.npz")
    fails("prototypes", "digits", "--predictions-run", "nope", "--brain-key", "p2", "--scores-field", "p2", mentions="no brain run 'nope'")
    fails("prototypes", "digits", "--head", tmp_path / "missing.npz", "--brain-key", "p3", "--scores-field", "p3",
          mentions="missing.npz")
    np.savez(tmp_path / "bad.npz", weights=np.zeros((2, 5)))
    fails("prototypes", "digits", "--head", tmp_path / "bad.npz", "--embeddings", "pixels", "--brain-key", "p4", "--scores-field", "p4",
          mentions="prototypes are 5-d but the embeddings are 64-d")


def test_centroids_command(digits_px_cli, tmp_path: Path) -> None:
    import numpy as np

    ds = digits_px_cli
    report = json.loads(ok("centroids", "digits", "--embeddings", "pixels", "--heatmap", tmp_path / "c.png",
                           "--json", "--no-progress").stdout)
    x = np.asarray(ds.get_embeddings("pixels"), dtype=np.float64)
    y = np.array(ds.values("ground_truth.label"))
    means = np.stack([x[y == c].mean(axis=0) for c in report["classes"]])
    want = np.linalg.norm(means[:, None] - means[None], axis=2)
    np.testing.assert_allclose(np.array(report["distances"]), want, atol=1e-9)
    a, b = np.triu_indices(10, 1)
    first = np.argmin(want[a, b])
    assert (report["closest_pairs"][0]["a"], report["closest_pairs"][0]["b"]) == (str(a[first]), str(b[first]))
    assert report["counts"] == [int((y == c).sum()) for c in report["classes"]]
    assert (tmp_path / "c.png").stat().st_size > 1000
    text = ok("centroids", "digits", "--embeddings", "pixels", "--pairs", "2", "--no-progress").stdout
    assert "Centroids of 10 classes of 'ground_truth' in 'digits' (embedding, euclidean distance)." in text
    assert text.count(" - ") == 2 and "nearest:" in text
    fails("centroids", "digits", "--embeddings", "pixels", "--metric", "dotproduct", mentions="got 'dotproduct'")
    fails("centroids", "digits", "--embeddings", "nope", mentions="'nope'")
    fails("centroids", "digits", "--embeddings", "pixels", "--labels-field", "nope", mentions="nope")


def test_compare_embeddings_command(digits_px_cli) -> None:
    ds = digits_px_cli
    ds.compute_embeddings(el.load_model("pixels", size=(4, 4), grayscale=True), embeddings_field="px4",
                          progress=False)
    report = json.loads(ok("compare-embeddings", "digits", "--sets", "pixels, px4", "-k", "5", "--trust-samples",
                           "300", "--json", "--no-progress").stdout)
    lib = el.compare_embeddings(ds, ["pixels", "px4"], k=5, trust_samples=300, progress=False).metrics
    assert report["sets"] == ["pixels", "px4"] and report["k"] == 5
    assert report["per_set"] == {s: lib[s] for s in ("pixels", "px4")} and report["agreement"] == lib["agreement"]
    assert lib["pixels"]["knn_accuracy"] > lib["px4"]["knn_accuracy"]  # 8x8 digits seen at 4x4 lose detail
    text = ok("compare-embeddings", "digits", "--sets", "pixels,px4", "--metric", "dotproduct", "-k", "5",
              "--trust-samples", "300", "--no-progress").stdout
    assert "Compared 2 embeddings sets of 'digits' (1,797 samples, k = 5, dotproduct)." in text
    assert "pixels - px4" in text
    fails("compare-embeddings", "digits", "--sets", "pixels", mentions="at least two")
    fails("compare-embeddings", "digits", "--sets", "pixels,px4", "--metric", "manhattan",
          mentions="unknown metric 'manhattan'")


def test_similar_with_a_dotproduct_index(digits_px_cli) -> None:
    import numpy as np

    ds = digits_px_cli
    ids = ds.values("id")
    x = np.asarray(ds.get_embeddings("pixels"), dtype=np.float64)
    report = json.loads(ok("similar", "digits", ids[0], "--embeddings", "pixels", "--brain-key", "dot",
                           "--metric", "dotproduct", "-k", "20", "--json", "--no-progress").stdout)
    assert report["metric"] == "dotproduct"
    pos = {i: r for r, i in enumerate(ids)}
    s = x @ x[0]
    rows = [pos[m["id"]] for m in report["matches"]]
    assert (np.diff(s[rows]) <= 1e-6 * s.max()).all() and s[rows[0]] >= s.max() - 1e-6 * s.max()
    np.testing.assert_allclose([m["distance"] for m in report["matches"]], -s[rows], rtol=1e-5)
    fails("similar", "digits", ids[0], "--brain-key", "dot", "--metric", "cosine", mentions="uses metric 'dotproduct'")
    fails("unique", "digits", "5", "--brain-key", "dot", mentions="find_unique()")
