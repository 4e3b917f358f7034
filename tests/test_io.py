"""Import and export on real image files: class trees, image folders, path lists, COCO, CSV and Parquet."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedlens as el
from embedlens.io import ImportSummary, export_samples, import_samples
from embedlens.io.tables import table_columns

# ---------------------------------------------------------------------------------------------- helpers


def _state(ds: el.Dataset) -> tuple[int, dict[str, str], dict]:
    """What a failed import must leave as it was."""
    ds.reload()
    return len(ds), ds.get_field_schema(), dict(ds.info)


def _populated(photos: dict[str, Path], name: str = "before") -> el.Dataset:
    ds = el.Dataset(name)
    ds.add_images([photos["chelsea"], photos["coffee"]], progress=False)
    return ds


def _save_crop(photos: dict[str, Path], name: str, size: tuple[int, int], dest: Path) -> Path:
    """A small real image: a photo resized to ``size`` (width, height), saved in the format of ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.open(photos[name]).convert("RGB").resize(size).save(dest)
    return dest


COCO_IMAGES = [  # id, file, size, photo, size written in the JSON
    (1, "a.png", (40, 30), "chelsea", True),
    (2, "b.jpg", (50, 40), "coffee", True),
    (3, "c.png", (20, 20), "rocket", True),  # no annotations
    (4, "d.png", (64, 48), "astronaut", False),  # size read from the file
]
COCO_ANNOTATIONS = [  # id, image id, category id, bbox in pixels
    (1, 1, 1, [4, 3, 20, 15]),
    (2, 1, 2, [10.5, 0, 29.5, 30]),  # touches the right and bottom edges exactly
    (3, 2, 1, [0, 0, 50, 40]),
    (4, 4, 2, [8, 12, 16, 24]),
    (5, 4, 1, [1.2345678901, 2.3456789012, 30.123456789, 20.987654321]),  # catches rounding on export
]


def _coco_doc() -> dict:
    images = []
    for iid, name, (w, h), _, with_size in COCO_IMAGES:
        images.append({"id": iid, "file_name": name, **({"width": w, "height": h} if with_size else {})})
    anns = [{"id": aid, "image_id": iid, "category_id": cid, "bbox": bbox, "area": bbox[2] * bbox[3],
             "iscrowd": 0} for aid, iid, cid, bbox in COCO_ANNOTATIONS]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}


def _coco_dir(root: Path, photos: dict[str, Path], doc: dict | None = None) -> Path:
    for _, name, size, photo, _ in COCO_IMAGES:
        _save_crop(photos, photo, size, root / "data" / name)
    (root / "labels.json").write_text(json.dumps(doc or _coco_doc()))
    return root


def _boxes_by_file(ds) -> dict[str, list[tuple[str, list[float]]]]:
    out = {}
    for fp, dets in zip(ds.values("filepath"), ds.values("ground_truth")):
        out[os.path.basename(fp)] = [(d.label, d.bounding_box) for d in dets.detections]
    return out


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# ---------------------------------------------------------------------------------------------- class trees


def test_tree_import_labels_metadata_and_summary(digits_tree):
    ds = el.Dataset("digits")
    summary = ds.add_dir(digits_tree, "classification-tree", tags="train", progress=False)

    assert isinstance(summary, ImportSummary)
    assert (summary.imported, summary.skipped, summary.errors) == (100, 0, [])
    assert summary.sample_ids == ds.values("id")
    paths, labels = ds.values("filepath"), ds.values("ground_truth.label")
    assert paths == sorted(paths)  # deterministic order
    assert all(Path(p).parent.name == lab for p, lab in zip(paths, labels))
    on_disk = Counter(p.parent.name for p in digits_tree.rglob("*.png"))
    assert Counter(labels) == on_disk
    metas = ds.values("metadata")
    assert {(m["width"], m["height"], m["mime_type"]) for m in metas} == {(32, 32, "image/png")}
    assert all(m["size_bytes"] == os.path.getsize(p) for p, m in zip(paths, metas))
    assert ds.values("tags") == [["train"]] * 100
    assert ds.info["classes"]["ground_truth"] == sorted(on_disk)


def test_from_dir_with_label_field_and_second_import_appends(digits_tree):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", name="d", label_field="truth", progress=False)
    assert ds.get_field_schema()["truth"] == "Classification"
    assert "ground_truth" not in ds.get_field_schema()
    ds.add_dir(digits_tree, "classification-tree", label_field="truth", progress=False)
    assert len(ds) == 200
    assert ds.info["classes"]["truth"] == sorted({p.parent.name for p in digits_tree.rglob("*.png")})


