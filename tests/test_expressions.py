"""The expression operators the FiftyOne tutorials use: ``F("$tags")`` from inside a label, ``if_else``,
``values(path, expr=...)``, indexing (``F("bounding_box")[2]``) and ``apply`` over a list of labels.

Each runs two ways with one meaning: compiled to SQL (views, ``values``) and evaluated in Python
(``expr.evaluate``); the tests check both against a plain Python loop over the same samples."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import embedlens as el
from embedlens import F
from embedlens.core.errors import EmbedlensError
from embedlens.core.expressions import from_dict, to_dict
from embedlens.core.query import Stage


@pytest.fixture
def ds():
    """A split dataset like the MNIST tutorial's: test samples labelled, train samples to pre-annotate,
    each with 0-3 boxes."""
    rng = random.Random(1)
    samples = []
    for i in range(40):
        dets = [el.Detection(rng.choice(["cat", "dog"]), [0.1, 0.2, round(rng.uniform(0.05, 0.8), 3),
                                                           round(rng.uniform(0.05, 0.7), 3)])
                for _ in range(i % 4)]
        samples.append(el.Sample(f"/data/{i:03d}.png", tags=["test"] if i % 3 == 0 else ["train"],
                                 ground_truth=el.Classification(str(i % 10)) if i % 11 else None,
                                 gt=el.Detections(detections=dets) if i % 7 else None, n=i))
    d = el.Dataset()
    d.add_samples(samples)
    return d


BBOX_AREA = F("bounding_box")[2] * F("bounding_box")[3]


def test_values_with_expr_relative_to_the_field_pre_annotates_like_the_tutorial(ds):
    """The MNIST tutorial's step: label the test split by its ground truth, mark the rest unlabeled."""
    expr = F("$tags").contains("test").if_else(F("label"), "unlabeled")
    labels = ds.values("ground_truth", expr=expr)
    want = [(s.ground_truth.label if s.ground_truth else None) if "test" in s.tags else "unlabeled" for s in ds]
    assert labels == want
    assert labels.count("unlabeled") == len(ds.match_tags("train"))
    assert [expr.evaluate(s.ground_truth, root=s) for s in ds] == want  # Python evaluation agrees
    ds.set_values("ground_truth.label", labels)
    assert ds.match_tags("train").count_values("ground_truth.label") == {
        "unlabeled": len(ds.match_tags("train").exists("ground_truth"))}


def test_root_fields_from_inside_a_label(ds):
    in_test = F("$tags").contains("test")
    view = ds.filter_labels("gt", in_test & (F("label") == "cat"))
    want = [[d.label for d in s.gt.detections if d.label == "cat"] for s in ds
            if "test" in s.tags and s.gt and any(d.label == "cat" for d in s.gt.detections)]
    assert view.values("gt.detections.label") == want
    # a Classification, and $ at the sample level (the same field as without it)
    assert ds.filter_labels("ground_truth", F("$n") > 20).values("n") == [
        s.n for s in ds if s.ground_truth and s.n > 20]
    assert ds.match(F("$tags").contains("train")).values("id") == ds.match_tags("train").values("id")


def test_if_else_in_match_sort_and_values(ds):
    key = (F("n") > 20).if_else(F("n") * -1, F("n"))
    assert ds.values(key) == [-s.n if s.n > 20 else s.n for s in ds]
    assert ds.sort_by(key).values("n") == sorted(range(40), key=lambda n: (-n if n > 20 else n, n))
    assert ds.match((F("n") < 5).if_else(True, False)).values("n") == [0, 1, 2, 3, 4]
    assert ds.values(F("ground_truth.label").exists().if_else("yes", "no")).count("no") == 4


def test_indexing_lists(ds):
    wide = ds.filter_labels("gt", F("bounding_box")[2] > 0.5)
    want = [[d.bounding_box[2] for d in s.gt.detections if d.bounding_box[2] > 0.5] for s in ds
            if s.gt and any(d.bounding_box[2] > 0.5 for d in s.gt.detections)]
    assert [[b[2] for b in bs] for bs in wide.values("gt.detections.bounding_box")] == want
    assert ds.values(F("tags")[0]) == [s.tags[0] for s in ds]
    assert ds.values(F("tags")[-1]) == [s.tags[-1] for s in ds]
    assert set(ds.values(F("tags")[5])) == {None}                      # past the end: None
    assert set(ds.values(F("ground_truth.label")[0])) == {None}        # not a list: None, not an SQL error
    assert (F("bounding_box")[2]).evaluate(el.Detection("x", [0, 0, 0.5, 0.25])) == 0.5
    with pytest.raises(TypeError):
        F("tags")["a"]
    with pytest.raises(TypeError):
        list(F("tags"))  # __getitem__ does not make an expression iterable


