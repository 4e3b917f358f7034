"""Datasets: persistence, samples, typed fields, labels, bulk operations, across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import embedlens as el
from embedlens import F


def _samples(n=10):
    out = []
    for i in range(n):
        dets = el.Detections(detections=[el.Detection("cat", [0.1, 0.1, 0.2, 0.2], confidence=0.9),
                                         el.Detection("dog", [0.5, 0.5, 0.4, 0.3], confidence=0.3)])
        out.append(el.Sample(f"/data/img{i:03d}.png", ground_truth=el.Classification(str(i % 3)),
                             score=i / 10, count=i, name=f"n{i}", predictions=dets if i % 2 else None))
    return out


def test_create_load_list_delete(embedlens_home):
    ds = el.Dataset("pets")
    ds.add_samples(_samples(4))
    assert (embedlens_home / "pets" / "dataset.db").exists()
    assert el.list_datasets() == ["pets"]
    assert el.dataset_exists("pets")
    again = el.load_dataset("pets")
    assert len(again) == 4 and again.values("name") == ["n0", "n1", "n2", "n3"]
    with pytest.raises(ValueError, match="already exists"):
        el.Dataset("pets")
    replaced = el.Dataset("pets", overwrite=True)
    assert len(replaced) == 0
    replaced.delete()
    assert el.list_datasets() == [] and not el.dataset_exists("pets")
    with pytest.raises(ValueError, match="not found"):
        el.load_dataset("pets")
    with pytest.raises(ValueError, match="invalid dataset name"):
        el.Dataset("../escape")
    # a folder in the home that is not a dataset is never replaced, even with overwrite=True
    (embedlens_home / "photos").mkdir()
    (embedlens_home / "photos" / "keep.jpg").write_bytes(b"mine")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="exists and is not an embedlens dataset"):
            el.Dataset("photos", overwrite=overwrite)
    assert (embedlens_home / "photos" / "keep.jpg").read_bytes() == b"mine"


def test_rename_and_clone():
    ds = el.Dataset("a")
    ds.add_samples(_samples(6))
    ds.name = "b"
    assert el.list_datasets() == ["b"] and len(el.load_dataset("b")) == 6
    clone = ds.match(F("score") >= 0.3).clone("c")
    assert len(clone) == 3 and clone.values("id") == ds.values("id")[3:]
    assert clone.get_field_schema() == ds.get_field_schema()
    clone.set_values("score", [0.0] * 3)
    assert ds.values("score")[3:] == [0.3, 0.4, 0.5]


def test_non_persistent_dataset_is_removed_when_its_process_exits(embedlens_home):
    code = "import embedlens as el; ds = el.Dataset('tmp', persistent=False); print(ds.path)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "tmp" in out.stdout
    assert not (embedlens_home / "tmp").exists()
    assert el.list_datasets() == []


def test_write_in_one_process_is_read_in_another_at_once():
    ds = el.Dataset("shared")
    ds.add_samples(_samples(3))
    code = ("import embedlens as el; ds = el.load_dataset('shared'); "
            "ds.set_values('score', [7.0, 8.0, 9.0]); ds.tag_samples('seen')")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ds.values("score") == [7.0, 8.0, 9.0]
    assert ds.count_sample_tags() == {"seen": 3}
    code = "import embedlens as el; el.load_dataset('shared').set_values('extra', [1, 2, 3])"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ds.get_field_schema()["extra"] == "int" and ds.values("extra") == [1, 2, 3]


def test_field_types_are_inferred_and_enforced():
    ds = el.Dataset()
    ds.add_samples(_samples(3))
    schema = ds.get_field_schema()
    assert schema["score"] == "float" and schema["count"] == "int" and schema["name"] == "str"
    assert schema["ground_truth"] == "Classification" and schema["predictions"] == "Detections"
    with pytest.raises(TypeError, match="field 'score' has type float.*str"):
        ds.set_values("score", ["x", "y", "z"])
    with pytest.raises(TypeError, match="'count' has type int"):
        ds.add_sample(el.Sample("/x.png", count=1.5))
    with pytest.raises(TypeError, match="ground_truth"):
        ds.set_values("ground_truth", [el.Detections(), None, None])
    assert len(ds) == 3 and ds.values("score") == [0.0, 0.1, 0.2]
    ds.set_values("count", [np.int64(5), 6, None])  # numpy ints are ints, None is missing
    assert ds.values("count") == [5, 6, None]
    ds.set_values("score", [1, 2, 3])  # ints widen into a float field
    assert ds.values("score") == [1.0, 2.0, 3.0]
    ds.set_values("vec", [np.arange(3.0), np.ones(2, np.float32), None])
    vec = ds.values("vec")
    assert vec[0].tolist() == [0.0, 1.0, 2.0] and vec[1].dtype == np.float32 and vec[2] is None
    ds.set_values("attrs", [{"a": 1}, {"a": 2}, {}])
    assert ds.values("attrs.a") == [1, 2, None]
    ds.set_values("flag", [True, False, None])
    assert ds.values("flag") == [True, False, None]
    with pytest.raises(ValueError, match="got 2 values for 3 samples"):
        ds.set_values("score", [1.0, 2.0])
    with pytest.raises(ValueError, match="invalid field name"):
        ds.set_values("bad name", [1, 2, 3])


def test_add_delete_rename_fields():
    ds = el.Dataset()
    ds.add_samples(_samples(3))
    ds.add_sample_field("note", "str")
    assert ds.values("note") == [None, None, None]
    ds.rename_sample_field("score", "confidence_score")
    assert "score" not in ds.get_field_schema() and ds.values("confidence_score") == [0.0, 0.1, 0.2]
    ds.delete_sample_field("confidence_score")
    assert "confidence_score" not in ds.get_field_schema()
    with pytest.raises(el.UnknownFieldError, match="unknown field 'nope'"):
        ds.delete_sample_field("nope")
    with pytest.raises(ValueError, match="built-in"):
        ds.delete_sample_field("filepath")
    with pytest.raises(ValueError, match="unknown field type"):
        ds.add_sample_field("x", "complex")


def test_labels_round_trip_with_ids_and_attributes():
    ds = el.Dataset()
    s = el.Sample("/img.png", gt=el.Classification("cat", confidence=0.8, logits=np.array([0.1, 2.0])),
                  boxes=el.Detections(detections=[el.Detection("cat", [0.0, 0.0, 1.0, 1.0], iscrowd=0)]))
    ds.add_sample(s)
    got = ds.first()
    assert got.gt == s.gt and got.gt.id == s.gt.id and got.gt.logits == [0.1, 2.0]
    det = got.boxes.detections[0]
    assert det.label == "cat" and det.bounding_box == [0.0, 0.0, 1.0, 1.0] and det.iscrowd == 0
    assert det.id == s.boxes.detections[0].id and det.id != got.gt.id
    with pytest.raises(ValueError, match="not inside the image"):
        el.Detection("x", [0.5, 0.5, 0.6, 0.1])
    with pytest.raises(ValueError, match="finite"):
        el.Classification("x", confidence=float("nan"))


def test_sample_save_and_accessors():
    ds = el.Dataset()
    ds.add_samples(_samples(2))
    s = ds.first()
    assert s.in_dataset and s.filepath == "/data/img000.png" and s["name"] == "n0"
    s.name = "renamed"
    s.tags.append("edited")
    s.new_field = 3.5
    s.save()
    again = ds[s.id]
    assert again.name == "renamed" and again.tags == ["edited"] and again.new_field == 3.5
    with pytest.raises(KeyError, match="no sample with id 'missing'"):
        ds["missing"]
    with pytest.raises(AttributeError):
        s.id = "other"
    with pytest.raises(ValueError, match="not in a dataset"):
        el.Sample("/free.png").save()


def test_bulk_values_and_counts():
    ds = el.Dataset()
    ds.add_samples(_samples(9))
    assert ds.count_values("ground_truth.label") == {"0": 3, "1": 3, "2": 3}
    assert ds.distinct("ground_truth.label") == ["0", "1", "2"]
    assert ds.count_values("predictions.detections.label") == {"cat": 4, "dog": 4}
    labels = ds.values("predictions.detections.label")
    assert labels[0] is None and labels[1] == ["cat", "dog"]
    assert ds.values("predictions.detections.bounding_box")[1] == [[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.4, 0.3]]
    assert ds.count("predictions.detections.label") == 8
    assert ds.bounds("score") == (0.0, 0.8)
    gts = ds.values("ground_truth")
    assert isinstance(gts[0], el.Classification) and gts[4].label == "1"
    with pytest.raises(el.UnknownFieldError, match="unknown field 'groundtruth'"):
        ds.values("groundtruth.label")


def test_set_values_on_label_attributes():
    ds = el.Dataset()
    ds.add_samples(_samples(4))
    ds.set_values("ground_truth.label", ["a", "b", "c", "d"])
    assert ds.values("ground_truth.label") == ["a", "b", "c", "d"]
    ids_before = [g.id for g in ds.values("ground_truth")]
    ds.set_values("ground_truth.confidence", [0.1, 0.2, 0.3, 0.4])
    assert [g.id for g in ds.values("ground_truth")] == ids_before
    ds.set_values("predictions.detections.confidence", [None, [0.5, 0.6], [], [0.7, 0.8]])
    assert ds.values("predictions.detections.confidence") == [None, [0.5, 0.6], None, [0.7, 0.8]]
    with pytest.raises(ValueError, match="2 objects in 'predictions' but 1 values"):
        ds.set_values("predictions.detections.confidence", [None, [0.5], None, [0.1, 0.2]])
    assert ds.values("predictions.detections.confidence")[1] == [0.5, 0.6]
    with pytest.raises(TypeError, match="label must be a str"):
        ds.set_values("ground_truth.label", [1, 2, 3, 4])
    by_id = dict(zip(ds.values("id")[:2], ["x", "y"]))
    ds.set_values("ground_truth.label", by_id)
    assert ds.values("ground_truth.label") == ["x", "y", "c", "d"]
    with pytest.raises(KeyError, match="'nope' is not in"):
        ds.set_values("ground_truth.label", {"nope": "z"})


def test_tags_on_dataset_and_views():
    ds = el.Dataset()
    ds.add_samples(_samples(6))
    ds.match(F("score") < 0.3).tag_samples(["low", "check"])
    ds.limit(1).tag_samples("low")  # tagging twice keeps one tag
    assert ds.count_sample_tags() == {"low": 3, "check": 3}
    assert ds.first().tags == ["low", "check"]
    ds.match_tags("low").skip(1).untag_samples(["low", "absent"])
    assert ds.count_sample_tags() == {"low": 1, "check": 3}
    assert ds.match_tags(["low", "check"], all=True).count() == 1
    assert ds.match_tags("check", bool=False).count() == 3


def test_delete_samples():
    ds = el.Dataset()
    ds.add_samples(_samples(5))
    ids = ds.values("id")
    assert ds.delete_samples(ds.match(F("score") > 0.25)) == 2
    assert ds.values("id") == ids[:3]
    with pytest.raises(KeyError, match="'ghost' is not in dataset"):
        ds.delete_samples([ids[0], "ghost"])
    assert len(ds) == 3  # nothing deleted when one id is unknown
    ds.delete_samples(ids[0])
    assert ds.values("id") == ids[1:3]


def test_summary_reads_like_fiftyone():
    ds = el.Dataset("summary")
    ds.add_samples(_samples(3))
    text = repr(ds)
    assert "Name:        summary" in text and "Num samples: 3" in text
    assert "ground_truth: Classification" in text and "predictions:  Detections" in text
    view_text = repr(ds.match(F("score") > 0).limit(1))
    assert "Num samples: 1" in view_text and "1. Match" in view_text and "2. Limit(limit=1)" in view_text


def test_dataset_info_persists():
    ds = el.Dataset("meta")
    ds.info["classes"] = {"ground_truth": ["a", "b"]}
    ds.save()
    assert el.load_dataset("meta").info == {"classes": {"ground_truth": ["a", "b"]}}