def test_tree_image_outside_class_folder_is_reported(tmp_path, photos):
    _save_crop(photos, "chelsea", (24, 16), tmp_path / "cat" / "a.png")
    _save_crop(photos, "coffee", (24, 16), tmp_path / "stray.png")
    ds = el.Dataset("t")
    with pytest.raises(ValueError, match=r"stray\.png is not inside a class folder"):
        ds.add_dir(tmp_path, "classification-tree", progress=False)
    assert len(ds) == 0
    summary = ds.add_dir(tmp_path, "classification-tree", skip_failures=True, progress=False)
    assert summary.imported == 1 and summary.skipped == 1
    assert summary.errors[0][0] == str(tmp_path / "stray.png")


# ---------------------------------------------------------------------------------------------- folders, path lists


def test_image_folder_is_recursive_unlabeled_and_skips_non_images(tmp_path, photos):
    _save_crop(photos, "chelsea", (30, 20), tmp_path / "a.jpg")
    _save_crop(photos, "coffee", (20, 30), tmp_path / "sub" / "deeper" / "b.png")
    _save_crop(photos, "camera", (10, 10), tmp_path / ".hidden" / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._a.jpg").write_bytes(b"macOS resource fork")

    ds = el.Dataset("folder")
    summary = ds.add_dir(tmp_path, "image-folder", progress=False)

    assert summary.imported == 2
    assert [os.path.relpath(p, tmp_path) for p in ds.values("filepath")] == ["a.jpg", "sub/deeper/b.png"]
    assert [(m["width"], m["height"]) for m in ds.values("metadata")] == [(30, 20), (20, 30)]
    assert "ground_truth" not in ds.get_field_schema()


def test_image_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        el.Dataset("empty").add_dir(tmp_path, "image-folder", progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        el.Dataset("missing").add_dir(tmp_path / "nope", "classification-tree", progress=False)


def test_add_images_keeps_order_and_reads_metadata(photos):
    order = [photos["rocket"], photos["chelsea"], photos["camera"]]
    ds = el.Dataset("paths")
    summary = ds.add_images(order, tags=["a", "b"], progress=False)
    assert summary.imported == 3
    assert ds.values("filepath") == [str(p) for p in order]
    for p, m in zip(order, ds.values("metadata")):
        with Image.open(p) as img:
            assert (m["width"], m["height"]) == img.size
        assert m["mime_type"] == "image/jpeg"
    assert ds.values("tags") == [["a", "b"]] * 3


def test_missing_image_raises_image_error_and_writes_nothing(photos, tmp_path):
    ds = _populated(photos)
    before = _state(ds)
    missing = tmp_path / "gone.jpg"
    with pytest.raises(el.ImageError, match="gone.jpg"):
        ds.add_images([photos["rocket"], missing], progress=False)
    assert _state(ds) == before


def test_corrupt_and_truncated_images(tmp_path, photos):
    _save_crop(photos, "chelsea", (40, 30), tmp_path / "cat" / "good.png")
    _save_crop(photos, "coffee", (64, 48), tmp_path / "cat" / "good.jpg")
    (tmp_path / "cat" / "noise.png").write_bytes(np.random.default_rng(0).bytes(600))
    whole = photos["astronaut"].read_bytes()
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])

    ds = _populated(photos)
    before = _state(ds)
    with pytest.raises(el.ImageError) as e:
        ds.add_dir(tmp_path, "classification-tree", progress=False)
    assert "noise.png" in str(e.value) and "cut.jpg" in str(e.value)
    assert _state(ds) == before

    summary = ds.add_dir(tmp_path, "classification-tree", skip_failures=True, progress=False)
    assert (summary.imported, summary.skipped) == (2, 2)
    assert sorted(os.path.basename(item) for item, _ in summary.errors) == ["cut.jpg", "noise.png"]
    assert sorted(os.path.basename(p) for p in ds.select(summary.sample_ids).values("filepath")) == \
        ["good.jpg", "good.png"]