def test_apply_over_a_list_of_labels(ds):
    """``F("gt.detections[]").apply(bbox_area)``: one value per object, one list per sample."""
    areas = ds.values(F("gt.detections[]").apply(BBOX_AREA))
    want = [None if s.gt is None else [d.bounding_box[2] * d.bounding_box[3] for d in s.gt.detections]
            for s in ds]
    assert len(areas) == len(want)
    for got, exp in zip(areas, want):
        assert got == exp if exp is None else got == pytest.approx(exp)
    assert ds.values("gt.detections", expr=BBOX_AREA) == areas                 # the same through values(expr=)
    python = [F("gt.detections[]").apply(BBOX_AREA).evaluate(s) for s in ds]
    for got, exp in zip(python, want):
        assert got == exp if exp is None else got == pytest.approx(exp)
    # in a patches view each row is one object: the same path gives that object's value
    patches = ds.to_patches("gt")
    flat = [a for s in want if s for a in s]
    assert patches.values(F("gt.detections[]").apply(BBOX_AREA)) == pytest.approx(flat)
    assert patches.values("gt.detections.label") == [d.label for s in ds if s.gt for d in s.gt.detections]
    # a single label: the body is relative to it
    assert ds.values(F("ground_truth").apply(F("label") == "3")) == [
        None if s.ground_truth is None else s.ground_truth.label == "3" for s in ds]
    assert ds.match(F("gt.detections[]").apply(F("label")).contains("cat")).values("id") == ds.match(
        F("gt.detections.label").contains("cat")).values("id")


def test_bad_uses_name_the_problem(ds):
    with pytest.raises(el.InvalidInputError, match="label or a list of labels"):
        ds.values(F("n").apply(F("label")))
    with pytest.raises(el.InvalidInputError, match="label or a list of labels"):
        ds.values("n", expr=F("label"))
    with pytest.raises(TypeError):
        F("gt").apply("label")
    with pytest.raises(TypeError):
        ds.values("ground_truth", expr="label")


NEW = [
    F("$tags").contains("test").if_else(F("label"), "unlabeled"),
    F("gt.detections[]").apply(BBOX_AREA),
    F("bounding_box")[-1],
    (F("n") > 3).if_else(F("n")[0], None),
]


@pytest.mark.parametrize("expr", NEW, ids=repr)
def test_new_operators_round_trip_through_json(expr):
    again = from_dict(to_dict(expr))
    assert to_dict(again) == to_dict(expr)


@pytest.mark.parametrize("bad, reason", [
    ({"$op": "if_else", "args": [True, 1]}, "takes 3 arguments"),
    ({"$op": "index", "args": [{"$field": "tags"}, "0"]}, "an index is an integer"),
    ({"$op": "index", "args": [{"$field": "tags"}, True]}, "an index is an integer"),
    ({"$op": "index", "args": [{"$field": "tags"}, 1 << 40]}, "out of range"),
    ({"$op": "apply", "args": [{"$field": "gt"}, "label"]}, "takes an expression"),
    ({"$op": "apply", "args": [{"$field": "gt"}]}, "takes 2 arguments"),
])
def test_from_dict_checks_the_new_operators(bad, reason):
    with pytest.raises(el.InvalidInputError, match=reason):
        from_dict(bad)


def test_deep_apply_chains_are_refused():
    e: dict = {"$field": "label"}
    for _ in range(70):
        e = {"$op": "apply", "args": [{"$field": "gt"}, e]}
    with pytest.raises(el.InvalidInputError, match="deeper than"):
        from_dict(e)


PATHS = ["gt", "gt.detections", "gt.detections[]", "$tags", "tags", "label", "bounding_box", "n", "$n",
         "ground_truth", "nosuch", "$", "gt.detections[].label", "a[]b"]
leaf = st.builds(lambda p: {"$field": p}, st.sampled_from(PATHS)) | st.integers(-3, 3) | st.sampled_from(
    ["test", "cat", None, True, 0.5])
tree = st.recursive(leaf, lambda ch: st.builds(
    lambda op, args: {"$op": op, "args": args},
    st.sampled_from(["if_else", "index", "apply", "==", "&", "contains", "length", "*"]),
    st.lists(ch | st.lists(st.sampled_from(["test", "cat"]), max_size=2), min_size=1, max_size=3)), max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(expr=tree, stage=st.sampled_from(["Match", "SortBy", "FilterLabels", "values"]))
def test_generated_trees_run_or_raise_a_clear_error(ds, expr, stage):
    """JSON from outside (the app's posted views) with the new operators: it runs, or it is refused with
    an EmbedlensError before any SQL error can happen."""
    try:
        if stage == "values":
            ds.values(from_dict(expr))
            return
        kwargs = {"Match": {"filter": expr}, "SortBy": {"field_or_expr": expr},
                  "FilterLabels": {"field": "gt", "filter": expr}}[stage]
        view = el.DatasetView(ds, [Stage.from_dict({"_stage": stage, "kwargs": kwargs})])
        view.values("id")
    except EmbedlensError:
        pass


def test_arithmetic_on_strings_is_refused_not_turned_into_numbers(ds):
    """SQLite computes "3" + " -> " as 3; an expression refuses it, in SQL and in Python alike."""
    expr = F("ground_truth.label") + " -> "
    with pytest.raises(el.InvalidInputError, match="takes numbers"):
        ds.values(expr)
    with pytest.raises(el.InvalidInputError, match="takes numbers"):
        expr.evaluate(ds.first())
    with pytest.raises(el.InvalidInputError, match="takes numbers"):
        ds.match(F("n") * [2] > 1).values("id")