def test_unknown_type_option_and_bad_label_field(digits_tree):
    ds = el.Dataset("x")
    with pytest.raises(ValueError, match="unknown dataset_type 'yolo'"):
        ds.add_dir(digits_tree, "yolo")
    with pytest.raises(TypeError, match="unknown option 'labels_path'"):
        ds.add_dir(digits_tree, "classification-tree", labels_path="x.json")
    with pytest.raises(ValueError, match="built-in"):
        ds.add_dir(digits_tree, "classification-tree", label_field="tags")
    assert len(ds) == 0


def test_label_field_of_another_label_type_is_refused(digits_tree, tmp_path, photos):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", progress=False)
    before = _state(ds)
    with pytest.raises(ValueError, match="label_field 'ground_truth' holds Classification labels"):
        ds.add_dir(_coco_dir(tmp_path, photos), "coco", progress=False)
    assert _state(ds) == before


def test_from_dir_failure_leaves_no_dataset(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(el.ImageError, match="bad.png"):
        el.Dataset.from_dir(tmp_path, "classification-tree", name="broken", progress=False)
    assert "broken" not in el.list_datasets()


def test_summary_str_names_the_problems():
    s = ImportSummary(3, 2, [("a.png", "corrupt image a.png: x"), ("labels.csv:4", "row has 2 cells")], [])
    text = str(s)
    assert text.startswith("imported 3 samples, skipped 2")
    assert "corrupt image a.png: x" in text and "labels.csv:4: row has 2 cells" in text
    assert str(ImportSummary(1, 0, [], ["id"])) == "imported 1 samples, skipped 0"


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_import_boxes_attributes_and_classes(tmp_path, photos):
    root = _coco_dir(tmp_path / "coco", photos)
    ds = el.Dataset("coco")
    summary = ds.add_dir(root, "coco", progress=False)

    assert (summary.imported, summary.skipped) == (4, 0)
    assert ds.get_field_schema()["ground_truth"] == "Detections"
    boxes = _boxes_by_file(ds)
    assert boxes["a.png"] == [("cat", [4 / 40, 3 / 30, 20 / 40, 15 / 30]), ("dog", [10.5 / 40, 0.0, 29.5 / 40, 1.0])]
    assert boxes["b.jpg"] == [("cat", [0.0, 0.0, 1.0, 1.0])]
    assert boxes["c.png"] == []  # an image without annotations still gets (empty) Detections
    assert boxes["d.png"] == [("dog", [8 / 64, 12 / 48, 16 / 64, 24 / 48]),  # size read from the file
                              ("cat", [1.2345678901 / 64, 2.3456789012 / 48, 30.123456789 / 64, 20.987654321 / 48])]
    first = ds.first().ground_truth.detections[0]
    assert (first.coco_id, first.iscrowd, first.area) == (1, 0, 300)
    assert [(m["width"], m["height"]) for m in ds.values("metadata")] == [s for _, _, s, _, _ in COCO_IMAGES]
    assert ds.info["classes"]["ground_truth"] == ["cat", "dog"]


def test_coco_explicit_labels_and_data_paths(tmp_path, photos):
    root = _coco_dir(tmp_path / "coco", photos)
    os.rename(root / "labels.json", tmp_path / "elsewhere.json")
    ds = el.Dataset("coco")
    ds.add_dir(None, "coco", labels_path=tmp_path / "elsewhere.json", data_path=root / "data", progress=False)
    assert len(ds) == 4
    ds2 = el.Dataset("coco2")
    ds2.add_dir(tmp_path, "coco", labels_path="elsewhere.json", data_path="coco/data", progress=False)
    assert _boxes_by_file(ds2) == _boxes_by_file(ds)


def test_coco_boxes_use_the_size_written_in_the_json(tmp_path, photos):
    doc = _coco_doc()
    doc["images"][0].update(width=80, height=60)  # labelled at twice the size of the file on disk
    ds = el.Dataset("coco")
    ds.add_dir(_coco_dir(tmp_path, photos, doc), "coco", progress=False)
    assert _boxes_by_file(ds)["a.png"][0] == ("cat", [4 / 80, 3 / 60, 20 / 80, 15 / 60])
    assert ds.first().metadata["width"] == 40  # metadata still describes the file


def test_coco_tiny_overshoot_is_clipped(tmp_path, photos):
    doc = _coco_doc()
    doc["annotations"][2]["bbox"] = [-0.4, 0, 50.7, 40.5]  # rounding in another tool: < 1 px outside
    ds = el.Dataset("coco")
    ds.add_dir(_coco_dir(tmp_path, photos, doc), "coco", progress=False)
    assert _boxes_by_file(ds)["b.jpg"] == [("cat", [0.0, 0.0, 1.0, 1.0])]


def _unknown_category(doc):
    doc["annotations"][0]["category_id"] = 99
    return r"annotation 1: category_id 99 is not in 'categories'"


def _orphan_annotation(doc):
    doc["annotations"].append({"id": 77, "image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1]})
    return r"annotation 77: image_id 999 is not in 'images'"


def _box_outside(doc):
    doc["annotations"][2]["bbox"] = [10, 10, 45, 35]  # x + w = 55 on a 50 px wide image
    return r"annotation 3: bbox \[10, 10, 45, 35\] is outside the 50x40 image"


def _bad_bbox(doc):
    doc["annotations"][3]["bbox"] = [1, 2, 3]
    return r"annotation 4: bbox must be 4 finite numbers"


def _missing_image(doc):
    doc["images"][1]["file_name"] = "nope.jpg"
    return r"image file not found: .*nope\.jpg"


@pytest.mark.parametrize("mutate", [_unknown_category, _orphan_annotation, _box_outside, _bad_bbox, _missing_image])
def test_bad_coco_raises_naming_the_culprit_and_writes_nothing(tmp_path, photos, mutate):
    doc = _coco_doc()
    expected = mutate(doc)
    root = _coco_dir(tmp_path, photos, doc)
    ds = _populated(photos)
    before = _state(ds)
    error = el.ImageError if mutate is _missing_image else ValueError
    with pytest.raises(error, match=expected):
        ds.add_dir(root, "coco", label_field="boxes", progress=False)
    assert _state(ds) == before
    assert "boxes" not in ds.get_field_schema()


def test_malformed_coco_json_names_file_and_line(tmp_path, photos):
    root = _coco_dir(tmp_path, photos)
    text = json.dumps(_coco_doc(), indent=1)
    (root / "labels.json").write_text(text[:-40])
    ds = _populated(photos)
    before = _state(ds)
    for skip in (False, True):  # nothing can be imported from a file that does not parse
        with pytest.raises(ValueError, match=r"labels\.json: malformed JSON at line \d+"):
            ds.add_dir(root, "coco", skip_failures=skip, progress=False)
    assert _state(ds) == before


def test_coco_skip_failures_lists_culprits_and_imports_the_rest(tmp_path, photos):
    doc = _coco_doc()
    _unknown_category(doc)  # image 1 is left out: its labels would be incomplete
    _orphan_annotation(doc)
    _missing_image(doc)  # image 2
    ds = el.Dataset("coco")
    summary = ds.add_dir(_coco_dir(tmp_path, photos, doc), "coco", skip_failures=True, progress=False)

    assert summary.imported == 2
    assert summary.skipped == 3  # two images and one annotation of no image
    items = [item for item, _ in summary.errors]
    assert "annotation 1" in items and "annotation 77" in items
    assert any(item.endswith("nope.jpg") for item in items)
    assert sorted(_boxes_by_file(ds)) == ["c.png", "d.png"]


# ---------------------------------------------------------------------------------------------- CSV and Parquet


def _table_images(tmp_path: Path, photos) -> list[Path]:
    return [_save_crop(photos, "chelsea", (30, 20), tmp_path / "imgs" / "a.png"),
            _save_crop(photos, "coffee", (24, 24), tmp_path / "imgs" / "b.png"),
            _save_crop(photos, "rocket", (16, 32), tmp_path / "other" / "c.jpg")]


def test_csv_import_types_relative_paths_and_labels(tmp_path, photos):
    a, b, c = _table_images(tmp_path, photos)
    table = _write_csv(tmp_path / "labels.csv", [
        ["filepath", "label", "score", "count", "flag", "note", "tags"],
        ["imgs/a.png", "cat", "0.5", "3", "true", "hello", "x,y"],
        ["imgs/b.png", "dog", "", "4", "False", "", ""],
        [str(c), "", "1.25", "", "TRUE", "x y", "y"],
    ])
    ds = el.Dataset("table")
    summary = ds.add_dir(table, "csv", label_columns={"label": "ground_truth"}, tags="csv", progress=False)

    assert summary.imported == 3
    assert ds.values("filepath") == [str(a), str(b), str(c)]  # relative paths against the table's folder
    schema = ds.get_field_schema()
    assert {k: schema[k] for k in ("ground_truth", "score", "count", "flag", "note")} == {
        "ground_truth": "Classification", "score": "float", "count": "int", "flag": "bool", "note": "str"}
    assert "label" not in schema
    assert ds.values("ground_truth.label") == ["cat", "dog", None]
    assert ds.values("score") == [0.5, None, 1.25]
    assert ds.values("count") == [3, 4, None]
    assert ds.values("flag") == [True, False, True]
    assert ds.values("note") == ["hello", None, "x y"]
    assert ds.values("tags") == [["x", "y", "csv"], ["csv"], ["y", "csv"]]
    assert ds.values("metadata")[2]["height"] == 32


def test_csv_missing_filepath_column_names_file_and_columns(tmp_path, photos):
    table = _write_csv(tmp_path / "t.csv", [["path", "label"], ["a.png", "cat"]])
    ds = _populated(photos)
    before = _state(ds)
    with pytest.raises(ValueError, match=r"t\.csv has no 'filepath' column; its columns are: 'path', 'label'"):
        ds.add_dir(table, "csv", progress=False)
    assert _state(ds) == before
    _table_images(tmp_path, photos)
    table.write_text("path,label\nimgs/a.png,cat\n")
    ds.add_dir(table, "csv", filepath_column="path", label_columns=["label"], progress=False)
    assert ds.values("label.label")[-1] == "cat"


def test_csv_bad_rows_name_file_and_line(tmp_path, photos):
    _table_images(tmp_path, photos)
    table = _write_csv(tmp_path / "t.csv", [
        ["filepath", "score"],
        ["imgs/a.png", "1.5"],
        ["imgs/b.png", "2.5", "extra"],  # line 3: too many cells
        ["imgs/missing.png", "3.5"],  # line 4: no such image
        ["other/c.jpg", "4.5"],
    ])
    ds = _populated(photos)
    before = _state(ds)
    with pytest.raises(ValueError) as e:
        ds.add_dir(table, "csv", progress=False)
    assert f"{table}:3: row has 3 cells but the header has 2 columns" in str(e.value)
    assert "missing.png" in str(e.value)
    assert _state(ds) == before

    summary = ds.add_dir(table, "csv", skip_failures=True, progress=False)
    assert summary.imported == 2 and summary.skipped == 2
    assert [item for item, _ in summary.errors] == [f"{table}:3", f"{table}:4"]
    assert ds.select(summary.sample_ids).values("score") == [1.5, 4.5]


def test_malformed_csv_names_file_and_line(tmp_path, photos):
    table = tmp_path / "t.csv"
    table.write_text('filepath,score\nimgs/a.png,1\nimgs/b.png,"2"x\n')
    ds = _populated(photos)
    before = _state(ds)
    with pytest.raises(ValueError, match=rf"{table}:3: malformed CSV"):
        ds.add_dir(table, "csv", skip_failures=True, progress=False)
    assert _state(ds) == before


def test_csv_value_of_wrong_type_for_existing_field(tmp_path, photos):
    _table_images(tmp_path, photos)
    ds = _populated(photos)
    ds.set_values("score", [0.1, 0.2])
    table = _write_csv(tmp_path / "t.csv", [["filepath", "score"], ["imgs/a.png", "7"], ["imgs/b.png", "high"]])
    before = _state(ds)
    with pytest.raises(ValueError, match=r"t\.csv:3: column 'score': 'high' is not a float"):
        ds.add_dir(table, "csv", progress=False)
    assert _state(ds) == before
    ds.add_dir(table, "csv", skip_failures=True, progress=False)
    assert ds.values("score") == [0.1, 0.2, 7.0]  # "7" read as the field's type, float


def test_csv_bad_column_name_is_a_clear_error(tmp_path, photos):
    _table_images(tmp_path, photos)
    table = _write_csv(tmp_path / "t.csv", [["filepath", "my score"], ["imgs/a.png", "1"]])
    with pytest.raises(ValueError, match="column 'my score' cannot be a field name"):
        el.Dataset("x").add_dir(table, "csv", progress=False)


def test_parquet_import_keeps_column_types(tmp_path, photos):
    import pyarrow as pa
    import pyarrow.parquet as pq

    a, b, c = _table_images(tmp_path, photos)
    pq.write_table(pa.table({
        "filepath": ["imgs/a.png", "imgs/b.png", str(c)],
        "digit": pa.array([3, 7, None], type=pa.int64()),
        "score": [0.25, float("nan"), 2.0],
        "ok": [True, None, False],
        "note": ["007", None, "x"],  # a string column stays a string, even if it looks like a number
        "tags": [["p", "q"], [], None],
    }), tmp_path / "t.parquet")
    ds = el.Dataset("pq")
    ds.add_dir(tmp_path / "t.parquet", "csv", label_columns=["digit"], progress=False)

    assert ds.values("filepath") == [str(a), str(b), str(c)]
    assert ds.values("digit.label") == ["3", "7", None]
    assert ds.values("score") == [0.25, None, 2.0]
    assert ds.values("ok") == [True, None, False]
    assert ds.values("note") == ["007", None, "x"]
    assert ds.values("tags") == [["p", "q"], [], []]


# ---------------------------------------------------------------------------------------------- export: trees


def test_tree_round_trip_keeps_labels_and_bytes(digits_tree, tmp_path):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", name="src", progress=False)
    out = ds.export(tmp_path / "tree", "classification-tree", progress=False)
    assert (out["exported"], out["skipped"]) == (100, 0)

    back = el.Dataset.from_dir(tmp_path / "tree", "classification-tree", name="back", progress=False)
    original = {os.path.basename(p): lab for p, lab in zip(ds.values("filepath"), ds.values("ground_truth.label"))}
    again = {os.path.basename(p): lab for p, lab in zip(back.values("filepath"), back.values("ground_truth.label"))}
    assert again == original
    for p in out["paths"][:5]:
        assert not os.path.islink(p)
        assert Path(p).read_bytes() == (digits_tree / Path(p).parent.name / Path(p).name).read_bytes()


def test_tree_export_from_filtered_view_skips_unlabeled(digits_tree, tmp_path):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", progress=False)
    view = ds.filter_labels("ground_truth", el.F("label").is_in(["0", "1"]), only_matches=False)
    n01 = sum(1 for lab in ds.values("ground_truth.label") if lab in ("0", "1"))
    out = view.export(tmp_path / "tree", "classification-tree", progress=False)
    assert (out["exported"], out["skipped"]) == (n01, 100 - n01)
    assert sorted(os.listdir(tmp_path / "tree")) == ["0", "1"]
    assert sum(len(os.listdir(tmp_path / "tree" / d)) for d in ("0", "1")) == n01


def test_tree_export_symlinks(digits_tree, tmp_path):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", progress=False)
    view = ds.limit(7)
    out = view.export(tmp_path / "links", "classification-tree", export_media="symlink", progress=False)
    assert len(out["paths"]) == 7
    for dest, src in zip(out["paths"], view.values("filepath")):
        assert os.path.islink(dest) and os.readlink(dest) == src


def test_tree_export_resolves_name_clashes_deterministically(tmp_path, photos):
    a = _save_crop(photos, "chelsea", (20, 20), tmp_path / "x" / "img.png")
    b = _save_crop(photos, "coffee", (20, 20), tmp_path / "y" / "img.png")
    c = _save_crop(photos, "rocket", (20, 20), tmp_path / "y" / "IMG.PNG")  # clashes on case-insensitive disks
    ds = el.Dataset("clash")
    ds.add_images([a, b, c], progress=False)
    ds.set_values("ground_truth", [el.Classification("k"), el.Classification("k"), el.Classification("k")])
    ids = ds.values("id")
    ds.export(tmp_path / "out", "classification-tree", progress=False)
    files = sorted(os.listdir(tmp_path / "out" / "k"))
    assert files == sorted(["img.png", f"img-{ids[1]}.png", f"IMG-{ids[2]}.PNG"])
    assert (tmp_path / "out" / "k" / f"img-{ids[1]}.png").read_bytes() == b.read_bytes()


def test_export_refuses_non_empty_folder_unless_overwrite(digits_tree, tmp_path):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", progress=False)
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="not empty; pass overwrite=True"):
        ds.limit(3).export(target, "classification-tree", progress=False)
    assert os.listdir(target) == ["old.txt"]
    ds.limit(3).export(target, "classification-tree", overwrite=True, progress=False)
    assert not (target / "old.txt").exists()
    # overwriting would delete the images being exported
    with pytest.raises(ValueError, match="refusing to overwrite .*which the export reads"):
        ds.export(digits_tree, "classification-tree", overwrite=True, progress=False)
    assert len(list(digits_tree.rglob("*.png"))) == 100
    with pytest.raises(ValueError, match="refusing to overwrite"):  # would delete the dataset itself
        ds.limit(3).export(el.home(), "classification-tree", overwrite=True, progress=False)
    assert el.load_dataset(ds.name).count() == 100


def test_label_field_must_be_unambiguous(digits_tree, tmp_path):
    ds = el.Dataset.from_dir(digits_tree, "classification-tree", progress=False)
    ds.set_values("pred", [el.Classification("0")] * len(ds))
    with pytest.raises(ValueError, match="several Classification fields .*pass label_field="):
        ds.export(tmp_path / "a", "classification-tree", progress=False)
    with pytest.raises(ValueError, match="needs a Detections field; the collection has none"):
        ds.export(tmp_path / "b", "coco", progress=False)
    out = ds.export(tmp_path / "c", "classification-tree", label_field="pred", progress=False)
    assert os.listdir(tmp_path / "c") == ["0"] and out["exported"] == 100
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------------------------------------- export: COCO


def test_coco_round_trip_keeps_boxes_and_labels(tmp_path, photos):
    src = el.Dataset.from_dir(_coco_dir(tmp_path / "coco", photos), "coco", name="src", progress=False)
    out = src.export(tmp_path / "out", "coco", progress=False)
    assert (out["exported"], out["annotations"]) == (4, 5)

    doc = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert doc["categories"] == [{"id": 1, "name": "cat", "supercategory": ""},
                                 {"id": 2, "name": "dog", "supercategory": ""}]
    assert [im["file_name"] for im in doc["images"]] == ["a.png", "b.jpg", "c.png", "d.png"]
    assert doc["images"][3]["width"] == 64 and doc["images"][3]["height"] == 48
    assert all((tmp_path / "out" / "data" / im["file_name"]).is_file() for im in doc["images"])

    back = el.Dataset.from_dir(tmp_path / "out", "coco", name="back", progress=False)
    before, after = _boxes_by_file(src), _boxes_by_file(back)
    assert sorted(after) == sorted(before)
    for name in before:
        assert [lab for lab, _ in after[name]] == [lab for lab, _ in before[name]]
        for (_, b0), (_, b1) in zip(before[name], after[name]):
            np.testing.assert_allclose(b1, b0, rtol=0, atol=1e-9)
    assert back.values("ground_truth.detections.iscrowd") == src.values("ground_truth.detections.iscrowd")


def test_coco_export_of_filtered_view_without_media(tmp_path, photos):
    ds = el.Dataset.from_dir(_coco_dir(tmp_path / "coco", photos), "coco", progress=False)
    view = ds.filter_labels("ground_truth", el.F("label") == "dog")
    out = view.export(tmp_path / "out", "coco", export_media=False, progress=False)

    assert os.listdir(tmp_path / "out") == ["labels.json"]
    doc = json.loads(Path(out["labels_path"]).read_text())
    originals = [str(tmp_path / "coco" / "data" / n) for n in ("a.png", "d.png")]
    assert [im["file_name"] for im in doc["images"]] == originals
    assert doc["categories"] == [{"id": 1, "name": "dog", "supercategory": ""}]
    assert [a["bbox"] for a in doc["annotations"]] == [[10.5, 0.0, 29.5, 30.0], [8.0, 12.0, 16.0, 24.0]]
    assert [a["image_id"] for a in doc["annotations"]] == [1, 2]


def test_coco_export_computes_missing_metadata(tmp_path, photos):
    ds = el.Dataset("nometa")
    box = [0.25, 0.5, 0.5, 0.25]
    ds.add_samples([el.Sample(photos["chelsea"], ground_truth=el.Detections([el.Detection("cat", box, 0.9)]))])
    assert ds.values("metadata") == [None]
    ds.export(tmp_path / "out", "coco", export_media="symlink", progress=False)
    doc = json.loads((tmp_path / "out" / "labels.json").read_text())
    w, h = Image.open(photos["chelsea"]).size
    assert (doc["images"][0]["width"], doc["images"][0]["height"]) == (w, h)
    assert doc["annotations"][0]["bbox"] == [0.25 * w, 0.5 * h, 0.5 * w, 0.25 * h]
    assert doc["annotations"][0]["score"] == 0.9
    assert os.path.islink(tmp_path / "out" / "data" / "chelsea.jpg")
    assert ds.values("metadata")[0]["width"] == w


# ---------------------------------------------------------------------------------------------- export: tables


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_table_round_trip(tmp_path, photos, ext):
    ds = el.Dataset("src")
    ds.add_images([photos["chelsea"], photos["coffee"], photos["rocket"]], progress=False)
    ds.set_values("ground_truth", [el.Classification("cat"), None, el.Classification("rocket")])
    ds.set_values("score", [0.1 + 0.2, None, 1e-17])
    ds.set_values("count", [1, 2, None])
    ds.set_values("ok", [True, False, None])
    ds.set_values("note", ["hi there", "x", None])
    ds.set_values("boxes", [el.Detections(detections=[el.Detection(label="cat", bounding_box=[0.1, 0.1, 0.5, 0.5]),
                                                      el.Detection(label="ear", bounding_box=[0.2, 0.1, 0.1, 0.1])]),
                            el.Detections(), None])
    ds.limit(2).tag_samples(["a", "b"])

    table = tmp_path / f"out{ext}"
    out = ds.export(table, "csv")
    assert out["columns"] == ["id", "filepath", "tags", "ground_truth", "score", "count", "ok", "note",
                              "boxes.labels"]
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        ds.export(table, "csv")

    back = el.Dataset("back")
    back.add_dir(table, "csv", label_columns=["ground_truth"], progress=False)
    for field in ("filepath", "tags", "ground_truth.label", "score", "count", "ok", "note"):
        assert back.values(field) == ds.values(field), field
    schema = back.get_field_schema()
    assert [schema[f] for f in ("score", "count", "ok", "note")] == ["float", "int", "bool", "str"]
    assert "boxes" not in schema  # a Detections field's labels without their boxes are not imported
    assert set(back.values("id")).isdisjoint(ds.values("id"))  # ids are the dataset's own


def test_table_columns_of_labels_and_objects(tmp_path, photos):
    """One column policy: ids (and the objects' samples on a patches view), filepaths, tags as lists,
    a Classification or Detection field's label under the field's name, a Detections field's labels."""
    ds = el.Dataset("cols")
    ds.add_images([photos["chelsea"], photos["coffee"]], progress=False)
    ds.set_values("ground_truth", [el.Classification("cat"), el.Classification("cup")])
    ds.set_values("boxes", [el.Detections(detections=[el.Detection(label="cat", bounding_box=[0.1, 0.1, 0.5, 0.5]),
                                                      el.Detection(label="ear", bounding_box=[0.2, 0.1, 0.1, 0.1])]),
                            None])
    ds.set_values("meta", [{"a": 1}, None])  # a dict: not a table column
    ds.limit(1).tag_samples(["x"])
    columns, types = table_columns(ds)
    assert columns == {"id": ds.values("id"), "filepath": ds.values("filepath"), "tags": [["x"], []],
                       "ground_truth": ["cat", "cup"], "boxes.labels": [["cat", "ear"], []]}
    assert types["tags"] == types["boxes.labels"] == "list" and types["ground_truth"] == "str"
    assert list(table_columns(ds, "boxes")[0]) == ["id", "filepath", "tags", "boxes.labels"]

    patches = ds.to_patches("boxes")
    columns, _ = table_columns(patches)
    assert list(columns) == ["id", "sample_id", "filepath", "tags", "boxes"]
    assert columns["id"] == patches.values("id") and columns["boxes"] == ["cat", "ear"]
    assert columns["sample_id"] == [ds.first().id] * 2

    # a CSV cell joins a list with ',': a label holding one cannot go in a CSV (Parquet keeps the list)
    ds.set_values("boxes", [el.Detections(detections=[el.Detection(label="a,b", bounding_box=[0, 0, 1, 1])]), None])
    with pytest.raises(el.EmbedlensError, match=r"boxes label 'a,b' contains ','.*export Parquet"):
        ds.export(tmp_path / "t.csv", "csv")
    assert not (tmp_path / "t.csv").exists()
    ds.export(tmp_path / "t.parquet", "csv")


def test_direct_api_matches_methods(digits_tree, tmp_path):
    ds = el.Dataset("direct")
    summary = import_samples(ds, digits_tree, "classification-tree", progress=False, num_workers=1)
    assert summary.imported == 100
    out = export_samples(ds.match(el.F("ground_truth.label") == "3"), tmp_path / "t.csv", "csv")
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == out["exported"] == ds.count_values("ground_truth.label")["3"]
    assert {r["ground_truth"] for r in rows} == {"3"}
